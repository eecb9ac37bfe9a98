"""The sequence domain: losses on hand-made cases, decoding (KV cache, beam search against enumeration), the top-k
teacher cache, bad input, and lineages of sequence models through the one engine (learning, seq-KD, resume)."""

from __future__ import annotations

import itertools
import json
import math
from pathlib import Path

import pytest
import torch

from gendistill import rundir
from gendistill.data import load_dataset
from gendistill.domains.sequence import SequenceDomain
from gendistill.engine.checkpoint import load_model
from gendistill.errors import ConfigError, DataError
from gendistill.knowledge.base import Batch, Outputs
from gendistill.lineage import Lineage
from gendistill.nlp import EOS
from gendistill.nlp.cache import TopKTeacher, topk_kl_error
from gendistill.nlp.decoding import as_inputs, beam_search, filter_logits, greedy, sample
from gendistill.nlp.losses import (
    GeneralizedJSD,
    ReverseKL,
    TokenCE,
    TotalVariation,
    WordKD,
    chunked_divergence,
    forward_kl,
)
from gendistill.nlp.metrics import bleu, token_fidelity
from gendistill.nlp.models import DecoderLM, EncoderDecoder
from gendistill.teachers import FrozenTeacher

ln = math.log
ROOT = Path(__file__).resolve().parents[1]


def _one_position(student_probs, teacher_probs):
    """Outputs for one labelled position plus one padded position with junk logits (must be ignored)."""
    s = torch.tensor([[list(map(ln, student_probs)), [5.0, -3.0]]])
    t = torch.tensor([[list(map(ln, teacher_probs)), [-4.0, 9.0]]])
    return Outputs(s), Outputs(t), Batch(torch.zeros(1, 2, dtype=torch.long), torch.tensor([[1, -100]]))


def test_token_losses_equal_hand_computations():
    s, t, b = _one_position([0.25, 0.75], [0.5, 0.5])
    assert WordKD(1.0)(s, t, b).item() == pytest.approx(0.5 * ln(0.5 / 0.25) + 0.5 * ln(0.5 / 0.75), abs=1e-6)
    assert ReverseKL()(s, t, b).item() == pytest.approx(0.25 * ln(0.25 / 0.5) + 0.75 * ln(0.75 / 0.5), abs=1e-6)
    assert TotalVariation()(s, t, b).item() == pytest.approx(0.25, abs=1e-6)
    m = [0.375, 0.625]  # beta = 0.5: m = (p + q) / 2
    kl_pm = 0.5 * ln(0.5 / m[0]) + 0.5 * ln(0.5 / m[1])
    kl_qm = 0.25 * ln(0.25 / m[0]) + 0.75 * ln(0.75 / m[1])
    assert GeneralizedJSD(beta=0.5)(s, t, b).item() == pytest.approx(0.5 * kl_pm + 0.5 * kl_qm, abs=1e-6)
    m = [0.2 * 0.5 + 0.8 * 0.25, 0.2 * 0.5 + 0.8 * 0.75]  # beta = 0.2
    kl_pm = 0.5 * ln(0.5 / m[0]) + 0.5 * ln(0.5 / m[1])
    kl_qm = 0.25 * ln(0.25 / m[0]) + 0.75 * ln(0.75 / m[1])
    assert GeneralizedJSD(beta=0.2)(s, t, b).item() == pytest.approx(0.2 * kl_pm + 0.8 * kl_qm, abs=1e-6)
    # temperature 2: q_T is proportional to sqrt(q), p_T stays uniform; scaled by T^2
    z = math.sqrt(0.25) + math.sqrt(0.75)
    qt = [math.sqrt(0.25) / z, math.sqrt(0.75) / z]
    assert WordKD(2.0)(s, t, b).item() == pytest.approx(4 * (0.5 * ln(0.5 / qt[0]) + 0.5 * ln(0.5 / qt[1])), abs=1e-6)
    assert TokenCE()(s, None, b).item() == pytest.approx(-ln(0.75), abs=1e-6)


