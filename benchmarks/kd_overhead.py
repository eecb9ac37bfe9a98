"""What does distillation cost on top of training the student alone?

Times one training epoch (no evaluation) of the same student on the same in-memory data, five ways, in one
process, interleaved over several rounds (median reported):

  plain          a hand-written PyTorch loop: randperm, slice, forward, cross-entropy, backward, AdamW step
  plain-kd-live  the same loop with a live teacher forward and the KD loss (what most KD code does)
  gd-student     gendistill's Trainer, labels only
  gd-kd-cached   gendistill's Trainer, CE + KD from cached teacher outputs (the cache is built once per generation,
                 timed separately: in a lineage it is the previous generation's evaluation pass, so it costs nothing)
  gd-kd-live     gendistill's Trainer, CE + KD with the live teacher (train.teacher_cache=off)

Ratios are against ``plain``. Targets: gd-student <= 1.05x, gd-kd-cached <= 1.10x. The one-off cache build is
printed on its own and folded into an amortized figure for a run of ``--amortize`` epochs (default 20, the
bundled configs' length).
Usage: python benchmarks/kd_overhead.py [--epochs 5] [--rounds 7] [--model cnn1d] [--width 32] [--teacher-width 64]
"""

from __future__ import annotations

import argparse
import math
import time

import torch
import torch.nn.functional as F
from _common import final_json, machine, median, print_table

from gendistill.config import TrainConfig
from gendistill.data import load_dataset
from gendistill.domains.classification import batches
from gendistill.engine import DistillTask, Trainer, seed_everything
from gendistill.engine.evaluate import select_device
from gendistill.knowledge import build_objective
from gendistill.models import create_model
from gendistill.teachers import CachedTeacher, FrozenTeacher


