"""The report of a run directory (``report.md`` + self-contained ``report.html``) and ``compare_runs``.

Three layers: :mod:`~gendistill.analysis.rundata` reads the run directory (the contract of
:mod:`gendistill.rundir`, docs/design.md), this module builds a typed document
(:mod:`~gendistill.analysis.document`: headings, paragraphs, tables, figures) from it, and
:mod:`~gendistill.analysis.render` writes that document as Markdown and HTML. What is read:

- ``summary.json``: one seed, or aggregated over seeds (it has ``"seeds"``); when only per-seed folders
  ``seed0/ seed1/ ...`` hold summaries, they are aggregated with :func:`aggregate_summaries`;
- ``gen<k>/history.csv`` (per seed folder when there are several seeds);
- optional ``analysis/agreement_matrix.json``, ``analysis/cka.json`` (``{"gens": [...], "<split>": KxK}``)
  and ``analysis/reliability.json`` (``{"gen0": {"bin_conf", "bin_acc", "bin_count", ...}, ...}``), at the
  top level or per seed folder (per-seed matrices are averaged, reliability bins pooled);
- optional ``config.yaml``, shown verbatim at the end.

Writes ``plots/*.png``, ``report.md`` (figures linked) and ``report.html`` (figures embedded as base64
data URIs, no external files), all atomically. Each plot is skipped when its input is absent.
"""

from __future__ import annotations

import math
import re
from pathlib import Path
from typing import Any

from .. import metrics as metrics_module
from .. import rundir
from ..errors import GendistillError
from ..io import atomic_write_text
from . import stats as stats_module
from .compression import HEADERS as COMPRESSION_HEADERS
from .compression import compression_rows
from .document import Block, Bullets, Code, Figure, Heading, Paragraph, Table
from .plots import (
    ensemble_label,
    gen_label,
    plot_generation_metric,
    plot_matrix,
    plot_reliability,
    plot_training_curves,
)
from .render import md_table, render_html, render_markdown
from .rundata import RunData, load_histories, load_matrix, load_reliability, load_run, load_summary
from .stats import is_aggregated, is_stat, mean_of
from .tables import columns_for, per_task_rows

__all__ = ["RunData", "build_report", "compare_runs", "load_run", "load_summary", "render_html", "render_markdown",
           "write_report"]

# (summary field, column header, scale, digits): accuracies and ECE shown in percent.
HEADLINE = [
    ("test_acc", "test acc (%)", 100.0, 2),
    ("test_nll", "NLL", 1.0, 4),
    ("test_ece", "ECE (%)", 100.0, 2),
    ("agreement_teacher", "agree w/ teacher (%)", 100.0, 2),
    ("kl_teacher", "KL(t‖s)", 1.0, 4),
    ("agreement_gen0", "agree w/ gen0 (%)", 100.0, 2),
]

# Per-generation plots: (field, y label, scale, file name).
GENERATION_PLOTS = [
    ("test_acc", "test accuracy (%)", 100.0, "test_acc.png"),
    ("agreement_teacher", "top-1 agreement with teacher (%)", 100.0, "agreement_teacher.png"),
    ("kl_teacher", "KL(teacher ‖ student)", 1.0, "kl_teacher.png"),
    ("test_ece", "ECE (%)", 100.0, "test_ece.png"),
    ("test_nll", "test NLL", 1.0, "test_nll.png"),
    ("agreement_gen0", "top-1 agreement with gen0 (%)", 100.0, "agreement_gen0.png"),
]


# ------------------------------------------------------------------------------------------ formatting


def fmt_value(value: Any, scale: float = 1.0, digits: int = 4, ci: bool = True) -> str:
    """A number, or ``mean ± std [lo, hi]`` for a :func:`summarize` dict; ``—`` when absent."""
    if value is None:
        return "—"
    if is_stat(value):
        m = value["mean"]
        if value.get("n", 1) <= 1 or value.get("std") is None:
            return f"{m * scale:.{digits}f} (n=1, no spread)"
        text = f"{m * scale:.{digits}f} ± {value['std'] * scale:.{digits}f}"
        if ci:
            lo, hi = value["ci95"]
            text += f" [{lo * scale:.{digits}f}, {hi * scale:.{digits}f}]"
        return text
    if isinstance(value, dict) and "per_seed" in value:
        return "varies: " + ", ".join(str(v) for v in value["per_seed"])
    if isinstance(value, bool):
        return str(value)
    if isinstance(value, (int, float)):
        return "nan" if isinstance(value, float) and math.isnan(value) else f"{value * scale:.{digits}f}"
    return str(value)


