"""CIFAR ResNets as RepDistiller defines them (He et al. 2016, Sec. 4.2; Tian et al. 2020 for the x4 widths).

Depth 6n+2, three stages of BasicBlocks. ``resnet<d>`` has filters (16, 16, 32, 64); ``resnet8x4`` and
``resnet32x4`` have (32, 64, 128, 256), so their first stage starts with a 1x1 projection.

Tappable layers: ``stem`` (conv-bn-relu, 32x32), ``layer1`` (32x32), ``layer2`` (16x16), ``layer3`` (8x8),
``pool`` (N, C) and ``fc``.
"""

from __future__ import annotations

from torch import Tensor, nn

from ...registry import MODELS
from ._common import IMAGE, image_shape


class BasicBlock(nn.Module):
    def __init__(self, cin: int, cout: int, stride: int):
        super().__init__()
        self.conv1 = nn.Conv2d(cin, cout, 3, stride, 1, bias=False)
        self.bn1 = nn.BatchNorm2d(cout)
        self.conv2 = nn.Conv2d(cout, cout, 3, 1, 1, bias=False)
        self.bn2 = nn.BatchNorm2d(cout)
        self.downsample = None
        if stride != 1 or cin != cout:
            self.downsample = nn.Sequential(nn.Conv2d(cin, cout, 1, stride, bias=False), nn.BatchNorm2d(cout))

    def forward(self, x: Tensor) -> Tensor:
        out = self.bn2(self.conv2(self.bn1(self.conv1(x)).relu()))
        return (out + (x if self.downsample is None else self.downsample(x))).relu()


class ResNet(nn.Module):
    """CIFAR ResNet with filters ``(stem, stage1, stage2, stage3)``."""

    def __init__(self, depth: int, filters: tuple[int, int, int, int], num_classes: int, in_channels: int = 3):
        super().__init__()
        if (depth - 2) % 6 or depth < 8:
            raise ValueError(f"resnet depth must be 6n+2 (8, 14, 20, 32, 44, 56, 110), got {depth}")
        n = (depth - 2) // 6
        self.stem = nn.Sequential(nn.Conv2d(in_channels, filters[0], 3, 1, 1, bias=False),
                                  nn.BatchNorm2d(filters[0]), nn.ReLU(inplace=True))
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


def _register(name: str, depth: int, filters: tuple[int, int, int, int]) -> None:
    def factory(num_classes: int, input_shape: tuple[int, ...]) -> ResNet:
        return ResNet(depth, filters, num_classes, image_shape(name, input_shape))

    factory.__name__ = name
    MODELS.register(name, summary=f"CIFAR ResNet-{depth}, filters {filters} (RepDistiller)", **IMAGE)(factory)


for _d in (8, 14, 20, 32, 44, 56, 110):
    _register(f"resnet{_d}", _d, (16, 16, 32, 64))
_register("resnet8x4", 8, (32, 64, 128, 256))
_register("resnet32x4", 32, (32, 64, 128, 256))