def test_topk_teacher_divergence_is_the_kl_of_the_coarsened_distributions():
    # teacher p = [0.5, 0.3, 0.2], top-1 cache keeps token 0: buckets [0.5, 0.5]; student q = [0.2, 0.4, 0.4]
    s = Outputs(torch.tensor([[[ln(0.2), ln(0.4), ln(0.4)]]]))
    t = Outputs(torch.tensor([[[ln(0.5)]]]), {"topk_index": torch.tensor([[[0]]])})
    b = Batch(torch.zeros(1, 1, dtype=torch.long), torch.tensor([[0]]))
    assert WordKD(1.0)(s, t, b).item() == pytest.approx(0.5 * ln(0.5 / 0.2) + 0.5 * ln(0.5 / 0.8), abs=1e-5)


def test_chunked_loss_equals_the_plain_one_with_gradients():
    g = torch.Generator().manual_seed(0)
    s = torch.randn(3, 7, 50, generator=g, requires_grad=True)
    t = torch.randn(3, 7, 50, generator=g)
    real = torch.rand(3, 7, generator=g) > 0.3
    a = chunked_divergence(s, t, real, forward_kl, temperature=2.0, chunk=4)
    (ga,) = torch.autograd.grad(a, s)
    b = chunked_divergence(s, t, real, forward_kl, temperature=2.0, chunk=10_000)
    (gb,) = torch.autograd.grad(b, s)
    plain = forward_kl((s[real] / 2).log_softmax(-1), (t[real] / 2).log_softmax(-1)).mean()  # autograd, no chunks
    (gp,) = torch.autograd.grad(plain, s)
    assert a.item() == pytest.approx(b.item(), rel=1e-5) and torch.allclose(ga, gb, atol=1e-6)
    assert a.item() == pytest.approx(plain.item(), rel=1e-5) and torch.allclose(ga, gp, atol=1e-6)
    assert gb[~real].abs().max() == 0  # padded positions get no gradient


def _tiny_task():
    return load_dataset("seq_reverse", num_train=64, num_test=16, min_len=2, max_len=4)


@pytest.mark.parametrize("cls", [DecoderLM, EncoderDecoder])
def test_kv_cache_decoding_equals_recomputing_every_prefix(cls):
    data = _tiny_task()
    torch.manual_seed(0)
    model = cls(data.num_classes, data.input_shape, size="tiny").eval()
    src = data.test.x[:, : data.src_len]
    assert torch.equal(greedy(model, src), greedy(model, src, use_cache=False))
    (a, sa), (b, sb) = beam_search(model, src, 3, n_best=3), beam_search(model, src, 3, n_best=3, use_cache=False)
    assert torch.equal(a, b) and torch.allclose(sa, sb, atol=1e-5)
    draws = [sample(model, src, temperature=1.3, top_k=5, use_cache=c, generator=torch.Generator().manual_seed(1))
             for c in (True, False)]
    assert torch.equal(*draws)
    # greedy tokens equal the argmax of the teacher-forced logits on the greedy output itself
    x, y = as_inputs(src, greedy(model, src))
    assert torch.equal(model(x).argmax(-1)[y != -100], y[y != -100])


def _logprob_of(model, src, seq):
    logits, state = model.start(src, use_cache=False)
    total = 0.0
    for i, tok in enumerate(seq):
        total += logits.log_softmax(-1)[0, tok].item()
        if i + 1 < len(seq):
            logits, state = model.step(torch.tensor([[tok]]), state)
    return total


def test_beam_search_finds_the_best_sequence_by_exhaustive_enumeration():
    torch.manual_seed(3)
    vocab, T = 5, 3  # <pad> <bos> <eos> a b; targets of up to 3 tokens
    model = DecoderLM(vocab, (2, T), size="tiny").eval()
    with torch.no_grad():
        model.head.weight.mul_(8.0)  # peaked, different distributions per prefix
    src = torch.tensor([[3, 4]])
    every = [list(p) + [EOS] for n in range(T) for p in itertools.product(range(vocab), repeat=n)]
    every += [list(p) for p in itertools.product(range(vocab), repeat=T) if EOS not in p]
    every = [s for s in every if EOS not in s[:-1]]
    scores = {tuple(s): _logprob_of(model, src, s) for s in every}
    best = max(scores, key=scores.get)
    tokens, score = beam_search(model, src, beam=vocab**T)
    found = [t for t in tokens[0, 0].tolist()]
    found = found[: found.index(EOS) + 1] if EOS in found else found
    assert tuple(found) == best and score[0, 0].item() == pytest.approx(scores[best], abs=1e-4)


