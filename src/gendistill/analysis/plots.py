"""Plots of a lineage: figures per generation, training curves, matrices, reliability diagrams.

Every function draws one PNG with matplotlib's Agg canvas (no pyplot, no global backend change), writes it
atomically, and returns its path, or ``None`` when its input is absent (nothing is drawn then).
Figures aggregated over seeds show the mean with 95% Student-t intervals as error bars.
"""

from __future__ import annotations

import io
import math
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import torch
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure
from matplotlib.ticker import MaxNLocator

from ..io import atomic_write_bytes
from .stats import is_stat

DPI = 110

# ------------------------------------------------------------------------------------------ reliability


def ece_from_bins(bins: dict[str, Sequence[float]]) -> float:
    """``sum_b (count_b / N) |bin_acc_b - bin_conf_b|``."""
    n = sum(bins["bin_count"])
    if n == 0:
        return float("nan")
    return (
        sum(
            c * abs(a - f)
            for a, f, c in zip(bins["bin_acc"], bins["bin_conf"], bins["bin_count"], strict=True)
        )
        / n
    )


def pool_bins(many: Sequence[dict[str, Sequence[float]]]) -> dict[str, list[float]]:
    """Pool reliability bins of several seeds (same binning): counts add, means are count-weighted."""
    first = many[0]
    k = len(first["bin_count"])
    if any(len(b["bin_count"]) != k for b in many):
        raise ValueError("cannot pool reliability bins with different numbers of bins")
    count = [sum(b["bin_count"][i] for b in many) for i in range(k)]

    def pooled(key: str) -> list[float]:
        return [
            sum(b[key][i] * b["bin_count"][i] for b in many) / count[i] if count[i] else 0.0 for i in range(k)
        ]

    out = {"bin_conf": pooled("bin_conf"), "bin_acc": pooled("bin_acc"), "bin_count": count}
    for key in ("bin_lower", "bin_upper"):
        if key in first:
            out[key] = list(first[key])
    return out


def _display_bins(bins: dict[str, Sequence[float]]) -> list[tuple[float, float, float, float, int]]:
    """``(lower, upper, conf, acc, count)`` per non-empty bin; a zero-width last bin (confidence exactly 1)
    is merged into the bin before it for display only."""
    k = len(bins["bin_count"])
    lower = bins.get("bin_lower") or [i / k for i in range(k)]
    upper = bins.get("bin_upper") or [(i + 1) / k for i in range(k)]
    rows = [
        [lower[i], upper[i], bins["bin_conf"][i], bins["bin_acc"][i], bins["bin_count"][i]] for i in range(k)
    ]
    if len(rows) > 1 and rows[-1][1] - rows[-1][0] <= 0:
        lo, hi = rows[-2], rows.pop()
        n = lo[4] + hi[4]
        if n:
            lo[2] = (lo[2] * lo[4] + hi[2] * hi[4]) / n
            lo[3] = (lo[3] * lo[4] + hi[3] * hi[4]) / n
            lo[4] = n
    return [tuple(r) for r in rows if r[4] > 0]


# ------------------------------------------------------------------------------------------ helpers


def _new_figure(width: float, height: float) -> Figure:
    fig = Figure(figsize=(width, height), layout="constrained")
    FigureCanvasAgg(fig)
    return fig


def _save(fig: Figure, path: str | Path) -> Path:
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=DPI)
    atomic_write_bytes(path, buf.getvalue())
    return Path(path)


def _point(value: Any) -> tuple[float, float, float] | None:
    """``(mean, lower error, upper error)`` of a number or a summarize dict; ``None`` when absent."""
    if is_stat(value):
        m = value["mean"]
        if m is None or not math.isfinite(m):
            return None
        if value.get("ci95") is None:  # one value: no interval to draw
            return m, 0.0, 0.0
        lo, hi = value["ci95"]  # already cut at the quantity's bounds (analysis.stats.BOUNDS)
        return m, max(m - lo, 0.0), max(hi - m, 0.0)
    if isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value):
        return float(value), 0.0, 0.0
    return None


def gen_label(g: Any) -> str:
    return f"gen{g}" if isinstance(g, int) and not isinstance(g, bool) else str(g)


