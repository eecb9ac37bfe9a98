"""The measured table of docs/sequence.md: sequence distillation methods on a bundled task, over seeds.

Per seed, through the one lineage engine (Python API): a teacher (generation 0, ``--teacher-size``) trained from
the references; then students (``--student-size``, from scratch, all with the same initialisation and data
order) given that teacher as generation 0: from labels only (token CE), word-level KD (cached teacher log-probs), sequence-level KD (teacher beam-4 outputs), sequence-level
interpolation, on-policy GKD (lam 0.5, JSD beta 0.5); and born-again generations 1-3 of the student size (each
taught by the previous one with token CE + word KD, generation 0 = the student from labels) and the ensemble
of generations 1-3. Reported on the test split (final epoch): valid / exact / BLEU / chrF of greedy outputs, valid /
exact of beam-4 outputs, per-token agreement and KL(teacher || student) against the teacher, sequence agreement (the
student's greedy output equals the teacher's), parameters and greedy decoding speed-up (tokens/s, KV cache,
one CPU thread). Mean and 95% Student-t CI over seeds.

Usage: OMP_NUM_THREADS=1 python benchmarks/sequence_table.py [--task seq_translit] [--data KEY=VALUE ...]
       [--seeds 0 1 2] [--epochs 15] [--rows-out seed0.json]
Prints a Markdown table and a final JSON line. Seeds in parallel: one process per seed with ``--rows-out``, then
``--combine seed0.json seed1.json ...`` prints the table over all of them (nothing is trained).
E.g. the deterministic table: ``--task seq_sort --data min_len=8 --data max_len=16``.
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import torch
import yaml
from _common import final_json, machine

from gendistill.analysis.stats import summarize
from gendistill.data import load_dataset
from gendistill.domains.sequence import SequenceDomain
from gendistill.lineage import Lineage
from gendistill.nlp.decoding import greedy
from gendistill.nlp.models import SeqEnsemble

CE = [{"term": "token_ce"}]
METHODS = {
    "student (labels)": dict(objective=CE),
    "word-level KD": dict(objective=CE + [{"term": "word_kd"}]),
    "sequence-level KD": dict(objective=CE, scheme={"name": "seq_kd", "beam": 4}),
    "seq-level interpolation": dict(objective=CE, scheme={"name": "seq_interp", "beam": 4}),
    "on-policy (GKD, lam 0.5)": dict(objective=CE + [{"term": "gkd_jsd", "beta": 0.5}],
                                     scheme={"name": "on_policy", "lam": 0.5}),
}
KEYS = ["test_valid", "test_exact", "test_bleu", "test_chrf", "test_beam_valid", "test_beam_exact", "agreement_teacher",
        "kl_teacher", "seq_agree", "speedup"]


def tokens_per_s(model, src, repeats: int = 3) -> float:
    """Greedy decoding speed (KV cache) on ``src``: the best of ``repeats`` runs (the machine is shared)."""
    greedy(model, src[:8])
    best = 0.0
    for _ in range(repeats):
        t0 = time.perf_counter()
        out = greedy(model, src)
        best = max(best, float((out != 0).sum()) / (time.perf_counter() - t0))
    return best


def main() -> None:
    p = argparse.ArgumentParser()
    p.add_argument("--task", default="seq_translit")
    p.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    p.add_argument("--epochs", type=int, default=15)
    p.add_argument("--num-train", type=int, default=2000)
    p.add_argument("--teacher-size", default="small")
    p.add_argument("--student-size", default="tiny")
    p.add_argument("--arch", default="seq_decoder")
    p.add_argument("--data", action="append", default=[], metavar="KEY=VALUE", help="a task option (repeatable)")
    p.add_argument("--rows-out", type=Path, help="write the per-seed figures here (for --combine)")
    p.add_argument("--combine", type=Path, nargs="+", help="print the table of these --rows-out files; no training")
    args = p.parse_args()
    if args.combine:
        parts = [json.loads(f.read_text()) for f in args.combine]
        rows: dict[str, list[dict]] = {}
        for part in parts:
            for name, rs in part["rows"].items():
                rows.setdefault(name, []).extend(rs)
        seeds = [s for part in parts for s in part["seeds"]]
        print(f"\n{parts[0]['header']}; seeds {seeds} (combined from {len(parts)} files)\n")
        print_rows(rows, {**parts[0]["meta"], "seeds": seeds})
        return
    torch.set_num_threads(1)
    options = {k: yaml.safe_load(v) for k, v in (kv.split("=", 1) for kv in args.data)}
    data = load_dataset(args.task, num_train=args.num_train, num_test=256, **options)
    src = data.test.x[:, : data.src_len]
    train = {"epochs": args.epochs, "batch_size": 64, "lr": 0.005, "fidelity_samples": 0}
    student = {"name": args.arch, "size": args.student_size}
    rows: dict[str, list[dict]] = {}
    t_start = time.perf_counter()
    for seed in args.seeds:
        base = dict(student=student, gen0_objective=CE, train=train, progress="off", seed=seed, ensembles=False)
        teacher_run = Lineage(**{**base, "student": {"name": args.arch, "size": args.teacher_size}, "generations": 0})
        t = teacher_run.fit(data)
        teacher = t.models[0]
        teacher_out, teacher_speed = greedy(teacher, src), tokens_per_s(teacher, src)
        rows.setdefault("teacher", []).append({**t.generations[0], "seq_agree": 1.0, "speedup": 1.0})

        def record(name: str, model, gen: dict, teacher_out=teacher_out, teacher_speed=teacher_speed) -> None:
            agree = float((greedy(model, src) == teacher_out).all(1).float().mean())
            rows.setdefault(name, []).append({**gen, "seq_agree": agree,
                                              "speedup": tokens_per_s(model, src) / teacher_speed})

        for name, kw in METHODS.items():
            r = Lineage(**{**base, "generations": 1, **kw}).fit(data, teacher=teacher)
            record(name, r.models[1], r.generations[1])
        ban = Lineage(**{**base, "generations": 3, "objective": CE + [{"term": "word_kd"}], "ensembles": True}).fit(data)
        for k in (1, 2, 3):
            record(f"born-again gen{k}", ban.models[k], {**ban.generations[k], **_vs_teacher(teacher, ban.models[k], data)})
        ens = next(e for e in ban.ensembles if e["members"] == [1, 2, 3])
        ensemble = SeqEnsemble(ban.models[1:4])
        decoded = SequenceDomain().metrics(ensemble, SequenceDomain().predict(ensemble, data.test), data.test)
        record("ensemble gen1-3", ensemble, {**ens, **{f"test_{k}": v for k, v in decoded.items()},
                                             **_vs_teacher(teacher, ensemble, data), "params": None})
        print(f"seed {seed} done ({time.perf_counter() - t_start:.0f} s)", flush=True)

    header = (f"{args.task} {options or ''}, {args.epochs} epochs, teacher {args.arch} {args.teacher_size}, students "
              f"{args.student_size}; {machine()}")
    meta = {"task": args.task, "data": options, "seeds": args.seeds, "epochs": args.epochs}
    if args.rows_out:
        args.rows_out.write_text(json.dumps({"header": header, "meta": meta, "seeds": args.seeds, "rows": rows},
                                            default=str))
    print(f"\n{header}; {len(args.seeds)} seeds {args.seeds}; {time.perf_counter() - t_start:.0f} s in all\n")
    print_rows(rows, meta)


def print_rows(rows: dict[str, list[dict]], meta: dict) -> None:
    """The Markdown table (mean ± half-width of the 95% Student-t CI over seeds) and the final JSON line."""
    heads = ["model", "params", "valid", "exact", "BLEU", "chrF", "beam-4 valid", "beam-4 exact", "agree(t) tok",
             "KL(t||s) tok", "seq agree(t)", "decode speed-up"]
    print("| " + " | ".join(heads) + " |")
    print("|" + "---|" * len(heads))
    out = {}
    for name, rs in rows.items():
        cells = [name, str(rs[0].get("params") or "-")]
        out[name] = {}
        for k in KEYS:
            vals = [r[k] for r in rs if r.get(k) is not None]
            if not vals:
                cells.append("-")
                continue
            s = summarize(vals)
            out[name][k] = s
            scale = 100.0 if k not in ("kl_teacher", "test_bleu", "test_chrf", "speedup") else 1.0
            digits = 1 if scale == 100.0 or k in ("test_bleu", "test_chrf") else 2 if k == "speedup" else 3
            half = 0.0 if s["ci95"] is None else (s["ci95"][1] - s["ci95"][0]) / 2  # one seed: no interval
            cells.append(f"{s['mean'] * scale:.{digits}f} ± {half * scale:.{digits}f}")
        print("| " + " | ".join(cells) + " |")
    final_json({**meta, "rows": out})


def _vs_teacher(teacher, model, data) -> dict:
    d = SequenceDomain()
    fid = d.fidelity(d.predict(teacher, data.test), d.predict(model, data.test))
    return {"agreement_teacher": fid["agreement"], "kl_teacher": fid["kl"]}


if __name__ == "__main__":
    main()
