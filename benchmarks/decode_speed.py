"""Greedy decoding speed (KV cache) of a student against its teacher, like for like, in one process.

The two models of the sequence tables (``--arch`` at ``--teacher-size`` and ``--student-size``) are trained from
the references for ``--epochs`` epochs (through the lineage, seed 0), so that both decode outputs of about the
references' length (random weights stop at ``<eos>`` after a few tokens, at different places), then decode the
same test sources; the table shows how many tokens each decoded. Rounds alternate the order; per round the ratio
student tokens/s / teacher tokens/s, its median over rounds and a bootstrap 95% CI; a final JSON line.

    .venv/bin/python benchmarks/decode_speed.py --task seq_sort --data min_len=8 --data max_len=16
    .venv/bin/python benchmarks/decode_speed.py --quick
"""

from __future__ import annotations

import argparse
import statistics
import time

import torch
import yaml
from _common import final_json, machine, print_table
from vs_handwritten import bootstrap_ci

from gendistill.data import load_dataset
from gendistill.lineage import Lineage
from gendistill.nlp.decoding import greedy


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--task", default="seq_sort")
    ap.add_argument("--data", action="append", default=[], metavar="KEY=VALUE", help="task options")
    ap.add_argument("--arch", default="seq_decoder")
    ap.add_argument("--teacher-size", default="small")
    ap.add_argument("--student-size", default="tiny")
    ap.add_argument("--num-test", type=int, default=256)
    ap.add_argument("--num-train", type=int, default=2000)
    ap.add_argument("--epochs", type=int, default=5)
    ap.add_argument("--rounds", type=int, default=9)
    ap.add_argument("--quick", action="store_true")
    args = ap.parse_args()
    if args.quick:
        args.rounds, args.num_test, args.num_train, args.epochs = 2, 16, 64, 1
    options = {k: yaml.safe_load(v) for k, v in (kv.split("=", 1) for kv in args.data)}
    data = load_dataset(args.task, num_train=args.num_train, num_test=args.num_test, **options)
    train = {"epochs": args.epochs, "batch_size": 64, "lr": 0.005, "fidelity_samples": 0}
    models = {}
    for role, size in (("teacher", args.teacher_size), ("student", args.student_size)):
        run = Lineage(student={"name": args.arch, "size": size}, generations=0, gen0_objective=[{"term": "token_ce"}],
                      train=train, progress="off", seed=0, ensembles=False).fit(data)
        models[role] = run.models[0].eval()
    src = data.test.x[:, : data.src_len]
    for m in models.values():  # warm-up
        greedy(m, src[:8])
    speed: dict[str, list[float]] = {r: [] for r in models}
    tokens: dict[str, int] = {}
    for r in range(args.rounds):
        for role in (["teacher", "student"] if r % 2 == 0 else ["student", "teacher"]):
            t0 = time.perf_counter()
            out = greedy(models[role], src)
            tokens[role] = int((out != 0).sum())
            speed[role].append(tokens[role] / (time.perf_counter() - t0))
    ratios = [s / t for s, t in zip(speed["student"], speed["teacher"])]
    lo, hi = bootstrap_ci(ratios)
    params = {r: sum(p.numel() for p in m.parameters()) for r, m in models.items()}
    rows = [[r, f"{args.arch} {s}", f"{params[r]:,}", f"{tokens[r]:,}", f"{statistics.median(speed[r]):,.0f}"]
            for r, s in (("teacher", args.teacher_size), ("student", args.student_size))]
    print(f"greedy decoding with the KV cache, {args.task} {options or ''}, {len(src)} test sources, models trained "
          f"{args.epochs} epochs, {args.rounds} rounds; machine: {machine()}\n")
    print_table(["model", "arch", "params", "tokens decoded", "tokens/s (median)"], rows)
    print(f"\nspeed-up student / teacher: {statistics.median(ratios):.2f}x [{lo:.2f}, {hi:.2f}] (bootstrap 95% CI), "
          f"{params['teacher'] / params['student']:.1f}x fewer parameters")
    final_json({"benchmark": "decode_speed", "task": args.task, "options": options, "machine": machine(),
                "threads": torch.get_num_threads(), "params": params, "tokens": tokens,
                "tokens_per_s": {r: statistics.median(v) for r, v in speed.items()},
                "speedup": statistics.median(ratios), "ci95": [lo, hi]})


if __name__ == "__main__":
    main()
