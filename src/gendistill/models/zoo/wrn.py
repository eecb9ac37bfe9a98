"""Wide ResNets (Zagoruyko & Komodakis 2016) as RepDistiller defines them: depth 6n+4, widen factor k,
pre-activation blocks, widths (16, 16k, 32k, 64k). ``wrn_<depth>_<k>``.

Tappable layers: ``conv1`` (32x32), ``block1`` (32x32), ``block2`` (16x16), ``block3`` (8x8, before the final
BN-ReLU), ``pool`` (BN, ReLU, global average: N, 64k) and ``fc``.
"""

from __future__ import annotations

from torch import Tensor, nn

from ...registry import MODELS
from ._common import IMAGE, image_shape


class WideBlock(nn.Module):
    def __init__(self, cin: int, cout: int, stride: int, drop: float = 0.0):
        super().__init__()
        self.bn1 = nn.BatchNorm2d(cin)
        self.conv1 = nn.Conv2d(cin, cout, 3, stride, 1, bias=False)
        self.bn2 = nn.BatchNorm2d(cout)
        self.conv2 = nn.Conv2d(cout, cout, 3, 1, 1, bias=False)
        self.drop = nn.Dropout(drop) if drop > 0 else nn.Identity()
        self.shortcut = None if cin == cout else nn.Conv2d(cin, cout, 1, stride, 0, bias=False)

    def forward(self, x: Tensor) -> Tensor:
        act = self.bn1(x).relu()
        out = self.conv2(self.drop(self.bn2(self.conv1(act)).relu()))
        return out + (x if self.shortcut is None else self.shortcut(act))


class WideResNet(nn.Module):
    def __init__(self, depth: int, widen: int, num_classes: int, in_channels: int = 3, drop: float = 0.0):
        super().__init__()
        if (depth - 4) % 6 or depth < 10:
            raise ValueError(f"wrn depth must be 6n+4 (10, 16, 28, 40 ...), got {depth}")
        n = (depth - 4) // 6
        widths = (16, 16 * widen, 32 * widen, 64 * widen)
        self.conv1 = nn.Conv2d(in_channels, widths[0], 3, 1, 1, bias=False)
        cin = widths[0]
        for i, (cout, stride) in enumerate(zip(widths[1:], (1, 2, 2))):
            blocks = []
            for b in range(n):
                blocks.append(WideBlock(cin, cout, stride if b == 0 else 1, drop))
                cin = cout
            self.add_module(f"block{i + 1}", nn.Sequential(*blocks))
        self.pool = nn.Sequential(nn.BatchNorm2d(cin), nn.ReLU(inplace=True), nn.AdaptiveAvgPool2d(1), nn.Flatten())
        self.fc = nn.Linear(cin, num_classes)
        for m in self.modules():
            if isinstance(m, nn.Conv2d):
                nn.init.kaiming_normal_(m.weight, mode="fan_out", nonlinearity="relu")
            elif isinstance(m, nn.Linear):
                nn.init.zeros_(m.bias)

    def forward(self, x: Tensor) -> Tensor:
        return self.fc(self.pool(self.block3(self.block2(self.block1(self.conv1(x))))))


def _register(depth: int, widen: int) -> None:
    name = f"wrn_{depth}_{widen}"

    def factory(num_classes: int, input_shape: tuple[int, ...], dropout: float = 0.0) -> WideResNet:
        if not 0 <= dropout < 1:
            raise ValueError(f"dropout must be in [0, 1), got {dropout}")
        return WideResNet(depth, widen, num_classes, image_shape(name, input_shape), dropout)

    factory.__name__ = name
    MODELS.register(name, summary=f"Wide ResNet-{depth}-{widen} (Zagoruyko & Komodakis 2016; RepDistiller's block)",
                    **IMAGE)(factory)


for _d, _k in ((16, 1), (16, 2), (40, 1), (40, 2), (28, 2), (28, 4), (28, 10)):
    _register(_d, _k)
