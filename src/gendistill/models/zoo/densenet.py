"""DenseNet-BC (Huang et al. 2017): bottleneck (1x1 to 4k, 3x3 to k) dense layers, three dense blocks joined by
compression-0.5 transitions: ``densenet_bc`` (depth 6n+4, growth k; default 100-12, Huang et al.'s 0.8M model),
``densenet_bc_100_12`` and ``densenet_bc_112_33``, the Born-Again Networks teacher (Furlanello et al. 2018,
Table 2, CIFAR-100). BAN's DenseNet-90-60, -80-80 and -80-120 count depth another way (80 and 90 are not
6n+4 here) and are not registered; build them with ``{name: densenet_bc, depth: ..., growth: ...}``.
This definition gives DenseNet-112-33 6.99M parameters for 100 classes, where BAN's table states 6.3M.

Tappable layers: ``conv1`` (32x32), ``block1`` (32x32), ``trans1`` (16x16), ``block2``, ``trans2`` (8x8),
``block3`` (8x8), ``pool`` (BN, ReLU, global average: N, C) and ``fc``.
"""

from __future__ import annotations

import torch
from torch import Tensor, nn

from ...registry import MODELS
from ._common import IMAGE, image_shape


class DenseLayer(nn.Module):
    def __init__(self, cin: int, growth: int):
        super().__init__()
        self.fn = nn.Sequential(nn.BatchNorm2d(cin), nn.ReLU(inplace=True), nn.Conv2d(cin, 4 * growth, 1, bias=False),
                                nn.BatchNorm2d(4 * growth), nn.ReLU(inplace=True),
                                nn.Conv2d(4 * growth, growth, 3, padding=1, bias=False))

    def forward(self, x: Tensor) -> Tensor:
        return torch.cat([x, self.fn(x)], 1)


class Transition(nn.Sequential):
    def __init__(self, cin: int, cout: int):
        super().__init__(nn.BatchNorm2d(cin), nn.ReLU(inplace=True), nn.Conv2d(cin, cout, 1, bias=False), nn.AvgPool2d(2))


class DenseNetBC(nn.Module):
    def __init__(self, depth: int, growth: int, num_classes: int, in_channels: int = 3, reduction: float = 0.5):
        super().__init__()
        if (depth - 4) % 6 or depth < 10:
            raise ValueError(f"DenseNet-BC depth must be 6n+4 (e.g. 40, 100, 112), got {depth}")
        n = (depth - 4) // 6
        c = 2 * growth
        self.conv1 = nn.Conv2d(in_channels, c, 3, padding=1, bias=False)
        for i in range(3):
            self.add_module(f"block{i + 1}", nn.Sequential(*[DenseLayer(c + j * growth, growth) for j in range(n)]))
            c += n * growth
            if i < 2:
                out = int(c * reduction)
                self.add_module(f"trans{i + 1}", Transition(c, out))
                c = out
        self.pool = nn.Sequential(nn.BatchNorm2d(c), nn.ReLU(inplace=True), nn.AdaptiveAvgPool2d(1), nn.Flatten())
        self.fc = nn.Linear(c, num_classes)
        for m in self.modules():
            if isinstance(m, nn.Conv2d):
                nn.init.kaiming_normal_(m.weight, mode="fan_out", nonlinearity="relu")
            elif isinstance(m, nn.Linear):
                nn.init.zeros_(m.bias)

    def forward(self, x: Tensor) -> Tensor:
        x = self.trans2(self.block2(self.trans1(self.block1(self.conv1(x)))))
        return self.fc(self.pool(self.block3(x)))


@MODELS.register("densenet_bc", summary="DenseNet-BC (Huang et al. 2017): depth 6n+4 (default 100), growth k "
                 "(default 12); BAN's are densenet_bc_<depth>_<k>", **IMAGE)
def densenet_bc(num_classes: int, input_shape: tuple[int, ...], depth: int = 100, growth: int = 12) -> DenseNetBC:
    if growth < 1:
        raise ValueError(f"growth must be >= 1, got {growth}")
    return DenseNetBC(depth, growth, num_classes, image_shape("densenet_bc", input_shape))


def _register(depth: int, growth: int) -> None:
    name = f"densenet_bc_{depth}_{growth}"

    def factory(num_classes: int, input_shape: tuple[int, ...]) -> DenseNetBC:
        return DenseNetBC(depth, growth, num_classes, image_shape(name, input_shape))

    factory.__name__ = name
    paper = "Huang et al. 2017" if (depth, growth) == (100, 12) else "the Born-Again Networks teacher, Furlanello et al. 2018"
    MODELS.register(name, summary=f"DenseNet-BC-{depth}-{growth} ({paper})",
                    **IMAGE)(factory)


for _d, _k in ((100, 12), (112, 33)):
    _register(_d, _k)
