"""The teacher-output cache: exact reuse, float16 storage, memory-mapped files, invalidation, fall-back."""

import pytest
import torch

import gendistill as gd
from gendistill.knowledge import Batch
from gendistill.lineage import Lineage
from gendistill.teachers import CachedTeacher, FrozenTeacher


def _history_kd(result_dir, gen=1):
    import csv

    rows = list(csv.DictReader(open(result_dir / f"gen{gen}/history.csv")))
    return [float(r["train_kd"]) for r in rows]


def test_cached_teacher_gives_the_live_teachers_numbers(tiny_data, fast_train, tmp_path):
    live_cfg = fast_train.model_copy(update={"teacher_cache": "off"})
    f32_cfg = fast_train.model_copy(update={"cache_dtype": "float32"})
    live = Lineage(student="mlp", generations=1, train=live_cfg, progress="off").fit(tiny_data, out=tmp_path / "live")
    cached = Lineage(student="mlp", generations=1, train=f32_cfg, progress="off").fit(tiny_data, out=tmp_path / "f32")
    half = Lineage(student="mlp", generations=1, train=fast_train, progress="off").fit(tiny_data, out=tmp_path / "f16")
    assert live.generations[1]["teacher_outputs"].startswith("live teacher")
    assert cached.generations[1]["teacher_outputs"].startswith("cached teacher outputs (256 x 4 logits, float32")
    assert "float16" in half.generations[1]["teacher_outputs"]
    assert _history_kd(tmp_path / "f32") == pytest.approx(_history_kd(tmp_path / "live"), rel=1e-4)
    assert _history_kd(tmp_path / "f16") == pytest.approx(_history_kd(tmp_path / "live"), rel=1e-2)
    for a, b in [(cached, live), (half, live)]:
        assert a.generations[1]["test_acc"] == pytest.approx(b.generations[1]["test_acc"], abs=0.02)


def test_cache_lookup_by_index_and_fallthrough():
    torch.manual_seed(0)
    net = gd.create_model("mlp", 3, (5,), width=8)
    x = torch.randn(40, 5)
    teacher = FrozenTeacher(net)
    cache = CachedTeacher.build(teacher, x, batch_size=7, dtype=torch.float32)
    idx = torch.tensor([3, 17, 39, 0])
    assert torch.allclose(cache(x[idx], idx).logits, net(x[idx]), atol=1e-6)
    noise = torch.randn(4, 5)
    assert torch.allclose(cache(noise).logits, net(noise), atol=1e-6)  # no index: the live teacher


def test_memory_mapped_cache_is_keyed_on_teacher_and_data(tmp_path):
    torch.manual_seed(0)
    net = gd.create_model("cnn1d", 10, (1, 40), width=4)
    x = torch.randn(64, 1, 40)
    teacher = FrozenTeacher(net, layers=("layer2",))
    path = str(tmp_path / "teacher_cache")
    first = CachedTeacher.build(teacher, x, path=path, mmap_mb=1e-6)
    assert first.how.startswith("memory-mapped") and "computed now" in first.how
    assert (tmp_path / "teacher_cache.logits.npy").exists() and (tmp_path / "teacher_cache.layer2.npy").exists()
    idx = torch.arange(64)
    with torch.no_grad():
        ref = net(x)
    out = first(x, idx)
    assert out.logits.dtype == torch.float32 and torch.allclose(out.logits, ref, atol=2e-2, rtol=1e-2)
    assert out.features["layer2"].shape == (64, 4, 10)
    again = CachedTeacher.build(teacher, x, path=path, mmap_mb=1e-6)
    assert "computed now" not in again.how  # reused from disk
    with torch.no_grad():
        net.fc.weight.add_(1.0)  # the teacher changed: the file is stale
    changed = CachedTeacher.build(FrozenTeacher(net, layers=("layer2",)), x, path=path, mmap_mb=1e-6)
    assert "computed now" in changed.how
    assert torch.allclose(changed(x, idx).logits, net(x).detach(), atol=2e-2, rtol=1e-2)
    other_data = CachedTeacher.build(FrozenTeacher(net, layers=("layer2",)), x + 1, path=path, mmap_mb=1e-6)
    assert "computed now" in other_data.how


def test_cached_features_for_feature_terms(tiny_data, fast_train):
    fast_train.epochs = 2
    objective = [{"term": "ce"}, {"term": "fitnet", "weight": 1.0, "layers": "layer1"}]
    result = Lineage(student={"name": "mlp", "width": 16}, generations=1, objective=objective, train=fast_train,
                     progress="off").fit(tiny_data)
    assert "features ['layer1']" in result.generations[1]["teacher_outputs"]


def test_ensemble_teacher_is_cached_from_generation_outputs(tiny_data, fast_train):
    fast_train.epochs = 1
    result = Lineage(student="mlp", generations=2, teacher="ensemble", train=fast_train, progress="off").fit(tiny_data)
    assert "reused from the evaluation pass" in result.generations[2]["teacher_outputs"]


def test_cached_teacher_returns_float_outputs_for_a_batch():
    net = gd.create_model("mlp", 3, (5,), width=8)
    x = torch.randn(10, 5)
    c = CachedTeacher.from_logits(FrozenTeacher(net), net(x).detach())
    b = Batch(x[:4], torch.zeros(4, dtype=torch.long), torch.arange(4))
    assert c(b.x, b.index).logits.dtype == torch.float32
