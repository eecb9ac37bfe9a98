"""Augmentation with recorded parameters: hand-checked transforms, replayed teacher caches, mixup labels."""

import pytest
import torch
import torch.nn.functional as F

import gendistill as gd
from gendistill.data.augment import AugmentPlan, Flip, Mixup, Noise, Shift, build_augmentations
from gendistill.knowledge import Batch, CrossEntropy, Outputs
from gendistill.lineage import Lineage
from gendistill.teachers import CachedTeacher, FrozenTeacher


def test_shift_is_a_zero_padded_translation():
    x = torch.arange(1.0, 7.0).view(1, 1, 6).repeat(2, 1, 1)
    out = Shift(2).apply(x, {"shift": torch.tensor([[2], [-1]])}, x)
    assert out[0, 0].tolist() == [0, 0, 1, 2, 3, 4]
    assert out[1, 0].tolist() == [2, 3, 4, 5, 6, 0]
    img = torch.arange(9.0).view(1, 1, 3, 3)
    moved = Shift(1).apply(img, {"shift": torch.tensor([[1, -1]])}, img)  # right by 1, up by 1
    assert moved[0, 0].tolist() == [[0, 3, 4], [0, 6, 7], [0, 0, 0]]


def test_flip_noise_and_mixup_apply_their_parameters():
    x = torch.arange(6.0).view(2, 1, 3)
    assert Flip().apply(x, {"flip": torch.tensor([True, False])}, x)[:, 0].tolist() == [[2, 1, 0], [3, 4, 5]]
    noise = torch.full((2, 1, 3), 0.5)
    assert torch.equal(Noise(0.1).apply(x, {"noise": noise}, x), x + 0.5)
    full = torch.arange(12.0).view(4, 1, 3)
    mixed = Mixup().apply(x, {"partner": torch.tensor([3, 0]), "lam": torch.tensor([0.25, 1.0])}, full)
    assert torch.allclose(mixed[0], 0.25 * x[0] + 0.75 * full[3]) and torch.equal(mixed[1], x[1])


def test_mixup_cross_entropy_mixes_the_labels():
    logits = torch.tensor([[2.0, 0.0, -1.0], [0.0, 1.0, 0.0]])
    y, y2, lam = torch.tensor([0, 1]), torch.tensor([2, 0]), torch.tensor([0.3, 0.8])
    got = CrossEntropy()(Outputs(logits), None, Batch(logits, y, mix=(y2, lam))).item()
    per = lam * F.cross_entropy(logits, y, reduction="none") + (1 - lam) * F.cross_entropy(logits, y2, reduction="none")
    assert got == pytest.approx(per.mean().item(), rel=1e-6)


def test_replayed_cache_holds_the_teachers_outputs_on_the_views_the_student_sees():
    torch.manual_seed(0)
    net = gd.create_model("cnn1d", 5, (1, 20), width=4)
    x = torch.randn(30, 1, 20)
    plan = AugmentPlan(build_augmentations([{"name": "shift", "max_shift": 3}, {"name": "noise", "std": 0.2}]), x, views=3, seed=1)
    cache = CachedTeacher.build_views(FrozenTeacher(net), plan, batch_size=7, dtype=torch.float32)
    assert cache.logits.shape == (3, 30, 5) and "3 replayed augmented views" in cache.describe()
    idx = torch.tensor([4, 9, 0, 29, 13, 13])
    xb, view, mix = plan.batch(x[idx], idx)
    assert mix is None and set(view.tolist()) <= {0, 1, 2}
    with torch.no_grad():
        live = net.eval()(xb)
    assert torch.allclose(cache(xb, idx, view).logits, live, atol=1e-5)
    # the plan's generator state makes the choice of views reproducible (resume)
    state = plan.state_dict()
    a = plan.batch(x[idx], idx)[1]
    plan.load_state_dict(state)
    assert torch.equal(plan.batch(x[idx], idx)[1], a)


def test_lineage_with_augmentation_learns_and_resumes(tiny_data, fast_train, tmp_path, monkeypatch):
    from gendistill.engine import trainer as trainer_mod

    cfg = fast_train.model_copy(update={"augment": [{"name": "noise", "std": 0.3}, {"name": "mixup", "alpha": 0.4}], "augment_views": 4})
    make = lambda: Lineage(student="mlp", generations=1, train=cfg, progress="off")  # noqa: E731
    full = make().fit(tiny_data, out=tmp_path / "full")
    assert full.generations[1]["test_acc"] > 0.7
    assert "4 replayed augmented views" in full.generations[1]["teacher_outputs"]

    real = trainer_mod.Trainer._check_finite

    def crash(self, row, epoch):
        real(self, row, epoch)
        if self.desc == "gen1" and epoch == 2:
            raise KeyboardInterrupt

    monkeypatch.setattr(trainer_mod.Trainer, "_check_finite", crash)
    with pytest.raises(KeyboardInterrupt):
        make().fit(tiny_data, out=tmp_path / "cut")
    monkeypatch.setattr(trainer_mod.Trainer, "_check_finite", real)
    resumed = make().fit(tiny_data, out=tmp_path / "cut", resume=True)
    for a, b in zip(full.generations, resumed.generations):
        assert a["test_acc"] == b["test_acc"] and a["test_nll"] == b["test_nll"]


def test_augmentation_config_errors():
    from gendistill.config import load_config
    from gendistill.errors import ConfigError

    with pytest.raises(ConfigError, match="unknown augmentation 'blur'; available: crop_flip, flip, mixup, noise, shift"):
        load_config(None, ["train.augment=[{name: blur}]"])
    with pytest.raises(ConfigError, match="noise std must be > 0"):
        load_config(None, ["train.augment=[{name: noise, std: 0}]"])
    cfg = load_config(None, ["train.augment=shift", "train.teacher_cache=off"])
    assert cfg.train.augment == [{"name": "shift"}] and cfg.train.teacher_cache == "off"
