"""What does word-level KD cost for sequence models, and what does chunking the loss save?

1. Step time (median of ``--rounds`` interleaved one-epoch runs of gendistill's Trainer, no evaluation) of the same
   student on the same batches of a bundled task:
     student-only   token CE
     kd-topk-cache  token CE + word KD from the teacher's cached top-k log-probs (no teacher forward)
     kd-full-cache  token CE + word KD from every cached teacher log-prob
     kd-live        token CE + word KD with the live teacher
   Target: kd-topk-cache within 1.15x of student-only.
2. Peak memory (max resident set of a fresh process, minus the same process that only builds the inputs) of the
   forward KL between ``--positions`` positions of ``--vocab`` logits, forward and backward, plain vs chunked.
3. The error of a top-k cache: mean |KL_k - KL| per position between a trained teacher and student, for several k.

Usage: OMP_NUM_THREADS=1 python benchmarks/sequence_kd_overhead.py [--rounds 5] [--vocab 32000] [--positions 2048]
Prints tables and a final JSON line.
"""

from __future__ import annotations

import argparse
import subprocess
import sys
import time

import torch
from _common import final_json, machine, median, print_table

from gendistill.data import load_dataset
from gendistill.domains.sequence import SequenceBatches, SequenceDomain
from gendistill.engine import Trainer, seed_everything
from gendistill.engine.settings import TrainConfig
from gendistill.engine.task import DistillTask
from gendistill.knowledge import build_objective
from gendistill.nlp.cache import TopKTeacher, topk_kl_error
from gendistill.nlp.models import DecoderLM
from gendistill.teachers import FrozenTeacher

MEMORY_CHILD = """
import resource, sys, torch
from gendistill.nlp.losses import chunked_divergence, forward_kl
n, v, chunk = int(sys.argv[1]), int(sys.argv[2]), int(sys.argv[3])
g = torch.Generator().manual_seed(0)
s = torch.randn(1, n, v, generator=g).requires_grad_()
t = torch.randn(1, n, v, generator=g)
real = torch.ones(1, n, dtype=torch.bool)
base = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
if chunk >= 0:
    loss = chunked_divergence(s, t, real, forward_kl, chunk=chunk if chunk > 0 else n + 1)
    loss.backward()
print(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss - base)
"""


def peak_mb(n: int, v: int, chunk: int) -> float:
    out = subprocess.run([sys.executable, "-c", MEMORY_CHILD, str(n), str(v), str(chunk)], capture_output=True,
                         text=True, check=True)
    return int(out.stdout.strip()) / 1024


def main() -> None:
    p = argparse.ArgumentParser()
    p.add_argument("--rounds", type=int, default=5)
    p.add_argument("--task", default="seq_translit")
    p.add_argument("--topk", type=int, default=8)
    p.add_argument("--vocab", type=int, default=32000)
    p.add_argument("--positions", type=int, default=2048)
    args = p.parse_args()
    torch.set_num_threads(1)
    data = load_dataset(args.task, num_train=2000, num_test=256)
    cfg = TrainConfig(epochs=1, batch_size=64, lr=0.005, fidelity_samples=0, device="cpu")
    seed_everything(0)
    teacher_model = DecoderLM(data.num_classes, data.input_shape, size="small")
    domain = SequenceDomain()
    pred = domain.predict(teacher_model, data.train)
    live = FrozenTeacher(teacher_model)
    teachers = {
        "student-only": None,
        "kd-topk-cache": TopKTeacher.from_predictions(live, pred, args.topk),
        "kd-full-cache": TopKTeacher.from_predictions(live, pred, 0),
        "kd-live": live,
    }
    times: dict[str, list[float]] = {k: [] for k in teachers}
    for _ in range(args.rounds):
        for name, teacher in teachers.items():
            seed_everything(1)
            student = DecoderLM(data.num_classes, data.input_shape, size="tiny")
            terms = [{"term": "token_ce"}] + ([] if teacher is None else [{"term": "word_kd"}])
            task = DistillTask(student, build_objective(terms), teacher)
            source = SequenceBatches(data.train, cfg.batch_size, 0, torch.device("cpu"))
            t0 = time.perf_counter()
            Trainer(cfg, progress="off").fit(task, source, num_classes=data.num_classes)
            times[name].append(time.perf_counter() - t0)
    base = median(times["student-only"])
    steps = len(SequenceBatches(data.train, cfg.batch_size, 0, torch.device("cpu")))
    print(f"{args.task}: student seq_decoder tiny, teacher small, {steps} steps per epoch, median of {args.rounds} "
          f"rounds; {machine()}\n")
    rows = [[k, f"{median(v):.3f}", f"{1000 * median(v) / steps:.2f}", f"{median(v) / base:.2f}x"] for k, v in times.items()]
    print_table(["run", "epoch s", "ms/step", "vs student-only"], rows)

    mem = {"inputs only": peak_mb(args.positions, args.vocab, -1),
           "plain (one chunk)": peak_mb(args.positions, args.vocab, 0),
           "chunked (256 positions)": peak_mb(args.positions, args.vocab, 256)}
    print(f"\nforward KL + backward, {args.positions} positions x vocabulary {args.vocab} (float32 logits "
          f"{args.positions * args.vocab * 4 / 2**20:.0f} MB each); peak RSS above the inputs:\n")
    print_table(["loss", "peak MB"], [[k, f"{v:.0f}"] for k, v in mem.items()])

    trained = {}
    for size in ("small", "tiny"):  # a briefly trained teacher and student for the top-k error
        seed_everything(2)
        m = DecoderLM(data.num_classes, data.input_shape, size=size)
        task = DistillTask(m, build_objective([{"term": "token_ce"}]))
        Trainer(TrainConfig(epochs=3, batch_size=64, lr=0.005, fidelity_samples=0, device="cpu"), progress="off").fit(
            task, SequenceBatches(data.train, 64, 0, torch.device("cpu")), num_classes=data.num_classes)
        trained[size] = domain.predict(m, data.test)
    ks = [1, 2, 4, 8, data.num_classes]
    err = topk_kl_error(trained["small"], trained["tiny"], ks)
    full = domain.fidelity(trained["small"], trained["tiny"])["kl"]
    print(f"\ntop-k cache error on {args.task} test (vocabulary {data.num_classes}); full KL(t||s) = {full:.4f}:\n")
    print_table(["k", "mean |KL_k - KL|"], [[str(k), f"{v:.4f}"] for k, v in err.items()])
    final_json({"task": args.task, "epoch_seconds": {k: median(v) for k, v in times.items()},
                "ratio_topk_cache": median(times["kd-topk-cache"]) / base, "peak_mb": mem,
                "topk_kl_error": {str(k): v for k, v in err.items()}, "kl_full": full})


if __name__ == "__main__":
    main()
