"""The config schema. YAML files, ``--set`` overrides and the Python API all go through these models.

Errors come out as one line naming the key and the allowed values (:class:`~gendistill.errors.ConfigError`).
"""

from __future__ import annotations

import inspect
from pathlib import Path
from typing import Any, ClassVar, Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

from . import data as _data  # noqa: F401  (registers datasets)
from . import models as _models  # noqa: F401  (registers models)
from . import nlp as _nlp  # noqa: F401  (registers sequence datasets, models and terms)
from . import rl as _rl  # noqa: F401  (registers the gym dataset, the rl domain and the policy_* terms)
from . import schemes as _schemes  # noqa: F401  (registers schemes)
from .engine.settings import TrainConfig
from .errors import ConfigError
from .knowledge import build_objective
from .registry import DATASETS, MODELS, SCHEMES, Registry
from .teaching import RuleName
from .validation import format_validation_error

DEFAULT_CONFIG = Path(__file__).parent / "configs" / "default.yaml"


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", validate_assignment=True)


_BLOCK = {"dataset": "data", "model": "model", "scheme": "scheme"}  # config block of each registry kind


class _Registered(BaseModel):
    """``{name: <registered name>, **options}``: an entry of a registry and its options.

    The name must be registered and every option must be an argument of the entry's factory (minus the
    arguments gendistill itself passes, listed in ``_passed``)."""

    model_config = ConfigDict(extra="allow")
    _registry: ClassVar[Registry]
    _passed: ClassVar[tuple[str, ...]] = ()
    name: str

    @field_validator("name")
    @classmethod
    def _known(cls, v: str) -> str:
        try:
            cls._registry.get(v)
        except ConfigError as e:  # "unknown <kind> ...; available: ...", reported with the key's location
            raise ValueError(str(e)) from None
        return v.lower()

    @model_validator(mode="after")
    def _options(self) -> _Registered:
        entry = self._registry.get(self.name)
        sig = inspect.signature(entry.factory).parameters
        params = [p for p, v in sig.items() if p not in self._passed and v.kind is not inspect.Parameter.VAR_KEYWORD]
        for k, v in self.options.items():
            if k not in params:
                kind = self._registry.kind
                raise ValueError(f"unknown option {k!r} for {kind} {self.name!r}; allowed: {', '.join(params) or '(none)'}"
                                 f" (switching {kind}s with --set? replace the whole block, e.g. --set "
                                 f"'{_BLOCK.get(kind, kind)}={{name: {self.name}}}', to drop the other's options)")
            problem = _type_problem(sig[k].annotation, v)
            if problem:
                raise ValueError(f"option {k!r} of {self._registry.kind} {self.name!r} must be {problem}, got {v!r}")
        return self

    @property
    def options(self) -> dict[str, Any]:
        return dict(self.model_extra or {})

    def spec(self) -> dict[str, Any]:
        return {"name": self.name, **self.options}


_SIMPLE_TYPES = {"int": "an integer", "float": "a number", "bool": "true or false", "str": "a string"}


def _type_problem(annotation: Any, value: Any) -> str | None:
    """The expected type, in words, when ``value`` does not fit a factory argument annotated ``int``, ``float``,
    ``bool`` or ``str`` (also with ``| None``); None when it fits or the annotation is anything else."""
    text = annotation if isinstance(annotation, str) else getattr(annotation, "__name__", "")
    parts = [t.strip() for t in str(text).split("|")]
    optional = "None" in parts
    parts = [t for t in parts if t != "None"]
    if len(parts) != 1 or parts[0] not in _SIMPLE_TYPES or (value is None and optional):
        return None
    t = parts[0]
    ok = {"int": isinstance(value, int) and not isinstance(value, bool),
          "float": isinstance(value, (int, float)) and not isinstance(value, bool),
          "bool": isinstance(value, bool),
          "str": isinstance(value, str)}[t]
    return None if ok else _SIMPLE_TYPES[t] + (" or null" if optional else "")


