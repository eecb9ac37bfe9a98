"""Each training mode of gendistill against its own hand-written PyTorch equivalent, in one process.

Three pairs, the same model, data, optimizer (AdamW, cosine schedule per step), loss and batch order source:

  student-only   Trainer + DistillTask(ce)               vs  a plain loop: randperm, slice, forward, CE, step
  cached KD      Trainer + CE + KD from the teacher cache vs  a plain loop whose teacher logits were computed
                                                             once before training (the limit for cached KD)
  live KD        Trainer + CE + KD, live teacher          vs  a plain loop running the teacher every step

Every round runs the six in an order rotated by one each round (so no mode always follows another), each for
``--epochs`` epochs without evaluation. The figure per pair is the median over rounds of the per-round ratio
gendistill / hand-written, with a bootstrap 95% CI (resampling rounds, 2000 resamples) - a ratio within a round
cancels the machine's slow drifts. Thread count and CPU model are printed; a final JSON line holds everything.

    .venv/bin/python benchmarks/vs_handwritten.py               # 15 rounds (about 2 minutes on 2 cores)
    .venv/bin/python benchmarks/vs_handwritten.py --quick       # 3 rounds, 1 epoch: a smoke test
"""

from __future__ import annotations

import argparse
import random
import statistics
import time

import torch
from _common import final_json, machine, mnist1d_teacher, print_table
from kd_overhead import plain_loop

from gendistill.domains.classification import batches
from gendistill.engine import DistillTask, TrainConfig, Trainer, seed_everything
from gendistill.knowledge import build_objective
from gendistill.models import create_model
from gendistill.teachers import CachedTeacher, FrozenTeacher

T = 4.0


def bootstrap_ci(ratios: list[float], n: int = 2000, seed: int = 0) -> tuple[float, float]:
    rng = random.Random(seed)
    meds = sorted(statistics.median(rng.choices(ratios, k=len(ratios))) for _ in range(n))
    return meds[int(0.025 * n)], meds[int(0.975 * n) - 1]


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--num-samples", type=int, default=5000)
    ap.add_argument("--width", type=int, default=32)
    ap.add_argument("--teacher-width", type=int, default=64)
    ap.add_argument("--epochs", type=int, default=2)
    ap.add_argument("--rounds", type=int, default=15)
    ap.add_argument("--batch-size", type=int, default=128)
    ap.add_argument("--quick", action="store_true", help="3 rounds of 1 epoch on 1000 samples (a smoke test)")
    args = ap.parse_args()
    if args.quick:
        args.rounds, args.epochs, args.num_samples = 3, 1, 1000

    data, teacher, teacher_logits = mnist1d_teacher(args.num_samples, args.teacher_width)
    x, y = data.train.x, data.train.y
    cfg = TrainConfig(epochs=args.epochs, batch_size=args.batch_size, lr=3e-3, fidelity_samples=0, device="cpu")

    def student():
        seed_everything(0)
        return create_model("cnn1d", data.num_classes, data.input_shape, width=args.width)

    def gd(objective: str, make_teacher):
        def run():
            task = DistillTask(student(), build_objective(objective, temperature=T), make_teacher())
            Trainer(cfg, progress="off").fit(task, batches(data.train, cfg, seed=0), num_classes=data.num_classes)
        return run

    cache = CachedTeacher.from_logits(FrozenTeacher(teacher), teacher_logits)  # what a lineage reuses
    lr, bs, ep = 3e-3, args.batch_size, args.epochs
    modes = {
        "student-only": (gd("ce", lambda: None), lambda: plain_loop(student(), x, y, ep, bs, lr)),
        "cached KD": (gd("ban+l", lambda: cache), lambda: plain_loop(student(), x, y, ep, bs, lr, cached=teacher_logits)),
        "live KD": (gd("ban+l", lambda: FrozenTeacher(teacher)), lambda: plain_loop(student(), x, y, ep, bs, lr, teacher=teacher)),
    }
    runs = [(m, side, fn) for m, pair in modes.items() for side, fn in zip(("gendistill", "plain"), pair)]
    for _, _, fn in runs:  # warm-up: allocator, kernels
        fn()
    times = {(m, side): [] for m, side, _ in runs}
    for r in range(args.rounds):
        order = runs[r % len(runs):] + runs[: r % len(runs)]
        for m, side, fn in order:
            t0 = time.perf_counter()
            fn()
            times[(m, side)].append(time.perf_counter() - t0)
    rows, result = [], {}
    for m in modes:
        ratios = [a / b for a, b in zip(times[(m, "gendistill")], times[(m, "plain")])]
        med = statistics.median(ratios)
        lo, hi = bootstrap_ci(ratios)
        g, p = statistics.median(times[(m, "gendistill")]) / ep, statistics.median(times[(m, "plain")]) / ep
        result[m] = {"ratio_median": med, "ci95": [lo, hi], "gendistill_epoch_s": g, "plain_epoch_s": p,
                     "ratios": ratios}
        rows.append([m, f"{g * 1000:.1f} ms", f"{p * 1000:.1f} ms", f"{med:.3f}x", f"[{lo:.3f}, {hi:.3f}]"])
    print(f"gendistill vs hand-written, cnn1d width {args.width} (teacher {args.teacher_width}), MNIST-1D "
          f"{len(x)} samples, batch {bs}, {ep} epochs x {args.rounds} rounds, order rotated each round")
    print(f"machine: {machine()}\n")
    print_table(["mode", "gendistill epoch", "hand-written epoch", "ratio (median)", "bootstrap 95% CI"], rows)
    print("\ntarget: every ratio <= 1.05x")
    final_json({"benchmark": "vs_handwritten", "machine": machine(), "threads": torch.get_num_threads(),
                "rounds": args.rounds, "epochs": ep, "results": result})


if __name__ == "__main__":
    main()
