"""The multi-generation engine (Born-Again Networks, Furlanello et al. 2018, arXiv:1805.04770).

Generation 0 is trained from labels (or given). Generation k >= 1 is trained *from scratch* with knowledge
from the teachers :mod:`gendistill.teaching` names for it (the ``previous`` generation, the ``ensemble`` of
all earlier ones, the ``original``, or those a scheme names). Each generation may have its own architecture,
so teacher -> assistant -> student chains (TAKD) are a matter of ``archs``. Every teacher is frozen (eval
mode, no gradients) and is never the model being trained.

The lineage is domain-agnostic: building models, batches, predictions, metrics, fidelity, ensembles and the
teacher cache are the :class:`~gendistill.domains.Domain`'s (classification, sequences, policies). Each
generation goes through named phases: resume (a finished generation is read back), teach (its teacher, the
held-out fidelity probe, the cache), train (the scheme's task run by the one trainer), record (the model and
``metrics.json`` written to ``gen<k>/``); the lineage ends with its figures, ensembles and analyses.
"""

from __future__ import annotations

import contextlib
import copy
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from torch import Tensor, nn

from . import environment, rundir
from .data import DatasetBundle
from .domains import Domain, domain_for
from .engine import distributed
from .engine.checkpoint import load_model, save_model
from .engine.evaluate import select_device
from .engine.progress import log
from .engine.settings import TrainConfig, parse_train
from .engine.trainer import Trainer, load_snapshots, seed_everything
from .errors import ConfigError
from .io import write_json
from .knowledge import KnowledgeTerm, Objective, build_objective
from .knowledge.taps import resolve_module
from .models import ModelSpec
from .schemes import SchemeContext, scheme_spec
from .teachers import freeze
from .teaching import TeacherRule, Teaching

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


@contextlib.contextmanager
def _threads(n: int | None):
    """``torch.set_num_threads(n)`` for the block (nothing when ``n`` is None); the previous count after."""
    if n is None:
        yield
        return
    before = torch.get_num_threads()
    torch.set_num_threads(n)
    try:
        yield
    finally:
        torch.set_num_threads(before)


def _fidelity(domain: Domain, ref: Tensor | None, pred: Tensor) -> dict[str, Any]:
    """``domain.fidelity(ref, pred)``, or ``None`` figures when there is no reference (labels, generation 0)."""
    return domain.fidelity(ref, pred) if ref is not None else {"agreement": None, "kl": None}


def gen_seed(seed: int, gen: int) -> int:
    """Each generation of each seed gets its own init and data order."""
    return seed * 1000 + gen