class ModelConfig(_Registered):
    """``{name: cnn1d, width: 32}``: a registered model and its options."""

    _registry = MODELS
    _passed = ("num_classes", "input_shape")
    name: str = "cnn1d"


class SchemeConfig(_Registered):
    """``{name: offline}``: how generations >= 1 are trained (a registered scheme and its options)."""

    _registry = SCHEMES
    _passed = ("ctx",)
    name: str = "offline"


class DataConfig(_Registered):
    """``{name: mnist1d, num_samples: 5000, val_fraction: 0.1}``: a registered dataset and its options."""

    _registry = DATASETS
    name: str = "mnist1d"
    val_fraction: float = Field(0.0, ge=0.0, lt=1.0)


class ObjectivePreset(_Strict):
    preset: Literal["ce", "ban", "ban+l", "hinton"] = "ban+l"
    temperature: float = Field(4.0, gt=0)
    alpha: float = Field(0.5, ge=0, le=1, description="KD weight of the hinton preset")
    label_smoothing: float = Field(0.0, ge=0, lt=1, description="label smoothing of the CE term (also generation 0's)")


class GenerationsConfig(_Strict):
    count: int = Field(3, ge=0, description="born-again generations after generation 0")
    teacher: RuleName = "previous"
    gen0_checkpoint: str | None = Field(None, description="safetensors file: load generation 0 instead of training it")
    gen0_objective: Literal["ce"] | list[dict[str, Any]] = "ce"
    archs: dict[int, ModelConfig] = Field(default_factory=dict, description="per-generation architecture overrides")
    ensembles: bool = Field(True, description="evaluate ensembles of generations 1..k and 0..k")

    @model_validator(mode="after")
    def _archs_in_range(self) -> GenerationsConfig:
        bad = [g for g in self.archs if not 0 <= g <= self.count]
        if bad:
            raise ValueError(f"archs names generation {bad[0]}, outside 0..{self.count}")
        return self


class RunConfig(_Strict):
    """A whole experiment: one lineage per seed."""

    name: str = Field("run", min_length=1, pattern=r"^[A-Za-z0-9._+-]+$")
    out: str = "runs"
    seeds: list[int] = Field(default_factory=lambda: [0], min_length=1)
    jobs: int | None = Field(None, ge=1, description=(
        "seeds trained at once, in worker processes (one intra-op thread each on CPU unless train.threads says "
        "otherwise); None: as many as seeds and CPU cores allow on CPU, 1 on a GPU"))
    data: DataConfig = Field(default_factory=DataConfig)
    model: ModelConfig = Field(default_factory=ModelConfig)
    generations: GenerationsConfig = Field(default_factory=GenerationsConfig)
    objective: ObjectivePreset | list[dict[str, Any]] = Field(default_factory=ObjectivePreset)
    scheme: SchemeConfig = Field(default_factory=SchemeConfig)
    train: TrainConfig = Field(default_factory=TrainConfig)

    @field_validator("objective", mode="before")
    @classmethod
    def _preset_string(cls, v: Any) -> Any:
        return {"preset": v} if isinstance(v, str) else v

    @field_validator("seeds", mode="before")
    @classmethod
    def _one_seed(cls, v: Any) -> Any:
        return [v] if isinstance(v, int) else v

    @field_validator("seeds")
    @classmethod
    def _distinct_seeds(cls, v: list[int]) -> list[int]:
        repeated = sorted({s for s in v if v.count(s) > 1})
        if repeated:
            raise ValueError(f"seeds must be distinct (repeated: {repeated}); a repeated seed is the same run twice "
                             "and would fake the spread over seeds")
        return v

    @model_validator(mode="after")
    def _objective_builds(self) -> RunConfig:
        self.build_objective()  # raises ConfigError naming the bad term option
        if isinstance(self.generations.gen0_objective, list):
            obj = build_objective(self.generations.gen0_objective)
            if obj.needs_teacher:
                raise ConfigError("generations.gen0_objective: generation 0 has no teacher; use label terms only")
        return self

    def build_objective(self):
        if isinstance(self.objective, ObjectivePreset):
            o = self.objective
            return build_objective(o.preset, temperature=o.temperature, alpha=o.alpha, label_smoothing=o.label_smoothing)
        return build_objective(self.objective)

    def build_gen0_objective(self):
        g0 = self.generations.gen0_objective
        if isinstance(g0, str):
            smoothing = self.objective.label_smoothing if isinstance(self.objective, ObjectivePreset) else 0.0
            return build_objective(g0, label_smoothing=smoothing)
        return build_objective(g0)

    def arch(self, gen: int) -> ModelConfig:
        return self.generations.archs.get(gen, self.model)

    def to_yaml(self) -> str:
        return yaml.safe_dump(self.model_dump(mode="json"), sort_keys=False)


