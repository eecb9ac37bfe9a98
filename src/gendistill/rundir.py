"""The run directory: every file name in it, and the helpers that read and write them.

A run directory is a contract: reports, resume and other tools read it. Its layout, for one seed::

    <root>/
      config.yaml              the resolved config, as run
      summary.json             {"generations": [{"gen": 0, ...}, ...], "ensembles": [...]}
      gen<k>/model.safetensors metrics.json history.csv   (checkpoint.pt, snapshots/, teacher_cache.* while training)
      analysis/*.json          domain analyses (agreement matrix, CKA, reliability bins ...)
      report.html report.md plots/*.png

With several seeds, each seed's run lies in ``seed<s>/`` and the top-level ``summary.json`` aggregates them.
Every file is written atomically (:mod:`gendistill.io`). This module is the only place that spells these
names; it imports nothing of the package but :mod:`gendistill.io` and :mod:`gendistill.errors`.
"""

from __future__ import annotations

import contextlib
import csv
import errno
import io as _io
import json
import os
import re
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from .errors import GendistillError
from .io import atomic_write_text, read_json, write_json


class RunDirLocked(GendistillError):
    """Another live process holds the run directory's lock (its pid is written in the lock file)."""

    def __init__(self, root: Path, pid: str):
        super().__init__(f"run directory {root} is in use by another gendistill run (pid {pid or 'unknown'}); wait "
                         "for it to finish, or choose another --out")
        self.root, self.pid = root, pid

CONFIG = "config.yaml"
SUMMARY = "summary.json"
MODEL = "model.safetensors"
METRICS = "metrics.json"
HISTORY = "history.csv"
CHECKPOINT = "checkpoint.pt"
SNAPSHOTS = "snapshots"
TEACHER_CACHE = "teacher_cache"  # prefix of a generation's memory-mapped teacher outputs (removed when it ends)
ANALYSIS = "analysis"
PLOTS = "plots"
TENSORBOARD = "tensorboard"  # per generation, with train.tensorboard: TensorBoard event files of history.csv's columns
REPORT_MD = "report.md"
REPORT_HTML = "report.html"
LOCK = ".lock"  # held (flock) by the process running into the directory; the OS drops it when that process dies
ENVIRONMENT = "environment.json"  # torch version, threads, CPU model, device, gendistill version/commit

_GEN = re.compile(r"gen(\d+)")
_SEED = re.compile(r"seed(\d+)")


# ------------------------------------------------------------------------------------------ paths


def gen_dir(root: str | Path, gen: int) -> Path:
    return Path(root) / f"gen{gen}"


def seed_dir(root: str | Path, seed: int) -> Path:
    return Path(root) / f"seed{seed}"


def snapshot_path(gen_root: str | Path, epoch: int) -> Path:
    return Path(gen_root) / SNAPSHOTS / f"epoch{epoch}.safetensors"


def analysis_path(root: str | Path, name: str) -> Path:
    return Path(root) / ANALYSIS / f"{name}.json"


def teacher_cache_prefix(gen_root: str | Path) -> Path:
    return Path(gen_root) / TEACHER_CACHE


def _numbered(root: Path, pattern: re.Pattern) -> list[tuple[int, Path]]:
    if not root.is_dir():
        return []
    found = [(int(m.group(1)), d) for d in root.iterdir() if (m := pattern.fullmatch(d.name)) and d.is_dir()]
    return sorted(found)


def gen_dirs(root: str | Path) -> list[tuple[int, Path]]:
    """``(generation, folder)`` for each ``gen<k>/`` folder of one seed's run, by generation."""
    return _numbered(Path(root), _GEN)


def seed_dirs(root: str | Path) -> list[tuple[int, Path]]:
    """``(seed, folder)`` for each ``seed<s>/`` folder of a multi-seed run, by seed."""
    return _numbered(Path(root), _SEED)


def snapshot_files(gen_root: str | Path) -> dict[int, Path]:
    """``{epoch: file}`` of the trajectory snapshots a generation saved (``train.snapshot_epochs``)."""
    files = Path(gen_root, SNAPSHOTS).glob("epoch*.safetensors")
    return {int(f.stem.removeprefix("epoch")): f for f in sorted(files)}


# ------------------------------------------------------------------------------------------ state


def has_summary(root: str | Path) -> bool:
    """Whether ``root`` holds results a report can read: its own ``summary.json`` or its seeds'."""
    root = Path(root)
    return (root / SUMMARY).is_file() or any((d / SUMMARY).is_file() for _, d in seed_dirs(root))


_WORK = [f"gen*/{METRICS}", f"gen*/{CHECKPOINT}", f"gen*/{MODEL}", f"gen*/{SNAPSHOTS}/*", MODEL, SUMMARY]
_RUN_ENTRY = re.compile(rf"{re.escape(CONFIG)}|{re.escape(ENVIRONMENT)}|gen\d+|seed-?\d+|{ANALYSIS}|.*\.tmp|\.lock")


def holds_work(root: str | Path) -> bool:
    """Whether a run directory holds something worth protecting: a finished generation, a saved model,
    snapshot or epoch checkpoint, or a summary, at the top level or under ``seed<s>/``."""
    root = Path(root)
    return root.is_dir() and any(next(base.glob(p), None) is not None
                                 for base in [root, *root.glob("seed*")] for p in _WORK)


