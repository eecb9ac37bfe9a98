"""Figure of docs/experiments.md: the student's agreement with its teacher, test vs. train split, for the
self-distillation baseline and the augmented variants (mean and 95% Student-t CI over seeds, read from each
run directory's summary via the report loader).

    python examples/experiments/plot_fidelity.py docs/img/fidelity-agreement.png
"""

from __future__ import annotations

import sys
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402

from gendistill.analysis.report import load_summary  # noqa: E402

ROOT = Path("runs/experiments")
RUNS = [
    ("baseline\n(clean inputs)", "fidelity-self-distillation"),
    ("+ noise\n(same teacher)", "fidelity-self-distillation-noise-fixed-teacher"),
    ("+ mixup\n(same teacher)", "fidelity-self-distillation-mixup-fixed-teacher"),
]
FIELDS = [("agreement_teacher", "test split"), ("agreement_teacher_train", "train split")]


def main(out: str) -> None:
    fig, ax = plt.subplots(figsize=(5.2, 3.0), dpi=100)
    width = 0.38
    for j, (field, label) in enumerate(FIELDS):
        means, errs = [], []
        for _, run in RUNS:
            gen1 = next(g for g in load_summary(ROOT / run)["generations"] if g["gen"] == 1)
            s = gen1[field]
            means.append(100 * s["mean"])
            errs.append(100 * (s["ci95"][1] - s["mean"]))
        xs = [i + (j - 0.5) * width for i in range(len(RUNS))]
        ax.bar(xs, means, width, yerr=errs, capsize=3, label=label)
        for x, m in zip(xs, means, strict=True):
            ax.text(x, 92.3, f"{m:.1f}", ha="center", fontsize=7, color="white")
    ax.set_xticks(range(len(RUNS)), [name for name, _ in RUNS], fontsize=8)
    ax.set_ylim(92, 101)
    ax.set_ylabel("top-1 agreement with teacher (%)", fontsize=8)
    ax.set_title("self-distillation (KD only, same architecture), 5 seeds", fontsize=9)
    ax.axhline(100, color="gray", lw=0.8, ls=":")
    ax.legend(fontsize=7, loc="lower right")
    ax.tick_params(labelsize=7)
    fig.tight_layout()
    Path(out).parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(out)


if __name__ == "__main__":
    main(sys.argv[1] if len(sys.argv) > 1 else "docs/img/fidelity-agreement.png")