def test_top_k_and_top_p_filters():
    z = torch.log(torch.tensor([[0.5, 0.3, 0.15, 0.05]]))
    assert torch.isinf(filter_logits(z, top_k=2)).tolist() == [[False, False, True, True]]
    assert torch.isinf(filter_logits(z, top_p=0.7)).tolist() == [[False, False, True, True]]  # 0.5 + 0.3 >= 0.7
    assert torch.isinf(filter_logits(z, top_p=0.81)).tolist() == [[False, False, False, True]]


def test_topk_cache_replays_the_live_teacher():
    data = _tiny_task()
    torch.manual_seed(0)
    model = DecoderLM(data.num_classes, data.input_shape, size="tiny").eval()
    live = FrozenTeacher(model)
    pred = model(data.train.x).detach().masked_fill((data.train.y == -100)[..., None], float("nan"))
    idx = torch.tensor([5, 0, 17])
    full = TopKTeacher.from_predictions(live, pred, 0, dtype=torch.float32)(data.train.x[idx], idx)
    want = live(data.train.x[idx]).logits.log_softmax(-1)
    real = data.train.y[idx] != -100
    assert torch.allclose(full.logits[real], want[real], atol=1e-5)
    top = TopKTeacher.from_predictions(live, pred, 3, dtype=torch.float32)(data.train.x[idx], idx)
    values, index = want.topk(3, -1)
    assert torch.allclose(top.logits[real], values[real], atol=1e-5)
    assert torch.equal(top.features["topk_index"][real], index[real])
    errors = topk_kl_error(pred, torch.randn_like(pred), [1, 4, data.num_classes])
    assert errors[data.num_classes] < 1e-4 and errors[1] >= errors[4] >= 0


def test_bleu_and_token_fidelity():
    assert bleu([list("abcdef")], [list("abcdef")]) == pytest.approx(100.0)
    assert bleu([list("abcd")], [list("abcdefgh")]) == pytest.approx(100 * math.exp(1 - 8 / 4))  # brevity penalty
    t = torch.tensor([[[0.0, 1.0], [float("nan"), float("nan")]]])
    fid = token_fidelity(t, t.clone())
    assert fid == {"agreement": 1.0, "kl": 0.0}


def test_bad_input_is_one_line():
    with pytest.raises(DataError, match="empty"):
        load_dataset("seq_reverse", num_train=0)
    data = _tiny_task()
    with pytest.raises(DataError, match="vocabulary"):
        data.tokenizer.encode("12x")

    short = DecoderLM(data.num_classes, (2, 3), size="tiny")
    with pytest.raises(ConfigError, match="longer than the model's maximum"):
        SequenceDomain().check_teacher(short, data)
    with pytest.raises(ConfigError, match="not a sequence model"):
        Lineage(student={"name": "seq_decoder", "size": "tiny"}, generations=1, objective=[{"term": "word_kd"}],
                gen0_objective=[{"term": "token_ce"}], progress="off").fit(data, teacher=torch.nn.Linear(3, 3))
    with pytest.raises(ConfigError, match="not a sequence model"):
        Lineage(student={"name": "mlp"}, generations=0, gen0_objective=[{"term": "token_ce"}], progress="off").fit(data)


def _learnable():
    return load_dataset("seq_reverse", num_train=600, num_test=64, min_len=2, max_len=4)


def _lineage(**kw):
    args = dict(student={"name": "seq_decoder", "size": "tiny"}, generations=1,
                objective=[{"term": "token_ce"}, {"term": "word_kd"}], gen0_objective=[{"term": "token_ce"}],
                train={"epochs": 8, "batch_size": 32, "lr": 0.01, "fidelity_samples": 32}, progress="off")
    return Lineage(**{**args, **kw})


def _numbers(result):
    return [{k: v for k, v in g.items() if isinstance(v, float) and "seconds" not in k} for g in result.generations]