def is_failed_start(root: str | Path) -> bool:
    """A directory left by a start that failed before anything was trained: gendistill's ``config.yaml`` and
    nothing but (empty) run entries, holding no finished generation and no checkpoint."""
    root = Path(root)
    if not (root / CONFIG).is_file() or holds_work(root):
        return False
    return all(_RUN_ENTRY.fullmatch(c.name) and (c.is_file() or c.is_dir()) and not c.is_symlink()
               for c in root.iterdir())


def entries(root: str | Path) -> list[Path]:
    """What ``root`` holds, the lock file aside."""
    root = Path(root)
    return [c for c in root.iterdir() if c.name != LOCK] if root.is_dir() else []


def drop_unfinished_checkpoints(root: str | Path) -> list[Path]:
    """Remove the epoch checkpoints (and snapshots) of unfinished generations under ``root`` and its seed
    folders, so they restart; return the generation folders affected."""
    root = Path(root)
    dropped = []
    for base in [root, *(d for _, d in seed_dirs(root))]:
        for _, g in gen_dirs(base):
            if is_finished(g):
                continue
            hit = False
            for f in [g / CHECKPOINT, *g.glob(f"{SNAPSHOTS}/*")]:
                if f.is_file():
                    f.unlink()
                    hit = True
            if hit:
                dropped.append(g)
    return dropped


def is_finished(gen_root: str | Path) -> bool:
    """A generation is finished once its ``metrics.json`` is written (after its model)."""
    return (Path(gen_root) / METRICS).is_file()


# ------------------------------------------------------------------------------------------ JSON files


def read_summary(root: str | Path) -> dict[str, Any]:
    return read_json(Path(root) / SUMMARY)


def write_summary(root: str | Path, summary: dict[str, Any]) -> None:
    write_json(Path(root) / SUMMARY, summary)


def read_environment(root: str | Path) -> dict[str, Any] | None:
    """``environment.json`` (``{"started": {...}, "resumes": [...]}``), or None when absent or unreadable."""
    path = Path(root) / ENVIRONMENT
    try:
        found = read_json(path)
    except (OSError, ValueError):
        return None
    return found if isinstance(found, dict) else None


def read_metrics(gen_root: str | Path) -> dict[str, Any]:
    return read_json(Path(gen_root) / METRICS)


def write_metrics(gen_root: str | Path, record: dict[str, Any]) -> None:
    write_json(Path(gen_root) / METRICS, record)


def write_analysis(root: str | Path, name: str, obj: Any) -> None:
    write_json(analysis_path(root, name), obj)


def read_analysis(root: str | Path, name: str) -> Any | None:
    path = analysis_path(root, name)
    if not path.is_file():
        return None
    try:
        return read_json(path)
    except json.JSONDecodeError:
        return None


# ------------------------------------------------------------------------------------------ history.csv


def write_history(gen_root: str | Path, rows: list[dict[str, Any]]) -> None:
    """``history.csv``: one row per epoch, columns in order of first appearance (floats to 6 digits)."""
    keys: list[str] = []
    for r in rows:
        keys += [k for k in r if k not in keys]
    buf = _io.StringIO()
    w = csv.DictWriter(buf, fieldnames=keys)
    w.writeheader()
    for r in rows:
        w.writerow({k: (f"{v:.6g}" if isinstance(v, float) else v) for k, v in r.items()})
    atomic_write_text(Path(gen_root) / HISTORY, buf.getvalue())


def read_history(gen_root: str | Path) -> list[dict[str, float]]:
    """``history.csv`` of a generation as rows of floats (empty or non-numeric cells become NaN); ``[]`` when
    the file is absent."""
    path = Path(gen_root) / HISTORY
    if not path.is_file():
        return []

    def num(v: str | None) -> float:
        try:
            return float(v)
        except (TypeError, ValueError):
            return float("nan")

    with open(path, newline="", encoding="utf-8") as f:
        return [{k: num(v) for k, v in row.items() if k is not None} for row in csv.DictReader(f)]


# ------------------------------------------------------------------------------------------ lock

_HELD: dict[Path, int] = {}  # run directories this process has locked -> the lock file's descriptor


@contextlib.contextmanager
def locked(root: str | Path) -> Iterator[Path]:
    """Hold an exclusive ``flock`` on ``root/.lock`` (creating ``root``) for the ``with`` block.

    A second process asking for the same directory gets :class:`RunDirLocked` at once (no waiting). The lock
    belongs to the process, not to the file: when its holder dies (``kill -9`` included) the OS releases it, so
    a stale ``.lock`` file left behind is simply taken over. Re-entrant within one process."""
    root = Path(root)
    root.mkdir(parents=True, exist_ok=True)
    key = root.resolve()
    if key in _HELD:
        yield root
        return
    try:
        import fcntl
    except ImportError:  # no flock (Windows): run unlocked
        yield root
        return
    fd = os.open(root / LOCK, os.O_RDWR | os.O_CREAT, 0o644)
    try:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError as e:
            if e.errno not in (errno.EAGAIN, errno.EACCES, errno.EWOULDBLOCK):
                raise
            pid = os.pread(fd, 32, 0).decode("ascii", "replace").strip()
            raise RunDirLocked(root, pid) from None
        os.ftruncate(fd, 0)
        os.pwrite(fd, f"{os.getpid()}\n".encode(), 0)
    except BaseException:
        os.close(fd)
        raise
    _HELD[key] = fd
    try:
        yield root
    finally:
        del _HELD[key]
        os.close(fd)  # releases the flock; the file stays (harmless: a lock is the flock, not the file)
