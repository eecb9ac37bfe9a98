"""CIFAR-style ResNets (He et al. 2016, Sec. 4.2): depth 6n+2, three stages of widths w, 2w, 4w."""

from __future__ import annotations

from torch import Tensor, nn

from ..registry import MODELS
from .cnn import _positive


class BasicBlock(nn.Module):
    def __init__(self, cin: int, cout: int, stride: int):
        super().__init__()
        self.conv1 = nn.Conv2d(cin, cout, 3, stride, 1, bias=False)
        self.bn1 = nn.BatchNorm2d(cout)
        self.conv2 = nn.Conv2d(cout, cout, 3, 1, 1, bias=False)
        self.bn2 = nn.BatchNorm2d(cout)
        self.short = nn.Sequential()
        if stride != 1 or cin != cout:
            self.short = nn.Sequential(nn.Conv2d(cin, cout, 1, stride, bias=False), nn.BatchNorm2d(cout))

    def forward(self, x: Tensor) -> Tensor:
        out = self.bn1(self.conv1(x)).relu()
        return (self.bn2(self.conv2(out)) + self.short(x)).relu()


class ResNetCIFAR(nn.Module):
    """Tappable layers: ``stem``, ``layer1``, ``layer2``, ``layer3`` (N, C, H, W), ``pool`` (N, 4w), ``fc``."""

    def __init__(self, depth: int, num_classes: int, in_channels: int = 3, width: int = 16,
                 filters: tuple[int, int, int, int] | None = None):
        """``filters``: ``(stem, stage1, stage2, stage3)`` channels; default ``(w, w, 2w, 4w)`` for ``width`` w
        (the zoo's ``resnet8x4``/``resnet32x4`` use ``(32, 64, 128, 256)``)."""
        super().__init__()
        if (depth - 2) % 6 or depth < 8:
            raise ValueError(f"resnet depth must be 6n+2 (8, 14, 20, 32, 44, 56, 110), got {depth}")
        n = (depth - 2) // 6
        filters = filters or (width, width, 2 * width, 4 * width)
        self.stem = nn.Sequential(nn.Conv2d(in_channels, filters[0], 3, 1, 1, bias=False), nn.BatchNorm2d(filters[0]),
                                  nn.ReLU())
        cin = filters[0]
        for i, (cout, stride) in enumerate(zip(filters[1:], (1, 2, 2))):
            blocks = []
            for b in range(n):
                blocks.append(BasicBlock(cin, cout, stride if b == 0 else 1))
                cin = cout
            self.add_module(f"layer{i + 1}", nn.Sequential(*blocks))
        self.pool = nn.Sequential(nn.AdaptiveAvgPool2d(1), nn.Flatten())
        self.fc = nn.Linear(cin, num_classes)
        for m in self.modules():
            if isinstance(m, nn.Conv2d):
                nn.init.kaiming_normal_(m.weight, mode="fan_out", nonlinearity="relu")

    def forward(self, x: Tensor) -> Tensor:
        return self.fc(self.pool(self.layer3(self.layer2(self.layer1(self.stem(x))))))


@MODELS.register("resnet_cifar", summary="CIFAR ResNet (He et al. 2016): depth 6n+2 (default 20), widths w, 2w, 4w",
                 input_rank=3, inputs="images (N, C, H, W)")
def resnet_cifar(num_classes: int, input_shape: tuple[int, ...], depth: int = 20, width: int = 16) -> ResNetCIFAR:
    _positive(width=width)
    if len(input_shape) != 3:
        raise ValueError(f"resnet_cifar expects images shaped (channels, height, width), got {tuple(input_shape)}")
    return ResNetCIFAR(depth, num_classes, input_shape[0], width)
