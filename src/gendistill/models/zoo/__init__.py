"""The CIFAR model zoo of the KD benchmarks (RepDistiller, mdistiller) and Born-Again Networks.

Registered by the names the published tables use (``resnet8`` ... ``resnet110``, ``resnet8x4``, ``resnet32x4``,
``wrn_16_1`` ... ``wrn_40_2``, ``wrn_28_*``, ``vgg8``/``vgg11``/``vgg13``, ``mobilenetv2``, ``shufflev1``,
``shufflev2``, ``densenet_bc``), with the same layer structure and therefore the same parameter counts as
RepDistiller's model code (``tests/test_zoo.py`` checks every count). Feature-tap names are listed in each
model's docstring and in docs/models.md; the per-block feature maps are plain tensors, so any module may be
tapped. timm and torchvision models are registered as ``timm:<name>`` / ``torchvision:<name>`` when those
packages are installed (weights only from a local file).
"""

from . import densenet, external, mobile, resnet, shuffle, vgg, wrn  # noqa: F401  (register models)