def _signed(x: float, digits: int) -> str:
    return f"{x:+.{digits}f}"


def fmt_p(p: float | None) -> str:
    if p is None:
        return "—"
    return "<0.001" if p < 0.001 else f"{p:.3f}"


def row_name(row: dict[str, Any]) -> str:
    if "members" in row:
        return ensemble_label(row["members"])
    arch = row.get("arch")
    return gen_label(row.get("gen")) + (f" ({arch})" if arch else "")


def teacher_name(row: dict[str, Any]) -> str:
    if "members" in row:
        return "—"
    t = row.get("teacher")
    return "labels" if t is None else str(t)


# ------------------------------------------------------------------------------------------ document



def _headline(summary: dict[str, Any]) -> Block:
    headers = ["model", "teacher"] + [h for _, h, _, _ in HEADLINE]
    rows = []
    for row in list(summary.get("generations", [])) + list(summary.get("ensembles", [])):
        rows.append(
            [row_name(row), teacher_name(row)] + [fmt_value(row.get(f), s, d) for f, _, s, d in HEADLINE]
        )
    return Table(headers, rows)


def _per_task(summary: dict[str, Any]) -> list[Block]:
    """The tasks of a multi-task dataset: each task's figures on its own test items, and fidelity against the
    row's teacher (for BAM, each task's own single-task teacher) on those items."""
    rows = per_task_rows(summary)
    if not rows:
        return []
    columns = columns_for({"generations": [fig for _, _, fig in rows]})
    table = Table(["model", "task"] + [head for _, head, _ in columns],
                  [[model, task] + [fmt_value(fig.get(k), 1.0, d, ci=False) for k, _, d in columns]
                   for model, task, fig in rows])
    return [Heading("Per task"), Paragraph("Each task's test items only; `agreement_teacher` / `kl_teacher` against "
                                           "the generation's teacher on that task's items (BAM: the task's own "
                                           "single-task teacher)."), table]


def _paired(summary: dict[str, Any]) -> list[Block]:
    """Differences with generation 0 (paired t-test over seeds when aggregated)."""
    fields = [
        ("test_acc", "Δ test acc (pp)", 100.0, 2),
        ("test_nll", "Δ NLL", 1.0, 4),
        ("test_ece", "Δ ECE (pp)", 100.0, 2),
    ]
    rows_in = [r for r in summary.get("generations", []) if r.get("gen") != 0] + list(
        summary.get("ensembles", [])
    )
    if not rows_in:
        return []
    if is_aggregated(summary):
        headers = ["model"]
        for _, h, _, _ in fields:
            headers += [h + " [95% CI]", "p"]
        rows = []
        for r in rows_in:
            cmp = r.get("vs_gen0") or {}
            cells = [row_name(r)]
            for f, _, s, d in fields:
                c = cmp.get(f)
                if c is None:
                    cells += ["—", "—"]
                    continue
                if c.get("ci95") is None:  # one pair: a difference, no interval or test
                    cells += [f"{_signed(c['mean_diff'] * s, d)} (n=1)", "—"]
                    continue
                lo, hi = c["ci95"]
                cells += [
                    f"{_signed(c['mean_diff'] * s, d)} [{_signed(lo * s, d)}, {_signed(hi * s, d)}]",
                    fmt_p(c["p_value"]),
                ]
            rows.append(cells)
        seeds = summary.get("seeds")
        note = (
            f"Model minus gen0, paired by seed (seeds {', '.join(map(str, seeds))}); 95% Student-t interval "
            "of the mean difference and two-sided paired t-test p-value (`scipy.stats.ttest_rel`)."
        )
        return [Paragraph(note), Table(headers, rows)]
    gen0 = next((g for g in summary.get("generations", []) if g.get("gen") == 0), None)
    if gen0 is None:
        return []
    headers = ["model"] + [h for _, h, _, _ in fields]
    rows = []
    for r in rows_in:
        cells = [row_name(r)]
        for f, _, s, d in fields:
            a, b = mean_of(r.get(f)), mean_of(gen0.get(f))
            cells.append("—" if a is None or b is None else _signed((a - b) * s, d))
        rows.append(cells)
    return [
        Paragraph("Model minus gen0. One seed: no interval or test; run several seeds for those."),
        Table(headers, rows),
    ]


