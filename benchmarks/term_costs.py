"""Per-term cost: milliseconds per training step of every knowledge term against CE alone and CE + KD.

Each method's objective is the one of its example (``examples/methods/<m>.yaml``: CE plus the term, with the
example's options, e.g. the layers a feature term reads), trained by ``Trainer`` + ``DistillTask`` at batch 128
on the bundled digits setting of those examples (teacher ``cnn2d`` width 32, student ``cnn2d`` width 8), the
teacher's outputs (logits and the tapped features the term reads) served from the cache as a lineage would.
Every round times one short run (``--epochs`` epochs, no evaluation) of every objective, in an order rotated
by one each round; the figure is the median over rounds of ms per step and of the per-round ratio to CE + KD
(bootstrap 95% CI over rounds). ``--data mnist1d`` uses ``cnn1d`` 64 -> 32 instead (layer names are the same).

    .venv/bin/python benchmarks/term_costs.py                   # every term, 9 rounds
    .venv/bin/python benchmarks/term_costs.py --terms rkd sp    # a subset (CE and CE + KD always run)
    .venv/bin/python benchmarks/term_costs.py --quick           # a smoke test
"""

from __future__ import annotations

import argparse
import statistics
import time

import torch
import yaml
from _common import ROOT, final_json, machine, print_table
from vs_handwritten import bootstrap_ci

from gendistill.data import load_dataset
from gendistill.domains.classification import batches
from gendistill.engine import DistillTask, TrainConfig, Trainer, seed_everything
from gendistill.knowledge import build_objective
from gendistill.models import create_model
from gendistill.registry import METHODS
from gendistill.teachers import CachedTeacher, FrozenTeacher

EXAMPLES = ROOT / "examples" / "methods"
BASE = {"ce": [{"term": "ce"}], "ce+kd": [{"term": "ce"}, {"term": "kd", "temperature": 4.0}]}


def objective_of(method: str) -> list[dict]:
    """The example's objective for ``method`` (CE plus the term), or CE plus the term with its defaults."""
    path = EXAMPLES / f"{method}.yaml"
    if path.exists():
        spec = yaml.safe_load(path.read_text()).get("objective")
        if isinstance(spec, list):
            return spec
    return [{"term": "ce"}, {"term": method}]


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--data", choices=["digits", "mnist1d"], default="digits")
    ap.add_argument("--terms", nargs="+", default=None, help="methods to time (default: every registered term)")
    ap.add_argument("--epochs", type=int, default=2)
    ap.add_argument("--rounds", type=int, default=9)
    ap.add_argument("--batch-size", type=int, default=128)
    ap.add_argument("--quick", action="store_true", help="2 rounds of 1 epoch, three terms (a smoke test)")
    args = ap.parse_args()
    if args.quick:
        args.rounds, args.epochs = 2, 1
        args.terms = args.terms or ["kd", "rkd", "fitnet"]
    terms = [m for m in (args.terms or METHODS.names()) if m != "ce"]
    specs = {**BASE, **{m: objective_of(m) for m in terms if m != "kd"}}

    if args.data == "digits":
        data = load_dataset("digits")
        arch, t_width, s_width = "cnn2d", 32, 8
    else:
        data = load_dataset("mnist1d", num_samples=5000)
        arch, t_width, s_width = "cnn1d", 64, 32
    seed_everything(1)
    teacher_net = create_model(arch, data.num_classes, data.input_shape, width=t_width)
    cfg = TrainConfig(epochs=args.epochs, batch_size=args.batch_size, lr=3e-3, fidelity_samples=0, device="cpu")

    def make_run(spec: list[dict]):
        probe = build_objective(spec)
        cache = (CachedTeacher.build(FrozenTeacher(teacher_net, probe.teacher_layers), data.train.x)
                 if probe.needs_teacher else None)

        def run() -> None:
            seed_everything(0)
            student = create_model(arch, data.num_classes, data.input_shape, width=s_width)
            task = DistillTask(student, build_objective(spec), cache)
            Trainer(cfg, progress="off").fit(task, batches(data.train, cfg, seed=0), num_classes=data.num_classes)
            task.close()
        return run

    runs = {name: make_run(spec) for name, spec in specs.items()}
    steps = args.epochs * -(-len(data.train.y) // args.batch_size)
    for fn in runs.values():  # warm-up (and a failure here names the term)
        fn()
    names = list(runs)
    times: dict[str, list[float]] = {n: [] for n in names}
    for r in range(args.rounds):
        for n in names[r % len(names):] + names[: r % len(names)]:
            t0 = time.perf_counter()
            runs[n]()
            times[n].append((time.perf_counter() - t0) / steps * 1e3)
    rows, result = [], {}
    for n in names:
        vs_kd = [a / b for a, b in zip(times[n], times["ce+kd"])]
        vs_ce = [a / b for a, b in zip(times[n], times["ce"])]
        lo, hi = bootstrap_ci(vs_kd)
        ms = statistics.median(times[n])
        result[n] = {"objective": specs[n], "ms_per_step": ms, "vs_ce": statistics.median(vs_ce),
                     "vs_ce_kd": statistics.median(vs_kd), "vs_ce_kd_ci95": [lo, hi]}
        label = " + ".join(f"{s['term']}" for s in specs[n])
        rows.append([n, label, f"{ms:.2f}", f"{statistics.median(vs_ce):.2f}x",
                     f"{statistics.median(vs_kd):.2f}x", f"[{lo:.2f}, {hi:.2f}]"])
    print(f"ms per training step, batch {args.batch_size}, {args.data}: student {arch} width {s_width}, teacher "
          f"{arch} width {t_width} (outputs cached); {args.epochs} epochs x {args.rounds} rounds, rotated")
    print(f"machine: {machine()}\n")
    print_table(["name", "objective", "ms / step", "vs CE", "vs CE + KD", "95% CI (vs CE + KD)"], rows)
    final_json({"benchmark": "term_costs", "data": args.data, "batch_size": args.batch_size, "steps": steps,
                "rounds": args.rounds, "machine": machine(), "threads": torch.get_num_threads(), "results": result})


if __name__ == "__main__":
    main()
