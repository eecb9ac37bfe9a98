"""Shared bits of the benchmark scripts: machine description, table printing, resumable run steps."""

from __future__ import annotations

import json
import os
import platform
import shlex
import statistics
import subprocess
import time
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parents[1]


def machine() -> str:
    cpu = platform.processor() or platform.machine()
    try:
        with open("/proc/cpuinfo") as f:
            names = [line.split(":", 1)[1].strip() for line in f if line.startswith("model name")]
        cpu = names[0] if names else cpu
    except OSError:
        pass
    gpu = f", GPU {torch.cuda.get_device_name()}" if torch.cuda.is_available() else ""
    return f"{cpu}, {os.cpu_count()} logical CPUs, torch {torch.__version__}, {torch.get_num_threads()} threads{gpu}"


def mnist1d_teacher(num_samples: int, width: int = 64):
    """The MNIST-1D bundle, a frozen random ``cnn1d`` teacher (seed 1) and its logits on the training inputs,
    as the loop benchmarks use them (the teacher's accuracy does not change a step's cost)."""
    from gendistill.data import load_dataset
    from gendistill.engine import seed_everything
    from gendistill.models import create_model

    data = load_dataset("mnist1d", num_samples=num_samples)
    seed_everything(1)
    teacher = create_model("cnn1d", data.num_classes, data.input_shape, width=width).eval()
    for p in teacher.parameters():
        p.requires_grad_(False)
    with torch.no_grad():
        x = data.train.x
        logits = torch.cat([teacher(x[i : i + 1024]) for i in range(0, len(x), 1024)])
    return data, teacher, logits


def print_table(headers: list[str], rows: list[list[str]]) -> None:
    widths = [max(len(h), *(len(r[i]) for r in rows)) for i, h in enumerate(headers)]
    line = "  ".join(h.ljust(w) for h, w in zip(headers, widths))
    print(line)
    print("-" * len(line))
    for r in rows:
        print("  ".join(c.ljust(w) for c, w in zip(r, widths)))


def median(xs: list[float]) -> float:
    return statistics.median(xs)


def final_json(obj: dict) -> None:
    print(json.dumps(obj))


def run_step(name: str, cmd: list[str], run_dir: Path, out: Path, env: dict[str, str] | None = None) -> None:
    """Run one ``gendistill run`` command into ``run_dir``: reused when it already has a ``summary.json``,
    continued with ``--resume`` when it holds a partial run. Output goes to ``<out>/logs/<name>.log``, the wall
    clock and command to ``<out>/timing/<name>.json``."""
    if (run_dir / "summary.json").exists():
        print(f"[{name}] {run_dir}/summary.json exists: reused", flush=True)
        return
    if run_dir.exists() and any(run_dir.iterdir()):
        cmd = cmd + ["--resume"]
    (out / "logs").mkdir(parents=True, exist_ok=True)
    (out / "timing").mkdir(parents=True, exist_ok=True)
    print(f"[{name}] {shlex.join(cmd)}", flush=True)
    t0 = time.time()
    with open(out / "logs" / f"{name}.log", "w") as log:
        rc = subprocess.call(cmd, stdout=log, stderr=subprocess.STDOUT, cwd=ROOT, env=env)
    wall = time.time() - t0
    (out / "timing" / f"{name}.json").write_text(json.dumps(
        {"command": shlex.join(cmd), "returncode": rc, "wall_s": round(wall, 1), "resumed": "--resume" in cmd,
         "torch_threads": (env or os.environ).get("OMP_NUM_THREADS", "default")}) + "\n")
    print(f"[{name}] exit {rc} after {wall:.0f} s", flush=True)


def last_error(log: Path) -> str:
    """The last line of a run's log that mentions an error (else its last line), short enough for a table cell."""
    if not log.exists():
        return "not run"
    lines = [ln.strip() for ln in log.read_text(errors="replace").splitlines() if ln.strip()]
    err = next((ln for ln in reversed(lines) if "error" in ln.lower()), lines[-1] if lines else "no output")
    err = err.replace("|", "/")
    return err if len(err) <= 110 else err[:110].rsplit(" ", 1)[0] + " …"
