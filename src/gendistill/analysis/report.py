"""The report of a run directory (``report.md`` + self-contained ``report.html``) and ``compare_runs``.

Reads only the run directory (the contract of :mod:`gendistill.rundir`, docs/design.md):

- ``summary.json``: one seed, or aggregated over seeds (it has ``"seeds"``); when only per-seed folders
  ``seed0/ seed1/ ...`` hold summaries, they are aggregated here with :func:`aggregate_summaries`;
- ``gen<k>/history.csv`` (per seed folder when there are several seeds);
- optional ``analysis/agreement_matrix.json``, ``analysis/cka.json`` (``{"gens": [...], "<split>": KxK}``)
  and ``analysis/reliability.json`` (``{"gen0": {"bin_conf", "bin_acc", "bin_count", ...}, ...}``), at the
  top level or per seed folder (per-seed matrices are averaged, reliability bins pooled);
- optional ``config.yaml``, shown verbatim at the end.

Writes ``plots/*.png``, ``report.md`` (figures linked) and ``report.html`` (figures embedded as base64
data URIs, no external files), all atomically. Each plot is skipped when its input is absent.
"""

from __future__ import annotations

import base64
import html
import json
import math
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from .. import metrics as metrics_module
from .. import rundir
from ..errors import GendistillError
from ..io import atomic_write_text
from . import stats as stats_module
from .compression import HEADERS as COMPRESSION_HEADERS
from .compression import compression_rows
from .plots import (
    ensemble_label,
    gen_label,
    plot_generation_metric,
    plot_matrix,
    plot_reliability,
    plot_training_curves,
    pool_bins,
)
from .stats import aggregate_summaries, is_aggregated, is_stat, mean_of

SUMMARY, HISTORY, ANALYSIS, PLOTS = rundir.SUMMARY, rundir.HISTORY, rundir.ANALYSIS, rundir.PLOTS

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


# ------------------------------------------------------------------------------------------ loading


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


# ------------------------------------------------------------------------------------------ formatting


def fmt_value(value: Any, scale: float = 1.0, digits: int = 4, ci: bool = True) -> str:
    """A number, or ``mean ± std [lo, hi]`` for a :func:`summarize` dict; ``—`` when absent."""
    if value is None:
        return "—"
    if is_stat(value):
        m = value["mean"]
        if value.get("n", 1) <= 1:
            return f"{m * scale:.{digits}f} (n=1)"
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

# A report is a list of blocks rendered twice (Markdown and HTML). Inline text may use `code` spans.
Block = tuple


def _headline(summary: dict[str, Any]) -> Block:
    headers = ["model", "teacher"] + [h for _, h, _, _ in HEADLINE]
    rows = []
    for row in list(summary.get("generations", [])) + list(summary.get("ensembles", [])):
        rows.append(
            [row_name(row), teacher_name(row)] + [fmt_value(row.get(f), s, d) for f, _, s, d in HEADLINE]
        )
    return ("table", headers, rows)


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
        return [("p", note), ("table", headers, rows)]
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
        ("p", "Model minus gen0. One seed: no interval or test; run several seeds for those."),
        ("table", headers, rows),
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
        ("h2", "Definitions"),
        ("p", "Probabilities are `p = softmax(z)` at temperature 1; `N` test samples."),
        ("ul", items),
    ]