def plain_loop(model, x, y, epochs, batch_size, lr, teacher=None, temperature=4.0, cached=None):
    """The hand-written loop. ``teacher``: a live teacher forward per step; ``cached``: teacher logits computed
    once before training, indexed per batch (the limit for cached KD)."""
    opt = torch.optim.AdamW(model.parameters(), lr=lr, weight_decay=5e-4)
    steps = epochs * math.ceil(len(x) / batch_size)
    sched = torch.optim.lr_scheduler.LambdaLR(opt, lambda s: 0.5 * (1 + math.cos(math.pi * s / steps)))
    g = torch.Generator().manual_seed(0)
    model.train()
    for _ in range(epochs):
        perm = torch.randperm(len(x), generator=g).to(x.device)
        for i in range(0, len(x), batch_size):
            idx = perm[i : i + batch_size]
            xb, yb = x[idx], y[idx]
            logits = model(xb)
            loss = F.cross_entropy(logits, yb)
            if teacher is not None or cached is not None:
                if cached is not None:
                    t = cached[idx]
                else:
                    with torch.no_grad():
                        t = teacher(xb)
                loss = loss + temperature**2 * F.kl_div(
                    F.log_softmax(logits / temperature, -1), F.log_softmax(t / temperature, -1),
                    reduction="batchmean", log_target=True)
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            sched.step()
    if x.is_cuda:
        torch.cuda.synchronize()


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--data", default="mnist1d")
    ap.add_argument("--num-samples", type=int, default=5000)
    ap.add_argument("--model", default="cnn1d")
    ap.add_argument("--width", type=int, default=32)
    ap.add_argument("--teacher-width", type=int, default=64)
    ap.add_argument("--epochs", type=int, default=5)
    ap.add_argument("--rounds", type=int, default=7)
    ap.add_argument("--batch-size", type=int, default=128)
    ap.add_argument("--device", default="auto")
    ap.add_argument("--amortize", type=int, default=20, help="epochs over which the cache build is amortized")
    args = ap.parse_args()

    dev = select_device(args.device)
    opts = {"num_samples": args.num_samples} if args.data == "mnist1d" else {}
    data = load_dataset(args.data, **opts)
    x, y = data.train.x.to(dev), data.train.y.to(dev)
    teacher = create_model(args.model, data.num_classes, data.input_shape, width=args.teacher_width).to(dev).eval()
    for p in teacher.parameters():
        p.requires_grad_(False)
    cfg = TrainConfig(epochs=args.epochs, batch_size=args.batch_size, lr=3e-3, fidelity_samples=0, device=str(dev))

    def student():
        seed_everything(0)
        return create_model(args.model, data.num_classes, data.input_shape, width=args.width)

    def timed(fn) -> float:
        t0 = time.perf_counter()
        fn()
        if dev.type == "cuda":
            torch.cuda.synchronize()
        return (time.perf_counter() - t0) / args.epochs

    def gd(objective, make_teacher):
        def run():
            t = make_teacher()
            task = DistillTask(student(), build_objective(objective, temperature=4.0), t)
            Trainer(cfg, progress="off").fit(task, batches(data.train, cfg, seed=0, device=dev), num_classes=data.num_classes)
        return run

    def build_cache():
        return CachedTeacher.build(FrozenTeacher(teacher), data.train.x.to(dev))  # one inference pass

    cache = build_cache()

    methods = {
        "plain": lambda: plain_loop(student().to(dev), x, y, args.epochs, args.batch_size, 3e-3),
        "plain-kd-live": lambda: plain_loop(student().to(dev), x, y, args.epochs, args.batch_size, 3e-3, teacher),
        "gd-student": gd("ce", lambda: None),
        "gd-kd-cached": gd("ban+l", lambda: cache),
        "gd-kd-live": gd("ban+l", lambda: FrozenTeacher(teacher)),
    }
    for fn in methods.values():  # warm-up (allocator, kernels, caches)
        fn()
    times: dict[str, list[float]] = {k: [] for k in methods}
    for _ in range(args.rounds):
        for name, fn in methods.items():
            times[name].append(timed(fn))
    builds = []
    for _ in range(args.rounds):
        t0 = time.perf_counter()
        build_cache()
        if dev.type == "cuda":
            torch.cuda.synchronize()
        builds.append(time.perf_counter() - t0)
    base = median(times["plain"])
    rows, result = [], {}
    for name in methods:
        m = median(times[name])
        result[name] = {"epoch_s": m, "ratio": m / base}
        rows.append([name, f"{m * 1000:.1f} ms", f"{min(times[name]) * 1000:.1f} ms", f"{m / base:.3f}x"])
    build = median(builds)
    amortized = median(times["gd-kd-cached"]) + build / args.amortize
    result["cache-build"] = {"seconds": build, "epochs_equivalent": build / base}
    result["gd-kd-cached-amortized"] = {"epoch_s": amortized, "ratio": amortized / base, "epochs": args.amortize}
    rows.append([f"  + build/{args.amortize}", f"{amortized * 1000:.1f} ms", "", f"{amortized / base:.3f}x"])
    print(f"KD overhead: {args.model} width {args.width} (teacher width {args.teacher_width}) on {args.data}, "
          f"{len(x)} samples, batch {args.batch_size}, {args.epochs} epochs x {args.rounds} rounds")
    print(f"machine: {machine()}, device {dev}\n")
    print_table(["method", "epoch (median)", "epoch (min)", "vs plain"], rows)
    print(f"\nteacher cache build (once per generation; free in a lineage for logit-only objectives): {build * 1000:.1f} ms "
          f"= {build / base:.2f} plain epochs; '+ build/{args.amortize}' spreads it over a {args.amortize}-epoch run")
    print(f"targets: gd-student <= 1.05x ({result['gd-student']['ratio']:.3f}x), "
          f"gd-kd-cached <= 1.10x ({result['gd-kd-cached']['ratio']:.3f}x)")
    final_json({"benchmark": "kd_overhead", "device": str(dev), "machine": machine(), "results": result})


if __name__ == "__main__":
    main()
