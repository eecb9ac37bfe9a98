"""Small convolutional networks for MNIST-1D (1-D) and 8x8 digits (2-D)."""

from __future__ import annotations

import torch
from torch import Tensor, nn

from ..registry import MODELS


def _block(conv: nn.Module, channels: int, dims: int, batchnorm: bool) -> nn.Sequential:
    norm = (nn.BatchNorm1d if dims == 1 else nn.BatchNorm2d)(channels) if batchnorm else nn.Identity()
    return nn.Sequential(conv, norm, nn.ReLU())


class ConvNet(nn.Module):
    """Three conv blocks then a linear classifier. Tappable layers: ``layer1``, ``layer2``, ``layer3``
    (conv outputs), ``pool`` (flattened features, the penultimate representation) and ``fc``."""

    def __init__(self, layer1: nn.Module, layer2: nn.Module, layer3: nn.Module, pool: nn.Module,
                 num_classes: int, input_shape: tuple[int, ...]):
        super().__init__()
        self.layer1, self.layer2, self.layer3, self.pool = layer1, layer2, layer3, pool
        with torch.no_grad():
            was_training = self.training
            self.eval()
            d = self._features(torch.zeros(1, *input_shape)).shape[1]
            self.train(was_training)
        self.fc = nn.Linear(d, num_classes)

    def _features(self, x: Tensor) -> Tensor:
        return self.pool(self.layer3(self.layer2(self.layer1(x))))

    def forward(self, x: Tensor) -> Tensor:
        return self.fc(self._features(x))


def _check(input_shape: tuple[int, ...], dims: int, name: str) -> None:
    if len(input_shape) != dims + 1:
        want = "(channels, length)" if dims == 1 else "(channels, height, width)"
        raise ValueError(f"{name} expects inputs shaped {want}, got {tuple(input_shape)}")


def _positive(**values: int) -> None:
    for k, v in values.items():
        if not v >= 1:
            raise ValueError(f"{k} must be >= 1, got {v}")


@MODELS.register("cnn1d", summary="1-D CNN for sequences such as MNIST-1D: 3 strided conv blocks, flatten, linear",
                 input_rank=2, inputs="1-D signals (N, C, L)")
def cnn1d(num_classes: int, input_shape: tuple[int, ...], width: int = 32, batchnorm: bool = True) -> ConvNet:
    """MNIST-1D style CNN (Greydanus 2020): convs of width ``width``, ``width``, ``2*width``, stride 2."""
    _positive(width=width)
    _check(input_shape, 1, "cnn1d")
    c = input_shape[0]
    w = width
    return ConvNet(
        _block(nn.Conv1d(c, w, 5, stride=2, padding=2), w, 1, batchnorm),
        _block(nn.Conv1d(w, w, 3, stride=2, padding=1), w, 1, batchnorm),
        _block(nn.Conv1d(w, 2 * w, 3, stride=2, padding=1), 2 * w, 1, batchnorm),
        nn.Flatten(),
        num_classes,
        input_shape,
    )


@MODELS.register("cnn2d", summary="small 2-D CNN for 8x8 digits: 3 conv blocks, global average pool, linear",
                 input_rank=3, inputs="images (N, C, H, W)")
def cnn2d(num_classes: int, input_shape: tuple[int, ...], width: int = 32, batchnorm: bool = True) -> ConvNet:
    _positive(width=width)
    _check(input_shape, 2, "cnn2d")
    c = input_shape[0]
    w = width
    return ConvNet(
        _block(nn.Conv2d(c, w, 3, padding=1), w, 2, batchnorm),
        _block(nn.Conv2d(w, 2 * w, 3, stride=2, padding=1), 2 * w, 2, batchnorm),
        _block(nn.Conv2d(2 * w, 2 * w, 3, padding=1), 2 * w, 2, batchnorm),
        nn.Sequential(nn.AdaptiveAvgPool2d(1), nn.Flatten()),
        num_classes,
        input_shape,
    )
