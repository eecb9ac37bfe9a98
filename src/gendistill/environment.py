"""What a run's numbers depend on besides its config and seed: versions, thread count, CPU model, device.

Recorded in every run directory (``environment.json``, and ``summary.json``'s ``"environment"``) because the last
digits of a result change with the CPU model, the number of intra-op threads and the PyTorch build, even for the
same config and seed. A resume under a different environment is allowed but warned about, naming what differs.
"""

from __future__ import annotations

import platform
import subprocess
from pathlib import Path
from typing import Any

import torch

# the fields whose change can change the numbers (a resume under other values is warned about)
NUMERIC_KEYS = ("gendistill", "git_commit", "torch", "cuda", "threads", "cpu", "device")


def cpu_model() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def git_commit() -> str | None:
    """The commit of the gendistill checkout this code runs from (an editable install), else None."""
    here = Path(__file__).resolve().parent
    try:
        out = subprocess.run(["git", "-C", str(here), "rev-parse", "HEAD"], capture_output=True, text=True,
                             timeout=5, check=False)
    except (OSError, subprocess.SubprocessError):
        return None
    if out.returncode != 0:
        return None
    dirty = subprocess.run(["git", "-C", str(here), "status", "--porcelain", "--untracked-files=no", "--", "."],
                           capture_output=True, text=True, timeout=5, check=False).stdout.strip()
    return out.stdout.strip() + ("+dirty" if dirty else "")


def describe(device: torch.device | str | None = None) -> dict[str, Any]:
    from . import __version__

    dev = torch.device(device) if device is not None else torch.device("cpu")
    return {
        "gendistill": __version__,
        "git_commit": git_commit(),
        "python": platform.python_version(),
        "torch": torch.__version__,
        "cuda": torch.version.cuda,
        "threads": torch.get_num_threads(),
        "cpu": cpu_model(),
        "device": torch.cuda.get_device_name(dev) if dev.type == "cuda" else dev.type,
        "platform": platform.platform(),
    }


def differences(old: dict[str, Any], new: dict[str, Any]) -> list[str]:
    """``"threads: 2 -> 1"`` for every numeric field that differs."""
    return [f"{k}: {old.get(k)} -> {new.get(k)}" for k in NUMERIC_KEYS if old.get(k) != new.get(k)]
