"""Does ``train.compile`` (``torch.compile`` of the student for training) pay on this machine?

Cached KD (CE + KD from the teacher cache), cnn1d ``--width`` (teacher 64) on MNIST-1D, batch 128: gendistill
eager against gendistill with ``train.compile=true``, and the hand-written loop eager against the same loop with
``model.compile()``, interleaved with the order rotated each round. Compilation happens once per fit (the
trainer compiles the student in place and undoes it when the fit returns), so the first (warm-up) run's extra
seconds are reported apart (the first epoch's extra time: what every generation pays once; the trainer
resets the compiler caches per fit, the hand-written loop here compiles its model once). The steady state is the
median of epochs 2.. of each fit; per loop, its median over rounds and the per-round ratio compiled / eager
with a bootstrap 95% CI; a final JSON line.

    .venv/bin/python benchmarks/compile_step.py              # 9 rounds of 3 epochs
    .venv/bin/python benchmarks/compile_step.py --quick      # 2 rounds of 1 epoch (a smoke test)
"""

from __future__ import annotations

import argparse
import statistics
import time

import torch
from _common import final_json, machine, mnist1d_teacher, print_table
from kd_overhead import plain_loop
from vs_handwritten import T, bootstrap_ci

from gendistill.domains.classification import batches
from gendistill.engine import DistillTask, TrainConfig, Trainer, seed_everything
from gendistill.knowledge import build_objective
from gendistill.models import create_model
from gendistill.teachers import CachedTeacher, FrozenTeacher


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--num-samples", type=int, default=5000)
    ap.add_argument("--width", type=int, default=32)
    ap.add_argument("--epochs", type=int, default=3)
    ap.add_argument("--rounds", type=int, default=9)
    ap.add_argument("--quick", action="store_true")
    args = ap.parse_args()
    if args.quick:
        args.rounds, args.epochs, args.num_samples = 2, 2, 1000

    data, teacher, logits = mnist1d_teacher(args.num_samples)
    x, y = data.train.x, data.train.y
    cache = CachedTeacher.from_logits(FrozenTeacher(teacher), logits)

    def student():
        seed_everything(0)
        return create_model("cnn1d", data.num_classes, data.input_shape, width=args.width)

    def gd(compile_: bool):
        cfg = TrainConfig(epochs=args.epochs, batch_size=128, lr=3e-3, fidelity_samples=0, device="cpu",
                          compile=compile_)

        def run() -> tuple[float, float]:  # (first epoch, median of the later epochs) in seconds
            task = DistillTask(student(), build_objective("ban+l", temperature=T), cache)
            history = Trainer(cfg, progress="off").fit(task, batches(data.train, cfg, seed=0),
                                                       num_classes=data.num_classes)
            secs = [row["train_seconds"] for row in history]
            return secs[0], statistics.median(secs[1:])
        return run

    def hand(compile_: bool):
        model = student()
        init = {k: v.clone() for k, v in model.state_dict().items()}
        if compile_:
            torch.compiler.reset()
            model.compile()

        def run() -> tuple[float, float]:
            model.load_state_dict(init)
            t0 = time.perf_counter()
            plain_loop(model, x, y, 1, 128, 3e-3, cached=logits)
            t1 = time.perf_counter()
            plain_loop(model, x, y, args.epochs - 1, 128, 3e-3, cached=logits)
            return t1 - t0, (time.perf_counter() - t1) / (args.epochs - 1)
        return run

    runs = {("gendistill", False): gd(False), ("gendistill", True): gd(True),
            ("hand-written", False): hand(False), ("hand-written", True): hand(True)}
    t0 = time.perf_counter()
    runs[("hand-written", True)]()  # compiles the hand-written model once (a cold compile: the first ever)
    cold = time.perf_counter() - t0
    for fn in runs.values():  # warm-up
        fn()
    keys = list(runs)
    first: dict = {k: [] for k in keys}
    steady: dict = {k: [] for k in keys}
    for r in range(args.rounds):
        for k in keys[r % len(keys):] + keys[: r % len(keys)]:
            a, b = runs[k]()
            first[k].append(a)
            steady[k].append(b)
    rows, result = [], {}
    for side in ("gendistill", "hand-written"):
        eager, comp = steady[(side, False)], steady[(side, True)]
        ratios = [c / e for c, e in zip(comp, eager)]
        lo, hi = bootstrap_ci(ratios)
        e_ms, c_ms = statistics.median(eager) * 1e3, statistics.median(comp) * 1e3
        extra = statistics.median(first[(side, True)]) - statistics.median(first[(side, False)])
        result[side] = {"eager_epoch_s": statistics.median(eager), "compiled_epoch_s": statistics.median(comp),
                        "ratio_median": statistics.median(ratios), "ci95": [lo, hi],
                        "first_epoch_extra_s": extra}
        rows.append([side, f"{e_ms:.1f} ms", f"{c_ms:.1f} ms", f"{statistics.median(ratios):.3f}x",
                     f"[{lo:.3f}, {hi:.3f}]", f"{extra:.2f} s"])
    result["cold_compile_s"] = cold
    print(f"train.compile: cached KD, cnn1d width {args.width}, MNIST-1D {len(x)} samples, batch 128, "
          f"{args.epochs} epochs per fit x {args.rounds} rounds; epochs 2.. of each fit (steady state)")
    print(f"machine: {machine()}\n")
    print_table(["loop", "eager epoch", "compiled epoch", "compiled / eager", "95% CI", "1st epoch's extra"], rows)
    print(f"\ncold compile of the hand-written model (first in the process): {cold:.1f} s")
    final_json({"benchmark": "compile_step", "machine": machine(), "threads": torch.get_num_threads(),
                "rounds": args.rounds, "epochs": args.epochs, "width": args.width, "results": result})


if __name__ == "__main__":
    main()
