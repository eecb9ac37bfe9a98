"""Reproduce the "Measured" table of docs/methods.md.

    python benchmarks/methods_table.py                      # teacher, every method x 3 seeds, then the table
    python benchmarks/methods_table.py --table-only         # rebuild the table from runs/methods/*/summary.json
    python benchmarks/methods_table.py --methods ce kd dkd  # a subset

1. Trains the teacher once: generation 0 of examples/methods/ce.yaml (cnn2d width 32, digits, seed 0,
   ``generations.count=0``) into ``<out>/teacher``.
2. Runs ``examples/methods/<m>.yaml`` for every method with seeds 0, 1, 2 into ``<out>/<m>``, each with
   ``generations.gen0_checkpoint=<out>/teacher/gen0/model.safetensors``, generation 0 = cnn2d width 32 and the
   student (generation 1) = cnn2d width 8: every seed of every method distils the same teacher.
   ``ce`` is the label-only student (no teacher term). A run directory that already holds a
   ``summary.json`` is reused; one without is continued with ``--resume``.
3. Writes ``<out>/table.md`` from each run's top-level ``summary.json`` (generation 1's ``test_acc``,
   ``agreement_teacher``, ``kl_teacher``: mean +- sample std over seeds, final epoch) and
   ``<out>/timing/<m>.json`` (wall clock of each ``gendistill run`` command).

Runs one job at a time. Progress and each command's output go to ``<out>/logs/``.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import sys
from pathlib import Path

from _common import ROOT, last_error, run_step

EXAMPLES = ROOT / "examples" / "methods"

# Baselines first, then the catalogue in the order of docs/methods.md.
METHODS = ["ce", "kd", "dkd", "dist", "fitnet", "at", "fsp", "nst", "vid",
           "rkd_distance", "rkd_angle", "rkd", "sp", "pkt", "cc", "crd", "irg", "graph_kd", "mhgd",
           "lipschitz_kd"]
TEACHER = {"name": "cnn2d", "width": 32}
STUDENT = {"name": "cnn2d", "width": 8}
LABELS = {"ce": "ce (labels only, baseline)", "kd": "kd (baseline)"}


def _flow(d: dict) -> str:
    return "{" + ", ".join(f"{k}: {v}" for k, v in d.items()) + "}"


def teacher_command(py: str, out: Path) -> list[str]:
    return [py, "-m", "gendistill", "run", str(EXAMPLES / "ce.yaml"), "--out", str(out / "teacher"),
            "--progress", "off", "--set", "generations.count=0", "--set", "seeds=[0]",
            "--set", f"generations.archs={{0: {_flow(TEACHER)}}}"]


def method_command(py: str, out: Path, method: str, seeds: list[int]) -> list[str]:
    ckpt = out / "teacher" / "gen0" / "model.safetensors"
    return [py, "-m", "gendistill", "run", str(EXAMPLES / f"{method}.yaml"), "--out", str(out / method),
            "--progress", "off",
            "--set", f"seeds=[{','.join(map(str, seeds))}]",
            "--set", "generations.count=1",
            "--set", f"generations.gen0_checkpoint={ckpt}",
            "--set", f"generations.archs={{0: {_flow(TEACHER)}}}",
            "--set", f"model={_flow(STUDENT)}"]



def _stat(v) -> tuple[float, float]:
    if isinstance(v, dict):
        return v["mean"], v["std"]
    return float(v), 0.0


def _gen(summary: dict, k: int) -> dict:
    return next(g for g in summary["generations"] if g["gen"] == k)


def build_table(out: Path, methods: list[str]) -> str:
    t_sum = json.loads((out / "teacher" / "summary.json").read_text())
    g0 = _gen(t_sum, 0)
    teacher = f"{g0['arch']}, {g0['test_acc'] * 100:.2f}%"
    base_vals = None
    rows = ["| teacher (arch, test acc) | student | method | test acc % (mean ± std) | Δ vs ce, paired (pp) "
            "| agree(teacher) % | KL(t‖s) | wall s / seed |",
            "|---|---|---|---|---|---|---|---|"]
    for m in methods:
        summ = out / m / "summary.json"
        label = LABELS.get(m, m)
        if not summ.exists():
            student = f"{STUDENT['name']}(width={STUDENT['width']})"
            rows.append(f"| {teacher} | {student} | {label} | n/a: {last_error(out / 'logs' / f'{m}.log')} "
                        "| | | | |")
            continue
        s = json.loads(summ.read_text())
        g1 = _gen(s, 1)
        assert g1["teacher"] == "gen0", g1["teacher"]
        acc_m, acc_s = _stat(g1["test_acc"])
        ag_m, ag_s = _stat(g1["agreement_teacher"])
        kl_m, kl_s = _stat(g1["kl_teacher"])
        vals = g1["test_acc"]["values"] if isinstance(g1["test_acc"], dict) else [g1["test_acc"]]
        if m == "ce":
            base_vals = vals
        delta = "—"
        if base_vals is not None and m != "ce" and len(vals) == len(base_vals):
            d = [(a - b) * 100 for a, b in zip(vals, base_vals, strict=True)]
            dm = sum(d) / len(d)
            ds = math.sqrt(sum((x - dm) ** 2 for x in d) / (len(d) - 1)) if len(d) > 1 else 0.0
            delta = f"{dm:+.2f} ± {ds:.2f}"
        timing = out / "timing" / f"{m}.json"
        wall = "—"
        if timing.exists():
            t = json.loads(timing.read_text())
            if not t.get("resumed"):
                wall = f"{t['wall_s'] / s.get('n_seeds', 1):.0f}"
        rows.append(f"| {teacher} | {g1['arch']} | {label} | {acc_m * 100:.2f} ± {acc_s * 100:.2f} | {delta} "
                    f"| {ag_m * 100:.2f} ± {ag_s * 100:.2f} | {kl_m:.3f} ± {kl_s:.3f} | {wall} |")
    return "\n".join(rows) + "\n"


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--out", default="runs/methods", help="root of the run directories (default runs/methods)")
    p.add_argument("--seeds", default="0,1,2")
    p.add_argument("--methods", nargs="+", default=METHODS)
    p.add_argument("--python", default=sys.executable, help="interpreter with gendistill installed")
    p.add_argument("--table-only", action="store_true", help="only rebuild the table from existing runs")
    a = p.parse_args(argv)
    out = Path(a.out)
    out = out if out.is_absolute() else ROOT / out
    seeds = [int(s) for s in a.seeds.split(",")]
    if not a.table_only:
        run_step("teacher", teacher_command(a.python, out), out / "teacher", out)
        if not (out / "teacher" / "gen0" / "model.safetensors").exists():
            print("teacher training failed; see", out / "logs" / "teacher.log", file=sys.stderr)
            return 1
        for m in a.methods:
            run_step(m, method_command(a.python, out, m, seeds), out / m, out)
    table = build_table(out, a.methods)
    (out / "table.md").write_text(table)
    print(table)
    print(f"(torch threads: {os.environ.get('OMP_NUM_THREADS', 'default')}; table written to {out / 'table.md'})")
    return 0


if __name__ == "__main__":
    sys.exit(main())
