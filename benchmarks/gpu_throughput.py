"""Images per second of a CIFAR-sized ResNet student on a GPU: plain PyTorch loop vs gendistill.

Random 32x32 images held on the GPU (nothing is downloaded; throughput does not depend on pixel values).
Student resnet_cifar depth 20, teacher depth 56, bf16 autocast and channels_last in both loops.
Prints a table and a final JSON line; on a machine without CUDA it says so and exits 0.
Usage: python benchmarks/gpu_throughput.py [--samples 20000] [--epochs 2] [--batch-size 256] [--compile]
"""

from __future__ import annotations

import argparse
import math
import time

import torch
import torch.nn.functional as F
from _common import final_json, machine, print_table

from gendistill.config import TrainConfig
from gendistill.data import Split
from gendistill.domains.classification import batches
from gendistill.engine import DistillTask, Trainer, seed_everything
from gendistill.knowledge import build_objective
from gendistill.models import create_model
from gendistill.teachers import CachedTeacher, FrozenTeacher


def plain(model, x, y, epochs, bs, teacher=None, T=4.0):
    model = model.cuda().to(memory_format=torch.channels_last).train()
    opt = torch.optim.SGD(model.parameters(), lr=0.05, momentum=0.9, weight_decay=5e-4)
    steps = epochs * math.ceil(len(x) / bs)
    sched = torch.optim.lr_scheduler.LambdaLR(opt, lambda s: 0.5 * (1 + math.cos(math.pi * s / steps)))
    for _ in range(epochs):
        perm = torch.randperm(len(x), device=x.device)
        for i in range(0, len(x), bs):
            idx = perm[i : i + bs]
            xb, yb = x[idx], y[idx]
            with torch.autocast("cuda", dtype=torch.bfloat16):
                logits = model(xb)
                loss = F.cross_entropy(logits.float(), yb)
                if teacher is not None:
                    with torch.inference_mode():
                        t = teacher(xb)
                    loss = loss + T * T * F.kl_div(F.log_softmax(logits.float() / T, -1),
                                                   F.log_softmax(t.float().clone() / T, -1),
                                                   reduction="batchmean", log_target=True)
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            sched.step()
    torch.cuda.synchronize()


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--samples", type=int, default=20000)
    ap.add_argument("--epochs", type=int, default=2)
    ap.add_argument("--batch-size", type=int, default=256)
    ap.add_argument("--compile", action="store_true")
    args = ap.parse_args()
    if not torch.cuda.is_available():
        print("gpu_throughput: no CUDA device on this machine; nothing measured")
        final_json({"benchmark": "gpu_throughput", "skipped": "no CUDA device"})
        return
    g = torch.Generator().manual_seed(0)
    x = torch.randn(args.samples, 3, 32, 32, generator=g).cuda().contiguous(memory_format=torch.channels_last)
    y = torch.randint(0, 100, (args.samples,), generator=g).cuda()
    teacher = create_model("resnet_cifar", 100, (3, 32, 32), depth=56).cuda().eval().to(memory_format=torch.channels_last)
    for p in teacher.parameters():
        p.requires_grad_(False)
    cfg = TrainConfig(epochs=args.epochs, batch_size=args.batch_size, optimizer="sgd", lr=0.05, fidelity_samples=0,
                      compile=args.compile)
    split = Split(x, y)

    def student():
        seed_everything(0)
        return create_model("resnet_cifar", 100, (3, 32, 32), depth=20)

    def gd(obj, make_teacher):
        def run():
            task = DistillTask(student(), build_objective(obj, temperature=4.0), make_teacher())
            Trainer(cfg, progress="off").fit(task, batches(split, cfg, seed=0, device="cuda"), num_classes=100)
            torch.cuda.synchronize()
        return run

    methods = {
        "plain student": lambda: plain(student(), x, y, args.epochs, args.batch_size),
        "plain KD (live teacher)": lambda: plain(student(), x, y, args.epochs, args.batch_size, teacher),
        "gendistill student": gd("ce", lambda: None),
        "gendistill KD cached": gd("ban+l", lambda: CachedTeacher.build(FrozenTeacher(teacher), x)),
        "gendistill KD live": gd("ban+l", lambda: FrozenTeacher(teacher)),
    }
    for fn in methods.values():
        fn()  # warm-up
    rows, res = [], {}
    for name, fn in methods.items():
        t0 = time.perf_counter()
        fn()
        ips = args.samples * args.epochs / (time.perf_counter() - t0)
        res[name] = ips
    base = res["plain student"]
    for name, ips in res.items():
        rows.append([name, f"{ips:,.0f}", f"{base / ips:.3f}x"])
    print(f"GPU throughput: resnet20 student / resnet56 teacher, 32x32x3, batch {args.batch_size}, bf16, channels_last")
    print(f"machine: {machine()}\n")
    print_table(["loop", "images/s", "time vs plain student"], rows)
    final_json({"benchmark": "gpu_throughput", "machine": machine(), "images_per_s": res})


if __name__ == "__main__":
    main()