def _plots(run: RunData, plot_dir: Path) -> list[tuple[Path, str]]:
    """Draw every plot whose input exists; return ``(path, caption)`` pairs."""
    summary, agg = run.summary, run.aggregated
    err = " Error bars: 95% Student-t CI over seeds." if agg else ""
    figs: list[tuple[Path, str]] = []
    for fld, label, scale, name in GENERATION_PLOTS:
        p = plot_generation_metric(summary, fld, label, plot_dir / name, scale=scale)
        if p:
            figs.append((p, f"{label} per generation (test split).{err}"))
    for g in summary.get("generations", []):
        k = g.get("gen")
        p = plot_training_curves(
            load_histories(run, k), f"gen{k} training curves", plot_dir / f"training_gen{k}.png"
        )
        if p:
            figs.append((p, f"gen{k}: every column of `history.csv` per epoch."))
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
                figs.append((p, f"Pairwise {title} between generations, {split} split{over}."))
    rel, n_files = load_reliability(run)
    p = plot_reliability(rel, plot_dir / "reliability.png")
    if p:
        pooled = f" Bins pooled over {n_files} seeds." if n_files > 1 else ""
        figs.append(
            (
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
        ("h1", title),
        (
            "p",
            f"Run directory `{run.root}`. All figures on the test split, from each generation's "
            f"{epoch}-epoch model as recorded in `summary.json`. Seeds: {scope}",
        ),
        ("h2", "Results per generation"),
        _headline(summary),
    ]
    comp = compression_rows(summary)
    if comp:
        blocks += [("h2", "Compression"), ("p", "Parameters, multiply-accumulates of one input (torch's FLOP "
                   "counter / 2), checkpoint size and, when measured (train.speed_figures), inference latency and "
                   "throughput; ratios to generation 0."), ("table", COMPRESSION_HEADERS, comp)]
    paired = _paired(summary)
    if paired:
        blocks += [("h2", "Compared with generation 0"), *paired]
    figs = _plots(run, plot_dir)
    if figs:
        blocks.append(("h2", "Figures"))
        blocks += [("fig", p, cap) for p, cap in figs]
    blocks += _definitions()
    cfg = run.root / rundir.CONFIG
    if cfg.exists():
        blocks += [("h2", "Config"), ("pre", cfg.read_text(encoding="utf-8"))]
    return blocks


# ------------------------------------------------------------------------------------------ rendering


def _md_inline(text: str) -> str:
    """Escape ``|`` for a Markdown table cell (GFM needs it escaped even inside code spans)."""
    return text.replace("|", "\\|")


_LEFT = {"model", "teacher", "metric (test)"}


def md_table(headers: list[str], rows: list[list[str]]) -> str:
    """GitHub-flavoured Markdown table; label columns left-aligned, figures right-aligned."""
    align = ["---" if h in _LEFT else "---:" for h in headers]
    lines = ["| " + " | ".join(_md_inline(h) for h in headers) + " |", "|" + "|".join(align) + "|"]
    lines += ["| " + " | ".join(_md_inline(c) for c in r) + " |" for r in rows]
    return "\n".join(lines) + "\n"


def render_markdown(blocks: list[Block], root: Path) -> str:
    out: list[str] = []
    for b in blocks:
        kind = b[0]
        if kind == "h1":
            out.append(f"# {b[1]}\n")
        elif kind == "h2":
            out.append(f"## {b[1]}\n")
        elif kind == "p":
            out.append(b[1] + "\n")
        elif kind == "ul":
            out.append("\n".join(f"- {item}" for item in b[1]) + "\n")
        elif kind == "table":
            out.append(md_table(b[1], b[2]))
        elif kind == "fig":
            rel = Path(b[1]).relative_to(root).as_posix()
            out.append(f"![{b[2]}]({rel})\n\n*{b[2]}*\n")
        elif kind == "pre":
            out.append("```yaml\n" + b[1].rstrip("\n") + "\n```\n")
    return "\n".join(out)


def _html_inline(text: str) -> str:
    text = html.escape(text)
    text = re.sub(r"`([^`]+)`", r"<code>\1</code>", text)
    return re.sub(r"\*\*([^*]+)\*\*", r"<strong>\1</strong>", text)


CSS = """
body{font-family:system-ui,-apple-system,"Segoe UI",sans-serif;max-width:1500px;margin:2em auto;padding:0 1.5em;
color:#222;line-height:1.45}
h1{font-size:1.6em;border-bottom:2px solid #ddd;padding-bottom:.3em}h2{font-size:1.25em;margin-top:1.6em}
.tw{overflow-x:auto;margin:.8em 0}table{border-collapse:collapse;font-size:.82em}
tbody tr:nth-child(even){background:#fafafa}tbody tr:hover{background:#eef5ff}
th,td{border:1px solid #ddd;padding:.3em .6em;text-align:right;white-space:nowrap}
th{background:#f4f4f4}.l{text-align:left}
code{background:#f4f4f4;padding:0 .25em;border-radius:3px;font-size:.92em}
pre{background:#f7f7f7;padding:.8em;overflow-x:auto;font-size:.85em}
.figs{display:flex;flex-wrap:wrap;gap:1.2em}figure{margin:0;flex:1 1 460px;max-width:680px}
figure.wide{flex-basis:100%;max-width:100%}
figure img{max-width:100%;height:auto;border:1px solid #eee}figcaption{font-size:.85em;color:#555;max-width:640px}
"""


def render_html(blocks: list[Block]) -> str:
    body: list[str] = []
    in_figs = False
    for b in blocks:
        kind = b[0]
        if kind != "fig" and in_figs:
            body.append("</div>")
            in_figs = False
        if kind in ("h1", "h2"):
            body.append(f"<{kind}>{_html_inline(b[1])}</{kind}>")
        elif kind == "p":
            body.append(f"<p>{_html_inline(b[1])}</p>")
        elif kind == "ul":
            body.append("<ul>" + "".join(f"<li>{_html_inline(i)}</li>" for i in b[1]) + "</ul>")
        elif kind == "table":
            cls = ["" if h not in _LEFT else ' class="l"' for h in b[1]]
            head = "".join(f"<th{k}>{_html_inline(h)}</th>" for k, h in zip(cls, b[1], strict=True))
            rows = "".join(
                "<tr>"
                + "".join(f"<td{k}>{_html_inline(c)}</td>" for k, c in zip(cls, r, strict=True))
                + "</tr>"
                for r in b[2]
            )
            body.append(f'<div class="tw"><table><thead><tr>{head}</tr></thead><tbody>{rows}</tbody></table></div>')
        elif kind == "fig":
            if not in_figs:
                body.append('<div class="figs">')
                in_figs = True
            data = base64.b64encode(Path(b[1]).read_bytes()).decode("ascii")
            wide = ' class="wide"' if Path(b[1]).name.startswith("training_") else ""
            body.append(
                f'<figure{wide}><img src="data:image/png;base64,{data}" alt="{html.escape(b[2])}">'
                f"<figcaption>{_html_inline(b[2])}</figcaption></figure>"
            )
        elif kind == "pre":
            body.append(f"<details><summary>config.yaml</summary><pre>{html.escape(b[1])}</pre></details>")
    if in_figs:
        body.append("</div>")
    title = html.escape(blocks[0][1]) if blocks and blocks[0][0] == "h1" else "gendistill report"
    return (
        f'<!DOCTYPE html>\n<html lang="en"><head><meta charset="utf-8"><title>{title}</title>'
        f"<style>{CSS}</style></head>\n<body>\n" + "\n".join(body) + "\n</body></html>\n"
    )


def write_report(run_dir: str | Path) -> tuple[Path, Path]:
    """Write ``plots/*.png``, ``report.md`` and ``report.html`` into ``run_dir``; return the two report paths."""
    run = load_run(run_dir)
    plot_dir = run.root / PLOTS
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