def _doc_table(doc: str | None) -> list[tuple[str, str]]:
    """``(name, formula)`` rows of the ``====``-ruled table in a module docstring."""
    lines = (doc or "").splitlines()
    rules = [i for i, ln in enumerate(lines) if ln.strip().startswith("====")]
    if len(rules) < 3:
        return []
    out = []
    for ln in lines[rules[1] + 1 : rules[2]]:
        parts = re.split(r"\s{2,}", ln.strip(), maxsplit=1)
        if len(parts) == 2:
            out.append((parts[0], parts[1]))
        elif out and ln.strip():
            out[-1] = (out[-1][0], out[-1][1] + " " + ln.strip())
    return [(name, formula.replace("``", "`")) for name, formula in out]


def _definitions() -> list[Block]:
    items = [f"**{name}**: {formula}" for name, formula in _doc_table(metrics_module.__doc__)]
    items += [
        "**agreement w/ teacher**, **KL(t‖s)**: `agreement` and `kl_teacher_student` above with the "
        "generation's own teacher (the previous generation, gen0, or the ensemble of earlier generations, as "
        "the teacher column says) as `t`; **agree w/ gen0**: `agreement` with gen0 as `t`.",
        "**ensembles** `ens(genA..genB)`: mean of the members' probabilities, scored with the same metrics.",
        "**CKA** (linear, Kornblith et al. 2019): `||Y^T X||_F^2 / (||X^T X||_F ||Y^T Y||_F)` on column-centered "
        "penultimate features (input of the last linear layer) of the test inputs.",
    ]
    items += [f"**{name}**: {formula}" for name, formula in _doc_table(stats_module.__doc__)]
    return [
        Heading("Definitions"),
        Paragraph("Probabilities are `p = softmax(z)` at temperature 1; `N` test samples."),
        Bullets(items),
    ]


def _plots(run: RunData, plot_dir: Path) -> list[Figure]:
    """Draw every plot whose input exists; return ``(path, caption)`` pairs."""
    summary, agg = run.summary, run.aggregated
    err = " Error bars: 95% Student-t CI over seeds." if agg else ""
    figs: list[Figure] = []
    for fld, label, scale, name in GENERATION_PLOTS:
        p = plot_generation_metric(summary, fld, label, plot_dir / name, scale=scale)
        if p:
            figs.append(Figure(p, f"{label} per generation (test split).{err}"))
    for g in summary.get("generations", []):
        k = g.get("gen")
        p = plot_training_curves(
            load_histories(run, k), f"gen{k} training curves", plot_dir / f"training_gen{k}.png"
        )
        if p:
            figs.append(Figure(p, f"gen{k}: every column of `history.csv` per epoch.", wide=True))
    for file, title, name in [
        ("agreement_matrix.json", "top-1 agreement", "agreement_matrix"),
        ("cka.json", "linear CKA (penultimate features)", "cka"),
    ]:
        m = load_matrix(run, file)
        if not m:
            continue
        labels = [gen_label(g) for g in m.get("gens") or []]
        over = f", mean over {m['n_seeds']} seeds" if m.get("n_seeds", 1) > 1 else ""
        for split, mat in m.items():
            if split in ("gens", "n_seeds") or not isinstance(mat, list):
                continue
            labels_k = labels if len(labels) == len(mat) else [str(i) for i in range(len(mat))]
            p = plot_matrix(mat, labels_k, f"{title} ({split}{over})", plot_dir / f"{name}_{split}.png")
            if p:
                figs.append(Figure(p, f"Pairwise {title} between generations, {split} split{over}."))
    rel, n_files = load_reliability(run)
    p = plot_reliability(rel, plot_dir / "reliability.png")
    if p:
        pooled = f" Bins pooled over {n_files} seeds." if n_files > 1 else ""
        figs.append(
            Figure(
                p,
                f"Reliability diagrams (15 equal-width confidence bins, test split): bar = accuracy, "
                f"shaded = gap to mean confidence.{pooled}",
            )
        )
    return figs


