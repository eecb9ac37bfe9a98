"""Run a validated config: one lineage per seed into the run directory (:mod:`gendistill.rundir`)."""

from __future__ import annotations

import contextlib
import os
import shutil
from pathlib import Path
from typing import Any

import yaml

from . import rundir
from .config import RunConfig, validate
from .data import load_dataset
from .engine import distributed
from .engine.progress import log
from .errors import ConfigError, GendistillError, NonFiniteLossError
from .io import atomic_write_text
from .lineage import Lineage, LineageResult


def run_dir_for(config: RunConfig, out: str | Path | None) -> Path:
    return Path(out) if out is not None else Path(config.out) / config.name


# keys that may change between a crash and a resume without making it another run
_RESUMABLE = frozenset({"out", "jobs", "train.device", "train.checkpoint_every"})


def _flat(cfg: Any, prefix: str = "") -> dict[str, Any]:
    if not isinstance(cfg, dict):
        return {prefix: cfg}
    out: dict[str, Any] = {}
    for k, v in cfg.items():
        out.update(_flat(v, f"{prefix}.{k}" if prefix else str(k)))
    return out


def changed_keys(old: dict[str, Any], new: dict[str, Any]) -> list[str]:
    """Dotted keys whose values differ between two configs (``train.lr`` ...)."""
    a, b = _flat(old), _flat(new)
    return sorted(k for k in set(a) | set(b) if k not in _RESUMABLE and a.get(k) != b.get(k))


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


def prepare_run_dir(config: RunConfig, root: Path, resume: bool, allow_change: tuple[str, ...] = ()) -> None:
    saved = root / rundir.CONFIG
    if rundir.is_failed_start(root):  # nothing to protect or to resume: start over in it
        log(f"note: {root} holds no finished generation or checkpoint (an earlier start failed); starting over in it",
            "lines")
        distributed.barrier()  # every process has looked at the directory before rank 0 clears it
        if distributed.is_main():
            for child in rundir.entries(root):
                shutil.rmtree(child) if child.is_dir() else child.unlink()
        distributed.barrier()
    elif resume:
        if saved.exists():
            old, new = _saved_config(saved), config.model_dump(mode="json")
            changed = changed_keys(old, new)
            refused = [k for k in changed if not any(k == a or k.startswith(a + ".") for a in allow_change)]
            if refused:
                raise ConfigError(
                    f"{root} was started with a different config (changed: {', '.join(refused)}); resume it with its "
                    f"own config ({saved}), or allow the change with --allow-change {','.join(refused)} (finished "
                    "generations are kept, unfinished ones restart with the new settings), or start a new run "
                    "with another --out"
                )
            if changed and distributed.is_main():
                dropped = rundir.drop_unfinished_checkpoints(root)
                log(f"note: resuming with changed {', '.join(changed)}: finished generations are kept"
                    + (f"; {len(dropped)} unfinished generation(s) restart" if dropped else ""), "lines")
    elif rundir.entries(root):
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
               progress: str = "auto", allow_change: tuple[str, ...] | list[str] = ()
               ) -> tuple[Path, dict[str, Any], list[LineageResult]]:
    """Run every seed of ``config`` into ``out`` (default ``config.out/config.name``); return the run
    directory, the top-level summary and the per-seed results. With ``resume``, ``allow_change`` lists the
    dotted config keys (``train.lr``) that may differ from the saved config: finished generations are kept and
    unfinished ones restart with the new values."""
    from .engine.evaluate import select_device

    distributed.init(select_device(config.train.device).type)  # no-op unless started by torchrun
    root = run_dir_for(config, out)
    if root.exists() and not root.is_dir():
        raise ConfigError(f"the run directory {root} is an existing file; choose another --out")
    allow_change = tuple(a.strip() for item in allow_change for a in item.split(",") if a.strip())
    if allow_change and not resume:
        raise ConfigError("--allow-change only applies with --resume")
    if resume and not (root / rundir.CONFIG).exists() and not rundir.holds_work(root):
        raise ConfigError(f"--resume: {root} holds no run to resume (check --out / the config's name); drop "
                          "--resume to start a new run there")
    # data first: a missing or malformed dataset must not leave a half-started run directory behind
    data = load_dataset(config.data.name, val_fraction=config.data.val_fraction, **config.data.options)
    # and every generation's model must take the data (one dummy batch) before the run directory is made
    lineage_from_config(config, config.seeds[0], progress).check(data, gen0_teacher(config, data))
    with rundir.locked(root) if distributed.is_main() else contextlib.nullcontext(root):
        prepare_run_dir(config, root, resume, allow_change)
        multi = len(config.seeds) > 1
        jobs = job_count(config)
        if jobs > 1:
            results = _fit_parallel(config, root, resume, jobs, progress)
        else:
            results = [_fit_seed(config, data, seed, rundir.seed_dir(root, seed) if multi else root, resume, progress)
                       for seed in config.seeds]
        summaries = [{"seed": seed, **r.to_dict(), "environment": r.environment}  # as written in each seed's folder
                     for seed, r in zip(config.seeds, results)]
        top = _aggregate(summaries) if multi else summaries[0]
        rundir.write_summary(root, top)
    return root, top, results


