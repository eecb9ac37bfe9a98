"""Tap points for the hidden states of sequence models (bundled and Hugging Face): identity modules that
forward hooks -- the feature taps of :mod:`gendistill.knowledge.taps` -- attach to by name (``hidden.<i>``,
``encoder_hidden.<i>``, ``decoder_hidden.<i>``). A model passes each hidden state ``(N, L, D)`` through its tap
point as ``(N, D, L)`` (channels first, like a 1-D convolution's map, so the feature and relation terms read it
unchanged), with the padded positions set to zero, and only while a hook is attached."""

from __future__ import annotations

from torch import Tensor, nn


def tap_points(count: int) -> nn.ModuleList:
    """``count`` identity modules: forward hooks on them (the feature taps) see the hidden states."""
    return nn.ModuleList(nn.Identity() for _ in range(count))


def tapped(points: nn.ModuleList) -> bool:
    return any(p._forward_hooks for p in points)


def emit(points: nn.ModuleList, states: tuple[Tensor, ...], mask: Tensor) -> None:
    """Pass each hidden state ``(N, L, D)`` through its tap point as ``(N, D, L)``, padded positions zeroed."""
    keep = mask[:, None, :].to(states[0].dtype)
    for point, h in zip(points, states):
        point(h.transpose(1, 2) * keep)