# ---------------------------------------------------------------------------------------------- loading


def parse_override(item: str) -> tuple[list[str], Any]:
    if "=" not in item:
        raise ConfigError(f"--set {item!r}: expected key.sub=value, e.g. --set generations.count=5")
    key, _, raw = item.partition("=")
    if not key.strip():
        raise ConfigError(f"--set {item!r}: empty key")
    try:
        value = yaml.safe_load(raw) if raw.strip() else None
    except yaml.YAMLError:
        value = raw
    return key.strip().split("."), value


def apply_overrides(raw: dict[str, Any], overrides: list[str]) -> dict[str, Any]:
    for item in overrides:
        path, value = parse_override(item)
        node: Any = raw
        for i, key in enumerate(path):
            last = i == len(path) - 1
            if isinstance(node, list):
                try:
                    idx = int(key)
                    node[idx]
                except (ValueError, IndexError):
                    raise ConfigError(f"--set {item!r}: {'.'.join(path[:i])} is a list; {key!r} is not a valid index") from None
                if last:
                    node[idx] = value
                else:
                    node = node[idx]
                continue
            if not isinstance(node, dict):
                raise ConfigError(f"--set {item!r}: {'.'.join(path[:i])} is not a mapping")
            if last:
                node[key] = value
            else:
                if isinstance(node.get(key), str) and key == "objective":
                    node[key] = {"preset": node[key]}
                node = node.setdefault(key, {})
    return raw


def read_yaml(path: str | Path) -> dict[str, Any]:
    path = Path(path)
    if not path.exists():
        raise ConfigError(f"config file {str(path)!r} does not exist")
    if path.is_dir():
        raise ConfigError(f"config file {str(path)!r} is a folder; give a YAML file (e.g. one of examples/)")
    try:
        text = path.read_text(encoding="utf-8")
    except UnicodeDecodeError as e:
        raise ConfigError(f"config file {str(path)!r} is not UTF-8 text ({e.reason} at byte {e.start}); save it as "
                          "UTF-8") from None
    if not text.strip():
        from .engine.progress import log

        log(f"note: config file {str(path)!r} is empty; running with every default (gendistill run without a "
            "file does the same)", "lines")
    try:
        raw = yaml.safe_load(text)
    except yaml.YAMLError as e:
        mark = getattr(e, "problem_mark", None)
        where = f" at line {mark.line + 1}, column {mark.column + 1}" if mark else ""
        raise ConfigError(f"config file {str(path)!r} is not valid YAML{where}: {getattr(e, 'problem', e)}") from None
    if raw is None:
        return {}
    if not isinstance(raw, dict):
        raise ConfigError(f"config file {str(path)!r} must hold a mapping of keys, got {type(raw).__name__}")
    return raw


def validate(raw: dict[str, Any]) -> RunConfig:
    try:
        return RunConfig.model_validate(raw)
    except ValidationError as e:
        raise ConfigError(format_validation_error(e, RunConfig)) from None


def load_config(path: str | Path | None = None, overrides: list[str] | None = None) -> RunConfig:
    """Read a YAML config (the bundled default when ``path`` is None), apply ``--set`` overrides, validate."""
    raw = read_yaml(path if path is not None else DEFAULT_CONFIG)
    return validate(apply_overrides(raw, list(overrides or [])))
