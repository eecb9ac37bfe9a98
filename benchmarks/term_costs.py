"""Per-term and per-scheme cost: milliseconds per training step of every knowledge term and every
classification scheme against CE alone and CE + KD.

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
    .venv/bin/python benchmarks/term_costs.py --schemes         # every classification scheme instead
    .venv/bin/python benchmarks/term_costs.py --schemes dml rco # a subset

``--schemes`` times each scheme's task as the lineage builds it (``build_task`` with the options of
``examples/schemes/<s>.yaml``, the teacher handed as the lineage hands it: cached outputs when the scheme is
cacheable, else the frozen network), with one architecture for every row so the rows compare: MNIST-1D,
student ``cnn1d`` width 32, teacher (and every earlier generation, snapshot and pool member) ``cnn1d`` width 64.
Knowledge Evolution's previous generation is a width-32 network (it needs the student's architecture).
Online and self-distillation schemes (their generation 0 already runs the scheme) are timed at generation 0,
``multi_teacher`` at generation ``pool`` (its pool as ``previous``), every other scheme at generation 1. A step
is one batch of the training source: what a scheme does per batch (peers, a generator's steps, a pilot
update, a trainable teacher) is inside it.
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
from gendistill.registry import METHODS, SCHEMES
from gendistill.schemes.spec import build_task, scheme_spec
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


EXAMPLE_SCHEMES = ROOT / "examples" / "schemes"
SELF_TAUGHT = {"online", "self"}  # kinds whose generation 0 runs the scheme itself


def scheme_options(name: str) -> dict:
    """The scheme options of ``examples/schemes/<name>.yaml`` (without ``name``), else the defaults."""
    path = EXAMPLE_SCHEMES / f"{name}.yaml"
    spec = yaml.safe_load(path.read_text()).get("scheme") if path.exists() else None
    return {k: v for k, v in spec.items() if k != "name"} if isinstance(spec, dict) else {}


def classification_schemes() -> list[str]:
    return [n for n in SCHEMES.names() if scheme_spec(n).kind != "sequence" and n != "offline"]


def time_runs(runs: dict, rounds: int, steps: dict[str, int]) -> dict[str, list[float]]:
    """ms per step of every run, ``rounds`` times, in an order rotated by one each round (after a warm-up)."""
    for fn in runs.values():  # warm-up (and a failure here names the run)
        fn()
    names = list(runs)
    times: dict[str, list[float]] = {n: [] for n in names}
    for r in range(rounds):
        for n in names[r % len(names):] + names[: r % len(names)]:
            t0 = time.perf_counter()
            runs[n]()
            times[n].append((time.perf_counter() - t0) / steps[n] * 1e3)
    return times


def ratio_rows(times: dict[str, list[float]], labels: dict[str, str]) -> tuple[list[list[str]], dict]:
    rows, result = [], {}
    for n in times:
        vs_kd = [a / b for a, b in zip(times[n], times["ce+kd"])]
        vs_ce = [a / b for a, b in zip(times[n], times["ce"])]
        lo, hi = bootstrap_ci(vs_kd)
        ms = statistics.median(times[n])
        result[n] = {"what": labels[n], "ms_per_step": ms, "vs_ce": statistics.median(vs_ce),
                     "vs_ce_kd": statistics.median(vs_kd), "vs_ce_kd_ci95": [lo, hi]}
        rows.append([n, labels[n], f"{ms:.2f}", f"{statistics.median(vs_ce):.2f}x",
                     f"{statistics.median(vs_kd):.2f}x", f"[{lo:.2f}, {hi:.2f}]"])
    return rows, result


def scheme_main(args: argparse.Namespace, names: list[str]) -> None:
    from gendistill.domains.classification import ClassificationDomain

    domain = ClassificationDomain()
    data = load_dataset("mnist1d", num_samples=5000)
    cfg = TrainConfig(epochs=args.epochs, batch_size=args.batch_size, lr=3e-3, fidelity_samples=0, device="cpu")
    seed_everything(1)
    teacher_net = create_model("cnn1d", data.num_classes, data.input_shape, width=64)
    snapshots = {e: {k: v.clone() for k, v in teacher_net.state_dict().items()} for e in (1, 2, 3)}
    peer_net = create_model("cnn1d", data.num_classes, data.input_shape, width=32)  # ke: same architecture

    def student() -> torch.nn.Module:
        seed_everything(0)
        return create_model("cnn1d", data.num_classes, data.input_shape, width=32)

    def make_run(name: str):
        if name in BASE:
            objective_spec, opts, gen, spec = BASE[name], {}, (1 if name == "ce+kd" else 0), scheme_spec("offline")
        else:
            objective_spec, opts, spec = BASE["ce+kd"], scheme_options(name), scheme_spec(name)
            gen = 0 if spec.kind in SELF_TAUGHT else int(opts.get("pool", 3)) if name == "multi_teacher" else 1
        source = domain.train_source(data, cfg, seed=0, device=torch.device("cpu"), views=0)
        teacher = None
        if gen > 0 and spec.teachers is None:
            teacher = domain.teacher([teacher_net], ())
            if spec.cacheable:
                teacher = domain.cache_teacher(teacher, source, data, cfg, layers=(), train_pred=None, path=None)

        def run() -> None:
            net = student()
            objective = build_objective(BASE["ce"] if gen == 0 else objective_spec)
            task = (domain.default_task(net, objective, teacher) if name in BASE else
                    build_task(name, student=net, objective=objective, data=data, teacher=teacher, gen=gen,
                               previous=[peer_net if name == "ke" else teacher_net] * gen, train=cfg, trajectories=[snapshots] * gen, **opts))
            try:
                Trainer(cfg, progress="off").fit(task, source, num_classes=data.num_classes)
            finally:
                task.close()
        return run, args.epochs * len(source), gen

    runs, steps, labels = {}, {}, {}
    for name in ["ce", "ce+kd", *names]:
        runs[name], steps[name], gen = make_run(name)
        labels[name] = (" + ".join(t["term"] for t in BASE[name]) if name in BASE
                        else f"gen {gen}, " + (", ".join(f"{k}={v}" for k, v in scheme_options(name).items()) or
                                               "defaults"))
    rows, result = ratio_rows(time_runs(runs, args.rounds, steps), labels)
    print(f"ms per training step (one batch of the training source), batch {args.batch_size}, mnist1d: student "
          f"cnn1d width 32, teacher cnn1d width 64; {args.epochs} epochs x {args.rounds} rounds, rotated")
    print(f"machine: {machine()}\n")
    print_table(["name", "scheme (options of its example)", "ms / step", "vs CE", "vs CE + KD",
                 "95% CI (vs CE + KD)"], rows)
    final_json({"benchmark": "scheme_costs", "data": "mnist1d", "batch_size": args.batch_size,
                "rounds": args.rounds, "machine": machine(), "threads": torch.get_num_threads(), "results": result})


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--data", choices=["digits", "mnist1d"], default="digits")
    ap.add_argument("--terms", nargs="+", default=None, help="methods to time (default: every registered term)")
    ap.add_argument("--epochs", type=int, default=2)
    ap.add_argument("--rounds", type=int, default=9)
    ap.add_argument("--batch-size", type=int, default=128)
    ap.add_argument("--schemes", nargs="*", default=None,
                    help="time classification schemes instead of terms (no names: every scheme)")
    ap.add_argument("--quick", action="store_true", help="2 rounds of 1 epoch, three terms (a smoke test)")
    args = ap.parse_args()
    if args.quick:
        args.rounds, args.epochs = 2, 1
        args.terms = args.terms or ["kd", "rkd", "fitnet"]
    if args.schemes is not None:
        scheme_main(args, args.schemes or classification_schemes())
        return
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
    labels = {n: " + ".join((f"{s['weight']:g}*" if s.get("weight", 1) != 1 else "") + s["term"] for s in specs[n])
              for n in specs}
    rows, result = ratio_rows(time_runs(runs, args.rounds, dict.fromkeys(runs, steps)), labels)
    for n in result:
        result[n]["objective"] = specs[n]
    print(f"ms per training step, batch {args.batch_size}, {args.data}: student {arch} width {s_width}, teacher "
          f"{arch} width {t_width} (outputs cached); {args.epochs} epochs x {args.rounds} rounds, rotated")
    print(f"machine: {machine()}\n")
    print_table(["name", "objective", "ms / step", "vs CE", "vs CE + KD", "95% CI (vs CE + KD)"], rows)
    final_json({"benchmark": "term_costs", "data": args.data, "batch_size": args.batch_size, "steps": steps,
                "rounds": args.rounds, "machine": machine(), "threads": torch.get_num_threads(), "results": result})


if __name__ == "__main__":
    main()
