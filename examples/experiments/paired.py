"""Paired comparison of one figure between two rows of (possibly different) multi-seed run directories.

`gendistill run` compares every row with generation 0 of the same run; this compares any two rows, e.g. the
student of an ensemble teacher with a born-again student from another run that used the same seeds:

    python examples/experiments/paired.py runs/experiments/ensemble-teacher gen4 \
        runs/experiments/ban-mnist1d-5seeds gen1 --field test_acc

A row is ``gen<k>`` or ``ens<a>-<b>`` (the ensemble of generations a..b). Seeds are matched by their
``seed<s>/summary.json`` folders; statistics come from ``gendistill.analysis.stats`` (mean, sample std,
95% Student-t CI, two-sided paired t-test), so the numbers are those the report would print.
"""

from __future__ import annotations

import argparse
import json
import re
from pathlib import Path

from gendistill.analysis.stats import paired_comparison, summarize


def per_seed(run: Path, row: str, field: str) -> dict[int, float]:
    out = {}
    for d in sorted(run.glob("seed*/summary.json")):
        seed = int(re.fullmatch(r"seed(\d+)", d.parent.name).group(1))
        s = json.loads(d.read_text())
        if m := re.fullmatch(r"gen(\d+)", row):
            rows = [g for g in s["generations"] if g["gen"] == int(m.group(1))]
        elif m := re.fullmatch(r"ens(\d+)-(\d+)", row):
            members = list(range(int(m.group(1)), int(m.group(2)) + 1))
            rows = [e for e in s["ensembles"] if e["members"] == members]
        else:
            raise SystemExit(f"row must be gen<k> or ens<a>-<b>, got {row!r}")
        if rows and rows[0].get(field) is not None:
            out[seed] = rows[0][field]
    if not out:
        raise SystemExit(f"{run}: no seed*/summary.json with {row}.{field}")
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("run_a", type=Path)
    ap.add_argument("row_a")
    ap.add_argument("run_b", type=Path)
    ap.add_argument("row_b")
    ap.add_argument("--field", default="test_acc", help="a summary.json key, e.g. test_acc, agreement_teacher")
    ap.add_argument("--scale", type=float, default=100.0, help="multiply values (100: percent points)")
    ap.add_argument("--digits", type=int, default=2)
    args = ap.parse_args()
    a, b = per_seed(args.run_a, args.row_a, args.field), per_seed(args.run_b, args.row_b, args.field)
    seeds = sorted(set(a) & set(b))
    sa, sb = summarize([a[s] for s in seeds]), summarize([b[s] for s in seeds])
    c = paired_comparison([a[s] for s in seeds], [b[s] for s in seeds])
    k, n = args.scale, args.digits
    lo, hi = c["ci95"]
    p = "n/a" if c["p_value"] is None else ("<0.001" if c["p_value"] < 0.001 else f"{c['p_value']:.3f}")
    print(f"{args.field}: {args.run_a.name}/{args.row_a} {sa['mean'] * k:.{n}f} ± {sa['std'] * k:.{n}f}  vs  "
          f"{args.run_b.name}/{args.row_b} {sb['mean'] * k:.{n}f} ± {sb['std'] * k:.{n}f}  |  "
          f"diff {c['mean_diff'] * k:+.{n}f}, 95% CI [{lo * k:+.{n}f}, {hi * k:+.{n}f}], p = {p} "
          f"(paired t-test, seeds {seeds})")


if __name__ == "__main__":
    main()