def ensemble_label(members: Sequence[int]) -> str:
    members = list(members)
    if members and members == list(range(members[0], members[-1] + 1)) and len(members) > 1:
        return f"ens(gen{members[0]}..gen{members[-1]})"
    return "ens(" + "+".join(f"gen{m}" for m in members) + ")"


# ------------------------------------------------------------------------------------------ plots


def plot_generation_metric(
    summary: dict[str, Any], field: str, ylabel: str, path: str | Path, scale: float = 1.0
) -> Path | None:
    """``field`` per generation (line with markers; 95% CI error bars when aggregated over seeds).

    Ensembles that carry the field are drawn as separate markers at their last member's generation, one
    series per first member (``ens(gen0..k)``, ``ens(gen1..k)``). ``scale`` multiplies values (100 for %).
    """
    gens = [(g["gen"], _point(g.get(field))) for g in summary.get("generations", [])]
    gens = [(k, p) for k, p in gens if p is not None]
    if not gens:
        return None
    fig = _new_figure(5.6, 3.6)
    ax = fig.add_subplot()
    xs = [k for k, _ in gens]
    ax.errorbar(
        xs,
        [p[0] * scale for _, p in gens],
        yerr=[[p[1] * scale for _, p in gens], [p[2] * scale for _, p in gens]],
        marker="o",
        capsize=4,
        label="generation",
    )
    series: dict[int, list[tuple[int, tuple[float, float, float]]]] = {}
    for e in summary.get("ensembles", []):
        p, members = _point(e.get(field)), e.get("members") or []
        if p is not None and members:
            series.setdefault(members[0], []).append((members[-1], p))
    for i, (first, pts) in enumerate(sorted(series.items())):
        pts.sort()
        ax.errorbar(
            [x + 0.08 * (i + 1) for x, _ in pts],
            [p[0] * scale for _, p in pts],
            yerr=[[p[1] * scale for _, p in pts], [p[2] * scale for _, p in pts]],
            marker="s",
            linestyle="--",
            capsize=3,
            alpha=0.8,
            label=f"ens(gen{first}..k)",
        )
    ax.set_xticks(sorted(set(xs)))
    ax.set_xlabel("generation k")
    ax.set_ylabel(ylabel)
    ax.grid(alpha=0.3)
    if series:
        ax.legend(fontsize=8)
    return _save(fig, path)


_NOT_PLOTTED = {"epoch", "lr", "seconds", "step", "time"}


def history_panels(columns: Sequence[str]) -> dict[str, list[str]]:
    """Group history columns into panels, one quantity per axis: accuracy (``*acc*``), agreement
    (``*agree*``), KL (held-out ``*kl*`` not starting with ``train_``), time (``*_seconds``: wall time per epoch,
    which on a loaded machine would otherwise set the loss axis' scale) and loss (every other column but epoch
    and lr)."""
    panels: dict[str, list[str]] = {"loss": [], "accuracy": [], "agreement": [], "KL": [], "time (s)": []}
    for c in columns:
        tokens = c.lower().split("_")
        if c in _NOT_PLOTTED:
            continue
        if "seconds" in tokens or "time" in tokens:
            panels["time (s)"].append(c)
        elif any("acc" in t for t in tokens):
            panels["accuracy"].append(c)
        elif any("agree" in t for t in tokens):
            panels["agreement"].append(c)
        elif "kl" in tokens and not c.startswith("train_"):
            panels["KL"].append(c)
        else:
            panels["loss"].append(c)
    return {k: v for k, v in panels.items() if v}


