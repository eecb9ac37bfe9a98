"""The multi-generation engine (Born-Again Networks, Furlanello et al. 2018, arXiv:1805.04770).

Generation 0 is trained from labels (or loaded). Generation k >= 1 is trained *from scratch* with knowledge
from a teacher chosen by a rule:

* ``previous``: generation k-1 (Born-Again Networks);
* ``ensemble``: the mean of the probabilities of generations 0..k-1;
* ``original``: generation 0 every time (the control).

Each generation may have its own architecture, so teacher -> assistant -> student chains (TAKD, Mirzadeh et
al. 2020) are a matter of ``archs``. Every teacher is frozen (eval mode, no gradients) and is never the model
being trained.
"""

from __future__ import annotations

import copy
import shutil
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from torch import Tensor, nn

from .analysis import metrics as M
from .analysis.plots import reliability_bins
from .analysis.similarity import cka_matrix, penultimate_features
from .config import TrainConfig, validate_train
from .data import DatasetBundle
from .data.augment import AugmentPlan, build_augmentations
from .engine import distributed
from .engine.checkpoint import load_model, save_model
from .engine.evaluate import predict_logits
from .engine.progress import log
from .engine.trainer import CHECKPOINT, FidelityProbe, Trainer, load_snapshots, seed_everything
from .errors import CheckpointError, ConfigError
from .io import read_json, write_json
from .knowledge import KnowledgeTerm, Objective, build_objective
from .knowledge.taps import resolve_module
from .models import ModelSpec, build_model, check_fits
from .registry import SCHEMES
from .schemes import DistillTask
from .teachers import CachedTeacher, EnsembleTeacher, FrozenTeacher, freeze

TEACHER_RULES = ("previous", "ensemble", "original")
MODEL_FILE, METRICS_FILE = "model.safetensors", "metrics.json"
ObjectiveSpec = Objective | str | list | Callable[[], Objective]


def _objective_factory(spec: ObjectiveSpec, temperature: float) -> Callable[[], Objective]:
    if isinstance(spec, Objective):
        return lambda: copy.deepcopy(spec)
    if isinstance(spec, KnowledgeTerm):  # one term, weight 1: gd.Lineage(objective=gd.knowledge.KD(4))
        return lambda: Objective([(copy.deepcopy(spec), 1.0)])
    if isinstance(spec, list) and spec and all(isinstance(t, (KnowledgeTerm, tuple)) for t in spec):
        pairs = [(t, 1.0) if isinstance(t, KnowledgeTerm) else t for t in spec]  # [KD(4), (CrossEntropy(), 0.5)]
        return lambda: Objective([(copy.deepcopy(t), float(w)) for t, w in pairs])
    if isinstance(spec, (str, list)):
        return lambda: build_objective(spec, **({"temperature": temperature} if isinstance(spec, str) else {}))
    if callable(spec):
        return spec
    raise ConfigError(f"objective must be an Objective, a preset name or a list of terms, got {type(spec).__name__}")


def gen_seed(seed: int, gen: int) -> int:
    """Each generation of each seed gets its own init and data order."""
    return seed * 1000 + gen


def teacher_label(rule: str, gen: int, scheme_teachers: list[int] | None = None) -> str | None:
    """How a generation's teacher is named in tables: by the lineage's rule, or by the generations a scheme
    says it learns from (``[]``: from labels)."""
    if gen == 0:
        return None
    if scheme_teachers is not None:
        if not scheme_teachers:
            return "labels"
        if len(scheme_teachers) == 1:
            return f"gen{scheme_teachers[0]}"
        return "ensemble(" + ",".join(f"gen{g}" for g in scheme_teachers) + ")"
    if rule == "previous":
        return f"gen{gen - 1}"
    if rule == "original":
        return "gen0"
    return "gen0" if gen == 1 else f"ensemble(gen0..gen{gen - 1})"


