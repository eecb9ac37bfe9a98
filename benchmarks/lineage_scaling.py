"""Wall time and peak memory of a whole lineage as generations, dataset size and model width grow.

Each configuration runs in a fresh subprocess (so peak resident memory is its own), through the same
Python API a user calls: ``gd.Lineage(...).fit(data, out=...)`` on MNIST-1D with a cnn1d.
Usage: python benchmarks/lineage_scaling.py [--epochs 5] [--quick]
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile

from _common import final_json, machine, print_table

CHILD = r"""
import json, resource, sys, time, torch
import gendistill as gd
cfg = json.loads(sys.argv[1])
data = gd.load_dataset("mnist1d", num_samples=cfg["samples"])
t0 = time.perf_counter()
res = gd.Lineage(student={"name": "cnn1d", "width": cfg["width"]}, generations=cfg["gens"], progress="off",
                 train={"epochs": cfg["epochs"], "batch_size": 128, "fidelity_samples": 256}).fit(data, out=cfg["out"])
wall = time.perf_counter() - t0
peak_mb = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
print(json.dumps({"wall_s": wall, "peak_rss_mb": peak_mb, "acc_last": res.generations[-1]["test_acc"],
                  "train_s": sum(g.get("seconds", 0) for g in res.generations)}))
"""


def run(cfg: dict) -> dict:
    with tempfile.TemporaryDirectory() as tmp:
        cfg = {**cfg, "out": f"{tmp}/run"}
        r = subprocess.run([sys.executable, "-c", CHILD, json.dumps(cfg)], capture_output=True, text=True, check=True)
        return json.loads(r.stdout.strip().splitlines()[-1])


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--epochs", type=int, default=5)
    ap.add_argument("--quick", action="store_true", help="fewer points (for a smoke test)")
    args = ap.parse_args()
    base = {"gens": 2, "samples": 5000, "width": 32, "epochs": args.epochs}
    sweeps = {
        "gens": [1, 2, 4] if args.quick else [1, 2, 4, 8],
        "samples": [2000, 5000] if args.quick else [2000, 5000, 20000],
        "width": [16, 32] if args.quick else [16, 32, 64, 128],
    }
    rows, results = [], []
    for key, values in sweeps.items():
        for v in values:
            cfg = {**base, key: v}
            out = run(cfg)
            results.append({**cfg, **out})
            rows.append([key, str(v), f"{cfg['gens']}", f"{int(cfg['samples'] * 0.8)}", f"{cfg['width']}",
                         f"{out['wall_s']:.1f} s", f"{out['wall_s'] / (cfg['gens'] + 1):.2f} s",
                         f"{out['peak_rss_mb']:.0f} MB", f"{out['acc_last']:.3f}"])
    print(f"lineage scaling: cnn1d on MNIST-1D, {args.epochs} epochs per generation, teacher outputs cached")
    print(f"machine: {machine()}\n")
    print_table(["varied", "value", "gens after 0", "train samples", "width", "wall", "per generation",
                 "peak RSS", "last gen acc"], rows)
    final_json({"benchmark": "lineage_scaling", "machine": machine(), "results": results})


if __name__ == "__main__":
    main()
