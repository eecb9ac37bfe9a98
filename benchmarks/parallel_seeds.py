"""Wall time of a multi-seed run: seeds one after another vs in parallel worker processes (``--jobs``).

Runs ``gendistill run`` (the default config, shortened: ``--gens`` student generations of ``--epochs`` epochs)
for ``--seeds`` seeds three ways, interleaved and rotated over ``--rounds`` rounds:

  sequential           --jobs 1, PyTorch's default thread count (what a user gets without --jobs on one core set)
  sequential-1thread   --jobs 1, train.threads=1 (the same numbers as the parallel run)
  parallel             --jobs N (default: the number of cores), one thread per worker

and prints the median wall seconds and the ratio to ``sequential``, then a JSON line. The parallel run's
summary numbers are checked to equal sequential-1thread's.

    .venv/bin/python benchmarks/parallel_seeds.py --rounds 2
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from _common import final_json, machine, print_table


def run(out: Path, seeds: int, gens: int, epochs: int, jobs: int, threads: int | None) -> float:
    cmd = [sys.executable, "-m", "gendistill", "run", "--out", str(out), "--progress", "off", "--jobs", str(jobs),
           "--set", f"seeds=[{','.join(map(str, range(seeds)))}]", "--set", f"generations.count={gens}",
           "--set", f"train.epochs={epochs}"]
    if threads is not None:
        cmd += ["--set", f"train.threads={threads}"]
    env = {k: v for k, v in os.environ.items() if k != "OMP_NUM_THREADS"}
    t0 = time.perf_counter()
    subprocess.run(cmd, check=True, capture_output=True, env=env)
    return time.perf_counter() - t0


def numbers(out: Path) -> list:
    s = json.loads((out / "summary.json").read_text())
    return [g["test_acc"]["values"] for g in s["generations"]]


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--seeds", type=int, default=5)
    ap.add_argument("--gens", type=int, default=1)
    ap.add_argument("--epochs", type=int, default=10)
    ap.add_argument("--jobs", type=int, default=os.cpu_count() or 2)
    ap.add_argument("--rounds", type=int, default=2)
    args = ap.parse_args()
    ways = {"sequential": (1, None), "sequential-1thread": (1, 1), "parallel": (args.jobs, 1)}
    times: dict[str, list[float]] = {w: [] for w in ways}
    same = True
    with tempfile.TemporaryDirectory() as tmp:
        names = list(ways)
        for r in range(args.rounds):
            for w in names[r % 3:] + names[: r % 3]:
                out = Path(tmp) / f"{w}-{r}"
                times[w].append(run(out, args.seeds, args.gens, args.epochs, *ways[w]))
            same &= numbers(Path(tmp) / f"parallel-{r}") == numbers(Path(tmp) / f"sequential-1thread-{r}")
    base = statistics.median(times["sequential"])
    rows, result = [], {}
    for w, ts in times.items():
        m = statistics.median(ts)
        result[w] = {"median_s": m, "ratio": m / base, "times": ts}
        rows.append([w, f"--jobs {ways[w][0]}, threads {ways[w][1] or 'default'}", f"{m:.1f} s", f"{m / base:.2f}x"])
    print(f"{args.seeds} seeds x ({args.gens + 1} generations of {args.epochs} epochs), default config; "
          f"{args.rounds} rounds; machine: {machine()}\n")
    print_table(["way", "settings", "wall (median)", "vs sequential"], rows)
    print(f"\nparallel numbers == sequential-1thread numbers: {same}; target: parallel <= 0.6x sequential")
    final_json({"benchmark": "parallel_seeds", "machine": machine(), "seeds": args.seeds, "jobs": args.jobs,
                "same_numbers": same, "results": result})


if __name__ == "__main__":
    main()