@dataclass
class LineageResult:
    """Per-generation and per-ensemble figures, plus the trained models (generation order)."""

    generations: list[dict[str, Any]]
    ensembles: list[dict[str, Any]]
    models: list[nn.Module] = field(repr=False, default_factory=list)
    agreement_matrix: list[list[float]] = field(repr=False, default_factory=list)

    def to_dict(self) -> dict[str, Any]:
        return {"generations": self.generations, "ensembles": self.ensembles}

    def table(self) -> str:
        from .analysis.tables import lineage_table

        return lineage_table(self.to_dict())


class Lineage:
    """Train generation 0 and ``generations`` born-again generations.

    Args:
        student: architecture of every generation: a registry name, ``{"name": ..., **options}``, an
            ``nn.Module`` (copied and re-initialised per generation) or a zero-argument factory.
        generations: number of generations after generation 0.
        objective: knowledge for generations >= 1: an :class:`Objective`, a preset (``"ban"``, ``"ban+l"``,
            ``"hinton"``), a list of term dicts, or a factory. A fresh copy is made per generation.
        teacher: the teacher rule, one of ``previous``, ``ensemble``, ``original``.
        train: :class:`TrainConfig` (or a dict of its fields) shared by every generation.
        archs: per-generation architecture overrides, e.g. ``{1: "mlp"}`` for an assistant.
        gen0_objective: objective of generation 0 when it is trained here (labels only).
        temperature: temperature used when ``objective`` is a preset name.
        seed: base seed; generation k uses ``seed * 1000 + k``.
        ensembles: evaluate ensembles of generations 1..k and 0..k.
        progress: "auto" | "bar" | "lines" | "off".
        scheme: how generations >= 1 are trained: a registered scheme name or ``{"name": ..., **options}``
            (``gendistill list schemes``); ``offline`` (a frozen teacher) by default.
    """

    def __init__(
        self,
        student: ModelSpec = "cnn1d",
        generations: int = 3,
        objective: ObjectiveSpec = "ban+l",
        teacher: str = "previous",
        train: TrainConfig | dict[str, Any] | None = None,
        archs: dict[int, ModelSpec] | None = None,
        gen0_objective: ObjectiveSpec = "ce",
        temperature: float = 4.0,
        seed: int = 0,
        ensembles: bool = True,
        progress: str = "auto",
        scheme: str | dict[str, Any] = "offline",
    ):
        if generations < 0:
            raise ConfigError(f"generations must be >= 0, got {generations}")
        if teacher not in TEACHER_RULES:
            raise ConfigError(f"teacher rule {teacher!r} is unknown; allowed: {', '.join(TEACHER_RULES)}")
        self.student = student
        self.count = generations
        self.objective = _objective_factory(objective, temperature)
        self.gen0_objective = _objective_factory(gen0_objective, temperature)
        for what, factory in (("objective", self.objective), ("gen0_objective", self.gen0_objective)):
            built = factory()  # an unknown preset or a bad term fails here, before any training
            if not isinstance(built, Objective):
                raise ConfigError(f"{what} factory returned {type(built).__name__}, expected an Objective")
        self.rule = teacher
        self.train = validate_train(train)
        self.archs = dict(archs or {})
        self.seed = seed
        self.ensembles = ensembles
        self.progress = progress
        spec = {"name": scheme} if isinstance(scheme, str) else dict(scheme)
        self.scheme_name = spec.pop("name", "offline")
        self.scheme_options = spec
        plan = SCHEMES.get(self.scheme_name).meta.get("archs")  # unknown names fail here, before any training
        if plan is not None:  # a lineage preset (TA chains) picks per-generation architectures; archs given win
            self.archs = {**plan(student, generations, **self.scheme_options), **self.archs}
        check = SCHEMES.get(self.scheme_name).meta.get("check")
        if check is not None:  # scheme options that can be checked before generation 0 trains
            check(self.train, generations, **self.scheme_options)

    def check(self, data: DatasetBundle, teacher: Any = None) -> None:
        """Before any training: every generation's architecture builds for ``data`` and takes one dummy batch
        (CPU, no grad), and the layers the objective taps exist. Raises one-line :class:`ConfigError` s."""
        objective = self.objective()
        first = 1 if isinstance(teacher, nn.Module) else 0  # a given teacher module is generation 0
        built: dict[str, nn.Module] = {}
        models: dict[int, nn.Module] = {}
        for gen in range(first, self.count + 1):
            spec = self.arch(gen)
            key = repr(spec) if isinstance(spec, (str, dict)) else None
            if key is None or key not in built:
                where = f"generations.archs.{gen}" if gen in self.archs else "model"
                model = check_fits(spec, data.name, data.num_classes, data.input_shape, where=where)
                if key is not None:
                    built[key] = model
            models[gen] = built[key] if key is not None else model
        for gen in range(1, self.count + 1):
            for layer in objective.student_layers:
                resolve_module(models[gen], layer, role=f"generation {gen}'s student ({self._arch_name(gen)})")
            # the rule's teacher is always built with the objective's teacher layers (see _train_generation)
            for t in self._rule_teachers(gen):
                if t in models:
                    for layer in objective.teacher_layers:
                        resolve_module(models[t], layer, role=f"generation {gen}'s teacher gen{t} ({self._arch_name(t)})")

    # ------------------------------------------------------------------------------------------ helpers
    def arch(self, gen: int) -> ModelSpec:
        return self.archs.get(gen, self.student)

    def _arch_name(self, gen: int) -> str:
        spec = self.arch(gen)
        if isinstance(spec, str):
            return spec
        if isinstance(spec, dict):
            opts = ",".join(f"{k}={v}" for k, v in spec.items() if k != "name")
            return f"{spec['name']}({opts})" if opts else spec["name"]
        if isinstance(spec, nn.Module):
            return type(spec).__name__
        return getattr(spec, "__name__", type(spec).__name__)

    def _new_model(self, gen: int, data: DatasetBundle) -> nn.Module:
        seed_everything(gen_seed(self.seed, gen))
        return build_model(self.arch(gen), data.num_classes, data.input_shape)

    def _rule_teachers(self, gen: int) -> list[int]:
        """The generations the ``generations.teacher`` rule makes generation ``gen``'s teacher (several: the
        mean of their probabilities); none for generation 0."""
        if gen == 0:
            return []
        if self.rule == "previous":
            return [gen - 1]
        if self.rule == "original":
            return [0]
        return list(range(gen))

    def _teacher_for(self, gen: int, models: list[nn.Module], layers: tuple[str, ...]):
        chosen = self._rule_teachers(gen)
        if len(chosen) == 1:
            return FrozenTeacher(models[chosen[0]], layers)
        return EnsembleTeacher([models[g] for g in chosen], layers)

    # ------------------------------------------------------------------------------------------ training
    def fit(
        self,
        data: DatasetBundle,
        teacher: nn.Module | str | Path | None = None,
        out: str | Path | None = None,
        resume: bool = False,
    ) -> LineageResult:
        """Run the lineage on ``data``. ``teacher`` (a module or a safetensors path) becomes generation 0
        instead of training one. With ``out``, every generation is written to ``out/gen<k>/`` and, with
        ``resume``, finished generations are read back instead of retrained."""
        self.check(data, teacher)  # a model that does not fit the data fails before anything is trained or written
        out = Path(out) if out is not None else None
        models: list[nn.Module] = []
        records: list[dict[str, Any]] = []
        self._test_logits: list[Tensor] = []  # every model's outputs, computed once when it is finished
        self._train_logits: list[Tensor] = []
        self._trajectories: dict[int, dict[int, dict[str, Tensor]]] = {}  # train.snapshot_epochs per generation
        for gen in range(self.count + 1):
            gen_dir = out / f"gen{gen}" if out is not None else None
            t0 = time.perf_counter()
            self._teacher_path = None
            given_module = gen == 0 and isinstance(teacher, nn.Module)  # its own architecture, not the student's
            if gen_dir is not None and resume and (gen_dir / METRICS_FILE).exists():
                model = self._given_teacher(teacher, data) if given_module else self._new_model(gen, data)
                load_model(model, gen_dir / MODEL_FILE, role=f"generation {gen}")
                record = read_json(gen_dir / METRICS_FILE)
                record["resumed"] = True
                if gen > 0:  # the label follows the config (read back, it could be a label of an older version)
                    record["teacher"] = self._teacher_label(gen)
                models.append(freeze(model))
                self._trajectories[gen] = load_snapshots(gen_dir)
                self._record_outputs(model, data)
                records.append(record)
                log(f"[gen{gen}] finished earlier: read from {gen_dir / MODEL_FILE}", self.progress)
                continue
            if gen == 0 and teacher is not None:
                model, history = self._given_teacher(teacher, data), []
            else:
                model, history = self._train_generation(gen, data, models, gen_dir, resume)
            models.append(freeze(model))
            self._record_outputs(model, data)
            arch_name = type(model).__name__ if given_module else self._arch_name(gen)
            record = {"gen": gen, "arch": arch_name, "params": sum(p.numel() for p in model.parameters()),
                      "teacher": ("given" if gen == 0 and teacher is not None
                                  else self._teacher_label(gen)),
                      "epochs": len(history), "seconds": round(time.perf_counter() - t0, 3),
                      "teacher_outputs": self._teacher_path, "processes": distributed.world_size()}
            if gen_dir is not None:
                save_model(model, gen_dir / MODEL_FILE, {"gen": gen, "arch": record["arch"], "num_classes": data.num_classes,
                                                         "model_spec": None if given_module else
                                                         (spec if isinstance(spec := self.arch(gen), (str, dict)) else None)})
            records.append(record)
            if gen_dir is not None:
                write_json(gen_dir / METRICS_FILE, {**record, **self._gen_metrics(gen, data)})
                if distributed.is_main():
                    (gen_dir / CHECKPOINT).unlink(missing_ok=True)
                    for f in gen_dir.glob("teacher_cache.*"):  # a finished generation no longer needs its cache
                        f.unlink()
            distributed.barrier()  # every process sees the finished generation on disk
        return self._evaluate(models, records, data, out)

    def _given_teacher(self, teacher: nn.Module | str | Path, data: DatasetBundle) -> nn.Module:
        if isinstance(teacher, (str, Path)):
            model = self._new_model(0, data)
            return load_model(model, teacher, role="teacher")
        if not isinstance(teacher, nn.Module):
            raise ConfigError(f"teacher must be an nn.Module or a safetensors path, got {type(teacher).__name__}")
        logits = predict_logits(teacher, data.test.x[:2], device=next(teacher.parameters()).device)
        if logits.ndim != 2 or logits.shape[1] != data.num_classes:
            raise ConfigError(
                f"the teacher outputs shape {tuple(logits.shape[1:])} per sample but {data.name} has "
                f"{data.num_classes} classes; give a teacher trained on this dataset"
            )
        return teacher

    def _record_outputs(self, model: nn.Module, data: DatasetBundle) -> None:
        self._test_logits.append(self._logits(model, data.test.x))
        self._train_logits.append(self._logits(model, data.train.x))

    def _cacheable(self) -> bool:
        return self.train.teacher_cache != "off" and SCHEMES.get(self.scheme_name).meta.get("cacheable", self.scheme_name == "offline")

    def _augment_plan(self, gen: int, data: DatasetBundle) -> AugmentPlan | None:
        if not self.train.augment:
            return None
        views = self.train.augment_views if gen > 0 and self._cacheable() else 0
        return AugmentPlan(build_augmentations(self.train.augment), data.train.x, views=views, seed=gen_seed(self.seed, gen))

    def _maybe_cache(self, gen: int, teacher, layers: tuple[str, ...], gen_dir: Path | None, plan: AugmentPlan | None):
        """Replace a live teacher by its outputs over the training set when that is exact (see CachedTeacher)."""
        if not self._cacheable():
            reason = "train.teacher_cache=off" if self.train.teacher_cache == "off" else f"scheme {self.scheme_name} feeds the teacher its own inputs"
            if plan is not None:
                reason += "; fresh random augmentation every step"
            return teacher, f"live teacher ({reason})"
        dtype = torch.float16 if self.train.cache_dtype == "float16" else torch.float32
        if plan is not None:
            cached = CachedTeacher.build_views(teacher, plan, dtype=dtype)
        elif not layers:
            t = self._rule_teacher_logits(gen, self._train_logits)
            cached = CachedTeacher.from_logits(teacher, t, dtype)
        else:
            path = str(gen_dir / "teacher_cache") if gen_dir is not None else None
            cached = CachedTeacher.build(teacher, self._data_train_x, dtype=dtype, path=path, mmap_mb=self.train.cache_mmap_mb)
        return cached, cached.describe()

    def _train_generation(self, gen, data, models, gen_dir, resume) -> tuple[nn.Module, list]:
        self._data_train_x = data.train.x
        self._teacher_path = None
        plan = self._augment_plan(gen, data)
        student = self._new_model(gen, data)
        objective = self.gen0_objective() if gen == 0 else self.objective()
        teacher = None
        probe = None
        if gen > 0:
            teacher = self._teacher_for(gen, models, tuple(objective.teacher_layers))
            if any(m is student for m in teacher.models):
                raise RuntimeError("internal error: a generation's teacher is its own student")
            n = self.train.fidelity_samples
            if n:
                held = data.val if data.val is not None else data.test
                xs = held.x[:n]
                chosen = self._scheme_teachers(gen)
                if chosen is None:
                    dev = next(teacher.models[0].parameters()).device
                    probe = FidelityProbe(xs, teacher(xs.to(dev)).logits.float().cpu())
                elif chosen:  # the teachers the scheme names, as the final fidelity figures measure them
                    probe = FidelityProbe(xs, M.ensemble_logits([self._logits(models[g], xs) for g in chosen]))
            teacher, self._teacher_path = self._maybe_cache(gen, teacher, tuple(objective.teacher_layers), gen_dir, plan)
            log(f"[gen{gen}] teacher {self._teacher_label(gen)}: {self._teacher_path}", self.progress)
        elif objective.needs_teacher:
            raise ConfigError("generation 0 has no teacher: its objective must use labels only (e.g. 'ce')")
        if gen_dir is not None and not resume and (gen_dir / CHECKPOINT).exists() and distributed.is_main():
            (gen_dir / CHECKPOINT).unlink()
        if gen == 0 and not SCHEMES.get(self.scheme_name).meta.get("gen0", False):
            task = DistillTask(student, objective, None)
        else:  # schemes registered with gen0=True (online, self-distillation, pseudo-labels) run generation 0 too
            task = SCHEMES.create(self.scheme_name, student=student, objective=objective, teacher=teacher,
                                  data=data, gen=gen, previous=list(models), train=self.train,
                                  trajectories=[self._trajectories.get(g, {}) for g in range(gen)], **self.scheme_options)
        trainer = Trainer(self.train, run_dir=gen_dir, progress=self.progress, desc=f"gen{gen}")
        try:
            history = trainer.fit(task, data.train, data.test, num_classes=data.num_classes,
                                  seed=gen_seed(self.seed, gen), resume=resume, probe=probe, augment=plan)
        finally:
            task.close()
            if teacher is not None:
                teacher.close()
        self._trajectories[gen] = load_snapshots(gen_dir) if gen_dir is not None else trainer.snapshots
        return student.cpu(), history

    # ------------------------------------------------------------------------------------------ analysis
    def _logits(self, model: nn.Module, x: Tensor) -> Tensor:
        return predict_logits(model, x, device=next(model.parameters()).device)

    def _scheme_teachers(self, gen: int) -> list[int] | None:
        """The generations a scheme's generation ``gen`` learns from, when the scheme says so itself
        (registry entry ``teachers=<function(gen, **options)>``; ``[]``: labels only), else ``None``."""
        fn = SCHEMES.get(self.scheme_name).meta.get("teachers")
        return None if fn is None else list(fn(gen, **self.scheme_options))

    def _teacher_logits(self, gen: int, test_logits: list[Tensor]) -> Tensor | None:
        """The outputs fidelity is measured against: the teachers a scheme names, else the rule's teacher."""
        chosen = self._scheme_teachers(gen)
        if chosen is not None:  # fidelity against the mean of the teachers' probabilities
            return M.ensemble_logits([test_logits[g] for g in chosen]) if chosen else None
        return self._rule_teacher_logits(gen, test_logits)

    def _rule_teacher_logits(self, gen: int, test_logits: list[Tensor]) -> Tensor | None:
        """The outputs of the teacher chosen by ``generations.teacher`` (the one handed to the scheme)."""
        chosen = self._rule_teachers(gen)
        if not chosen:
            return None
        if self.rule == "ensemble":
            return M.ensemble_logits([test_logits[g] for g in chosen])
        return test_logits[chosen[0]]

    def _teacher_label(self, gen: int) -> str | None:
        return teacher_label(self.rule, gen, self._scheme_teachers(gen))

    def _gen_metrics(self, gen: int, data: DatasetBundle) -> dict[str, Any]:
        test, train = self._test_logits, self._train_logits
        return _generation_figures(gen, test, train, data, self._teacher_logits(gen, test), self._teacher_logits(gen, train))

    def _evaluate(self, models, records, data, out) -> LineageResult:
        for m in models:
            m.cpu()
        test, train = self._test_logits, self._train_logits
        gens = []
        for gen, rec in enumerate(records):
            figures = _generation_figures(gen, test, train, data, self._teacher_logits(gen, test), self._teacher_logits(gen, train))
            gens.append({**{k: v for k, v in rec.items() if k not in figures}, **figures})
        ensembles = _ensemble_figures(test, data) if self.ensembles else []
        matrix = [[M.agreement(a, b) for b in test] for a in test]
        if out is not None:
            gens_idx = list(range(len(models)))
            write_json(out / "analysis" / "agreement_matrix.json", {"gens": gens_idx, "test": matrix})
            feats = [penultimate_features(m, data.test.x) for m in models]
            write_json(out / "analysis" / "cka.json", {"gens": gens_idx, "test": cka_matrix(feats).tolist()})
            write_json(out / "analysis" / "reliability.json",
                       {f"gen{k}": reliability_bins(t, data.test.y) for k, t in enumerate(test)})
        return LineageResult(gens, ensembles, models, matrix)