def test_a_sequence_lineage_learns_and_resumes_exactly(tmp_path, monkeypatch):
    data = _learnable()
    whole = _lineage().fit(data, out=tmp_path / "whole")
    g0, g1 = whole.generations
    assert g0["test_token_acc"] > 0.9 and g0["test_exact"] > 0.6, g0  # chance is 1/10 per token
    assert g1["teacher"] == "gen0" and g1["agreement_teacher"] > 0.85 and g1["kl_teacher"] >= 0
    assert g1["teacher_outputs"].startswith("cached teacher")  # word KD replays the cache, no teacher forward
    assert whole.ensembles and "test_nll" in whole.ensembles[0]
    history = rundir.read_history(rundir.gen_dir(tmp_path / "whole", 1))
    assert {"train_word_kd", "train_token_ce", "test_token_acc", "holdout_agreement"} <= set(history[-1])
    analysis = json.loads((tmp_path / "whole/analysis/sequence_agreement.json").read_text())
    assert analysis["test"][0][0] == 1.0

    from gendistill.engine import trainer as trainer_mod

    real = trainer_mod.Trainer._save

    def crash(self, run, epoch):
        real(self, run, epoch)
        if self.desc == "gen1" and epoch == 4:
            raise KeyboardInterrupt

    monkeypatch.setattr(trainer_mod.Trainer, "_save", crash)
    with pytest.raises(KeyboardInterrupt):
        _lineage().fit(data, out=tmp_path / "cut")
    monkeypatch.setattr(trainer_mod.Trainer, "_save", real)
    assert _numbers(_lineage().fit(data, out=tmp_path / "cut", resume=True)) == _numbers(whole)


def test_sequence_level_kd_trains_the_student_on_teacher_outputs(tmp_path):
    data = _learnable()
    result = _lineage(scheme={"name": "seq_kd", "beam": 2}, objective=[{"term": "token_ce"}],
                      train={"epochs": 8, "batch_size": 32, "lr": 0.01, "fidelity_samples": 0}).fit(data)
    g0, g1 = result.generations
    assert g1["test_bleu"] > 80 and g1["test_exact"] > 0.6, g1  # stated: BLEU > 80 on reversal of 2-4 digits
    assert g1["teacher_outputs"].startswith("live teacher")


def test_on_policy_mixes_student_samples(tmp_path):
    data = load_dataset("seq_translit", num_train=128, num_test=16)
    result = _lineage(scheme={"name": "on_policy", "lam": 0.5}, objective=[{"term": "token_ce"}, {"term": "gkd_jsd"}],
                      train={"epochs": 2, "batch_size": 32, "lr": 0.01, "fidelity_samples": 0}).fit(
        data, out=tmp_path / "op")
    history = rundir.read_history(rundir.gen_dir(tmp_path / "op", 1))
    assert 0.25 <= history[-1]["train_on_policy"] <= 0.75 and history[-1]["train_gkd_jsd"] > 0
    assert result.generations[1]["test_valid"] >= 0


@pytest.mark.parametrize("path", sorted((ROOT / "examples/sequence").rglob("*.yaml")), ids=lambda p: p.stem)
def test_sequence_example_configs_validate(path):
    from gendistill.config import load_config
    from gendistill.registry import SCHEMES

    cfg = load_config(path)
    assert cfg.data.name.startswith(("seq_", "pcfg")) and SCHEMES.get(cfg.scheme.name).factory.__doc__


def test_cli_runs_a_sequence_example(tmp_path):
    from typer.testing import CliRunner

    from gendistill.cli import app

    r = CliRunner().invoke(app, ["run", str(ROOT / "examples/sequence/translit-seq-interp.yaml"), "--out",
                                 str(tmp_path / "run"), "--set", "train.epochs=1", "--set", "data.num_train=64",
                                 "--set", "data.num_test=16", "--progress", "off"])
    assert r.exit_code == 0, r.output
    assert "valid" in r.stdout and "beam_bleu" in r.stdout and "gen1" in r.stdout
    bad = CliRunner().invoke(app, ["run", str(ROOT / "examples/sequence/translit-seq-kd.yaml"), "--out",
                                   str(tmp_path / "bad"), "--set", "data.num_train=0"])
    assert bad.exit_code == 2 and bad.stderr.count("\n") == 1 and "empty" in bad.stderr
    assert not (tmp_path / "bad").exists()


