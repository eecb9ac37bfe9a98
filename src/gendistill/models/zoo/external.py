"""timm and torchvision models by name, when those optional packages are installed.

``model: {name: timm, arch: resnet18}`` or ``{name: torchvision, arch: resnet18}``; ``weights`` names a local
``.safetensors`` or ``.pt`` state dict (read with ``weights_only=True``); nothing is downloaded (timm is asked
for ``pretrained=False``, torchvision for ``weights=None``). Any submodule name of the built model can be tapped
(``layer3``, ``stages.2`` ...; list them with ``[n for n, _ in model.named_modules()]``).
"""

from __future__ import annotations

import importlib.util
from pathlib import Path

import torch
from torch import nn

from ...registry import MODELS
from ._common import image_shape

_META = {"input_rank": 3, "inputs": "images (N, C, H, W)"}


def load_local_weights(model: nn.Module, weights: str | None) -> nn.Module:
    """Load a local state dict into ``model`` (strict, except a classifier of another size is refused)."""
    if weights is None:
        return model
    path = Path(weights).expanduser()
    if not path.is_file():
        raise ValueError(f"weights file {path} does not exist (weights are only read from local files)")
    if path.suffix == ".safetensors":
        from safetensors.torch import load_file

        state = load_file(str(path))
    else:
        state = torch.load(path, map_location="cpu", weights_only=True)
        state = state.get("state_dict", state) if isinstance(state, dict) else state
    model.load_state_dict(state)
    return model


if importlib.util.find_spec("timm") is not None:

    @MODELS.register("timm", summary="any timm model by name: {name: timm, arch: <timm name>, weights: <local file>}",
                     **_META)
    def timm_model(num_classes: int, input_shape: tuple[int, ...], arch: str = "resnet18",
                   weights: str | None = None) -> nn.Module:
        import timm

        if arch not in timm.list_models():
            raise ValueError(f"timm has no model {arch!r}")
        model = timm.create_model(arch, pretrained=False, num_classes=num_classes,
                                  in_chans=image_shape("timm", input_shape, 1))
        return load_local_weights(model, weights)


if importlib.util.find_spec("torchvision") is not None:

    @MODELS.register("torchvision", summary="a torchvision classification model by name: {name: torchvision, "
                     "arch: resnet18, weights: <local file>}", **_META)
    def torchvision_model(num_classes: int, input_shape: tuple[int, ...], arch: str = "resnet18",
                          weights: str | None = None) -> nn.Module:
        from torchvision import models as tvm

        if arch not in tvm.list_models(module=tvm):
            raise ValueError(f"torchvision has no classification model {arch!r}")
        if image_shape("torchvision", input_shape, 1) != 3:
            raise ValueError("torchvision models take 3-channel images")
        return load_local_weights(tvm.get_model(arch, weights=None, num_classes=num_classes), weights)
