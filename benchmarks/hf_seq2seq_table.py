"""The Hugging Face figures of docs/sequence.md: tiny T5-style students of a T5-style teacher, and a GPT-2-style
classifier distilled from a BERT-style one, through the one lineage engine. Needs transformers; all models are
built with random weights from configs (nothing downloaded).

Seq2seq (``--task``, default ``seq_sort``): per seed a teacher (T5-style, d_model 64, 2 + 2 layers) trained from
the references for ``--teacher-epochs``; then students (d_model 32, 1 + 1 layer; same initialisation and data
order per seed) given that teacher: from labels (token CE), word-level KD (token CE + word KD, cached teacher
log-probs), sequence-level KD (teacher beam-4 outputs), and word-level KD plus a FitNets hint on the decoder's
last hidden state (hidden-state taps ``decoder_hidden.1`` <- ``decoder_hidden.2``, a linear regressor; the
teacher runs live). Reported on the test split, final epoch: exact match of greedy outputs, per-token
top-1 agreement and KL(teacher || student) on reference prefixes, sequence agreement (greedy output equals the
teacher's); for a task with several correct outputs (``seq_translit``) also *valid* (the greedy output is one
of them) and the same for beam 4. Mean and 95% Student-t CI over seeds.

Classification (``--classify``): ``seq_label`` (``--label-task``), a BERT-style teacher (hidden 64, 2 layers)
and born-again generations 1-2 of a GPT-2-style student (n_embd 32, 1 layer), each taught by the previous
generation with CE + KD (T = 2); test accuracy, agreement and KL with the generation's teacher.

Usage: OMP_NUM_THREADS=1 python benchmarks/hf_seq2seq_table.py [--seeds 0 1 2] [--classify]
Prints Markdown tables and a final JSON line.
"""

from __future__ import annotations

import argparse
import time

import torch
from _common import final_json, machine

from gendistill.analysis.stats import summarize
from gendistill.data import load_dataset
from gendistill.lineage import Lineage
from gendistill.nlp.decoding import greedy

CE = [{"term": "token_ce"}]
HINT = {"term": "fitnet", "layers": {"student": "decoder_hidden.1", "teacher": "decoder_hidden.2"}, "regressor": "conv"}
METHODS = {
    "student (labels)": dict(objective=CE),
    "word-level KD": dict(objective=CE + [{"term": "word_kd"}]),
    "sequence-level KD": dict(objective=CE, scheme={"name": "seq_kd", "beam": 4}),
    "word-level KD + FitNets hint (hidden-state taps)": dict(objective=CE + [{"term": "word_kd"}, HINT]),
}
KEYS = ["test_exact", "test_token_acc", "agreement_teacher", "kl_teacher", "seq_agree"]


def t5(width: int, layers: int) -> dict:
    return {"name": "hf_seq2seq_lm", "config": {"model_type": "t5", "d_model": width, "d_ff": 2 * width,
                                                "d_kv": width // 2, "num_layers": layers, "num_heads": 2,
                                                "dropout_rate": 0.0}}


def cell(vals: list[float], scale: float, digits: int) -> tuple[str, dict]:
    s = summarize(vals)
    half = (s["ci95"][1] - s["ci95"][0]) / 2
    return f"{s['mean'] * scale:.{digits}f} ± {half * scale:.{digits}f}", s


def table(rows: dict[str, list[dict]], keys: list[str], heads: list[str]) -> dict:
    print("| " + " | ".join(heads) + " |")
    print("|" + "---|" * len(heads))
    out = {}
    for name, rs in rows.items():
        cells, out[name] = [name, str(rs[0].get("params") or "-")], {}
        for k in keys:
            vals = [r[k] for r in rs if r.get(k) is not None]
            if not vals:
                cells.append("-")
                continue
            text, out[name][k] = cell(vals, 1.0 if k == "kl_teacher" else 100.0, 3 if k == "kl_teacher" else 1)
            cells.append(text)
        print("| " + " | ".join(cells) + " |")
    return out