def test_bam_loss_with_teacher_annealing_equals_a_hand_computation():
    from gendistill.knowledge import build_objective
    from gendistill.schemes.bam import BAMTask

    class Fixed(torch.nn.Module):  # a "student" whose logits are given
        src_len, tgt_len = 0, 1

        def __init__(self, logits):
            super().__init__()
            self.z = torch.nn.Parameter(logits)

        def forward(self, x):
            return self.z.expand(len(x), -1, -1)

        def start(self, src, use_cache=True):  # pragma: no cover - not decoded here
            raise NotImplementedError

        step = start

    q = [0.2, 0.3, 0.5]
    p = [0.6, 0.3, 0.1]
    student = Fixed(torch.tensor([[list(map(ln, q))]]))
    teacher = FrozenTeacher(Fixed(torch.tensor([[list(map(ln, p))]])))
    task = BAMTask(student, build_objective([{"term": "token_ce"}]), [teacher], None, anneal=True)
    batch = Batch(torch.zeros(1, 1, dtype=torch.long), torch.tensor([[2]]), torch.tensor([0]))
    for epoch, gold in ((1, 0.0), (3, 0.5), (5, 1.0)):  # gold weight 0 -> 1 over 5 epochs
        task.on_epoch_start(epoch, 5)
        want = -sum((gold * (v == 2) + (1 - gold) * p[v]) * ln(q[v]) for v in range(3))
        assert task(batch)["loss"].item() == pytest.approx(want, abs=1e-5)


def _tiny_teacher(data):
    from gendistill.models import build_model

    return build_model({"name": "seq_decoder", "size": "tiny"}, data.num_classes, data.input_shape)


def test_bam_distils_single_task_teachers_into_a_multi_task_student(tmp_path):
    tasks = "reverse,sort,add"
    paths = []
    for t in tasks.split(","):
        one = load_dataset("seq_multi", tasks=tasks, only=t, num_train=64, num_test=8)
        _lineage(generations=0, train={"epochs": 1, "batch_size": 32, "fidelity_samples": 0}).fit(one, out=tmp_path / t)
        paths.append(str(tmp_path / t / "gen0/model.safetensors"))
    data = load_dataset("seq_multi", tasks=tasks, num_train=64, num_test=8)
    assert data.groups.tolist() == [0] * 64 + [1] * 64 + [2] * 64 and one.num_classes == data.num_classes
    result = _lineage(scheme={"name": "bam", "teachers": paths}, objective=[{"term": "token_ce"}],
                      train={"epochs": 2, "batch_size": 32, "fidelity_samples": 0}).fit(data, out=tmp_path / "bam")
    history = rundir.read_history(rundir.gen_dir(tmp_path / "bam", 1))
    assert [round(h["train_gold_weight"], 3) for h in history] == [0.0, 1.0] and result.generations[1]["test_nll"] > 0
    # the teacher column names the single-task teachers by task, and fidelity is against each item's own teacher
    bam = result.generations[1]
    assert bam["teacher"] == "single-task teachers (" + ", ".join(f"{t}: {tmp_path / t}/gen0" for t in tasks.split(",")) + ")"
    assert data.test.groups.tolist() == [0] * 8 + [1] * 8 + [2] * 8
    domain, student = SequenceDomain(), result.models[1]
    pred = domain.predict(student, data.test)
    own = torch.cat([domain.predict(load_model(_tiny_teacher(data), p), data.test)[8 * k : 8 * k + 8]
                     for k, p in enumerate(paths)])
    assert bam["agreement_teacher"] == pytest.approx(token_fidelity(own, pred)["agreement"], abs=1e-6)
    assert bam["kl_teacher"] == pytest.approx(token_fidelity(own, pred)["kl"], rel=1e-4)
    outputs = [data.tokenizer.decode(t) for t in greedy(student, data.test.x[:, : data.src_len])]
    refs = [data.tokenizer.decode(r.clamp_min(0)) for r in data.test.y]
    for k, task in enumerate(tasks.split(",")):  # per task: its own items, its own teacher
        row, items = bam["per_task"][task], slice(8 * k, 8 * k + 8)
        assert row["test_exact"] == pytest.approx(sum(h == r for h, r in zip(outputs[items], refs[items])) / 8)
        assert row["agreement_teacher"] == pytest.approx(token_fidelity(own[items], pred[items])["agreement"], abs=1e-6)
        assert row["kl_teacher"] == pytest.approx(token_fidelity(own[items], pred[items])["kl"], rel=1e-4)
        assert row["agreement_gen0"] is not None and result.generations[0]["per_task"][task]["agreement_teacher"] is None
    saved = json.loads((tmp_path / "bam" / "summary.json").read_text())
    assert saved["generations"][1]["per_task"]["sort"]["test_exact"] == bam["per_task"]["sort"]["test_exact"]
    table = result.table()
    assert "per task" in table and all(t in table for t in tasks.split(","))
    from gendistill.analysis.stats import aggregate_summaries
    from gendistill.analysis.tables import lineage_table

    over_seeds = aggregate_summaries([saved, saved], seeds=[0, 1])  # per-task figures aggregate like any other
    assert over_seeds["generations"][1]["per_task"]["add"]["test_exact"]["mean"] == bam["per_task"]["add"]["test_exact"]
    assert "per task" in lineage_table(over_seeds)
    from gendistill.analysis.report import write_report

    _, md = write_report(tmp_path / "bam")
    assert "## Per task" in md.read_text() and "reverse" in md.read_text()
    with pytest.raises(ConfigError, match="does not exist"):
        _lineage(scheme={"name": "bam", "teachers": ["nowhere.safetensors"]})
    with pytest.raises(ConfigError, match="one teacher per task"):
        _lineage(scheme={"name": "bam", "teachers": paths[:2]}, objective=[{"term": "token_ce"}],
                 train={"epochs": 1, "batch_size": 32, "fidelity_samples": 0}).fit(data)


