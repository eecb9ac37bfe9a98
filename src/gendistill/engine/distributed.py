"""A thin layer over ``torch.distributed`` for runs started by ``torchrun``.

Under ``torchrun --nproc_per_node=N -m gendistill run CONFIG`` every process runs the same lineage; the
trainer shards each batch across processes and wraps the *trainable* task in DistributedDataParallel (the
frozen teacher is never wrapped); loss sums are reduced across processes once per epoch; only rank 0 writes
files (enforced in :mod:`gendistill.io`) and prints. Without ``WORLD_SIZE`` > 1 every function is a no-op.
"""

from __future__ import annotations

import os

import torch
import torch.distributed as dist


def world_size() -> int:
    return int(os.environ.get("WORLD_SIZE", "1"))


def rank() -> int:
    return dist.get_rank() if dist.is_available() and dist.is_initialized() else int(os.environ.get("RANK", "0"))


def local_rank() -> int:
    return int(os.environ.get("LOCAL_RANK", "0"))


def is_distributed() -> bool:
    return world_size() > 1


def is_main() -> bool:
    return rank() == 0


def init(device_type: str) -> None:
    """Join the process group (NCCL on CUDA, gloo on CPU) if started by torchrun and not joined yet."""
    if is_distributed() and not dist.is_initialized():
        backend = "nccl" if device_type == "cuda" else "gloo"
        if device_type == "cuda":
            torch.cuda.set_device(local_rank())
        dist.init_process_group(backend=backend)


def barrier() -> None:
    if is_distributed() and dist.is_initialized():
        dist.barrier()


def all_reduce_sum(t: torch.Tensor) -> torch.Tensor:
    if is_distributed() and dist.is_initialized():
        dist.all_reduce(t, op=dist.ReduceOp.SUM)
    return t


def shutdown() -> None:
    if dist.is_available() and dist.is_initialized():
        dist.destroy_process_group()
