"""Where one training step of gendistill's engine spends its time (cProfile and torch.profiler).

Runs ``Trainer.fit`` with a ``DistillTask`` (CE + KD, teacher outputs from the cache, or ``--mode student`` /
``--mode live``) on MNIST-1D, cnn1d width 32 (teacher width 64), batch 128, and prints

1. the time per step against a hand-written loop (same process, interleaved, median of ``--rounds``),
2. cProfile's functions by own time (``tottime``) per step, for the Python side of the overhead,
3. torch.profiler's operators by self CPU time per step.

    .venv/bin/python benchmarks/profile_step.py                  # cached KD
    .venv/bin/python benchmarks/profile_step.py --mode student   # labels only
    .venv/bin/python benchmarks/profile_step.py --quick          # a smoke test
"""

from __future__ import annotations

import argparse
import cProfile
import io
import pstats
import statistics
import time

import torch
from _common import final_json, machine, mnist1d_teacher
from kd_overhead import plain_loop as plain
from torch.profiler import ProfilerActivity, profile
from vs_handwritten import T

from gendistill.domains.classification import batches
from gendistill.engine import DistillTask, TrainConfig, Trainer, seed_everything
from gendistill.knowledge import build_objective
from gendistill.models import create_model
from gendistill.teachers import CachedTeacher, FrozenTeacher


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--mode", choices=["student", "cached", "live"], default="cached")
    ap.add_argument("--num-samples", type=int, default=5000)
    ap.add_argument("--epochs", type=int, default=3)
    ap.add_argument("--rounds", type=int, default=7)
    ap.add_argument("--top", type=int, default=25)
    ap.add_argument("--width", type=int, default=32, help="student width (a tiny one, e.g. 2, isolates the "
                    "framework's own per-step cost from the model's compute)")
    ap.add_argument("--quick", action="store_true")
    args = ap.parse_args()
    if args.quick:
        args.num_samples, args.epochs, args.rounds, args.top = 1000, 1, 1, 5

    data, teacher, teacher_logits = mnist1d_teacher(args.num_samples)
    x, y = data.train.x, data.train.y
    cfg = TrainConfig(epochs=args.epochs, batch_size=128, lr=3e-3, fidelity_samples=0, device="cpu")
    cache = CachedTeacher.from_logits(FrozenTeacher(teacher), teacher_logits)
    objective, make_teacher = {"student": ("ce", lambda: None), "cached": ("ban+l", lambda: cache),
                               "live": ("ban+l", lambda: FrozenTeacher(teacher))}[args.mode]
    plain_kw = {"student": {}, "cached": {"cached": teacher_logits}, "live": {"teacher": teacher}}[args.mode]

    def student():
        seed_everything(0)
        return create_model("cnn1d", data.num_classes, data.input_shape, width=args.width)

    def gd():
        task = DistillTask(student(), build_objective(objective, temperature=T), make_teacher())
        Trainer(cfg, progress="off").fit(task, batches(data.train, cfg, seed=0), num_classes=data.num_classes)

    def hand():
        plain(student(), x, y, args.epochs, 128, 3e-3, **plain_kw)

    steps = args.epochs * -(-len(x) // 128)
    gd(), hand()
    tg, th = [], []
    for r in range(args.rounds):
        for name, fn in ([("gd", gd), ("hand", hand)] if r % 2 == 0 else [("hand", hand), ("gd", gd)]):
            t0 = time.perf_counter()
            fn()
            (tg if name == "gd" else th).append((time.perf_counter() - t0) / steps * 1e3)
    g, h = statistics.median(tg), statistics.median(th)
    print(f"mode {args.mode}: {steps} steps per run, {args.rounds} rounds; machine: {machine()}")
    print(f"per step: gendistill {g:.3f} ms, hand-written {h:.3f} ms, difference {g - h:+.3f} ms "
          f"(median ratio {statistics.median(a / b for a, b in zip(tg, th)):.3f}x)\n")

    prof = cProfile.Profile()
    prof.enable()
    gd()
    prof.disable()
    s = io.StringIO()
    pstats.Stats(prof, stream=s).sort_stats("tottime").print_stats(args.top)
    print("cProfile, one gendistill run, by own time:")
    print("\n".join(s.getvalue().splitlines()[:args.top + 12]))

    with profile(activities=[ProfilerActivity.CPU]) as tp:
        gd()
    print(f"torch.profiler, one gendistill run ({steps} steps), by self CPU time:")
    print(tp.key_averages().table(sort_by="self_cpu_time_total", row_limit=args.top))
    final_json({"benchmark": "profile_step", "mode": args.mode, "width": args.width, "steps": steps, "gendistill_ms_per_step": g,
                "handwritten_ms_per_step": h, "threads": torch.get_num_threads(), "machine": machine()})


if __name__ == "__main__":
    main()