def test_bleu_equals_sacrebleu_over_the_same_tokens():
    sacrebleu = pytest.importorskip("sacrebleu")
    import random

    r = random.Random(0)
    refs = ["".join(r.choice("abcde") for _ in range(r.randint(3, 9))) for _ in range(100)]
    hyps = ["".join(c if r.random() < 0.8 else "x" for c in s) for s in refs]
    ours = bleu([list(h) for h in hyps], [list(x) for x in refs])
    theirs = sacrebleu.corpus_bleu([" ".join(h) for h in hyps], [[" ".join(x) for x in refs]], tokenize="none").score
    assert ours == pytest.approx(theirs, abs=1e-6)


def _gpt2(vocab, width=32, layers=1):
    return {"model_type": "gpt2", "n_layer": layers, "n_embd": width, "n_head": 2, "n_positions": 32, "vocab_size": vocab}


def test_hugging_face_causal_lms_decode_with_their_cache_and_distil_through_the_lineage(tmp_path):
    pytest.importorskip("transformers")
    from gendistill.nlp.hf import HFCausalLM

    data = load_dataset("seq_reverse", num_train=256, num_test=16, min_len=2, max_len=3)
    llama = {"model_type": "llama", "num_hidden_layers": 1, "hidden_size": 32, "intermediate_size": 64,
             "num_attention_heads": 2, "num_key_value_heads": 1, "max_position_embeddings": 32,
             "vocab_size": data.num_classes}
    src = data.test.x[:8, : data.src_len]
    for cfg in (_gpt2(data.num_classes), llama):
        torch.manual_seed(0)
        m = HFCausalLM(data.num_classes, data.input_shape, config=cfg).eval()
        assert torch.equal(greedy(m, src), greedy(m, src, use_cache=False))
        assert torch.equal(beam_search(m, src, 3)[0], beam_search(m, src, 3, use_cache=False)[0])
    with pytest.raises(ConfigError, match="vocabulary"):
        HFCausalLM(data.num_classes, data.input_shape, config=_gpt2(data.num_classes + 1))
    teacher = {"name": "hf_causal_lm", "config": _gpt2(data.num_classes, width=64, layers=2)}
    result = _lineage(student={"name": "hf_causal_lm", "config": _gpt2(data.num_classes)}, archs={0: teacher},
                      train={"epochs": 6, "batch_size": 32, "lr": 0.01, "fidelity_samples": 16}).fit(
        data, out=tmp_path / "hf")
    g0, g1 = result.generations
    assert g0["params"] > g1["params"] and g0["test_token_acc"] > 0.5, g0
    assert g1["teacher_outputs"].startswith("cached teacher"), g1
    history = rundir.read_history(rundir.gen_dir(tmp_path / "hf", 1))  # the student moves toward its teacher
    assert history[-1]["holdout_kl"] < 0.7 * history[0]["holdout_kl"] and g1["agreement_teacher"] > 0.4, history
