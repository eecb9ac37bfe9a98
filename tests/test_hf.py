"""Hugging Face models through the one engine: seq2seq LMs (T5-, BART-style) and sequence classifiers (BERT-,
GPT-2-style) built with random weights from tiny configs inside the tests (nothing downloaded), their
hidden-state taps under feature and relation terms, and the vocabulary / length errors. The bundled
sequence-classification task and classifier run without transformers."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from gendistill import rundir
from gendistill.data import load_dataset
from gendistill.errors import ConfigError
from gendistill.knowledge import build_objective
from gendistill.knowledge.base import Batch
from gendistill.lineage import Lineage
from gendistill.nlp import PAD
from gendistill.nlp.decoding import beam_search, greedy
from gendistill.teachers import FrozenTeacher

ROOT = Path(__file__).resolve().parents[1]
CE = [{"term": "token_ce"}]


def t5(width=32, layers=1, **kw):
    return {"model_type": "t5", "d_model": width, "d_ff": 2 * width, "d_kv": width // 2, "num_layers": layers,
            "num_heads": 2, "dropout_rate": 0.0, **kw}


def bart(width=32, layers=1, positions=16, **kw):
    return {"model_type": "bart", "d_model": width, "encoder_layers": layers, "decoder_layers": layers,
            "encoder_attention_heads": 2, "decoder_attention_heads": 2, "encoder_ffn_dim": 2 * width,
            "decoder_ffn_dim": 2 * width, "max_position_embeddings": positions, **kw}


def bert(width=32, layers=1, positions=16, **kw):
    return {"model_type": "bert", "hidden_size": width, "num_hidden_layers": layers, "num_attention_heads": 2,
            "intermediate_size": 2 * width, "max_position_embeddings": positions, **kw}


def gpt2(width=32, layers=1, positions=16, **kw):
    return {"model_type": "gpt2", "n_embd": width, "n_layer": layers, "n_head": 2, "n_positions": positions, **kw}


def _reverse():
    return load_dataset("seq_reverse", num_train=256, num_test=16, min_len=2, max_len=3)


def test_hf_seq2seq_models_decode_with_their_cache_and_mask_source_padding():
    pytest.importorskip("transformers")
    from gendistill.nlp.hf import HFSeq2SeqLM

    data = _reverse()
    src = data.test.x[:8, : data.src_len]
    for cfg in (t5(), bart()):
        torch.manual_seed(0)
        m = HFSeq2SeqLM(data.num_classes, data.input_shape, config=cfg).eval()
        assert torch.equal(greedy(m, src), greedy(m, src, use_cache=False))
        assert torch.equal(beam_search(m, src, 3)[0], beam_search(m, src, 3, use_cache=False)[0])
        x = data.test.x[:4]
        first, state = m.start(x[:, : data.src_len])  # incremental logits equal the teacher-forced ones
        second, _ = m.step(x[:, data.src_len + 1 : data.src_len + 2], state)
        forced = m(x)
        assert torch.allclose(first, forced[:, 0], atol=1e-5) and torch.allclose(second, forced[:, 1], atol=1e-5)
    # the source's left padding is masked: T5 (relative positions) gives the same logits for a source padded
    # to 3 or to 6 tokens
    short = HFSeq2SeqLM(data.num_classes, (3, 4), config=t5()).eval()
    long = HFSeq2SeqLM(data.num_classes, (6, 4), config=t5()).eval()
    long.load_state_dict(short.state_dict())
    x = data.test.x[:4, data.src_len - 3 :]  # 3 source tokens + 4 target tokens
    padded = torch.cat([torch.full((4, 3), PAD), x], 1)
    assert torch.allclose(short(x), long(padded), atol=1e-5)


def test_hf_causal_lms_mask_padding():
    pytest.importorskip("transformers")
    from gendistill.nlp.hf import HFCausalLM

    # Llama-style (rotary, relative positions): a source left-padded to 3 or to 6 tokens gives the same logits
    llama = {"model_type": "llama", "num_hidden_layers": 1, "hidden_size": 32, "intermediate_size": 64,
             "num_attention_heads": 2, "num_key_value_heads": 1, "max_position_embeddings": 32}
    data = _reverse()
    torch.manual_seed(0)
    short = HFCausalLM(data.num_classes, (3, 4), config=llama).eval()
    long = HFCausalLM(data.num_classes, (6, 4), config=llama).eval()
    long.load_state_dict(short.state_dict())
    x = data.test.x[:4, data.src_len - 3 :]
    assert (x[:, :3] == PAD).any()  # some sources are padded already
    assert torch.allclose(short(x), long(torch.cat([torch.full((4, 3), PAD), x], 1)), atol=1e-5)
    src = torch.cat([torch.full((4, 3), PAD), x[:, :3]], 1)
    assert torch.equal(greedy(long, src), greedy(long, src, use_cache=False))


def test_hf_models_load_from_a_local_directory(tmp_path):
    transformers = pytest.importorskip("transformers")
    from gendistill.nlp.hf import HFSeq2SeqLM, HFSequenceClassifier

    data = _reverse()
    torch.manual_seed(0)
    built = HFSeq2SeqLM(data.num_classes, data.input_shape, config=t5()).eval()
    built.model.save_pretrained(tmp_path / "t5")
    loaded = HFSeq2SeqLM(data.num_classes, data.input_shape, path=str(tmp_path / "t5")).eval()
    assert torch.equal(built(data.test.x[:4]), loaded(data.test.x[:4]))
    # a GPT-2 classifier saved without a pad token: the rows' <pad> is filled in, and padding changes nothing
    cfg = transformers.AutoConfig.for_model("gpt2", n_embd=32, n_layer=1, n_head=2, n_positions=16, vocab_size=6,
                                            num_labels=3)
    hf = transformers.AutoModelForSequenceClassification.from_config(cfg).eval()
    hf.save_pretrained(tmp_path / "cls")
    cls = HFSequenceClassifier(3, (10,), vocab_size=6, path=str(tmp_path / "cls")).eval()
    x = torch.tensor([[1, 3, 4, 5] + [PAD] * 6])
    assert torch.allclose(cls(x), hf(input_ids=x[:, :4]).logits, atol=1e-5)
    with pytest.raises(ConfigError, match="cannot load"):
        HFSeq2SeqLM(data.num_classes, data.input_shape, path=str(tmp_path / "nowhere"))


def test_a_tiny_t5_student_learns_from_a_tiny_t5_teacher_through_the_lineage(tmp_path):
    pytest.importorskip("transformers")
    data = load_dataset("seq_sort", num_train=256, num_test=16, min_len=2, max_len=3)
    teacher = {"name": "hf_seq2seq_lm", "config": t5(64, 2)}
    result = Lineage(student={"name": "hf_seq2seq_lm", "config": t5()}, generations=1, archs={0: teacher},
                     objective=CE + [{"term": "word_kd"}], gen0_objective=CE, progress="off",
                     train={"epochs": 6, "batch_size": 32, "lr": 0.01, "fidelity_samples": 16}).fit(
        data, out=tmp_path / "t5")
    g0, g1 = result.generations
    assert g0["params"] > g1["params"] and g0["test_token_acc"] > 0.6, g0
    assert g1["teacher_outputs"].startswith("cached teacher"), g1
    history = rundir.read_history(rundir.gen_dir(tmp_path / "t5", 1))
    assert history[-1]["train_loss"] < 0.6 * history[0]["train_loss"], history
    assert history[-1]["holdout_kl"] < 0.6 * history[0]["holdout_kl"] and g1["agreement_teacher"] > 0.6, history
    for k in ("test_exact", "test_beam_exact", "kl_teacher"):  # decoded metrics ran through our decoder
        assert k in g1


def test_every_token_term_and_sequence_scheme_runs_with_a_t5_style_student(tmp_path):
    pytest.importorskip("transformers")
    import math

    data = load_dataset("seq_sort", num_train=64, num_test=8, min_len=2, max_len=3, cache_topk=4)
    runs = {"terms": dict(objective=CE + [{"term": "word_kd"}, {"term": "reverse_kl"}, {"term": "gkd_jsd"},
                                          {"term": "tv"}]),
            "seq_kd": dict(objective=CE, scheme={"name": "seq_kd", "beam": 3}),
            "on_policy": dict(objective=CE + [{"term": "gkd_jsd"}], scheme={"name": "on_policy", "lam": 1.0})}
    for name, kw in runs.items():
        Lineage(student={"name": "hf_seq2seq_lm", "config": t5()}, generations=1, gen0_objective=CE, progress="off",
                train={"epochs": 1, "batch_size": 32, "fidelity_samples": 0}, **kw).fit(data, out=tmp_path / name)
        (row,) = rundir.read_history(rundir.gen_dir(tmp_path / name, 1))
        assert math.isfinite(row["train_loss"]) and row["train_loss"] > 0, row
    assert {"train_word_kd", "train_reverse_kl", "train_gkd_jsd", "train_tv"} <= set(
        rundir.read_history(rundir.gen_dir(tmp_path / "terms", 1))[0])


@pytest.mark.parametrize("kind", ["causal", "seq2seq"])
def test_hidden_state_taps_feed_feature_and_relation_terms_and_their_gradient_reaches_the_student(kind):
    pytest.importorskip("transformers")
    from gendistill.nlp.hf import HFCausalLM, HFSeq2SeqLM

    data = _reverse()
    torch.manual_seed(0)
    if kind == "causal":
        student = HFCausalLM(data.num_classes, data.input_shape, config=gpt2(32, 1))
        teacher = HFCausalLM(data.num_classes, data.input_shape, config=gpt2(48, 2)).eval()
        s_layer, t_layer, real = "hidden.1", "hidden.2", lambda x: x != PAD
    else:
        student = HFSeq2SeqLM(data.num_classes, data.input_shape, config=t5(32, 1))
        teacher = HFSeq2SeqLM(data.num_classes, data.input_shape, config=t5(48, 2)).eval()
        s_layer, t_layer, real = "decoder_hidden.1", "decoder_hidden.2", lambda x: x[:, data.src_len :] != PAD
    pairs = {"student": s_layer, "teacher": t_layer}
    objective = build_objective([{"term": "fitnet", "layers": pairs, "regressor": "conv"},
                                 {"term": "rkd_distance", "layers": pairs}, {"term": "at", "layers": pairs}])
    x, y = data.train.x[:8], data.train.y[:8]
    frozen = FrozenTeacher(teacher, objective.teacher_layers)
    out = frozen(x, torch.arange(8))
    h = out.features[t_layer]  # (N, D, L) channels first, padded positions zero, equal to output_hidden_states
    assert h.shape[:2] == (8, 48) and torch.all(h.transpose(1, 2)[~real(x)] == 0)
    with torch.no_grad():
        ref = (teacher.model(input_ids=x, attention_mask=real(x).long(), output_hidden_states=True).hidden_states[2]
               if kind == "causal" else
               teacher.model(input_ids=x[:, : data.src_len], attention_mask=teacher.source_mask(x[:, : data.src_len]),
                             decoder_input_ids=x[:, data.src_len :], output_hidden_states=True).decoder_hidden_states[2])
    assert torch.allclose(h.transpose(1, 2)[real(x)], ref[real(x)], atol=1e-5)

    from gendistill.engine.task import DistillTask

    task = DistillTask(student, objective, frozen)
    parts = task(Batch(x, y, torch.arange(8)))
    assert {"fitnet", "rkd_distance", "at"} <= set(parts) and all(parts[k].item() > 0 for k in ("fitnet", "at"))
    parts["fitnet"].backward()  # the hint alone moves the student's own weights (not only the regressor)
    grad = student.model.get_input_embeddings().weight.grad
    assert grad is not None and float(grad.abs().sum()) > 0
    task.close()
    assert not dict(student.named_modules())[s_layer]._forward_hooks  # taps are removed with the task


@pytest.mark.parametrize("arch", ["seq_decoder", "seq_encdec"])
def test_the_bundled_sequence_models_have_the_same_hidden_state_taps(arch):
    from gendistill.engine.task import DistillTask
    from gendistill.models import create_model

    data = _reverse()
    torch.manual_seed(0)
    student = create_model(arch, data.num_classes, data.input_shape, size="tiny")
    teacher = create_model(arch, data.num_classes, data.input_shape, size="small").eval()
    layer = "hidden" if arch == "seq_decoder" else "decoder_hidden"
    pairs = {"student": f"{layer}.1", "teacher": f"{layer}.2"}
    objective = build_objective([{"term": "fitnet", "layers": pairs, "regressor": "conv"}])
    x, y = data.train.x[:8], data.train.y[:8]
    frozen = FrozenTeacher(teacher, objective.teacher_layers)
    h = frozen(x, torch.arange(8)).features[f"{layer}.2"]
    real = x != PAD if arch == "seq_decoder" else x[:, data.src_len :] != PAD
    assert h.shape == (8, 64, real.shape[1]) and torch.all(h.transpose(1, 2)[~real] == 0)
    assert torch.all(h.transpose(1, 2)[real].abs().sum(-1) > 0)
    task = DistillTask(student, objective, frozen)
    task(Batch(x, y, torch.arange(8)))["fitnet"].backward()
    assert float(student.embed.weight.grad.abs().sum()) > 0
    assert torch.equal(greedy(teacher, x[:, : data.src_len]), greedy(teacher, x[:, : data.src_len], use_cache=False))


def test_hf_feature_term_runs_through_the_lineage_with_a_live_teacher(tmp_path):
    pytest.importorskip("transformers")
    data = _reverse()
    hint = {"term": "fitnet", "layers": {"student": "encoder_hidden.1", "teacher": "encoder_hidden.1"},
            "regressor": "conv"}
    result = Lineage(student={"name": "hf_seq2seq_lm", "config": t5()}, generations=1, gen0_objective=CE,
                     archs={0: {"name": "hf_seq2seq_lm", "config": t5(48)}}, objective=CE + [hint],
                     progress="off", train={"epochs": 2, "batch_size": 64, "fidelity_samples": 0}).fit(data)
    assert result.generations[1]["teacher_outputs"].startswith("live teacher")
    with pytest.raises(ConfigError, match="no layer 'hidden.9'"):
        Lineage(student={"name": "hf_seq2seq_lm", "config": t5()}, generations=1, gen0_objective=CE,
                objective=CE + [{**hint, "layers": "hidden.9"}], progress="off").check(data)


def test_sequence_classification_runs_born_again_generations_with_the_bundled_classifier(tmp_path):
    data = load_dataset("seq_label", task="majority", num_train=256, num_test=64)
    assert data.domain == "sequence_classification" and data.num_classes == 3 and data.vocab_size == 6
    assert data.train.x[:, 0].eq(1).all() and set(data.train.y.tolist()) == {0, 1, 2}
    for task in ("sorted", "parity"):  # labels are what the name says
        d = load_dataset("seq_label", task=task, num_train=32, num_test=8)
        for row, label in zip(d.train.x, d.train.y):
            s = d.tokenizer.decode(row)
            assert label == (s == "".join(sorted(s)) if task == "sorted" else s.count("1") % 2)
    result = Lineage(student={"name": "seq_classifier", "size": "tiny"}, generations=2, progress="off",
                     objective=[{"term": "ce"}, {"term": "kd", "temperature": 2.0}], gen0_objective=[{"term": "ce"}],
                     train={"epochs": 8, "batch_size": 32, "lr": 0.01, "fidelity_samples": 0}).fit(
        data, out=tmp_path / "cls")
    g = result.generations
    assert g[0]["test_acc"] > 0.6 and g[2]["agreement_teacher"] > 0.6 and g[2]["kl_teacher"] >= 0, g
    assert (tmp_path / "cls" / "gen2" / "model.safetensors").exists() and result.ensembles
    with pytest.raises(ConfigError, match="model seq_decoder is for sequence datasets.*use seq_classifier"):
        Lineage(student={"name": "seq_decoder"}, generations=0, progress="off").check(data)
    with pytest.raises(ConfigError, match="model seq_classifier is for sequence_classification datasets"):
        Lineage(student={"name": "seq_classifier"}, generations=0, progress="off").check(_reverse())
    with pytest.raises(ConfigError, match="vocabulary of 7 tokens"):
        Lineage(student={"name": "seq_classifier", "size": "tiny", "vocab_size": 7}, generations=0,
                progress="off").check(data)


def test_hf_classifiers_distil_through_the_lineage_with_hidden_state_taps(tmp_path):
    pytest.importorskip("transformers")
    data = load_dataset("seq_label", task="majority", num_train=256, num_test=64)
    teacher = {"name": "hf_classifier", "config": bert(48, 2)}
    hint = {"term": "fitnet", "layers": {"student": "hidden.1", "teacher": "hidden.2"}, "regressor": "conv"}
    result = Lineage(student={"name": "hf_classifier", "config": gpt2()}, generations=1, archs={0: teacher},
                     objective=[{"term": "ce"}, {"term": "kd", "temperature": 2.0}, hint],
                     gen0_objective=[{"term": "ce"}], progress="off",
                     train={"epochs": 6, "batch_size": 32, "lr": 0.003, "fidelity_samples": 32}).fit(
        data, out=tmp_path / "hf")
    g0, g1 = result.generations
    assert g0["test_acc"] > 0.6 and g1["agreement_teacher"] > 0.6, result.generations
    history = rundir.read_history(rundir.gen_dir(tmp_path / "hf", 1))
    assert history[-1]["train_fitnet"] < history[0]["train_fitnet"], history
    summary = rundir.read_summary(tmp_path / "hf") if hasattr(rundir, "read_summary") else None
    assert summary is None or summary["generations"][1]["agreement_teacher"] == g1["agreement_teacher"]


def test_vocabulary_and_length_mismatches_are_one_line_errors(tmp_path):
    pytest.importorskip("transformers")
    from typer.testing import CliRunner

    from gendistill.cli import app
    from gendistill.nlp.hf import HFCausalLM, HFSeq2SeqLM, HFSequenceClassifier

    data = _reverse()
    with pytest.raises(ConfigError, match="vocabulary has 99 tokens but the task's tokenizer has 13"):
        HFSeq2SeqLM(data.num_classes, data.input_shape, config=t5(vocab_size=99))
    with pytest.raises(ConfigError, match="longer than the model's maximum"):
        HFSeq2SeqLM(data.num_classes, (20, 4), config=bart(positions=16))
    with pytest.raises(ConfigError, match="longer than the model's maximum"):
        HFCausalLM(data.num_classes, (12, 6), config=gpt2(positions=16))
    with pytest.raises(ConfigError, match="longer than the model's maximum"):
        HFSequenceClassifier(2, (20,), vocab_size=5, config=bert(positions=16))
    with pytest.raises(ConfigError, match="vocabulary has 5 tokens but the task's tokenizer has 6"):
        HFSequenceClassifier(2, (10,), vocab_size=6, config=bert(vocab_size=5))
    # from the CLI: a student whose vocabulary is not the teacher's and the task's -> exit code 2, one line
    r = CliRunner().invoke(app, ["run", str(ROOT / "examples/sequence/hf-t5-word-kd.yaml"), "--out",
                                 str(tmp_path / "run"), "--set", "model.config.vocab_size=50",
                                 "--progress", "off"])
    assert r.exit_code == 2 and r.stderr.count("\n") == 1 and "one vocabulary" in r.stderr, r.output
    r = CliRunner().invoke(app, ["run", str(ROOT / "examples/sequence/hf-bert-classifier.yaml"), "--out",
                                 str(tmp_path / "cls"), "--set", "data.max_len=40", "--progress", "off"])
    assert r.exit_code == 2 and r.stderr.count("\n") == 1 and "maximum" in r.stderr, r.output


def test_a_bundled_teacher_checkpoint_of_another_vocabulary_is_a_one_line_error(tmp_path):
    from gendistill.engine.checkpoint import load_model, save_model
    from gendistill.errors import CheckpointError
    from gendistill.nlp.models import DecoderLM

    save_model(DecoderLM(11, (5, 6), size="tiny"), tmp_path / "m.safetensors")
    with pytest.raises(CheckpointError, match="reads a vocabulary of 11 tokens but the data's tokenizer has 13"):
        load_model(DecoderLM(13, (5, 6), size="tiny"), tmp_path / "m.safetensors", role="teacher")
