"""Knowledge terms and objectives.

An objective is given in a config either as a preset name or as a list of terms::

    objective: ban+l
    objective: [{term: ce, weight: 1}, {term: kd, weight: 1, temperature: 4}]
"""

from __future__ import annotations

import inspect
from typing import Any

from ..errors import ConfigError
from ..registry import METHODS
from . import ablations as ablations  # noqa: F401  (registers ablation terms)
from . import feature, graph, lipschitz, relation, response, response_extra  # noqa: F401  (registers terms)
from .base import Batch, KnowledgeTerm, Objective, Outputs
from .response import KD, CrossEntropy
from .taps import FeatureTap

# Preset objectives. ``{T}`` / ``{alpha}`` are filled from the preset's options.
PRESETS: dict[str, str] = {
    "ce": "labels only: CE (used for generation 0)",
    "ban": "Born-Again Networks, teacher term only: KD(T)",
    "ban+l": "Born-Again Networks plus labels: CE + KD(T)",
    "hinton": "Hinton et al. 2015: (1 - alpha) * CE + alpha * KD(T)",
}


def preset_terms(name: str, temperature: float = 1.0, alpha: float = 0.5, label_smoothing: float = 0.0) -> list[dict[str, Any]]:
    name = name.lower()
    ce = {"term": "ce", "weight": 1.0, "label_smoothing": label_smoothing}
    kd = {"term": "kd", "weight": 1.0, "temperature": temperature}
    if name == "ce":
        return [ce]
    if name == "ban":
        return [kd]
    if name == "ban+l":
        return [ce, kd]
    if name == "hinton":
        if not 0.0 <= alpha <= 1.0:
            raise ConfigError(f"config error: objective.alpha must be in [0, 1], got {alpha}")
        return [{**ce, "weight": 1.0 - alpha}, {**kd, "weight": alpha}]
    raise ConfigError(f"config error: unknown objective preset {name!r}; available: {', '.join(PRESETS)}")


def build_term(spec: dict[str, Any], where: str = "objective") -> tuple[KnowledgeTerm, float]:
    spec = dict(spec)
    if "term" not in spec:
        raise ConfigError(f"config error: {where}: each term needs a 'term' key naming a method; available: {', '.join(METHODS.names())}")
    name = spec.pop("term")
    weight = spec.pop("weight", 1.0)
    try:
        weight = float(weight)
    except (TypeError, ValueError):
        raise ConfigError(f"config error: {where}.{name}.weight must be a number, got {weight!r}") from None
    if not weight >= 0 or weight == float("inf"):  # also NaN
        raise ConfigError(f"config error: {where}.{name}.weight must be a finite number >= 0, got {weight!r}; "
                          "use 0 to log a term without training on it")
    entry = METHODS.get(name)
    params = inspect.signature(entry.factory).parameters
    accepts_any = any(p.kind is inspect.Parameter.VAR_KEYWORD for p in params.values())
    unknown = [k for k in spec if k not in params]
    if unknown and not accepts_any:
        allowed = [k for k in params if k != "self"]
        raise ConfigError(
            f"config error: {where}.{name}: unknown option {unknown[0]!r}; allowed: {', '.join(['weight', *allowed])}"
        )
    try:
        term = entry.factory(**spec)
    except (ValueError, TypeError) as e:
        raise ConfigError(f"config error: {where}.{name}: {e}") from None
    return term, weight


def build_objective(spec: str | list[dict[str, Any]], **preset_options: Any) -> Objective:
    """Build an :class:`Objective` from a preset name or a list of ``{term, weight, **options}``."""
    if isinstance(spec, str):
        spec = preset_terms(spec, **preset_options)
    if not spec:
        raise ConfigError("objective is empty; give a preset name or a list of terms")
    terms = [build_term(s) for s in spec]
    try:
        return Objective(terms)
    except ValueError as e:
        raise ConfigError(f"config error: objective: {e}") from None


__all__ = [
    "Batch", "Outputs", "KnowledgeTerm", "Objective", "KD", "CrossEntropy", "FeatureTap",
    "PRESETS", "build_objective", "build_term", "preset_terms",
]