def gen0_teacher(config: RunConfig, data: Any) -> Any:
    """Generation 0 given from outside: the config's ``gen0_checkpoint``, else the one a dataset brings (the rl
    domain's trained or loaded teacher), else None (trained from labels)."""
    return config.generations.gen0_checkpoint or getattr(data, "teacher", None)


def _aggregate(summaries: list[dict[str, Any]]) -> dict[str, Any]:
    from .analysis.stats import aggregate_summaries

    return aggregate_summaries(summaries)


def _fit_seed(config: RunConfig, data: Any, seed: int, seed_dir: Path, resume: bool, progress: str) -> LineageResult:
    lineage = lineage_from_config(config, seed, progress)
    try:
        return lineage.fit(data, teacher=gen0_teacher(config, data), out=seed_dir, resume=resume)
    except NonFiniteLossError as e:
        finished = [g for g, root in rundir.gen_dirs(seed_dir) if rundir.is_finished(root)]
        kept = (f"Generations {', '.join(map(str, finished))} are finished and kept" if finished
                else "No generation had finished")
        raise NonFiniteLossError(
            f"{e}. {kept}: after changing the config, continue with --resume "
            "--allow-change <the keys you changed, e.g. train.lr> (the diverged generation restarts)",
            e.epoch, e.part) from None


# ------------------------------------------------------------------------------------------ parallel seeds


def job_count(config: RunConfig) -> int:
    """How many seeds run at once: ``config.jobs``, else (CPU) as many as there are seeds and cores, each with
    one intra-op thread (or ``train.threads``); on a GPU, under torchrun, or with one seed: 1."""
    from .engine.evaluate import select_device

    if len(config.seeds) == 1 or distributed.world_size() > 1:
        return 1
    if config.jobs is not None:
        return min(config.jobs, len(config.seeds))
    if select_device(config.train.device).type != "cpu":
        return 1
    threads = config.train.threads or 1
    return max(1, min(len(config.seeds), (os.cpu_count() or 1) // threads))


def _seed_worker(raw: dict[str, Any], seed: int, seed_dir: str, resume: bool) -> dict[str, Any]:
    """One seed's lineage in a worker process; returns its summary (errors as ``{"error": message}``, since
    gendistill's errors need not survive pickling)."""
    from .errors import GendistillError

    try:
        config = validate(raw)
        data = load_dataset(config.data.name, val_fraction=config.data.val_fraction, **config.data.options)
        result = _fit_seed(config, data, seed, Path(seed_dir), resume, "off")
        return {"generations": result.generations, "ensembles": result.ensembles, "environment": result.environment}
    except GendistillError as e:
        return {"error": str(e)}


def _fit_parallel(config: RunConfig, root: Path, resume: bool, jobs: int, progress: str) -> list[LineageResult]:
    """Every seed in a pool of ``jobs`` spawned processes, each with ``train.threads`` (default 1) intra-op
    threads; the same run directories as a sequential run, and the same numbers as a sequential run with the
    same thread count. The results carry figures, not models (read those from the seed folders)."""
    import concurrent.futures as cf
    import multiprocessing as mp

    raw = config.model_dump(mode="json")
    raw["train"]["threads"] = config.train.threads or 1
    log(f"{len(config.seeds)} seeds in {jobs} worker processes, {raw['train']['threads']} thread(s) each", progress)
    out: dict[int, LineageResult] = {}
    with cf.ProcessPoolExecutor(max_workers=jobs, mp_context=mp.get_context("spawn")) as pool:
        futures = {pool.submit(_seed_worker, raw, s, str(rundir.seed_dir(root, s)), resume): s for s in config.seeds}
        try:
            for done in cf.as_completed(futures):
                seed, got = futures[done], done.result()
                if "error" in got:
                    raise GendistillError(f"seed {seed}: {got['error']}")
                out[seed] = LineageResult(got["generations"], got["ensembles"], environment=got["environment"])
                log(f"seed {seed} finished ({len(out)}/{len(config.seeds)})", progress)
        except BaseException:
            for f in futures:
                f.cancel()
            raise
    return [out[s] for s in config.seeds]
