"""Statistics over seeds: mean, sample standard deviation, Student-t confidence intervals, paired t-tests.

==========================  ==========================================================================
quantity                    formula (``n`` seeds, values ``v_1 .. v_n``)
==========================  ==========================================================================
mean                        ``m = (1/n) sum_i v_i``
std (sample)                ``s = sqrt( sum_i (v_i - m)^2 / (n - 1) )``
95% CI (Student t)          ``m +- t_{0.975, n-1} * s / sqrt(n)``, cut at the quantity's range (below)
paired difference a - b     ``d_i = a_i - b_i``; mean, CI as above on ``d``
paired t-test               ``t = mean(d) / (std(d) / sqrt(n))``, two-sided p-value on ``n - 1`` degrees of freedom
==========================  ==========================================================================

With fewer than two values there is no spread to estimate: ``std``, the interval and the p-value are ``None``
(shown as unavailable), never 0. Intervals of bounded quantities are cut at their bounds (:data:`BOUNDS`):
accuracies, agreements and ECE lie in ``[0, 1]``, NLL, KL and Brier score are ``>= 0``; the t interval is
symmetric and can cross a bound when the seeds are few and the mean is near it, and the part outside is
impossible. A paired test whose differences are all equal (zero spread) has no p-value either.

The paired test compares two models trained with the same seed (same data order and initial weights where
the seed fixes them), which removes the seed-to-seed variance the two share.
"""

from __future__ import annotations

import math
import warnings
from collections.abc import Sequence
from typing import Any

from scipy import stats as _st

CONFIDENCE = 0.95

# Fields that identify a row rather than measure it: kept as they are, never averaged.
IDENTITY_KEYS = frozenset({"gen", "members", "seed", "index"})

# Descriptive fields that define the experiment: seeds that disagree on them cannot be pooled.
STRICT_KEYS = frozenset({"gen", "members", "arch", "teacher"})

# Fields compared with generation 0 by a paired t-test in :func:`aggregate_summaries`.
PAIRED_FIELDS = ("test_acc", "test_nll", "test_ece")


def _is_number(v: Any) -> bool:
    return isinstance(v, (int, float)) and not isinstance(v, bool)


# The range of each bounded quantity, by field name (prefixes test_/train_/holdout_ stripped): intervals are cut there.
_UNIT = (0.0, 1.0)
_POSITIVE = (0.0, math.inf)
BOUNDS: dict[str, tuple[float, float]] = {
    "acc": _UNIT, "agreement": _UNIT, "ece": _UNIT, "token_acc": _UNIT, "exact_match": _UNIT,
    "nll": _POSITIVE, "kl": _POSITIVE, "brier": _POSITIVE,
}


def bounds_for(field: str) -> tuple[float, float] | None:
    """The range of a summary field (``test_acc`` -> ``(0, 1)``, ``kl_teacher`` -> ``(0, inf)``), or None."""
    name = field
    for prefix in ("test_", "train_", "holdout_", "val_"):
        name = name.removeprefix(prefix)
    if name in BOUNDS:
        return BOUNDS[name]
    head = name.split("_", 1)[0]
    return BOUNDS.get(head)


def summarize(values: Sequence[float], bounds: tuple[float, float] | None = None) -> dict[str, Any]:
    """Mean, sample std (``ddof=1``) and the 95% Student-t interval of ``values``, the interval cut at
    ``bounds`` (the quantity's possible range) when given.

    Returns ``{"mean", "std", "ci95": [lo, hi], "n", "values"}``. With a single value there is no spread to
    estimate: ``std`` and ``ci95`` are ``None``.
    """
    vals = [float(v) for v in values]
    n = len(vals)
    if n == 0:
        raise ValueError("summarize needs at least one value")
    mean = math.fsum(vals) / n
    if n == 1:
        return {"mean": mean, "std": None, "ci95": None, "n": 1, "values": vals}
    std = math.sqrt(math.fsum((v - mean) ** 2 for v in vals) / (n - 1))
    half = float(_st.t.ppf(0.5 + CONFIDENCE / 2, n - 1)) * std / math.sqrt(n)
    lo, hi = mean - half, mean + half
    if bounds is not None:
        lo, hi = max(lo, bounds[0]), min(hi, bounds[1])
    return {"mean": mean, "std": std, "ci95": [lo, hi], "n": n, "values": vals}


def paired_comparison(a: Sequence[float], b: Sequence[float]) -> dict[str, Any]:
    """Paired comparison of ``a`` and ``b`` (same seeds, same order): statistics of ``a - b``.

    Returns ``{"mean_diff", "ci95", "p_value", "n", "test": "paired t-test"}``; the p-value is two-sided
    (``scipy.stats.ttest_rel``). ``p_value`` is ``None`` when it is undefined: fewer than two pairs, or all
    differences equal (no spread: the t statistic is 0/0 or infinite, not evidence).
    """
    a = [float(v) for v in a]
    b = [float(v) for v in b]
    if len(a) != len(b):
        raise ValueError(f"paired comparison needs equal lengths, got {len(a)} and {len(b)}")
    if not a:
        raise ValueError("paired comparison needs at least one pair")
    diff = summarize([x - y for x, y in zip(a, b, strict=True)])
    p_value = None
    if len(a) >= 2 and diff["std"] > 0:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            p = float(_st.ttest_rel(a, b).pvalue)
        p_value = None if math.isnan(p) else p
    return {
        "mean_diff": diff["mean"],
        "ci95": diff["ci95"],
        "p_value": p_value,
        "n": diff["n"],
        "test": "paired t-test",
    }


def is_aggregated(summary: dict[str, Any]) -> bool:
    """True for a summary produced by :func:`aggregate_summaries` (it carries the list of seeds)."""
    return "seeds" in summary