@dataclass
class LineageResult:
    """Per-generation and per-ensemble figures, plus the trained models (generation order)."""

    generations: list[dict[str, Any]]
    ensembles: list[dict[str, Any]]
    models: list[nn.Module] = field(repr=False, default_factory=list)
    agreement_matrix: list[list[float]] = field(repr=False, default_factory=list)
    environment: dict[str, Any] = field(repr=False, default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        return {"generations": self.generations, "ensembles": self.ensembles}

    def table(self) -> str:
        from .analysis.tables import lineage_table

        return lineage_table(self.to_dict())


@dataclass
class _Progress:
    """What a lineage has produced so far, in generation order: every finished model and its predictions on
    the test and training splits (computed once, when it finishes), its record, its saved trajectory."""

    models: list[nn.Module] = field(default_factory=list)
    records: list[dict[str, Any]] = field(default_factory=list)
    test_preds: list[Tensor] = field(default_factory=list)
    train_preds: list[Tensor] = field(default_factory=list)
    trajectories: dict[int, dict[int, dict[str, Tensor]]] = field(default_factory=dict)
    outside: dict[int, tuple[nn.Module, Tensor, Tensor]] = field(default_factory=dict)  # a scheme's outside teachers


@dataclass
class _Taught:
    """A generation's teacher phase: the teacher object handed to the scheme, what it is (for the log and
    ``teacher_outputs``), and the held-out probe ``(split, teacher prediction)`` for per-epoch fidelity."""

    teacher: Any | None = None
    how: str | None = None
    probe: tuple[Any, Tensor] | None = None


class Lineage:
    """Train generation 0 and ``generations`` born-again generations.

    Args:
        student: architecture of every generation: a registry name, ``{"name": ..., **options}``, an
            ``nn.Module`` (copied and re-initialised per generation) or a zero-argument factory.
        generations: number of generations after generation 0.
        objective: knowledge for generations >= 1: an :class:`Objective`, a preset (``"ban"``, ``"ban+l"``,
            ``"hinton"``), a list of term dicts, or a factory. A fresh copy is made per generation.
        teacher: the teacher rule, one of ``previous``, ``ensemble``, ``original`` (:mod:`gendistill.teaching`).
        train: :class:`TrainConfig` (or a dict of its fields) shared by every generation.
        archs: per-generation architecture overrides, e.g. ``{1: "mlp"}`` for an assistant.
        gen0_objective: objective of generation 0 when it is trained here (labels only).
        temperature: temperature used when ``objective`` is a preset name.
        seed: base seed; generation k uses ``seed * 1000 + k``.
        ensembles: evaluate ensembles of generations 1..k and 0..k.
        progress: "auto" | "bar" | "lines" | "off".
        scheme: how generations are trained: a registered scheme name or ``{"name": ..., **options}``
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
        self.rule = TeacherRule(teacher)
        self.student = student
        self.count = generations
        self.objective = _objective_factory(objective, temperature)
        self.gen0_objective = _objective_factory(gen0_objective, temperature)
        for what, factory in (("objective", self.objective), ("gen0_objective", self.gen0_objective)):
            built = factory()  # an unknown preset or a bad term fails here, before any training
            if not isinstance(built, Objective):
                raise ConfigError(f"{what} factory returned {type(built).__name__}, expected an Objective")
        self.train = parse_train(train)
        self.archs = dict(archs or {})
        self.seed = seed
        self.ensembles = ensembles
        self.progress = progress
        options = {"name": scheme} if isinstance(scheme, str) else dict(scheme)
        self.spec = scheme_spec(options.pop("name", "offline"))  # unknown names fail here, before any training
        self.scheme_options = options
        if self.spec.archs is not None:  # a lineage preset (TA chains) picks per-generation architectures
            self.archs = {**self.spec.archs(student, generations, **options), **self.archs}
        if self.spec.check is not None:  # scheme options that can be checked before generation 0 trains
            self.spec.check(self.train, generations, **options)

    # ------------------------------------------------------------------------------------------ set-up
    def teaching(self, gen: int, data: DatasetBundle | None = None) -> Teaching:
        """Who teaches generation ``gen`` (:mod:`gendistill.teaching`): teachers from outside the lineage that
        the scheme loads itself, else the scheme's list of generations, else the rule's."""
        outside = self.spec.outside_of(gen, data, self.scheme_options)
        if outside is not None:
            return Teaching(gen, (), True, outside.label, outside)
        return self.rule.teaching(gen, self.spec.teachers_of(gen, self.scheme_options))

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

    def check(self, data: DatasetBundle, teacher: Any = None) -> None:
        """Before any training: every generation's architecture builds for ``data`` and takes one dummy batch
        (CPU, no grad), and the layers the objective taps exist. Raises one-line :class:`ConfigError` s."""
        domain = domain_for(data)
        objective = self.objective()
        first = 1 if isinstance(teacher, nn.Module) else 0  # a given teacher module is generation 0
        built: dict[str, nn.Module] = {}
        models: dict[int, nn.Module] = {}
        for gen in range(first, self.count + 1):
            spec = self.arch(gen)
            key = repr(spec) if isinstance(spec, (str, dict)) else None
            if key is None or key not in built:
                where = f"generations.archs.{gen}" if gen in self.archs else "model"
                model = domain.check_model(spec, data, where)
                if key is not None:
                    built[key] = model
            models[gen] = built[key] if key is not None else model
        for gen in range(1, self.count + 1):
            for layer in objective.student_layers:
                resolve_module(models[gen], layer, role=f"generation {gen}'s student ({self._arch_name(gen)})")
            teaching = self.teaching(gen)
            if objective.teacher_layers and not teaching.by_scheme and len(teaching.teachers) > 1:
                raise ConfigError(
                    "feature-based terms need one teacher network, but generation "
                    f"{gen}'s teacher is an ensemble ({teaching.label}); use generations.teacher=previous or a "
                    "logit-based objective")
            for t in teaching.teachers:
                if t in models:
                    for layer in objective.teacher_layers:
                        resolve_module(models[t], layer, role=f"generation {gen}'s teacher gen{t} ({self._arch_name(t)})")

    # ------------------------------------------------------------------------------------------ the run
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
        domain = domain_for(data)
        out = Path(out) if out is not None else None
        lock = rundir.locked(out) if out is not None and distributed.is_main() else contextlib.nullcontext()
        with lock, _threads(self.train.threads):
            env = self._record_environment(out, resume)
            done = _Progress()
            for gen in range(self.count + 1):
                gen_root = rundir.gen_dir(out, gen) if out is not None else None
                if gen_root is not None and resume and rundir.is_finished(gen_root):
                    self._read_back(gen, gen_root, teacher, data, domain, done)
                else:
                    self._produce(gen, gen_root, teacher, data, domain, done, resume)
                distributed.barrier()  # every process sees the finished generation on disk
            result = self._conclude(done, data, domain, out)
            result.environment = env
            if out is not None:  # the same summary.json as `gendistill run` writes for one seed
                rundir.write_summary(out, {"seed": self.seed, **result.to_dict(), "environment": env})
        return result

    def _record_environment(self, out: Path | None, resume: bool) -> dict[str, Any]:
        """Write ``environment.json`` (versions, threads, CPU, device); on a resume, keep the first and warn
        about every difference that can change the numbers."""
        env = environment.describe(select_device(self.train.device))
        if out is None:
            return env
        path = out / rundir.ENVIRONMENT
        old = rundir.read_environment(out) if resume else None
        if old is not None:
            changed = environment.differences(old.get("started", {}), env)
            if changed:
                log(f"warning: resuming {out} under another environment ({'; '.join(changed)}); the resumed "
                    "generations' last digits may differ from an uninterrupted run", "lines")
            write_json(path, {**old, "resumes": [*old.get("resumes", []), env]})
        else:
            write_json(path, {"started": env})
        return env

    def _new_model(self, gen: int, data: DatasetBundle, domain: Domain) -> nn.Module:
        seed_everything(gen_seed(self.seed, gen))
        return domain.build_model(self.arch(gen), data)

    def _given_teacher(self, teacher: nn.Module | str | Path, data: DatasetBundle, domain: Domain) -> nn.Module:
        if isinstance(teacher, (str, Path)):
            return load_model(self._new_model(0, data, domain), teacher, role="teacher")
        if not isinstance(teacher, nn.Module):
            raise ConfigError(f"teacher must be an nn.Module or a safetensors path, got {type(teacher).__name__}")
        domain.check_teacher(teacher, data)
        return teacher

    def _read_back(self, gen: int, gen_root: Path, teacher: Any, data: DatasetBundle, domain: Domain,
                   done: _Progress) -> None:
        """Resume: a finished generation's model and record, read from its folder."""
        given_module = gen == 0 and isinstance(teacher, nn.Module)
        model = self._given_teacher(teacher, data, domain) if given_module else self._new_model(gen, data, domain)
        load_model(model, gen_root / rundir.MODEL, role=f"generation {gen}")
        record = rundir.read_metrics(gen_root)
        record["resumed"] = True
        if gen > 0:  # the label follows the config (read back, it could be a label of an older version)
            record["teacher"] = self.teaching(gen, data).label
        done.trajectories[gen] = load_snapshots(gen_root)
        self._add(done, freeze(model), record, data, domain)
        log(f"[gen{gen}] finished earlier: read from {gen_root / rundir.MODEL}", self.progress)

    def _produce(self, gen: int, gen_root: Path | None, teacher: Any, data: DatasetBundle, domain: Domain,
                 done: _Progress, resume: bool) -> None:
        """A generation that is not finished yet: given (generation 0) or trained, then recorded and saved."""
        t0 = time.perf_counter()
        given = gen == 0 and teacher is not None
        if given:
            model, history, how = self._given_teacher(teacher, data, domain), [], None
        else:
            model, history, how = self._train(gen, gen_root, data, domain, done, resume)
        given_module = given and isinstance(teacher, nn.Module)  # its own architecture, not the student's
        record = {"gen": gen, "arch": type(model).__name__ if given_module else self._arch_name(gen),
                  "params": sum(p.numel() for p in model.parameters()),
                  "teacher": "given" if given else self.teaching(gen, data).label,
                  "epochs": len(history), "seconds": round(time.perf_counter() - t0, 3),
                  "teacher_outputs": how, "processes": distributed.world_size()}
        self._add(done, freeze(model), record, data, domain)
        if gen_root is None:
            record.update(self._compression(model, data, domain, None))
        else:
            spec = self.arch(gen)
            save_model(model, gen_root / rundir.MODEL, {
                "gen": gen, "arch": record["arch"], "num_classes": data.num_classes,
                "model_spec": None if given_module else (spec if isinstance(spec, (str, dict)) else None)})
            record.update(self._compression(model, data, domain, gen_root))
            rundir.write_metrics(gen_root, {**record, **self._figures(gen, done, data, domain)})
            if distributed.is_main():
                (gen_root / rundir.CHECKPOINT).unlink(missing_ok=True)
                for f in gen_root.glob(rundir.TEACHER_CACHE + ".*"):  # a finished generation no longer needs it
                    f.unlink()

    def _compression(self, model: nn.Module, data: DatasetBundle, domain: Domain,
                     gen_root: Path | None) -> dict[str, Any]:
        """Params, checkpoint size and what the domain adds (MACs, latency/throughput with
        train.speed_figures): :meth:`Domain.compression`."""
        speed = self.train.speed_figures
        return domain.compression(model, data, checkpoint=None if gen_root is None else gen_root / rundir.MODEL,
                                  speed=speed, device=select_device(self.train.device) if speed else None)

    def _add(self, done: _Progress, model: nn.Module, record: dict[str, Any], data: DatasetBundle,
             domain: Domain) -> None:
        done.models.append(model)
        done.records.append(record)
        done.test_preds.append(domain.predict(model, data.test))
        done.train_preds.append(domain.predict(model, data.train))

    # ------------------------------------------------------------------------------------------ one generation
    def _train(self, gen: int, gen_root: Path | None, data: DatasetBundle, domain: Domain, done: _Progress,
               resume: bool) -> tuple[nn.Module, list[dict[str, Any]], str | None]:
        student = self._new_model(gen, data, domain)
        objective = self.gen0_objective() if gen == 0 else self.objective()
        if gen == 0 and objective.needs_teacher:
            raise ConfigError("generation 0 has no teacher: its objective must use labels only (e.g. 'ce')")
        trainer = Trainer(self.train, run_dir=gen_root, progress=self.progress, desc=f"gen{gen}")
        cacheable = self.spec.cacheable and self.train.teacher_cache != "off"
        views = self.train.augment_views if gen > 0 and cacheable else 0
        source = domain.train_source(data, self.train, seed=gen_seed(self.seed, gen), device=trainer.device,
                                     views=views)
        teaching = self.teaching(gen, data)
        taught = self._teach(gen, teaching, objective, student, source, gen_root, data, domain, done)
        if gen_root is not None and not resume and distributed.is_main():
            (gen_root / rundir.CHECKPOINT).unlink(missing_ok=True)
        if gen == 0 and not self.spec.trains_gen0:
            task = domain.default_task(student, objective, None)
        else:
            ctx = SchemeContext(student, objective, taught.teacher, gen, teaching.teachers, list(done.models), data,
                                self.train, [done.trajectories.get(g, {}) for g in range(gen)])
            task = self.spec.create(ctx, self.scheme_options)
        try:
            history = trainer.fit(task, source, num_classes=data.num_classes, resume=resume,
                                  evaluate=self._epoch_evaluation(data, domain, taught.probe))
        finally:
            task.close()
            if taught.teacher is not None:
                taught.teacher.close()
        done.trajectories[gen] = load_snapshots(gen_root) if gen_root is not None else trainer.snapshots
        return student.cpu(), history, taught.how

    def _teach(self, gen: int, teaching: Teaching, objective: Objective, student: nn.Module, source: Any,
               gen_root: Path | None, data: DatasetBundle, domain: Domain, done: _Progress) -> _Taught:
        """The teacher handed to the scheme (the rule's teachers, or none when the scheme names its own), its
        cache when one is exact, and the held-out fidelity probe against the generation's teachers."""
        taught = _Taught()
        if gen == 0:
            return taught
        if (teaching.teachers or teaching.outside) and self.train.fidelity_samples:
            held = (data.val if data.val is not None else data.test).head(self.train.fidelity_samples)
            models = [done.models[g] for g in teaching.teachers] or [self._outside(gen, teaching, data, domain, done)[0]]
            preds = [domain.predict(m, held) for m in models]
            taught.probe = (held, preds[0] if len(preds) == 1 else domain.ensemble(preds))
        if teaching.by_scheme:
            return taught
        layers = tuple(objective.teacher_layers)
        teacher = domain.teacher([done.models[g] for g in teaching.teachers], layers)
        if any(m is student for m in teacher.models):
            raise RuntimeError("internal error: a generation's teacher is its own student")
        taught.teacher, taught.how = teacher, self._cache_reason()
        if taught.how is None:  # cacheable: the teacher's outputs over the training items, once
            train_pred = self._teacher_pred(teaching, done.train_preds, domain)
            path = rundir.teacher_cache_prefix(gen_root) if gen_root is not None else None
            cached = domain.cache_teacher(teacher, source, data, self.train, layers=layers, train_pred=train_pred,
                                          path=path)
            if cached is not None:
                taught.teacher, taught.how = cached, cached.describe()
            else:
                taught.how = f"live teacher ({domain.name} cannot cache this teacher's outputs exactly)"
        log(f"[gen{gen}] teacher {teaching.label}: {taught.how}", self.progress)
        return taught

    def _cache_reason(self) -> str | None:
        """Why the teacher runs live, or ``None`` when its outputs may be cached."""
        if self.spec.cacheable and self.train.teacher_cache != "off":
            return None
        reason = ("train.teacher_cache=off" if self.train.teacher_cache == "off"
                  else f"scheme {self.spec.name} feeds the teacher its own inputs")
        if self.train.augment:
            reason += "; fresh random augmentation every step"
        return f"live teacher ({reason})"

    def _epoch_evaluation(self, data: DatasetBundle, domain: Domain, probe: tuple[Any, Tensor] | None):
        def evaluate(model: nn.Module) -> dict[str, float]:
            row = domain.epoch_metrics(model, data.test)
            if probe is not None and len(probe[0]):
                fid = domain.fidelity(probe[1], domain.predict(model, probe[0]))
                row["holdout_agreement"], row["holdout_kl"] = fid["agreement"], fid["kl"]
            return row

        return evaluate

    # ------------------------------------------------------------------------------------------ figures
    @staticmethod
    def _outside(gen: int, teaching: Teaching, data: DatasetBundle, domain: Domain,
                 done: _Progress) -> tuple[nn.Module, Tensor, Tensor]:
        """A generation's teachers from outside the lineage, as one model, and its test and training predictions
        (built once per generation)."""
        if gen not in done.outside:
            model = teaching.outside.build(data)
            done.outside[gen] = (model, domain.predict(model, data.test), domain.predict(model, data.train))
        return done.outside[gen]

    @staticmethod
    def _teacher_pred(teaching: Teaching, preds: list[Tensor], domain: Domain) -> Tensor | None:
        """The teachers' prediction: the one teacher's, or their ensemble's; ``None`` for labels."""
        chosen = [preds[g] for g in teaching.teachers]
        if not chosen:
            return None
        return chosen[0] if len(chosen) == 1 else domain.ensemble(chosen)

    def _figures(self, gen: int, done: _Progress, data: DatasetBundle, domain: Domain) -> dict[str, Any]:
        model, test, train = done.models[gen], done.test_preds, done.train_preds
        fig: dict[str, Any] = {f"test_{k}": v for k, v in domain.metrics(model, test[gen], data.test).items()}
        if domain.train_keys:
            on_train = domain.metrics(model, train[gen], data.train)
            fig.update({f"train_{k}": on_train[k] for k in domain.train_keys})
        teaching = self.teaching(gen, data)
        outside = self._outside(gen, teaching, data, domain, done)[1:] if teaching.outside is not None else None
        refs = {}
        for k, (split, preds) in enumerate((("", test), ("_train", train))):
            ref = outside[k] if outside is not None else self._teacher_pred(teaching, preds, domain)
            refs[split] = ref
            fid = _fidelity(domain, ref, preds[gen])
            fig[f"agreement_teacher{split}"], fig[f"kl_teacher{split}"] = fid["agreement"], fid["kl"]
        fid0 = _fidelity(domain, test[0] if gen > 0 else None, test[gen])
        fig["agreement_gen0"], fig["kl_gen0"] = fid0["agreement"], fid0["kl"]
        per_task = self._per_task(domain, data, model, test[gen], {"teacher": refs[""],
                                                                   "gen0": test[0] if gen > 0 else None})
        if per_task:
            fig["per_task"] = per_task
        return fig

    @staticmethod
    def _per_task(domain: Domain, data: DatasetBundle, model: nn.Module | None, pred: Tensor,
                  refs: dict[str, Tensor | None]) -> dict[str, dict[str, Any]]:
        """Per task of a multi-task dataset (:meth:`Domain.groups` of the test split): its task metrics
        (``test_<metric>``) and fidelity against each reference (``agreement_<name>``, ``kl_<name>``), on its
        items only; ``{}`` for a dataset of one task."""
        out = {}
        for name, (split, index) in domain.groups(data.test).items():
            row: dict[str, Any] = {f"test_{k}": v for k, v in domain.metrics(model, pred[index], split).items()}
            for ref_name, ref in refs.items():
                fid = _fidelity(domain, None if ref is None else ref[index], pred[index])
                row[f"agreement_{ref_name}"], row[f"kl_{ref_name}"] = fid["agreement"], fid["kl"]
            out[name] = row
        return out

    def _ensemble_figures(self, done: _Progress, data: DatasetBundle, domain: Domain) -> list[dict[str, Any]]:
        test = done.test_preds
        k_max = len(test) - 1
        groups = ([list(range(1, k + 1)) for k in range(2, k_max + 1)]
                  + [list(range(0, k + 1)) for k in range(1, k_max + 1)])
        rows = []
        for members in groups:
            e = domain.ensemble([test[i] for i in members])
            row = {"members": members, **{f"test_{k}": v for k, v in domain.metrics(None, e, data.test).items()}}
            fid = domain.fidelity(test[0], e)
            row["agreement_gen0"], row["kl_gen0"] = fid["agreement"], fid["kl"]
            per_task = self._per_task(domain, data, None, e, {"gen0": test[0]})
            if per_task:
                row["per_task"] = per_task
            rows.append(row)
        return rows

    def _conclude(self, done: _Progress, data: DatasetBundle, domain: Domain, out: Path | None) -> LineageResult:
        for m in done.models:
            m.cpu()
        gens = []
        for gen, rec in enumerate(done.records):
            figures = self._figures(gen, done, data, domain)
            gens.append({**{k: v for k, v in rec.items() if k not in figures}, **figures})
        ensembles = self._ensemble_figures(done, data, domain) if self.ensembles else []
        test = done.test_preds
        matrix = [[domain.fidelity(a, b)["agreement"] for b in test] for a in test]
        if out is not None:
            indices = list(range(len(done.models)))
            rundir.write_analysis(out, "agreement_matrix", {"gens": indices, "test": matrix})
            for name, obj in domain.analyses(done.models, test, data).items():
                rundir.write_analysis(out, name, obj)
        return LineageResult(gens, ensembles, done.models, matrix)


__all__ = ["Lineage", "LineageResult", "gen_seed"]