def _generation_figures(gen, test, train, data, t_test, t_train) -> dict[str, Any]:
    s, y = test[gen], data.test.y
    fig: dict[str, Any] = {f"test_{k}": v for k, v in M.classification_metrics(s, y).items()}
    fig["train_acc"] = M.accuracy(train[gen], data.train.y)
    none = t_test is None
    fig["agreement_teacher"] = None if none else M.agreement(t_test, s)
    fig["kl_teacher"] = None if none else M.kl_teacher_student(t_test, s)
    fig["agreement_teacher_train"] = None if none else M.agreement(t_train, train[gen])
    fig["kl_teacher_train"] = None if none else M.kl_teacher_student(t_train, train[gen])
    fig["agreement_gen0"] = None if gen == 0 else M.agreement(test[0], s)
    fig["kl_gen0"] = None if gen == 0 else M.kl_teacher_student(test[0], s)
    return fig


def _ensemble_figures(test: list[Tensor], data: DatasetBundle) -> list[dict[str, Any]]:
    out = []
    k_max = len(test) - 1
    groups = [list(range(1, k + 1)) for k in range(2, k_max + 1)] + [list(range(0, k + 1)) for k in range(1, k_max + 1)]
    for members in groups:
        e = M.ensemble_logits([test[i] for i in members])
        row = {"members": members, **{f"test_{k}": v for k, v in M.classification_metrics(e, data.test.y).items()}}
        row["agreement_gen0"] = M.agreement(test[0], e)
        row["kl_gen0"] = M.kl_teacher_student(test[0], e)
        out.append(row)
    return out


def remove_run(path: Path) -> None:  # used by tests and the CLI's --overwrite
    if path.exists():
        shutil.rmtree(path)


__all__ = ["Lineage", "LineageResult", "TEACHER_RULES", "CheckpointError", "torch"]
