"""Image KD at full speed: student-only vs KD with a live teacher vs KD from the exhaustive view cache.

resnet32x4 -> resnet8x4 on CIFAR-shaped data (random uint8 images, 100 classes) with crop-with-padding + flip
done on the device (gendistill.data.gpu_augment), SGD as in the CIFAR recipes. Times training epochs (no
evaluation) of gendistill's Trainer four ways, interleaved over ``--rounds`` rounds (median reported):

  plain          a hand-written loop in the same process: the same device loader (crop+flip), forward, CE,
                 backward, SGD step (what gendistill's student-only epoch is compared with)
  gd-student     gendistill's Trainer, labels only
  gd-kd-cached   Trainer, CE + KD from the exhaustive view cache (no teacher forward)
  gd-kd-live     Trainer, CE + KD with the live teacher on the same views

Ratios are against gd-student (and gd-student against plain). Target on a GPU: gd-kd-cached within 1.05x of
gd-student. The cache build is timed on its own and extrapolated to CIFAR-100 (50000 images x 162 views at
padding 4; 50000 * 162 * 100 * 2 bytes = 1.62 GB in float16). On a CPU the default is small (64 images,
padding 1: 18 views) so the build fits in seconds; ``--padding 4`` builds all 162 views.

Usage: python benchmarks/image_kd.py [--n 64] [--batch 32] [--epochs 2] [--rounds 3] [--padding 1] [--device auto]
       [--amp] [--compile]
"""

from __future__ import annotations

import argparse
import time

import torch
import torch.nn.functional as F
from _common import final_json, machine, median, print_table

from gendistill.data import Split
from gendistill.domains.classification import DeviceAugmentBatches
from gendistill.engine import Trainer
from gendistill.engine.evaluate import select_device
from gendistill.engine.settings import TrainConfig
from gendistill.engine.task import DistillTask
from gendistill.knowledge import build_objective
from gendistill.models import create_model
from gendistill.teachers import FrozenTeacher
from gendistill.view_cache import ExhaustiveViewCache


def sync(device):
    if device.type == "cuda":
        torch.cuda.synchronize()


