"""ShuffleNet V1 (Zhang et al. 2018, groups 3) and V2 (Ma et al. 2018, size 1.0) for CIFAR, as RepDistiller
defines them (1x1 stem, no max-pool): ``shufflev1``, ``shufflev2``.

Tappable layers: ``stem`` (32x32), ``layer1`` (16x16), ``layer2`` (8x8), ``layer3`` (4x4), ``pool`` (N, C) and
``linear``; V2 also ``conv2`` (the 1x1 conv before pooling).
"""

from __future__ import annotations

import torch
from torch import Tensor, nn

from ...registry import MODELS
from ._common import IMAGE, image_shape


def channel_shuffle(x: Tensor, groups: int) -> Tensor:
    n, c, h, w = x.shape
    return x.view(n, groups, c // groups, h, w).transpose(1, 2).reshape(n, c, h, w)


def _bn(c: int) -> nn.BatchNorm2d:
    return nn.BatchNorm2d(c)


class V1Block(nn.Module):
    def __init__(self, cin: int, cout: int, stride: int, groups: int):
        super().__init__()
        mid = cout // 4
        self.g = 1 if cin == 24 else groups
        self.conv1, self.bn1 = nn.Conv2d(cin, mid, 1, groups=self.g, bias=False), _bn(mid)
        self.conv2, self.bn2 = nn.Conv2d(mid, mid, 3, stride, 1, groups=mid, bias=False), _bn(mid)
        self.conv3, self.bn3 = nn.Conv2d(mid, cout, 1, groups=groups, bias=False), _bn(cout)
        self.stride = stride
        self.shortcut = nn.AvgPool2d(3, 2, 1) if stride == 2 else nn.Identity()

    def forward(self, x: Tensor) -> Tensor:
        out = channel_shuffle(self.bn1(self.conv1(x)).relu(), self.g)
        out = self.bn3(self.conv3(self.bn2(self.conv2(out)).relu()))
        res = self.shortcut(x)
        return (torch.cat([out, res], 1) if self.stride == 2 else out + res).relu()


class ShuffleNetV1(nn.Module):
    def __init__(self, num_classes: int, in_channels: int = 3, planes=(240, 480, 960), blocks=(4, 8, 4), groups=3):
        super().__init__()
        self.stem = nn.Sequential(nn.Conv2d(in_channels, 24, 1, bias=False), _bn(24), nn.ReLU(inplace=True))
        cin = 24
        for i, (cout, n) in enumerate(zip(planes, blocks)):
            layers = []
            for b in range(n):
                layers.append(V1Block(cin, cout - (cin if b == 0 else 0), 2 if b == 0 else 1, groups))
                cin = cout
            self.add_module(f"layer{i + 1}", nn.Sequential(*layers))
        self.pool = nn.Sequential(nn.AdaptiveAvgPool2d(1), nn.Flatten())
        self.linear = nn.Linear(cin, num_classes)

    def forward(self, x: Tensor) -> Tensor:
        return self.linear(self.pool(self.layer3(self.layer2(self.layer1(self.stem(x))))))


class V2Block(nn.Module):
    def __init__(self, c: int):
        super().__init__()
        h = c // 2
        self.branch = nn.Sequential(nn.Conv2d(h, h, 1, bias=False), _bn(h), nn.ReLU(inplace=True),
                                    nn.Conv2d(h, h, 3, 1, 1, groups=h, bias=False), _bn(h),
                                    nn.Conv2d(h, h, 1, bias=False), _bn(h), nn.ReLU(inplace=True))

    def forward(self, x: Tensor) -> Tensor:
        x1, x2 = x.chunk(2, dim=1)
        return channel_shuffle(torch.cat([x1, self.branch(x2)], 1), 2)


class V2Down(nn.Module):
    def __init__(self, cin: int, cout: int):
        super().__init__()
        mid = cout // 2
        self.left = nn.Sequential(nn.Conv2d(cin, cin, 3, 2, 1, groups=cin, bias=False), _bn(cin),
                                  nn.Conv2d(cin, mid, 1, bias=False), _bn(mid), nn.ReLU(inplace=True))
        self.right = nn.Sequential(nn.Conv2d(cin, mid, 1, bias=False), _bn(mid), nn.ReLU(inplace=True),
                                   nn.Conv2d(mid, mid, 3, 2, 1, groups=mid, bias=False), _bn(mid),
                                   nn.Conv2d(mid, mid, 1, bias=False), _bn(mid), nn.ReLU(inplace=True))

    def forward(self, x: Tensor) -> Tensor:
        return channel_shuffle(torch.cat([self.left(x), self.right(x)], 1), 2)


class ShuffleNetV2(nn.Module):
    def __init__(self, num_classes: int, in_channels: int = 3, channels=(116, 232, 464, 1024), blocks=(3, 7, 3)):
        super().__init__()
        self.stem = nn.Sequential(nn.Conv2d(in_channels, 24, 1, bias=False), _bn(24), nn.ReLU(inplace=True))
        cin = 24
        for i, (cout, n) in enumerate(zip(channels[:3], blocks)):
            self.add_module(f"layer{i + 1}", nn.Sequential(V2Down(cin, cout), *[V2Block(cout) for _ in range(n)]))
            cin = cout
        self.conv2 = nn.Sequential(nn.Conv2d(cin, channels[3], 1, bias=False), _bn(channels[3]), nn.ReLU(inplace=True))
        self.pool = nn.Sequential(nn.AdaptiveAvgPool2d(1), nn.Flatten())
        self.linear = nn.Linear(channels[3], num_classes)

    def forward(self, x: Tensor) -> Tensor:
        return self.linear(self.pool(self.conv2(self.layer3(self.layer2(self.layer1(self.stem(x)))))))


@MODELS.register("shufflev1", summary="ShuffleNet V1, groups 3, for CIFAR (Zhang et al. 2018; RepDistiller)", **IMAGE)
def shufflev1(num_classes: int, input_shape: tuple[int, ...]) -> ShuffleNetV1:
    return ShuffleNetV1(num_classes, image_shape("shufflev1", input_shape))


@MODELS.register("shufflev2", summary="ShuffleNet V2 1.0x for CIFAR (Ma et al. 2018; RepDistiller)", **IMAGE)
def shufflev2(num_classes: int, input_shape: tuple[int, ...]) -> ShuffleNetV2:
    return ShuffleNetV2(num_classes, image_shape("shufflev2", input_shape))
