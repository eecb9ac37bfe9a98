"""Terminal tables of a lineage summary (single seed, or aggregated over seeds)."""

from __future__ import annotations

from typing import Any

from rich.console import Console
from rich.table import Table

COLUMNS = [
    ("test_acc", "test acc", 4),
    ("test_nll", "NLL", 3),
    ("test_ece", "ECE", 3),
    ("agreement_teacher", "agree(teacher)", 4),
    ("kl_teacher", "KL(t||s)", 4),
    ("agreement_gen0", "agree(gen0)", 4),
    ("kl_gen0", "KL(g0||s)", 4),
]

# the rl domain's columns (shown for rows that have a return)
RL_COLUMNS = [
    ("test_return", "return", 1),
    ("test_return_ci95", "±CI95", 1),
    ("test_agreement_student_states", "agree(s-states)", 4),
    ("test_kl_student_states", "KL(s-states)", 4),
    ("params", "params", 0),
    ("test_inference_us", "µs/state", 1),
]


def fmt(value: Any, digits: int = 4) -> str:
    if value is None:
        return "-"
    if isinstance(value, dict) and "mean" in value:
        if value.get("mean") is None:
            return "-"
        if value.get("n", 1) > 1 and value.get("std") is not None:
            return f"{value['mean']:.{digits}f} ± {value['std']:.{digits}f}"
        return f"{value['mean']:.{digits}f}"
    if isinstance(value, float):
        return f"{value:.{digits}f}"
    return str(value)


def columns_for(summary: dict[str, Any]) -> list[tuple[str, str, int]]:
    """Classification's columns; the rl domain's return, fidelity on student-visited states, size and speed; for
    another domain (no ``test_acc``), its own ``test_<metric>`` keys first."""
    rows = summary.get("generations", []) + summary.get("ensembles", [])
    present = lambda k: any(r.get(k) is not None for r in rows)  # noqa: E731
    rl = [c for c in RL_COLUMNS if present(c[0])] if present("test_return") else []
    if present("test_acc"):
        return COLUMNS + rl
    fixed = [c for c in COLUMNS if present(c[0])]
    if rl:
        return rl + fixed
    known = {k for k, _, _ in COLUMNS}
    extra = []
    for r in rows:
        for k in r:
            if k.startswith("test_") and k not in known and k not in extra and present(k):
                extra.append(k)
    return [(k, k.removeprefix("test_"), 4) for k in extra] + fixed


def per_task_rows(summary: dict[str, Any]) -> list[tuple[str, str, dict[str, Any]]]:
    """``(model, task, figures)`` for every generation and ensemble with per-task figures (``per_task``: the
    tasks of a multi-task dataset), in table order."""
    rows = []
    for g in summary.get("generations", []):
        rows += [(f"gen{g['gen']}", task, fig) for task, fig in (g.get("per_task") or {}).items()]
    for e in summary.get("ensembles", []):
        members = e["members"]
        rows += [(f"ens(gen{members[0]}..gen{members[-1]})", task, fig) for task, fig in (e.get("per_task") or {}).items()]
    return rows


LABEL_WIDTH = 40  # characters of an arch or teacher label per line of the lineage table


def lineage_table(summary: dict[str, Any], title: str | None = None, width: int = 240) -> str:
    seeds = summary.get("seeds")
    title = title or ("lineage" + (f" — mean ± std over seeds {seeds}" if seeds else "") + " (test set, final epoch)")
    table = Table(title=title, title_justify="left")
    table.add_column("model", no_wrap=True)
    # long labels (a Hugging Face config, BAM's teacher files) fold onto more lines instead of squeezing the figures
    table.add_column("arch", max_width=LABEL_WIDTH, overflow="fold")
    table.add_column("teacher", max_width=LABEL_WIDTH, overflow="fold")
    columns = columns_for(summary)
    for _, head, _ in columns:
        table.add_column(head, justify="right", no_wrap=True)
    for g in summary.get("generations", []):
        table.add_row(f"gen{g['gen']}", str(g.get("arch", "")), str(g.get("teacher") or "labels"),
                      *[fmt(g.get(k), d) for k, _, d in columns])
    for e in summary.get("ensembles", []):
        members = e["members"]
        name = f"ens(gen{members[0]}..gen{members[-1]})"
        table.add_row(name, "ensemble", "-", *[fmt(e.get(k), d) for k, _, d in columns])
    console = Console(width=width, record=True, file=open("/dev/null", "w"), force_terminal=False)  # noqa: SIM115
    console.print(table)
    tasks = per_task_rows(summary)
    if tasks:  # a multi-task dataset: each task's figures on its own items, fidelity against its own teacher
        per = Table(title="per task (test items of each task; agree/KL against the row's teacher on that task)",
                    title_justify="left")
        per.add_column("model", no_wrap=True)
        per.add_column("task", no_wrap=True)
        task_columns = columns_for({"generations": [fig for _, _, fig in tasks]})
        for _, head, _ in task_columns:
            per.add_column(head, justify="right", no_wrap=True)
        for model, task, fig in tasks:
            per.add_row(model, task, *[fmt(fig.get(k), d) for k, _, d in task_columns])
        console.print(per)
    text = console.export_text()
    paired = [g for g in summary.get("generations", []) if g.get("vs_gen0")]
    if paired:
        lines = ["", "paired comparison with generation 0 over seeds (paired t-test): test accuracy difference"]
        for g in paired:
            c = g["vs_gen0"].get("test_acc") or {}
            if c.get("mean_diff") is None:
                continue
            lo, hi = c.get("ci95") or (float("nan"), float("nan"))
            p = c.get("p_value")
            lines.append(f"  gen{g['gen']} - gen0: {c['mean_diff']:+.4f}  95% CI [{lo:+.4f}, {hi:+.4f}]  "
                         f"p = {'n/a' if p is None else f'{p:.3g}'}  (n = {c.get('n')})")
        text += "\n".join(lines) + "\n"
    return text
