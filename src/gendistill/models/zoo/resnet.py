"""CIFAR ResNets as RepDistiller defines them (He et al. 2016, Sec. 4.2; Tian et al. 2020 for the x4 widths).

Depth 6n+2, three stages of BasicBlocks. ``resnet<d>`` has filters (16, 16, 32, 64); ``resnet8x4`` and
``resnet32x4`` have (32, 64, 128, 256), so their first stage starts with a 1x1 projection.

Tappable layers: ``stem`` (conv-bn-relu, 32x32), ``layer1`` (32x32), ``layer2`` (16x16), ``layer3`` (8x8),
``pool`` (N, C) and ``fc``. The network is :class:`~gendistill.models.resnet_cifar.ResNetCIFAR` with these filters.
"""

from __future__ import annotations

from ...registry import MODELS
from ..resnet_cifar import ResNetCIFAR
from ._common import IMAGE, image_shape


def _register(name: str, depth: int, filters: tuple[int, int, int, int]) -> None:
    def factory(num_classes: int, input_shape: tuple[int, ...]) -> ResNetCIFAR:
        return ResNetCIFAR(depth, num_classes, image_shape(name, input_shape), filters=filters)

    factory.__name__ = name
    MODELS.register(name, summary=f"CIFAR ResNet-{depth}, filters {filters} (RepDistiller)", **IMAGE)(factory)


for _d in (8, 14, 20, 32, 44, 56, 110):
    _register(f"resnet{_d}", _d, (16, 16, 32, 64))
_register("resnet8x4", 8, (32, 64, 128, 256))
_register("resnet32x4", 32, (32, 64, 128, 256))
