"""Reading a run directory for the report: the summary (aggregated over seed folders when needed), training
histories and the optional analysis files. Everything goes through :mod:`gendistill.rundir`'s names."""

from __future__ import annotations

import json
import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from .. import rundir
from ..errors import GendistillError
from .plots import pool_bins
from .stats import aggregate_summaries, is_aggregated

SUMMARY, ANALYSIS = rundir.SUMMARY, rundir.ANALYSIS


@dataclass
class RunData:
    """What the report reads from one run directory."""

    root: Path
    summary: dict[str, Any]
    seed_dirs: list[tuple[int, Path]] = field(default_factory=list)

    @property
    def aggregated(self) -> bool:
        return is_aggregated(self.summary)

    @property
    def data_dirs(self) -> list[Path]:
        """Folders laid out as one seed's run (the seed folders, or the root for a single seed)."""
        return [d for _, d in self.seed_dirs] or [self.root]


seed_dirs = rundir.seed_dirs


def _read_json(path: Path) -> Any:
    try:
        with open(path, encoding="utf-8") as f:
            return json.load(f)
    except json.JSONDecodeError as e:
        raise GendistillError(f"{path} is not valid JSON ({e}); re-run or remove it") from None


def load_run(run_dir: str | Path) -> RunData:
    """Read the summary of ``run_dir``: its ``summary.json``, or the aggregate of its seed folders'."""
    root = Path(run_dir)
    if not root.is_dir():
        raise GendistillError(f"run directory {root} does not exist")
    seeds = seed_dirs(root)
    top = root / SUMMARY
    summary = _read_json(top) if top.exists() else None
    if summary is None or (seeds and not is_aggregated(summary)):
        per_seed = [(s, d / SUMMARY) for s, d in seeds if (d / SUMMARY).exists()]
        if per_seed:
            summary = aggregate_summaries(
                [_read_json(p) for _, p in per_seed], seeds=[s for s, _ in per_seed]
            )
            seeds = [(s, d) for s, d in seeds if (d / SUMMARY).exists()]
    if summary is None:
        raise GendistillError(
            f"{root} has no {SUMMARY} (nor seed*/{SUMMARY}); is it a gendistill run directory? "
            "Reports are written for finished runs."
        )
    return RunData(root, summary, seeds)


def load_summary(run_dir: str | Path) -> dict[str, Any]:
    return load_run(run_dir).summary


def _analysis_files(run: RunData, name: str) -> list[Any]:
    top = run.root / ANALYSIS / name
    if top.exists():
        return [_read_json(top)]
    return [_read_json(d / ANALYSIS / name) for d in run.data_dirs if (d / ANALYSIS / name).exists()]


def load_matrix(run: RunData, name: str) -> dict[str, Any] | None:
    """``{"gens", "<split>": KxK ...}`` from ``analysis/<name>``, averaged elementwise over the seed
    folders that have the same ``gens`` as the first; ``"n_seeds"`` says over how many."""
    found = _analysis_files(run, name)
    if not found:
        return None
    gens = found[0].get("gens")
    same = [f for f in found if f.get("gens") == gens]
    out: dict[str, Any] = {"gens": gens, "n_seeds": len(same)}
    for split, value in found[0].items():
        if split == "gens" or not isinstance(value, list):
            continue
        mats = [f[split] for f in same if isinstance(f.get(split), list)]
        k = len(value)
        out[split] = [[_nanmean([m[i][j] for m in mats]) for j in range(len(value[i]))] for i in range(k)]
    return out


def _nanmean(values: list[Any]) -> float:
    vals = [float(v) for v in values if v is not None and math.isfinite(float(v))]
    return sum(vals) / len(vals) if vals else math.nan


def load_reliability(run: RunData) -> tuple[dict[str, dict[str, Any]] | None, int]:
    """Reliability bins per model from ``analysis/reliability.json`` pooled over seed folders, and the
    number of files pooled."""
    found = _analysis_files(run, "reliability.json")
    if not found:
        return None, 0
    out = {}
    for name in found[0]:
        many = [f[name] for f in found if name in f]
        try:
            out[name] = pool_bins(many)
        except (KeyError, ValueError):
            out[name] = found[0][name]
    return out, len(found)


def load_histories(run: RunData, gen: int) -> list[list[dict[str, float]]]:
    rows = [rundir.read_history(rundir.gen_dir(d, gen)) for d in run.data_dirs]
    return [r for r in rows if r]