def plain_loop(model, source, epochs, lr, device, amp):
    opt = torch.optim.SGD(model.parameters(), lr=lr, momentum=0.9, weight_decay=5e-4)
    times = []
    for _ in range(epochs):
        sync(device)
        t0 = time.perf_counter()
        for x, y, _idx, _view in source.loader:
            with torch.autocast(device.type, dtype=torch.bfloat16, enabled=amp and device.type == "cuda"):
                loss = F.cross_entropy(model(x), y)
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
        sync(device)
        times.append(time.perf_counter() - t0)
    return times


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--n", type=int, default=64, help="training images")
    ap.add_argument("--batch", type=int, default=32)
    ap.add_argument("--epochs", type=int, default=2, help="timed epochs per round (the first of a run is warm-up)")
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--padding", type=int, default=1)
    ap.add_argument("--device", default="auto")
    ap.add_argument("--amp", action="store_true", help="bf16 autocast (CUDA)")
    ap.add_argument("--compile", action="store_true")
    ap.add_argument("--teacher", default="resnet32x4")
    ap.add_argument("--student", default="resnet8x4")
    a = ap.parse_args()
    device = select_device(a.device)
    g = torch.Generator().manual_seed(0)
    u = torch.randint(0, 256, (a.n, 3, 32, 32), generator=g, dtype=torch.uint8)
    mean, std = torch.tensor([0.507, 0.487, 0.441]), torch.tensor([0.267, 0.256, 0.276])
    x = (u.float() / 255 - mean.view(1, 3, 1, 1)) / std.view(1, 3, 1, 1)
    split = Split(x, torch.randint(0, 100, (a.n,), generator=g), (mean, std))
    cfg = TrainConfig(epochs=a.epochs + 1, batch_size=a.batch, optimizer="sgd", lr=0.05, device=str(device),
                      amp=a.amp, compile=a.compile, fidelity_samples=0, augment=[{"name": "crop_flip", "padding": a.padding}])
    source = lambda: DeviceAugmentBatches(split, cfg, seed=0, device=device, padding=a.padding, flip=True)  # noqa: E731
    torch.manual_seed(0)
    teacher = create_model(a.teacher, 100, (3, 32, 32)).to(device)
    live = FrozenTeacher(teacher)

    t0 = time.perf_counter()
    cache = ExhaustiveViewCache.build(live, source().loader, batch_size=1024)
    sync(device)
    build_s = time.perf_counter() - t0
    views = cache.logits.shape[1]
    per_view = build_s / (a.n * views)
    cifar_views = 50000 * 162

    def gd(kind: str) -> float:
        torch.manual_seed(1)
        student = create_model(a.student, 100, (3, 32, 32))
        if kind == "student":
            task = DistillTask(student, build_objective("ce"))
        else:
            task = DistillTask(student, build_objective("hinton", temperature=4.0, alpha=0.9),
                               cache if kind == "cached" else live)
        hist = Trainer(cfg, progress="off").fit(task, source(), num_classes=100)
        return median([r["train_seconds"] for r in hist[1:]])  # epoch 1 is warm-up (and compilation)

    def plain() -> float:
        torch.manual_seed(1)
        student = create_model(a.student, 100, (3, 32, 32)).to(device)
        if device.type == "cuda":
            student = student.to(memory_format=torch.channels_last)
        return median(plain_loop(student, source(), a.epochs + 1, 0.05, device, a.amp)[1:])

    times: dict[str, list[float]] = {"plain": [], "gd-student": [], "gd-kd-cached": [], "gd-kd-live": []}
    for _ in range(a.rounds):
        times["plain"].append(plain())
        times["gd-student"].append(gd("student"))
        times["gd-kd-cached"].append(gd("cached"))
        times["gd-kd-live"].append(gd("live"))
    med = {k: median(v) for k, v in times.items()}
    steps = -(-a.n // a.batch)
    rows = []
    for k, s in med.items():
        ref = med["plain"] if k in ("plain", "gd-student") else med["gd-student"]
        rows.append([k, f"{1e3 * s / steps:.1f}", f"{a.n / s:,.0f}", f"{s / ref:.3f}x",
                     "vs plain" if k in ("plain", "gd-student") else "vs gd-student"])
    print(f"machine: {machine()}; device {device}; {a.n} images, batch {a.batch}, {a.rounds} rounds x {a.epochs} "
          f"timed epochs; {a.teacher} -> {a.student}; amp={a.amp} compile={a.compile}")
    print_table(["mode", "ms/step", "images/s", "ratio", "against"], rows)
    print(f"view cache: {a.n} images x {views} views built in {build_s:.2f} s ({1e6 * per_view:.0f} us per view); "
          f"CIFAR-100 (50000 x 162 views, 1.62 GB float16) extrapolated: {per_view * cifar_views / 60:.1f} min")
    final_json({"benchmark": "image_kd", "device": str(device), "machine": machine(), "n": a.n, "batch": a.batch,
                "padding": a.padding, "amp": a.amp, "compile": a.compile,
                "images_per_s": {k: a.n / s for k, s in med.items()},
                "ratio_student_vs_plain": med["gd-student"] / med["plain"],
                "ratio_cached_vs_student": med["gd-kd-cached"] / med["gd-student"],
                "ratio_live_vs_student": med["gd-kd-live"] / med["gd-student"],
                "cache_build_s": build_s, "cache_views": views, "cache_us_per_view": 1e6 * per_view,
                "cifar100_cache_build_min_extrapolated": per_view * cifar_views / 60,
                "cifar100_cache_bytes": 50000 * 162 * 100 * 2})


if __name__ == "__main__":
    main()
