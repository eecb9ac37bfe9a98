"""MobileNetV2 for CIFAR as RepDistiller defines it (Sandler et al. 2018; expansion T=6, width 0.5, the first
conv with stride 2): ``mobilenetv2``.

Tappable layers: ``conv1`` (16x16), ``blocks.0`` ... ``blocks.6`` (blocks.1: 16x16, blocks.2: 8x8, blocks.4: 4x4,
blocks.6: 2x2, the four RepDistiller feature points), ``conv2``, ``pool`` (N, 1280) and ``classifier``.
"""

from __future__ import annotations

from torch import Tensor, nn

from ...registry import MODELS
from ._common import IMAGE, image_shape


def _conv_bn(cin: int, cout: int, k: int, stride: int) -> nn.Sequential:
    return nn.Sequential(nn.Conv2d(cin, cout, k, stride, k // 2, bias=False), nn.BatchNorm2d(cout), nn.ReLU(inplace=True))


class InvertedResidual(nn.Module):
    def __init__(self, cin: int, cout: int, stride: int, expand: int):
        super().__init__()
        mid = cin * expand
        self.residual = stride == 1 and cin == cout
        self.conv = nn.Sequential(
            nn.Conv2d(cin, mid, 1, bias=False), nn.BatchNorm2d(mid), nn.ReLU(inplace=True),
            nn.Conv2d(mid, mid, 3, stride, 1, groups=mid, bias=False), nn.BatchNorm2d(mid), nn.ReLU(inplace=True),
            nn.Conv2d(mid, cout, 1, bias=False), nn.BatchNorm2d(cout))

    def forward(self, x: Tensor) -> Tensor:
        return x + self.conv(x) if self.residual else self.conv(x)


class MobileNetV2(nn.Module):
    SETTING = ((1, 16, 1, 1), (None, 24, 2, 1), (None, 32, 3, 2), (None, 64, 4, 2), (None, 96, 3, 1),
               (None, 160, 3, 2), (None, 320, 1, 1))

    def __init__(self, num_classes: int, in_channels: int = 3, expand: int = 6, width: float = 0.5):
        super().__init__()
        cin = int(32 * width)
        self.conv1 = _conv_bn(in_channels, cin, 3, 2)
        blocks = []
        for t, c, n, s in self.SETTING:
            cout, layers = int(c * width), []
            for i in range(n):
                layers.append(InvertedResidual(cin, cout, s if i == 0 else 1, t or expand))
                cin = cout
            blocks.append(nn.Sequential(*layers))
        self.blocks = nn.Sequential(*blocks)
        last = int(1280 * width) if width > 1.0 else 1280
        self.conv2 = _conv_bn(cin, last, 1, 1)
        self.pool = nn.Sequential(nn.AdaptiveAvgPool2d(1), nn.Flatten())
        self.classifier = nn.Linear(last, num_classes)
        for m in self.modules():
            if isinstance(m, nn.Conv2d):
                nn.init.kaiming_normal_(m.weight, mode="fan_out", nonlinearity="relu")
            elif isinstance(m, nn.Linear):
                nn.init.normal_(m.weight, 0, 0.01)
                nn.init.zeros_(m.bias)

    def forward(self, x: Tensor) -> Tensor:
        return self.classifier(self.pool(self.conv2(self.blocks(self.conv1(x)))))


@MODELS.register("mobilenetv2", summary="MobileNetV2, T=6, width 0.5, for CIFAR (Sandler et al. 2018; RepDistiller)",
                 **IMAGE)
def mobilenetv2(num_classes: int, input_shape: tuple[int, ...], expand: int = 6, width: float = 0.5) -> MobileNetV2:
    if expand < 1 or not width > 0:
        raise ValueError(f"expand must be >= 1 and width > 0, got {expand} and {width}")
    return MobileNetV2(num_classes, image_shape("mobilenetv2", input_shape), expand, width)