def seq2seq(args) -> dict:
    data = load_dataset(args.task, num_train=args.num_train, num_test=256)
    src = data.test.x[:, : data.src_len]
    rows: dict[str, list[dict]] = {}
    for seed in args.seeds:
        base = dict(student=t5(32, 1), gen0_objective=CE, progress="off", seed=seed, ensembles=False,
                    train={"epochs": args.epochs, "batch_size": 64, "lr": args.lr, "fidelity_samples": 0})
        t = Lineage(**{**base, "student": t5(64, 2), "generations": 0,
                       "train": {**base["train"], "epochs": args.teacher_epochs}}).fit(data)
        teacher = t.models[0]
        teacher_out = greedy(teacher, src)
        rows.setdefault("teacher", []).append({**t.generations[0], "seq_agree": 1.0})
        for name, kw in METHODS.items():
            r = Lineage(**{**base, "generations": 1, **kw}).fit(data, teacher=teacher)
            agree = float((greedy(r.models[1], src) == teacher_out).all(1).float().mean())
            rows.setdefault(name, []).append({**r.generations[1], "seq_agree": agree})
        print(f"seq2seq seed {seed} done", flush=True)
    print(f"\n{data.name} ({args.num_train} train / 256 test), seeds {args.seeds}; teacher T5-style d_model 64, "
          f"2+2 layers, {args.teacher_epochs} epochs; students d_model 32, 1+1 layer, {args.epochs} epochs; "
          f"AdamW lr {args.lr}, batch 64; {machine()}\n")
    if data.accepts is None:
        return table(rows, KEYS, ["model", "params", "exact %", "token acc %", "agree(t) tok %", "KL(t||s) tok",
                                  "seq agree(t) %"])
    return table(rows, ["test_valid", "test_beam_valid"] + KEYS,  # several correct outputs per source
                 ["model", "params", "valid %", "beam-4 valid %", "exact %", "token acc %", "agree(t) tok %",
                  "KL(t||s) tok", "seq agree(t) %"])


def classify(args) -> dict:
    data = load_dataset("seq_label", task=args.label_task, num_train=args.num_train, num_test=256)
    bert = {"name": "hf_classifier", "config": {"model_type": "bert", "hidden_size": 64, "num_hidden_layers": 2,
                                                "num_attention_heads": 2, "intermediate_size": 128,
                                                "max_position_embeddings": 32}}
    gpt2 = {"name": "hf_classifier", "config": {"model_type": "gpt2", "n_embd": 32, "n_layer": 1, "n_head": 2,
                                                "n_positions": 32}}
    rows: dict[str, list[dict]] = {}
    for seed in args.seeds:
        r = Lineage(student=gpt2, generations=2, archs={0: bert}, objective=[{"term": "ce"}, {"term": "kd", "temperature": 2.0}],
                    gen0_objective=[{"term": "ce"}], seed=seed, progress="off", ensembles=False,
                    train={"epochs": args.epochs, "batch_size": 64, "lr": args.lr, "fidelity_samples": 0}).fit(data)
        for k, name in enumerate(["teacher (BERT-style)", "GPT-2-style gen1", "GPT-2-style gen2"]):
            rows.setdefault(name, []).append(r.generations[k])
        print(f"classify seed {seed} done", flush=True)
    print(f"\n{data.name} ({args.num_train} train / 256 test), seeds {args.seeds}, {args.epochs} epochs per "
          f"generation, AdamW lr {args.lr}, batch 64\n")
    return table(rows, ["test_acc", "agreement_teacher", "kl_teacher"],
                 ["model", "params", "test acc %", "agree(teacher) %", "KL(teacher||s)"])


def main() -> None:
    p = argparse.ArgumentParser()
    p.add_argument("--task", default="seq_sort")
    p.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    p.add_argument("--epochs", type=int, default=10)
    p.add_argument("--teacher-epochs", type=int, default=20)
    p.add_argument("--num-train", type=int, default=2000)
    p.add_argument("--lr", type=float, default=0.003)
    p.add_argument("--classify", action="store_true", help="also the classifier table")
    p.add_argument("--label-task", default="sorted")
    p.add_argument("--only-classify", action="store_true")
    args = p.parse_args()
    torch.set_num_threads(1)
    t0 = time.perf_counter()
    out = {} if args.only_classify else {"seq2seq": seq2seq(args)}
    if args.classify or args.only_classify:
        out["classify"] = classify(args)
    print(f"\n{time.perf_counter() - t0:.0f} s in all")
    final_json({"seeds": args.seeds, "task": args.task, "epochs": args.epochs, **out})


if __name__ == "__main__":
    main()
