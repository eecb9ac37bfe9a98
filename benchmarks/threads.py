"""Wall time of one job against torch's intra-op thread count, on a quiet and on a loaded machine.

Runs `gendistill run` (the default config, shortened: 1 student generation, 10 epochs, no report figures
measured) as a subprocess with `--set train.threads=N` for each N, interleaved and rotated over rounds, first
alone and then next to `--load` busy processes (one per core: another user's job). Prints a table of median
wall seconds and the ratio to 1 thread, then a JSON line. This is the measurement behind `train.threads`'s
advice in docs/performance.md.

    .venv/bin/python benchmarks/threads.py --rounds 3
"""

from __future__ import annotations

import argparse
import json
import multiprocessing as mp
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path


def busy(stop) -> None:
    x = 0
    while not stop.is_set():
        for _ in range(100_000):
            x += 1


def one_run(threads: int, out: Path) -> float:
    cmd = [sys.executable, "-m", "gendistill", "run", "--out", str(out), "--progress", "off",
           "--set", "generations.count=1", "--set", "train.epochs=10", "--set", f"train.threads={threads}"]
    env = {k: v for k, v in os.environ.items() if k not in ("OMP_NUM_THREADS", "MKL_NUM_THREADS")}
    t0 = time.perf_counter()
    subprocess.run(cmd, check=True, capture_output=True, env=env)
    return time.perf_counter() - t0


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--threads", type=int, nargs="+", default=[1, os.cpu_count() or 2])
    ap.add_argument("--load", type=int, default=os.cpu_count() or 2, help="busy processes in the loaded case")
    args = ap.parse_args()
    results: dict[str, dict[int, list[float]]] = {}
    with tempfile.TemporaryDirectory() as tmp:
        for case in ("quiet", "loaded"):
            stop = mp.Event()
            hogs = [mp.Process(target=busy, args=(stop,), daemon=True) for _ in range(args.load if case == "loaded" else 0)]
            for h in hogs:
                h.start()
            times: dict[int, list[float]] = {n: [] for n in args.threads}
            for r in range(args.rounds):
                order = args.threads[r % len(args.threads):] + args.threads[: r % len(args.threads)]
                for n in order:
                    times[n].append(one_run(n, Path(tmp) / f"{case}-{n}-{r}"))
            stop.set()
            for h in hogs:
                h.join()
            results[case] = times
    cpu = next((ln.split(":", 1)[1].strip() for ln in Path("/proc/cpuinfo").read_text().splitlines()
                if ln.startswith("model name")), "?") if Path("/proc/cpuinfo").exists() else "?"
    print(f"CPU: {cpu}, {os.cpu_count()} logical cores; {args.rounds} rounds; loaded = {args.load} busy processes")
    print(f"{'case':<8} {'threads':>7} {'median s':>9} {'vs 1 thread':>11}")
    for case, times in results.items():
        base = statistics.median(times[args.threads[0]])
        for n, ts in times.items():
            print(f"{case:<8} {n:>7} {statistics.median(ts):>9.1f} {statistics.median(ts) / base:>10.2f}x")
    print(json.dumps({"cpu": cpu, "rounds": args.rounds, "results": {c: {str(n): ts for n, ts in t.items()}
                                                                       for c, t in results.items()}}))


if __name__ == "__main__":
    main()
