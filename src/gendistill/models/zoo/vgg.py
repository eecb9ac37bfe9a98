"""VGG with batch norm for CIFAR as RepDistiller defines it (Simonyan & Zisserman 2015, FC layers removed):
five conv blocks, max-pooling between the first four, global average pooling, one linear classifier.

Tappable layers: ``block0`` (32x32) ... ``block4`` (4x4; each block's output is pre-ReLU except block0, as in
RepDistiller), ``pool`` (N, 512) and ``classifier``.
"""

from __future__ import annotations

from torch import Tensor, nn

from ...registry import MODELS
from ._common import IMAGE, image_shape

CONFIGS = {
    "vgg8": [[64], [128], [256], [512], [512]],
    "vgg11": [[64], [128], [256, 256], [512, 512], [512, 512]],
    "vgg13": [[64, 64], [128, 128], [256, 256], [512, 512], [512, 512]],
    "vgg16": [[64, 64], [128, 128], [256, 256, 256], [512, 512, 512], [512, 512, 512]],
    "vgg19": [[64, 64], [128, 128], [256] * 4, [512] * 4, [512] * 4],
}


def _block(widths: list[int], cin: int) -> nn.Sequential:
    layers: list[nn.Module] = []
    for w in widths:
        layers += [nn.Conv2d(cin, w, 3, padding=1), nn.BatchNorm2d(w), nn.ReLU(inplace=True)]
        cin = w
    return nn.Sequential(*layers[:-1])  # the last ReLU is applied outside, so taps see pre-activations


class VGG(nn.Module):
    def __init__(self, cfg: list[list[int]], num_classes: int, in_channels: int = 3):
        super().__init__()
        cin = in_channels
        for i, widths in enumerate(cfg):
            self.add_module(f"block{i}", _block(widths, cin))
            cin = widths[-1]
        self.down = nn.MaxPool2d(2, 2)
        self.pool = nn.Sequential(nn.AdaptiveAvgPool2d(1), nn.Flatten())
        self.classifier = nn.Linear(cin, num_classes)
        for m in self.modules():
            if isinstance(m, nn.Conv2d):
                nn.init.kaiming_normal_(m.weight, mode="fan_out", nonlinearity="relu")
                nn.init.zeros_(m.bias)
            elif isinstance(m, nn.Linear):
                nn.init.normal_(m.weight, 0, 0.01)
                nn.init.zeros_(m.bias)

    def forward(self, x: Tensor) -> Tensor:
        x = self.down(self.block0(x).relu())
        x = self.down(self.block1(x).relu())
        x = self.down(self.block2(x).relu())
        x = self.block3(x).relu()  # RepDistiller pools a fourth time only for 64x64 inputs
        if x.shape[-1] >= 8:
            x = self.down(x)
        return self.classifier(self.pool(self.block4(x).relu()))


def _register(name: str) -> None:
    def factory(num_classes: int, input_shape: tuple[int, ...]) -> VGG:
        return VGG(CONFIGS[name], num_classes, image_shape(name, input_shape))

    factory.__name__ = name
    convs = sum(len(b) for b in CONFIGS[name])
    MODELS.register(name, summary=f"{name} with batch norm for CIFAR: {convs} convs + 1 linear (RepDistiller's, FC "
                    "layers removed)", **IMAGE)(factory)


for _n in CONFIGS:
    _register(_n)