def is_stat(value: Any) -> bool:
    """True for a :func:`summarize` dict."""
    return isinstance(value, dict) and "mean" in value and "ci95" in value


def mean_of(value: Any) -> float | None:
    """The mean of a :func:`summarize` dict, a plain number as a float, or ``None``."""
    if is_stat(value):
        return value["mean"]
    return float(value) if _is_number(value) else None


def _merge(values: list[Any], path: str) -> Any:
    """Combine one field across seeds: numbers -> :func:`summarize`, dicts and lists of dicts recursively,
    anything else kept when equal across seeds; when not, ``ValueError`` for :data:`STRICT_KEYS` and
    ``{"per_seed": values}`` for the rest (e.g. a ``resumed`` flag set in one seed only)."""
    key = path.rsplit(".", 1)[-1]
    if all(v is None for v in values):
        return None
    if key not in IDENTITY_KEYS and all(v is None or _is_number(v) for v in values):
        return summarize([v for v in values if v is not None], bounds_for(key))
    if all(isinstance(v, dict) for v in values):
        keys = list(dict.fromkeys(k for v in values for k in v))
        return {k: _merge([v.get(k) for v in values], f"{path}.{k}") for k in keys}
    if (
        all(isinstance(v, list) for v in values)
        and len({len(v) for v in values}) == 1
        and values[0]
        and all(isinstance(x, dict) for v in values for x in v)
    ):
        return [_merge([v[i] for v in values], f"{path}[{i}]") for i in range(len(values[0]))]
    first = values[0]
    if any(v != first for v in values[1:]):
        if key in STRICT_KEYS:
            raise ValueError(f"summary field {path!r} differs across seeds: {values!r}")
        return {"per_seed": values}
    return first


def _align(summaries: list[dict[str, Any]], section: str, key) -> list[list[dict[str, Any]]]:
    """Rows of ``section`` matched across seeds by ``key(row)``, in the first seed's order."""
    tables = []
    for s in summaries:
        rows = s.get(section) or []
        tables.append({key(r): r for r in rows})
    order = [key(r) for r in summaries[0].get(section) or []]
    for i, t in enumerate(tables[1:], start=1):
        if set(t) != set(order):
            raise ValueError(
                f"{section} differ across seeds: seed index 0 has {sorted(order)}, seed index {i} has {sorted(t)}"
            )
    return [[t[k] for t in tables] for k in order]


def _paired_vs(rows: list[dict[str, Any]], base: list[dict[str, Any]]) -> dict[str, Any]:
    out = {}
    for field in PAIRED_FIELDS:
        pairs = [(r.get(field), g.get(field)) for r, g in zip(rows, base, strict=True)]
        pairs = [(x, y) for x, y in pairs if _is_number(x) and _is_number(y)]
        if pairs:
            out[field] = paired_comparison([x for x, _ in pairs], [y for _, y in pairs])
    return out


def aggregate_summaries(
    summaries: Sequence[dict[str, Any]], seeds: Sequence[int] | None = None
) -> dict[str, Any]:
    """Combine per-seed ``summary.json`` dicts (the run-directory contract: :mod:`gendistill.rundir`, docs/design.md) into one.

    The result has the same structure: ``generations`` (matched across seeds by ``gen``) and ``ensembles``
    (matched by ``members``), every numeric field replaced by :func:`summarize` over seeds, and other fields
    kept (``arch``, ``teacher``, ``gen``, ``members`` must agree across seeds, else ``ValueError``; other
    fields that differ become ``{"per_seed": [...]}``). A field that is ``None`` in every seed (gen 0
    has no teacher) stays ``None``; one that is ``None`` in some seeds only is summarized over the others
    (its ``n`` says how many). Each generation ``k >= 1`` and each ensemble also gets
    ``"vs_gen0": {field: paired_comparison(row_k, gen_0)}`` for ``test_acc``, ``test_nll``, ``test_ece``.
    The top level gets ``"seeds"`` (default: each summary's ``"seed"`` field if all have one, else
    ``0 .. n-1``) and ``"n_seeds"``.
    """
    summaries = list(summaries)
    if not summaries:
        raise ValueError("aggregate_summaries needs at least one per-seed summary")
    if seeds is None:
        given = [s.get("seed") for s in summaries]
        seeds = given if all(_is_number(v) for v in given) else list(range(len(summaries)))
    seeds = list(seeds)
    if len(seeds) != len(summaries):
        raise ValueError(f"got {len(summaries)} summaries but {len(seeds)} seeds")

    gens = _align(summaries, "generations", lambda r: r.get("gen"))
    ens = _align(summaries, "ensembles", lambda r: tuple(r.get("members") or ()))
    base = next((rows for rows in gens if rows[0].get("gen") == 0), None)

    out: dict[str, Any] = {"seeds": seeds, "n_seeds": len(seeds)}
    for key in dict.fromkeys(k for s in summaries for k in s):
        if key in ("generations", "ensembles", "seed", "seeds", "n_seeds"):
            continue
        if key == "environment":  # a record, not a measurement: kept as is when the seeds agree
            envs = [s.get(key) for s in summaries]
            out[key] = envs[0] if all(e == envs[0] for e in envs) else {"per_seed": envs}
            continue
        out[key] = _merge([s.get(key) for s in summaries], key)

    def rows_out(groups: list[list[dict[str, Any]]], section: str, compare: bool) -> list[dict[str, Any]]:
        result = []
        for i, rows in enumerate(groups):
            row = _merge(rows, f"{section}[{i}]")
            if compare and base is not None and rows is not base:
                row["vs_gen0"] = _paired_vs(rows, base)
            result.append(row)
        return result

    out["generations"] = rows_out(gens, "generations", compare=True)
    out["ensembles"] = rows_out(ens, "ensembles", compare=True)
    return out
