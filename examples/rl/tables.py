"""Markdown rows for docs/rl.md from rl run directories (their top-level summary.json, several seeds):
per generation, return (mean over seeds, 95% CI over seeds), agreement and KL on teacher-visited and on
student-visited states, parameters.

    python examples/rl/tables.py runs/rl/rl-cartpole runs/rl/rl-cp-kl-w16-dagger ...
"""

from __future__ import annotations

import json
import sys
from pathlib import Path


def cell(v, d=3):
    if isinstance(v, dict):
        ci = v.get("ci95")
        if isinstance(ci, list) and v.get("n", 1) > 1:
            return f"{v['mean']:.{d}f} [{ci[0]:.{d}f}, {ci[1]:.{d}f}]"
        return f"{v['mean']:.{d}f}"
    return "-" if v is None else (f"{v:.{d}f}" if isinstance(v, float) else str(v))


def main() -> None:
    print("| run | gen | arch | params | teacher | return (95% CI over seeds) | agree (teacher states) | KL (teacher states) "
          "| agree (student states) | KL (student states) |")
    print("|---|---|---|---|---|---|---|---|---|---|")
    for run in sys.argv[1:]:
        s = json.loads((Path(run) / "summary.json").read_text())
        for g in s["generations"]:
            print(f"| {Path(run).name} | {g['gen']} | {g['arch']} | {int(g['params']['mean']) if isinstance(g['params'], dict) else g['params']} | {g['teacher']} | "
                  f"{cell(g.get('test_return'), 1)} | {cell(g.get('agreement_gen0'))} | {cell(g.get('kl_gen0'))} | "
                  f"{cell(g.get('test_agreement_student_states'))} | {cell(g.get('test_kl_student_states'))} |")


if __name__ == "__main__":
    main()
