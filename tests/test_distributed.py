"""Data-parallel training under torchrun: two CPU processes on the gloo backend, as Lightning Fabric tests it."""

import json
import subprocess
import sys

import pytest

from gendistill.engine import distributed


def _torchrun(*args):
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node=2",
           "-m", "gendistill", *args]
    return subprocess.run(cmd, capture_output=True, text=True, timeout=300)


def _files(root):
    return sorted(str(p.relative_to(root)) for p in root.rglob("*") if p.is_file() and "plots" not in p.parts)


def test_two_processes_match_one(tiny_config_yaml, tmp_path):
    single, ddp = tmp_path / "single", tmp_path / "ddp"
    args = [str(tiny_config_yaml), "--set", "generations.count=1", "--progress", "off"]
    r1 = subprocess.run([sys.executable, "-m", "gendistill", "run", *args, "--out", str(single)],
                        capture_output=True, text=True, timeout=300)
    assert r1.returncode == 0, r1.stderr
    r2 = _torchrun("run", *args, "--out", str(ddp))
    assert r2.returncode == 0, r2.stderr[-3000:]
    assert r2.stdout.count("run directory:") == 1  # only rank 0 prints
    assert _files(single) == _files(ddp)  # same layout, and no stray files from rank 1
    s1 = json.loads((single / "summary.json").read_text())["generations"]
    s2 = json.loads((ddp / "summary.json").read_text())["generations"]
    assert [g["processes"] for g in s2] == [2, 2] and [g["processes"] for g in s1] == [1, 1]
    for a, b in zip(s1, s2):
        # an MLP without batch norm: sharded, averaged gradients equal the full-batch gradient up to rounding
        assert abs(a["test_acc"] - b["test_acc"]) <= 0.02
        assert abs(a["test_nll"] - b["test_nll"]) <= 0.02

    # resume under torchrun reuses the finished generations
    r3 = _torchrun("run", *args, "--out", str(ddp), "--resume")
    assert r3.returncode == 0, r3.stderr[-3000:]
    s3 = json.loads((ddp / "summary.json").read_text())["generations"]
    assert [g["test_acc"] for g in s3] == [g["test_acc"] for g in s2] and all(g.get("resumed") for g in s3)


def test_two_processes_read_a_folder_through_a_dataloader(image_folder, tmp_path):
    """The DataLoader path (images read from disk by worker processes) under torchrun: same files as one process,
    close numbers, and resume reuses the finished generations."""
    cfg = tmp_path / "folder.yaml"
    cfg.write_text(f"""
name: folder
data: {{name: imagefolder, root: {image_folder}, size: 8, in_memory: false, workers: 1}}
model: {{name: mlp, width: 16}}
generations: {{count: 1}}
train: {{epochs: 2, batch_size: 4, lr: 0.01, fidelity_samples: 4}}
""")
    single, ddp = tmp_path / "single", tmp_path / "ddp"
    r1 = subprocess.run([sys.executable, "-m", "gendistill", "run", str(cfg), "--progress", "off", "--out", str(single)],
                        capture_output=True, text=True, timeout=300)
    assert r1.returncode == 0, r1.stderr[-3000:]
    r2 = _torchrun("run", str(cfg), "--progress", "off", "--out", str(ddp))
    assert r2.returncode == 0, r2.stderr[-3000:]
    assert _files(single) == _files(ddp)
    s1 = json.loads((single / "summary.json").read_text())["generations"]
    s2 = json.loads((ddp / "summary.json").read_text())["generations"]
    assert [g["processes"] for g in s2] == [2, 2]
    for a, b in zip(s1, s2):
        assert abs(a["test_nll"] - b["test_nll"]) <= 0.05
    r3 = _torchrun("run", str(cfg), "--progress", "off", "--out", str(ddp), "--resume")
    assert r3.returncode == 0, r3.stderr[-3000:]
    s3 = json.loads((ddp / "summary.json").read_text())["generations"]
    assert [g["test_nll"] for g in s3] == [g["test_nll"] for g in s2] and all(g.get("resumed") for g in s3)


def test_helpers_are_no_ops_in_one_process():
    assert distributed.world_size() == 1 and distributed.is_main() and not distributed.is_distributed()
    distributed.barrier()


@pytest.mark.parametrize("world", [2, 3])
def test_loader_shards_cover_each_batch_once(world):
    import torch

    from gendistill.data import TensorLoader

    x = torch.arange(12).float()
    shards = [list(TensorLoader(x, torch.arange(12), 6, shuffle=True, seed=4, rank=r, world_size=world)) for r in range(world)]
    full = list(TensorLoader(x, torch.arange(12), 6, shuffle=True, seed=4))
    for b, (_, _, idx) in enumerate(full):
        got = torch.cat([shards[r][b][2] for r in range(world)])
        assert sorted(got.tolist()) == sorted(idx.tolist())
