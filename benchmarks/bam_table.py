"""The BAM table of docs/sequence.md: single-task teachers vs one multi-task student, per task, over seeds.

Per seed, through the one lineage engine (Python API, each run written to ``--out``/seed<s>/ with its
``summary.json``): three single-task teachers (``seq_multi`` with ``only: <task>``, ``--teacher-size``), then a
multi-task student (``--student-size``, all tasks at once):

* ``multi-task (labels)``: generation 0, token CE on the gold labels; and the same from generation 1's
  initialisation and data order (every generation-1 row below starts from it), so the comparison is paired;
* ``BAM, teacher annealing``: generation 1 of scheme ``bam`` with the single-task teacher files (gold weight
  0 -> 1 over training; Clark et al. 2019);
* ``BAM, no annealing``: the same with ``anneal: false`` (teacher targets only);
* ``born-again multi-task gen1/gen2``: scheme ``bam`` without teacher files: each generation is taught by the
  previous one, generation 0 being the multi-task student from labels (with annealing).

Every student run shares the same generation-0 student (given as the lineage's teacher file); runs are resumed
from ``--out`` when they are there. Reported per
task on that task's test items, from the runs' ``per_task`` figures: exact match of greedy outputs, token
accuracy on reference prefixes, and fidelity against the task's own single-task teacher (per-token top-1
agreement and KL(teacher || student)); for rows whose lineage teacher is not the single-task teachers (labels,
born-again), that fidelity is measured here with the same functions (the BAM lineage's outside teachers,
``Domain.groups``, ``Domain.fidelity``) and checked against the BAM rows' own figures. Mean ± half-width
of the 95% Student-t CI over seeds.

Usage: OMP_NUM_THREADS=1 python benchmarks/bam_table.py --out runs/bam-table [--seeds 0 1 2] [--epochs 12]
       [--rows-out seed0.json];  --combine seed0.json seed1.json ... prints the table of several files.
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import torch
from _common import final_json, machine

from gendistill.analysis.stats import summarize
from gendistill.data import load_dataset
from gendistill.domains.sequence import SequenceDomain
from gendistill.lineage import Lineage

CE = [{"term": "token_ce"}]
TASKS = "reverse,sort,add"
KEYS = [("test_exact", "exact %", 100.0, 1), ("test_token_acc", "token acc %", 100.0, 1),
        ("agree_own", "agree(own teacher) tok %", 100.0, 1), ("kl_own", "KL(own teacher‖s) tok", 1.0, 3)]


def run_seed(seed: int, args, out: Path) -> dict[str, dict[str, list[dict]]]:
    """``{row: {task: figures}}`` of one seed."""
    train = {"epochs": args.epochs, "batch_size": 64, "lr": 0.005, "fidelity_samples": 0}
    domain = SequenceDomain()
    rows: dict[str, dict[str, dict]] = {}
    paths = []
    for task in TASKS.split(","):
        one = load_dataset("seq_multi", tasks=TASKS, only=task, num_train=args.num_train, num_test=args.num_test)
        r = Lineage(student={"name": "seq_decoder", "size": args.teacher_size}, generations=0, gen0_objective=CE,
                    train=train, progress="off", seed=seed).fit(one, out=out / f"teacher-{task}", resume=True)
        g = r.generations[0]
        rows.setdefault(f"single-task teacher ({args.teacher_size})", {})[task] = {
            "test_exact": g["test_exact"], "test_token_acc": g["test_token_acc"], "agree_own": 1.0, "kl_own": 0.0,
            "params": g["params"]}
        paths.append(str(out / f"teacher-{task}" / "gen0" / "model.safetensors"))
    data = load_dataset("seq_multi", tasks=TASKS, num_train=args.num_train, num_test=args.num_test)
    student = {"name": "seq_decoder", "size": args.student_size}
    base = dict(student=student, gen0_objective=CE, objective=CE, train=train, progress="off", seed=seed,
                ensembles=False)
    bam = Lineage(**base, generations=1, scheme={"name": "bam", "teachers": paths})
    own = domain.predict(bam.teaching(1, data).outside.build(data), data.test)  # each item by its task's teacher

    def add(name: str, result, gen: int) -> None:
        rec, pred = result.generations[gen], domain.predict(result.models[gen], data.test)
        for task, (_, index) in domain.groups(data.test).items():
            fid = domain.fidelity(own[index], pred[index])
            fig = rec["per_task"][task]
            if str(rec.get("teacher", "")).startswith("single-task teachers"):  # the run measured it itself
                assert abs(fig["agreement_teacher"] - fid["agreement"]) < 1e-9, (fig, fid)
            rows.setdefault(name, {})[task] = {"test_exact": fig["test_exact"], "test_token_acc": fig["test_token_acc"],
                                               "agree_own": fid["agreement"], "kl_own": fid["kl"],
                                               "params": rec["params"]}

    bam = bam.fit(data, out=out / "bam", resume=True)
    gen0 = out / "bam" / "gen0" / "model.safetensors"
    add(f"multi-task student ({args.student_size}, labels)", bam, 0)
    labels = Lineage(**base, generations=1).fit(data, teacher=gen0, out=out / "labels-gen1", resume=True)
    add("multi-task student (labels), BAM's initialisation", labels, 1)
    add("BAM, teacher annealing", bam, 1)
    flat = Lineage(**base, generations=1, scheme={"name": "bam", "teachers": paths, "anneal": False})
    add("BAM, no annealing", flat.fit(data, teacher=gen0, out=out / "bam-no-anneal", resume=True), 1)
    ban = Lineage(**base, generations=2, scheme={"name": "bam"}).fit(data, teacher=gen0, out=out / "born-again",
                                                                    resume=True)
    add("born-again multi-task gen1", ban, 1)
    add("born-again multi-task gen2", ban, 2)
    return rows


def print_rows(parts: list[dict]) -> None:
    merged: dict[str, dict[str, list[dict]]] = {}
    for part in parts:
        for name, tasks in part["rows"].items():
            for task, fig in tasks.items():
                merged.setdefault(name, {}).setdefault(task, []).append(fig)
    heads = ["model", "params", "task"] + [h for _, h, _, _ in KEYS]
    print("| " + " | ".join(heads) + " |")
    print("|" + "---|" * len(heads))
    out: dict[str, dict] = {}
    for task in TASKS.split(","):
        for name, tasks in merged.items():
            figs = tasks[task]
            cells = [name, str(figs[0]["params"]), task]
            for k, _, scale, digits in KEYS:
                s = summarize([f[k] for f in figs])
                out.setdefault(name, {}).setdefault(task, {})[k] = s
                half = 0.0 if s["ci95"] is None else (s["ci95"][1] - s["ci95"][0]) / 2
                cells.append(f"{s['mean'] * scale:.{digits}f} ± {half * scale:.{digits}f}")
            print("| " + " | ".join(cells) + " |")
    final_json({"tasks": TASKS, "seeds": [s for p in parts for s in p["seeds"]], "rows": out})


def main() -> None:
    p = argparse.ArgumentParser()
    p.add_argument("--out", type=Path, default=Path("runs/bam-table"))
    p.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    p.add_argument("--epochs", type=int, default=12)
    p.add_argument("--num-train", type=int, default=1000, help="training items per task")
    p.add_argument("--num-test", type=int, default=128, help="test items per task")
    p.add_argument("--teacher-size", default="small")
    p.add_argument("--student-size", default="tiny")
    p.add_argument("--rows-out", type=Path, help="write the per-seed figures here (for --combine)")
    p.add_argument("--combine", type=Path, nargs="+", help="print the table of these --rows-out files; no training")
    args = p.parse_args()
    if args.combine:
        parts = [json.loads(f.read_text()) for f in args.combine]
        print(f"\n{parts[0]['header']}; seeds {[s for q in parts for s in q['seeds']]}\n")
        print_rows(parts)
        return
    torch.set_num_threads(1)
    t0 = time.perf_counter()
    rows: dict[str, dict[str, dict]] = {}
    for seed in args.seeds:
        for name, tasks in run_seed(seed, args, args.out / f"seed{seed}").items():
            for task, fig in tasks.items():
                rows.setdefault(name, {}).setdefault(task, []).append(fig)
        print(f"seed {seed} done ({time.perf_counter() - t0:.0f} s)", flush=True)
    header = (f"seq_multi ({TASKS}; {args.num_train} train / {args.num_test} test items per task), {args.epochs} "
              f"epochs, teachers seq_decoder {args.teacher_size}, student {args.student_size}; {machine()}")
    part = {"header": header, "seeds": args.seeds,
            "rows": {n: {t: fs[0] for t, fs in ts.items()} for n, ts in rows.items()}} if len(args.seeds) == 1 else None
    if args.rows_out and part is not None:
        args.rows_out.write_text(json.dumps(part))
    print(f"\n{header}; {time.perf_counter() - t0:.0f} s in all\n")
    parts = [part] if part is not None else [
        {"seeds": [s], "rows": {n: {t: fs[i] for t, fs in ts.items()} for n, ts in rows.items()}}
        for i, s in enumerate(args.seeds)]
    print_rows(parts)


if __name__ == "__main__":
    main()
