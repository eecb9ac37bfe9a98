"""Run a validated config: one lineage per seed into the run directory (:mod:`gendistill.rundir`)."""

from __future__ import annotations

import shutil
from pathlib import Path
from typing import Any

import yaml

from . import rundir
from .config import RunConfig, validate
from .data import load_dataset
from .engine import distributed
from .engine.progress import log
from .errors import ConfigError
from .io import atomic_write_text
from .lineage import Lineage, LineageResult


def run_dir_for(config: RunConfig, out: str | Path | None) -> Path:
    return Path(out) if out is not None else Path(config.out) / config.name


def _comparable(cfg: dict[str, Any]) -> dict[str, Any]:
    cfg = dict(cfg)
    cfg.pop("out", None)
    train = dict(cfg.get("train", {}))
    for k in ("device", "checkpoint_every"):  # may change between a crash and a resume
        train.pop(k, None)
    cfg["train"] = train
    return cfg


def _saved_config(saved: Path) -> dict[str, Any]:
    """The config a run directory was started with, validated through :class:`RunConfig` so keys added (with
    defaults) since it was written compare equal to their defaults."""
    try:
        raw = yaml.safe_load(saved.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, yaml.YAMLError) as e:
        raise ConfigError(f"{saved} cannot be read ({' '.join(str(e).split())[:200]}); move the run directory "
                          "aside or start a new run with another --out") from None
    try:
        return validate(raw if isinstance(raw, dict) else {}).model_dump(mode="json")
    except ConfigError:  # written by a version with other keys or values: compare it as written
        return raw if isinstance(raw, dict) else {}


def prepare_run_dir(config: RunConfig, root: Path, resume: bool) -> None:
    saved = root / rundir.CONFIG
    if rundir.is_failed_start(root):  # nothing to protect or to resume: start over in it
        log(f"note: {root} holds no finished generation or checkpoint (an earlier start failed); starting over in it",
            "lines")
        distributed.barrier()  # every process has looked at the directory before rank 0 clears it
        if distributed.is_main():
            for child in root.iterdir():
                shutil.rmtree(child) if child.is_dir() else child.unlink()
        distributed.barrier()
    elif resume:
        if saved.exists():
            old = _saved_config(saved)
            if _comparable(old) != _comparable(config.model_dump(mode="json")):
                raise ConfigError(
                    f"{root} was started with a different config; resume it with its own config "
                    f"({saved}) or start a new run with another --out"
                )
    elif root.exists() and any(root.iterdir()):
        raise ConfigError(
            f"run directory {root} already holds a run; pass --resume to continue it, or choose another "
            "--out / name (nothing was overwritten)"
        )
    distributed.barrier()  # every process has checked the directory before rank 0 writes into it
    root.mkdir(parents=True, exist_ok=True)
    atomic_write_text(saved, config.to_yaml())


def lineage_from_config(config: RunConfig, seed: int, progress: str = "auto") -> Lineage:
    g = config.generations
    return Lineage(
        student=config.model.spec(),
        generations=g.count,
        objective=config.build_objective,
        teacher=g.teacher,
        train=config.train,
        archs={k: v.spec() for k, v in g.archs.items()},
        gen0_objective=config.build_gen0_objective,
        seed=seed,
        ensembles=g.ensembles,
        progress=progress,
        scheme=config.scheme.spec(),
    )


def run_config(config: RunConfig, out: str | Path | None = None, resume: bool = False,
               progress: str = "auto") -> tuple[Path, dict[str, Any], list[LineageResult]]:
    """Run every seed of ``config`` into ``out`` (default ``config.out/config.name``); return the run
    directory, the top-level summary and the per-seed results."""
    from .engine.evaluate import select_device

    distributed.init(select_device(config.train.device).type)  # no-op unless started by torchrun
    root = run_dir_for(config, out)
    # data first: a missing or malformed dataset must not leave a half-started run directory behind
    data = load_dataset(config.data.name, val_fraction=config.data.val_fraction, **config.data.options)
    # and every generation's model must take the data (one dummy batch) before the run directory is made
    # a bundle may bring its own generation 0 (the rl domain's trained or loaded teacher)
    teacher = config.generations.gen0_checkpoint or getattr(data, "teacher", None)
    lineage_from_config(config, config.seeds[0], progress).check(data, teacher)
    prepare_run_dir(config, root, resume)
    results = []
    summaries = []
    multi = len(config.seeds) > 1
    for seed in config.seeds:
        seed_dir = rundir.seed_dir(root, seed) if multi else root
        lineage = lineage_from_config(config, seed, progress)
        result = lineage.fit(data, teacher=teacher, out=seed_dir, resume=resume)
        summary = {"seed": seed, **result.to_dict()}
        if multi:
            rundir.write_summary(seed_dir, summary)
        results.append(result)
        summaries.append(summary)
    if multi:
        from .analysis.stats import aggregate_summaries

        top = aggregate_summaries(summaries)
    else:
        top = summaries[0]
    rundir.write_summary(root, top)
    return root, top, results
