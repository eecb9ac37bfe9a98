"""Shared checks for the zoo's factories."""

from __future__ import annotations

IMAGE = {"input_rank": 3, "inputs": "images (N, C, H, W)", "zoo": True}


def image_shape(name: str, input_shape: tuple[int, ...], min_size: int = 8) -> int:
    """The channel count of an image input, after checking the shape is (C, H, W) with H, W >= ``min_size``."""
    if len(input_shape) != 3:
        raise ValueError(f"{name} expects images shaped (channels, height, width), got {tuple(input_shape)}")
    if min(input_shape[1:]) < min_size:
        raise ValueError(f"{name} needs images of at least {min_size}x{min_size}, got {tuple(input_shape)}")
    return int(input_shape[0])