def build_report(run: RunData, plot_dir: Path) -> list[Block]:
    summary = run.summary
    title = f"gendistill report: {run.root.name}"
    epoch = summary.get("epoch_choice") or "final"
    if run.aggregated:
        seeds = summary.get("seeds", [])
        scope = (
            f"{len(seeds)} seeds ({', '.join(map(str, seeds))}); each figure is mean ± sample std "
            "[95% Student-t CI] over seeds."
        )
    else:
        seed = summary.get("seed")
        scope = "one seed" + (f" ({seed})" if seed is not None else "") + "."
    blocks: list[Block] = [
        Heading(title, 1),
        Paragraph(
            f"Run directory `{run.root}`. All figures on the test split, from each generation's "
            f"{epoch}-epoch model as recorded in `summary.json`. Seeds: {scope}",
        ),
        Heading("Results per generation"),
        _headline(summary),
        *_per_task(summary),
    ]
    comp = compression_rows(summary)
    if comp:
        blocks += [Heading("Compression"), Paragraph("Parameters, multiply-accumulates of one input (torch's FLOP "
                   "counter / 2), checkpoint size and, when measured (train.speed_figures), inference latency and "
                   "throughput; ratios to generation 0."), Table(COMPRESSION_HEADERS, comp)]
    paired = _paired(summary)
    if paired:
        blocks += [Heading("Compared with generation 0"), *paired]
    figs = _plots(run, plot_dir)
    if figs:
        blocks.append(Heading("Figures"))
        blocks += figs
    blocks += _definitions()
    cfg = run.root / rundir.CONFIG
    if cfg.exists():
        blocks += [Heading("Config"), Code(cfg.read_text(encoding="utf-8"))]
    return blocks


def write_report(run_dir: str | Path) -> tuple[Path, Path]:
    """Write ``plots/*.png``, ``report.md`` and ``report.html`` into ``run_dir``; return the two report paths."""
    run = load_run(run_dir)
    plot_dir = run.root / rundir.PLOTS
    plot_dir.mkdir(exist_ok=True)
    blocks = build_report(run, plot_dir)
    md_path, html_path = run.root / rundir.REPORT_MD, run.root / rundir.REPORT_HTML
    atomic_write_text(md_path, render_markdown(blocks, run.root))
    atomic_write_text(html_path, render_html(blocks))
    return html_path, md_path


# ------------------------------------------------------------------------------------------ compare


def _run_labels(paths: list[Path]) -> list[str]:
    names = [p.name or str(p) for p in paths]
    if len(set(names)) < len(names):
        names = [f"{p.parent.name}/{p.name}" for p in paths]
    return names


def compare_runs(run_dirs: list[str | Path]) -> str:
    """Markdown table, one column per run: per generation test accuracy, agreement with its teacher and
    KL(teacher‖student), then each ensemble's accuracy. Aggregated runs show ``mean ± std`` over seeds."""
    if not run_dirs:
        raise GendistillError("compare needs at least one run directory")
    paths = [Path(p) for p in run_dirs]
    summaries = [load_summary(p) for p in paths]
    headers = ["metric (test)"]
    for label, s in zip(_run_labels(paths), summaries, strict=True):
        headers.append(label + (f" ({len(s['seeds'])} seeds)" if is_aggregated(s) else ""))
    gens = sorted({g["gen"] for s in summaries for g in s.get("generations", [])})
    ens = list(
        dict.fromkeys(tuple(e.get("members") or ()) for s in summaries for e in s.get("ensembles", []))
    )
    rows = []
    for k in gens:
        lookup = [next((g for g in s.get("generations", []) if g.get("gen") == k), None) for s in summaries]
        for fld, label, scale, digits in [
            ("test_acc", "test acc (%)", 100.0, 2),
            ("agreement_teacher", "agree w/ teacher (%)", 100.0, 2),
            ("kl_teacher", "KL(t‖s)", 1.0, 4),
        ]:
            cells = [fmt_value(g.get(fld), scale, digits, ci=False) if g else "—" for g in lookup]
            if k == 0 and all(c == "—" for c in cells):
                continue
            rows.append([f"gen{k} {label}"] + cells)
    for members in ens:
        lookup = [
            next((e for e in s.get("ensembles", []) if tuple(e.get("members") or ()) == members), None)
            for s in summaries
        ]
        rows.append(
            [f"{ensemble_label(members)} test acc (%)"]
            + [fmt_value(e.get("test_acc"), 100.0, 2, ci=False) if e else "—" for e in lookup]
        )
    return md_table(headers, rows)
