"""Multi-layer perceptron."""

from __future__ import annotations

import math

from torch import Tensor, nn

from ..registry import MODELS


class MLP(nn.Module):
    """``flatten -> [Linear -> ReLU (-> Dropout)] x depth -> fc``. Tappable layers: layer1..layer<depth>, fc."""

    def __init__(self, in_features: int, num_classes: int, width: int = 128, depth: int = 2, dropout: float = 0.0):
        super().__init__()
        if width < 1 or depth < 1:
            raise ValueError(f"mlp needs width >= 1 and depth >= 1, got width={width}, depth={depth}")
        if not 0 <= dropout < 1:
            raise ValueError(f"dropout must be in [0, 1), got {dropout}")
        self.flatten = nn.Flatten()
        d = in_features
        for i in range(depth):
            block = [nn.Linear(d, width), nn.ReLU()]
            if dropout > 0:
                block.append(nn.Dropout(dropout))
            self.add_module(f"layer{i + 1}", nn.Sequential(*block))
            d = width
        self.depth = depth
        self.fc = nn.Linear(d, num_classes)

    def forward(self, x: Tensor) -> Tensor:
        h = self.flatten(x)
        for i in range(self.depth):
            h = getattr(self, f"layer{i + 1}")(h)
        return self.fc(h)


@MODELS.register("mlp", summary="MLP: flatten, `depth` hidden layers of `width` units (any input shape)")
def mlp(num_classes: int, input_shape: tuple[int, ...], width: int = 128, depth: int = 2, dropout: float = 0.0) -> MLP:
    return MLP(math.prod(input_shape), num_classes, width, depth, dropout)
