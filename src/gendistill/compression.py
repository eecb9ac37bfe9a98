"""Compression figures of a model: parameters, multiply-accumulates, checkpoint size, latency and throughput.

* ``params``: trainable and frozen parameters, ``sum(p.numel())``;
* ``macs``: multiply-accumulates of one forward pass on one input, counted with PyTorch's own FLOP counter
  (``torch.utils.flop_counter.FlopCounterMode``: matmuls and convolutions, 2 FLOPs per MAC), so
  ``macs = flops / 2``; ops it does not count (element-wise, pooling, batch norm) are left out, as in the
  tables of the KD papers;
* ``checkpoint_bytes``: the size of the generation's ``model.safetensors`` file;
* ``latency_ms``: median wall time of one forward pass at batch 1 (eval mode, no grad), after warm-up;
* ``throughput``: inputs per second at batch ``throughput_batch`` (eval mode, no grad), median of the runs.

Speeds are measured on the device the model is on, with ``torch.cuda.synchronize`` around each timed call on
CUDA; they depend on the machine and the thread count, which the record names.
"""

from __future__ import annotations

import statistics
import time
from pathlib import Path
from typing import Any

import torch
from torch import nn


def count_macs(model: nn.Module, input_shape: tuple[int, ...]) -> int | None:
    """MACs of one forward pass on one input of ``input_shape`` (``None`` when the model cannot take zeros of
    that shape, e.g. token ids)."""
    from torch.utils.flop_counter import FlopCounterMode

    dev = next(iter(model.parameters()), torch.zeros(())).device
    was = model.training
    model.eval()
    try:
        with torch.no_grad(), FlopCounterMode(display=False) as counter:
            model(torch.zeros(1, *input_shape, device=dev))
    except (RuntimeError, TypeError, ValueError, IndexError):
        return None
    finally:
        model.train(was)
    return int(counter.get_total_flops()) // 2


def _timed(model: nn.Module, x: torch.Tensor, repeats: int) -> list[float]:
    sync = torch.cuda.synchronize if x.device.type == "cuda" else (lambda: None)
    times = []
    with torch.no_grad():
        for _ in range(2):  # warm-up
            model(x)
        for _ in range(repeats):
            sync()
            t0 = time.perf_counter()
            model(x)
            sync()
            times.append(time.perf_counter() - t0)
    return times


def measure_speed(model: nn.Module, input_shape: tuple[int, ...], *, throughput_batch: int = 256,
                  repeats: int = 5) -> dict[str, float]:
    """``latency_ms`` (batch 1) and ``throughput`` (inputs/s at ``throughput_batch``) of ``model`` in eval mode."""
    dev = next(iter(model.parameters()), torch.zeros(())).device
    was = model.training
    model.eval()
    try:
        lat = statistics.median(_timed(model, torch.zeros(1, *input_shape, device=dev), repeats))
        per = statistics.median(_timed(model, torch.zeros(throughput_batch, *input_shape, device=dev), repeats))
    finally:
        model.train(was)
    return {"latency_ms": 1e3 * lat, "throughput": throughput_batch / per, "speed_device": str(dev),
            "speed_threads": torch.get_num_threads()}


def model_figures(model: nn.Module, input_shape: tuple[int, ...] | None, *, checkpoint: str | Path | None = None,
                  speed: bool = False, device: torch.device | str | None = None,
                  throughput_batch: int = 256) -> dict[str, Any]:
    """``params``, ``macs``, ``checkpoint_bytes`` (when the file exists) and, with ``speed``, the speed figures
    (measured on ``device``: a copy of the model is moved there). ``input_shape=None`` (inputs that are not
    float tensors of one shape, e.g. token ids): ``params`` and ``checkpoint_bytes`` only."""
    fig: dict[str, Any] = {"params": sum(p.numel() for p in model.parameters()),
                           "macs": None if input_shape is None else count_macs(model, tuple(input_shape))}
    if checkpoint is not None and Path(checkpoint).exists():
        fig["checkpoint_bytes"] = Path(checkpoint).stat().st_size
    if speed and input_shape is not None:
        import copy

        timed = copy.deepcopy(model).to(device) if device is not None else model
        fig.update(measure_speed(timed, tuple(input_shape), throughput_batch=throughput_batch))
    return fig