def plot_training_curves(
    histories: Sequence[Sequence[dict[str, float]]], title: str, path: str | Path
) -> Path | None:
    """Training curves of one generation: one panel per group of columns (see :func:`history_panels`).

    ``histories`` holds one history per seed; with several, the line is the mean over seeds and the band
    the mean +- one std, over the epochs all seeds reached.
    """
    histories = [h for h in histories if h]
    if not histories:
        return None
    length = min(len(h) for h in histories)
    columns = list(dict.fromkeys(k for h in histories for k in h[0]))
    panels = history_panels(columns)
    if not panels:
        return None
    x = [histories[0][i].get("epoch", i + 1) for i in range(length)]
    fig = _new_figure(4.2 * len(panels), 3.3)
    axes = fig.subplots(1, len(panels), squeeze=False)[0]
    for ax, (name, cols) in zip(axes, panels.items(), strict=True):
        for c in cols:
            runs = torch.tensor(
                [[h[i].get(c, math.nan) for i in range(length)] for h in histories], dtype=torch.float64
            )
            mean = runs.nanmean(0)
            ax.plot(x, mean.tolist(), label=c)
            if len(histories) > 1:
                std = (runs - mean).pow(2).nansum(0).div(max(len(histories) - 1, 1)).sqrt()
                ax.fill_between(x, (mean - std).tolist(), (mean + std).tolist(), alpha=0.2)
        ax.set_title(name)
        ax.set_xlabel("epoch")
        ax.xaxis.set_major_locator(MaxNLocator(integer=True))
        ax.grid(alpha=0.3)
        ax.legend(fontsize=7)
    suffix = f" (mean ± std over {len(histories)} seeds)" if len(histories) > 1 else ""
    fig.suptitle(title + suffix, fontsize=10)
    return _save(fig, path)


def plot_matrix(
    matrix: Sequence[Sequence[float]] | None,
    labels: Sequence[str],
    title: str,
    path: str | Path,
    vmin: float | None = None,
    vmax: float = 1.0,
) -> Path | None:
    """Heat map of a square matrix with each value written in its cell. ``vmin`` defaults to the smallest
    value rounded down to 0.05 (so close values still differ in colour)."""
    if not matrix:
        return None
    k = len(matrix)
    fig = _new_figure(1.2 + 0.7 * k, 1.0 + 0.6 * k)
    ax = fig.add_subplot()
    data = [[math.nan if v is None else float(v) for v in row] for row in matrix]
    if vmin is None:
        finite = [v for row in data for v in row if math.isfinite(v)]
        vmin = min(math.floor(min(finite) * 20) / 20, vmax - 0.05) if finite else 0.0
    im = ax.imshow(data, vmin=vmin, vmax=vmax, cmap="viridis")
    for i in range(k):
        for j in range(len(data[i])):
            v = data[i][j]
            dark = math.isfinite(v) and (v - vmin) / ((vmax - vmin) or 1) < 0.6
            ax.text(
                j,
                i,
                f"{v:.3f}" if math.isfinite(v) else "nan",
                ha="center",
                va="center",
                fontsize=8,
                color="white" if dark else "black",
            )
    ax.set_xticks(range(k), labels, rotation=45, ha="right")
    ax.set_yticks(range(k), labels)
    ax.set_title(title, fontsize=10)
    fig.colorbar(im, ax=ax, shrink=0.8)
    return _save(fig, path)


def plot_reliability(
    reliability: dict[str, dict[str, Sequence[float]]] | None, path: str | Path
) -> Path | None:
    """Reliability diagrams, one panel per model: accuracy per confidence bin against the diagonal, with
    the gap to the bin's mean confidence shaded and the ECE of the bins in the title."""
    if not reliability:
        return None
    names = list(reliability)
    cols = min(len(names), 4)
    rows = math.ceil(len(names) / cols)
    fig = _new_figure(3.0 * cols, 3.0 * rows)
    axes = fig.subplots(rows, cols, squeeze=False)
    for n, name in enumerate(names):
        ax = axes[n // cols][n % cols]
        bins = reliability[name]
        for lo, hi, conf, acc, _ in _display_bins(bins):
            ax.bar(lo, acc, width=hi - lo, align="edge", color="tab:blue", edgecolor="black", linewidth=0.5)
            ax.bar(lo, conf - acc, bottom=acc, width=hi - lo, align="edge", color="tab:red", alpha=0.3)
        ax.plot([0, 1], [0, 1], "k--", linewidth=1)
        ax.set_xlim(0, 1)
        ax.set_ylim(0, 1)
        ax.set_title(f"{name}  ECE {100 * ece_from_bins(bins):.2f}%", fontsize=9)
        ax.set_xlabel("confidence")
        ax.set_ylabel("accuracy")
    for n in range(len(names), rows * cols):
        axes[n // cols][n % cols].set_visible(False)
    return _save(fig, path)
