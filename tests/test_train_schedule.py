"""Train settings of the CIFAR recipes: multistep schedule, Nesterov, DKD's teacher-term warm-up."""

from __future__ import annotations

import pytest
import torch

from gendistill.engine import settings
from gendistill.engine.trainer import Trainer, build_optimizer, lr_multiplier
from gendistill.errors import ConfigError
from gendistill.knowledge.base import Batch, Objective, Outputs, set_teacher_scale
from gendistill.knowledge.response import KD, CrossEntropy


def test_multistep_decays_after_each_milestone_epoch():
    cfg = settings.parse_train({"epochs": 8, "schedule": "multistep", "milestones": [3, 5], "gamma": 0.1})
    f = lr_multiplier(cfg, steps_per_epoch=4)
    per_epoch = [f(e * 4) for e in range(8)]  # first step of epochs 1..8
    assert per_epoch == pytest.approx([1, 1, 1, 0.1, 0.1, 0.01, 0.01, 0.01])
    assert f(4 * 3 - 1) == 1.0  # the last step of epoch 3 still at the base lr (RepDistiller: epoch > milestone)


def test_multistep_needs_increasing_milestones_and_nesterov_needs_sgd():
    with pytest.raises(ConfigError, match="milestones"):
        settings.parse_train({"schedule": "multistep"})
    with pytest.raises(ConfigError, match="milestones"):
        settings.parse_train({"schedule": "multistep", "milestones": [5, 3]})
    with pytest.raises(ConfigError, match="nesterov"):
        settings.parse_train({"nesterov": True})  # adamw by default


def test_nesterov_reaches_the_optimizer():
    p = [torch.nn.Parameter(torch.zeros(2))]
    opt = build_optimizer(settings.parse_train({"optimizer": "sgd", "nesterov": True, "lr": 0.05}), p)
    assert opt.param_groups[0]["nesterov"] is True
    assert build_optimizer(settings.parse_train({"optimizer": "sgd"}), p).param_groups[0]["nesterov"] is False


def _objective():
    return Objective([(CrossEntropy(), 1.0), (KD(temperature=4.0), 1.0)])


def test_teacher_scale_weights_only_teacher_terms():
    torch.manual_seed(0)
    s, t = Outputs(torch.randn(4, 5)), Outputs(torch.randn(4, 5))
    batch = Batch(torch.zeros(4, 1), torch.tensor([0, 1, 2, 3]), torch.arange(4))
    obj = _objective()
    full = obj(s, t, batch)
    set_teacher_scale(obj, 0.05)
    ramp = obj(s, t, batch)
    assert torch.equal(ramp["kd"], full["kd"])  # parts are logged unweighted
    assert ramp["loss"].item() == pytest.approx(full["ce"].item() + 0.05 * full["kd"].item(), rel=1e-6)


def test_trainer_ramps_the_teacher_terms_per_epoch_and_defaults_leave_them_alone():
    from gendistill.data import Split
    from gendistill.domains.classification import batches
    from gendistill.engine.task import DistillTask
    from gendistill.teachers import FrozenTeacher

    seen = []

    class Probe(DistillTask):
        def forward(self, batch):
            seen.append(self.objective.teacher_scale)
            return super().forward(batch)

    torch.manual_seed(0)
    x, y = torch.randn(16, 3), torch.randint(0, 2, (16,))
    for warm, want in ((2, [0.5, 1.0, 1.0]), (0, [1.0, 1.0, 1.0])):
        seen.clear()
        cfg = settings.parse_train({"epochs": 3, "batch_size": 16, "device": "cpu", "kd_warmup_epochs": warm})
        task = Probe(torch.nn.Linear(3, 2), _objective(), FrozenTeacher(torch.nn.Linear(3, 2)))
        Trainer(cfg, progress="off").fit(task, batches(Split(x, y), cfg), num_classes=2)
        assert seen == want
