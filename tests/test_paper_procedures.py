"""Each method's default is its paper's (or reference code's) procedure (issue 13): FSP in two stages, ONE's
gate and KL ramp-up, BYOT's loss weights and feature hint, Knowledge Evolution's re-initialisation, MPL's
reward baseline. Hand-made cases, fast."""

from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from gendistill.data import load_dataset
from gendistill.engine.task import DistillTask
from gendistill.errors import ConfigError
from gendistill.knowledge import Batch, build_objective
from gendistill.models import build_model
from gendistill.schemes import build_task
from gendistill.schemes.evolution import evolve
from gendistill.schemes.online import sigmoid_rampup
from gendistill.schemes.self_distill import byot_hint


class Net(nn.Module):
    def __init__(self):
        super().__init__()
        self.layer1 = nn.Sequential(nn.Conv1d(1, 4, 3, padding=1), nn.BatchNorm1d(4), nn.ReLU())
        self.layer2 = nn.Sequential(nn.Conv1d(4, 6, 3, padding=1), nn.BatchNorm1d(6), nn.ReLU())
        self.pool = nn.Sequential(nn.AdaptiveAvgPool1d(1), nn.Flatten())
        self.fc = nn.Linear(6, 3)

    def forward(self, x):
        return self.fc(self.pool(self.layer2(self.layer1(x))))


class Frozen:
    """A minimal teacher object: outputs (with taps) of a fixed network."""

    def __init__(self, net, layers):
        from gendistill.knowledge.taps import TappedModel

        self.run = TappedModel(net.eval(), layers, role="teacher")

    def __call__(self, x, index=None, view=None, layers=None):
        with torch.no_grad():
            return self.run(x)


def _batch(n=6):
    g = torch.Generator().manual_seed(0)
    return Batch(torch.randn(n, 1, 8, generator=g), torch.arange(n) % 3, torch.arange(n))


# ------------------------------------------------------------------------------------------------ FSP, FitNets
def test_fsp_defaults_to_two_stages_fsp_alone_then_the_rest_alone():
    torch.manual_seed(0)
    obj = build_objective([{"term": "ce"}, {"term": "fsp", "weight": 2.0, "layers": ["layer1", "layer2"]}])
    task = DistillTask(Net(), obj, Frozen(Net(), ["layer1", "layer2"]))
    b = _batch()
    joint = task(b)  # before any epoch: joint (no stage set)
    assert joint["loss"].item() == pytest.approx(joint["ce"].item() + 2 * joint["fsp"].item(), rel=1e-5)
    task.on_epoch_start(1, 18)  # stage 1 = round(18 / 9) = 2 epochs
    s1 = task(b)
    assert s1["loss"].item() == pytest.approx(2 * s1["fsp"].item(), rel=1e-5)
    task.on_epoch_start(2, 18)
    assert task(b)["loss"].item() == pytest.approx(2 * task(b)["fsp"].item(), rel=1e-5)
    task.on_epoch_start(3, 18)
    s2 = task(b)
    assert s2["loss"].item() == pytest.approx(s2["ce"].item(), rel=1e-5)
    # the joint variant and an explicit stage length
    obj = build_objective([{"term": "ce"}, {"term": "fsp", "layers": ["layer1", "layer2"], "procedure": "joint"}])
    obj.on_epoch_start(1, 18)
    assert obj.stage is None
    obj = build_objective([{"term": "ce"}, {"term": "fsp", "layers": ["layer1", "layer2"], "stage1_epochs": 5}])
    obj.on_epoch_start(5, 18)
    assert obj.stage == 1
    obj.on_epoch_start(6, 18)
    assert obj.stage == 2


def test_fitnet_two_stage_is_an_option_and_a_lone_two_stage_term_is_an_error():
    obj = build_objective([{"term": "ce"}, {"term": "kd"}, {"term": "fitnet", "layers": "layer2"}])
    obj.on_epoch_start(1, 10)
    assert obj.stage is None  # RepDistiller's one-stage FitNet by default
    obj = build_objective([{"term": "ce"}, {"term": "kd"},
                           {"term": "fitnet", "layers": "layer2", "procedure": "two_stage", "stage1_epochs": 3}])
    obj.on_epoch_start(3, 10)
    assert obj.stage == 1 and [obj._weight(t, 1.0) for t in obj.terms] == [0.0, 0.0, 1.0]
    obj.on_epoch_start(4, 10)
    assert [obj._weight(t, 1.0) for t in obj.terms] == [1.0, 1.0, 0.0]
    with pytest.raises(ConfigError, match="second stage"):
        build_objective([{"term": "fsp", "layers": ["layer1", "layer2"]}])
    with pytest.raises(ConfigError, match="procedure"):
        build_objective([{"term": "ce"}, {"term": "fsp", "layers": ["a", "b"], "procedure": "later"}])


# ------------------------------------------------------------------------------------------------------- ONE
def test_one_gate_is_linear_bn_relu_softmax_and_the_kl_weight_ramps_up():
    data = load_dataset("synthetic", num_classes=3, dim=8, num_train=32, num_test=16, seed=0)
    student = build_model({"name": "mlp", "width": 16, "depth": 2}, 3, data.input_shape)
    task = build_task("one", student=student, objective=build_objective("ce"), data=data)
    gate = task.ensemble.gate
    assert [type(m) for m in gate] == [nn.Linear, nn.BatchNorm1d, nn.ReLU]
    old = build_task("one", student=build_model({"name": "mlp", "width": 16, "depth": 2}, 3, data.input_shape),
                     objective=build_objective("ce"), data=data, gate="linear", rampup=0.0)
    assert isinstance(old.ensemble.gate, nn.Linear)
    # the authors' sigmoid_rampup(epoch, 80) over 300 epochs: epoch e (1-based) -> exp(-5 (1 - (e-1)/80)^2)
    assert sigmoid_rampup(1, 300, 80 / 300) == pytest.approx(math.exp(-5.0))
    assert sigmoid_rampup(41, 300, 80 / 300) == pytest.approx(math.exp(-5.0 * 0.25))
    assert sigmoid_rampup(81, 300, 80 / 300) == pytest.approx(1.0)
    assert sigmoid_rampup(1, 300, 0.0) == 1.0
    # the ramp scales the KL part of the loss: loss(ramp r) - loss(ramp 1) = (r - 1) * weight * sum_i KL_i
    b = Batch(data.train.x[:8], data.train.y[:8])
    task.eval()
    task.on_epoch_start(1, 30)
    low = task(b)
    task.on_epoch_start(30, 30)
    high = task(b)
    r = math.exp(-5.0)
    assert low["loss"].item() - high["loss"].item() == pytest.approx((r - 1) * 3 * high["one_kd"].item(), rel=1e-4)


# ------------------------------------------------------------------------------------------------------ BYOT
def test_byot_hint_and_loss_weights_match_the_reference_code():
    f = torch.tensor([[1.0, -1.0, 0.5], [-2.0, 0.0, 3.0]])
    t = torch.tensor([[0.0, -3.0, 1.0], [-1.0, 2.0, 3.0]])
    # masked where both are <= 0: (1-0)^2 + [skip -1 vs -3] + 0.25 + [skip -2 vs -1] + 4 + 0 = 5.25
    assert byot_hint(f, t).item() == pytest.approx(5.25)
    torch.manual_seed(0)
    data = load_dataset("synthetic", num_classes=3, dim=8, num_train=32, num_test=16, seed=0)
    student = build_model({"name": "mlp", "width": 16, "depth": 3}, 3, data.input_shape)
    task = build_task("byot", student=student, objective=build_objective("ce"), data=data)
    b = Batch(data.train.x[:8], data.train.y[:8])
    task.eval()
    out = task(b)
    a, lam = 0.3, 1e-6
    expected = (1 - a) * out["ce"] + (1 - a) * out["byot_ce"] + a * out["byot_kd"] + lam * out["byot_hint"]
    assert out["loss"].item() == pytest.approx(expected.item(), rel=1e-5)
    assert out["byot_hint"].item() > 0
    # final_weight 1 and hint_weight 0: the form before issue 13
    task.final_weight, task.hint_weight = 1.0, 0.0
    out = task(b)
    assert out["loss"].item() == pytest.approx((out["ce"] + 0.7 * out["byot_ce"] + 0.3 * out["byot_kd"]).item(), rel=1e-5)


# -------------------------------------------------------------------------------------------------------- KE
def test_ke_keeps_batchnorm_and_biases_whole_and_reinitialises_only_masked_weights():
    torch.manual_seed(0)
    parent, child = Net(), Net()
    with torch.no_grad():  # give the parent's BN non-default statistics
        parent.layer1[1].running_mean.fill_(0.7)
        parent.layer1[1].weight.fill_(1.3)
    fresh = {k: v.clone() for k, v in child.state_dict().items()}
    masks = evolve(child, parent, 0.5)
    own, theirs = child.state_dict(), parent.state_dict()
    assert set(masks) == {"layer1.0.weight", "layer2.0.weight", "fc.weight"}
    for key in own:
        if key in masks:
            m = masks[key]
            assert torch.equal(own[key][m], theirs[key][m]) and torch.equal(own[key][~m], fresh[key][~m])
        else:  # biases, BN affine and running statistics: the parent's, whole
            assert torch.equal(own[key], theirs[key]), key
    # reset: all also splits biases and BN with their outputs (the form before issue 13)
    child = Net()
    fresh = {k: v.clone() for k, v in child.state_dict().items()}
    masks = evolve(child, parent, 0.5, reset="all")
    rm = child.state_dict()["layer1.1.running_mean"]
    assert torch.equal(rm[:2], theirs["layer1.1.running_mean"][:2]) and torch.equal(rm[2:], fresh["layer1.1.running_mean"][2:])
    with pytest.raises(ConfigError, match="reset"):
        evolve(Net(), parent, 0.5, reset="bn")


# -------------------------------------------------------------------------------------------------------- MPL
def test_mpl_moving_average_baseline():
    from gendistill.schemes.pseudo_label import MetaPseudoLabelTask

    data = load_dataset("synthetic", num_classes=3, dim=8, num_train=32, num_test=16, seed=0)
    make = lambda: build_model({"name": "mlp", "width": 8}, 3, data.input_shape)  # noqa: E731
    task = MetaPseudoLabelTask(make(), build_objective("ce"), make(), data.train.y, labeled=0.5, baseline=0.9)
    x_l, y_l = data.train.x[:4], data.train.y[:4]
    before = F.cross_entropy(task.student(x_l).float(), y_l).detach() + 0.5  # a reward of exactly 0.5
    task._pending = (x_l, y_l, data.train.x[4:8], torch.zeros(4, dtype=torch.long), before)
    reward = task._teacher_step()
    assert reward.item() == pytest.approx(0.5, rel=1e-5)
    assert task.moving_reward.item() == pytest.approx(0.1 * 0.5, rel=1e-5)
    assert "moving_reward" in task.state_dict()
    with pytest.raises(ConfigError, match="baseline"):
        MetaPseudoLabelTask(make(), build_objective("ce"), make(), data.train.y, baseline=1.0)


# ------------------------------------------------------------------------------------------------------- DFAD
def test_dfad_default_alternates_five_student_steps_per_generator_step_on_l1():
    from gendistill.teachers import FrozenTeacher

    torch.manual_seed(0)
    data = load_dataset("synthetic", num_classes=3, dim=8, num_train=32, num_test=16, seed=0)
    make = lambda: build_model({"name": "mlp", "width": 8}, 3, data.input_shape)  # noqa: E731
    task = build_task("dfad", student=make(), objective=build_objective("ce"), data=data, teacher=FrozenTeacher(make()),
                      gen=1)
    assert task.disagreement == "l1" and task.bn_weight == 0.0 and not task._hooks
    assert "generator" not in dict(task.named_children())  # not in the trainer's optimizer
    assert isinstance(task.generator_opt, torch.optim.Adam)
    task.train()
    b = Batch(torch.zeros(8, 8), torch.zeros(8, dtype=torch.long))
    changed = []
    for _ in range(11):
        before = [p.clone() for p in task.generator.parameters()]
        out = task(b)
        out["loss"].backward()  # the trainer's student step (its gradient only)
        assert all(p.grad is None for p in task.generator.parameters())
        task.student.zero_grad()
        changed.append(any(not torch.equal(p, q) for p, q in zip(before, task.generator.parameters())))
    assert changed == [False] * 5 + [True] + [False] * 4 + [True]
    state = task.get_extra_state()
    assert state["step"] == 11 and "generator" in state and "optimizer" in state
    # the named variant: KL, the batch-norm prior and one simultaneous step (the generator in the optimizer)
    teacher_net = nn.Sequential(nn.Linear(8, 8), nn.BatchNorm1d(8), nn.ReLU(), nn.Linear(8, 3))
    old = build_task("dfad", student=make(), objective=build_objective("ce"), data=data,
                     teacher=FrozenTeacher(teacher_net), gen=1, variant="deepinversion_like")
    assert old.disagreement == "kl" and old.bn_weight == 1.0 and len(old._hooks) == 1
    assert "generator" in dict(old.named_children())
    with pytest.raises(ConfigError, match="deepinversion_like"):
        build_task("dfad", student=make(), objective=build_objective("ce"), data=data, teacher=FrozenTeacher(make()),
                   gen=1, bn_weight=1.0)


# -------------------------------------------------------------------------------------------- ensemble teachers
def test_one_ensemble_definition_in_the_lineage_and_multi_teacher():
    from gendistill.knowledge.response import kl_div_with_temperature
    from gendistill.schemes.multi_teacher import MultiTeacherTask
    from gendistill.teachers import EnsembleTeacher

    torch.manual_seed(0)
    t1, t2, student = nn.Linear(5, 4), nn.Linear(5, 4), nn.Linear(5, 4)
    x = torch.randn(6, 5)
    b = Batch(x, torch.zeros(6, dtype=torch.long))
    obj = build_objective([{"term": "kd", "temperature": 4.0}])
    task = MultiTeacherTask(student, obj, [t1, t2], rule="ensemble")
    mean_p = (t1(x).softmax(-1) + t2(x).softmax(-1)).detach() / 2
    ens = EnsembleTeacher([t1, t2])(x).logits  # the lineage's teacher: ensemble
    assert torch.allclose(ens, mean_p.log(), atol=1e-6)
    expected = kl_div_with_temperature(student(x), mean_p.log(), 4.0)
    assert task(b)["kd"].item() == pytest.approx(expected.item(), rel=1e-5)
    # rule: mean averages the terms: for KD, the gradient of KD towards mean_m softmax(z_m / T) instead
    z = student(x).detach().requires_grad_(True)
    mean_rule = (kl_div_with_temperature(z, t1(x).detach(), 4.0) + kl_div_with_temperature(z, t2(x).detach(), 4.0)) / 2
    (g_mean,) = torch.autograd.grad(mean_rule, z)
    soft_mean = (t1(x).detach().div(4).softmax(-1) + t2(x).detach().div(4).softmax(-1)) / 2
    (g_soft,) = torch.autograd.grad(kl_div_with_temperature(z, 4 * soft_mean.log(), 4.0), z)
    assert torch.allclose(g_mean, g_soft, atol=1e-5)
    (g_ens,) = torch.autograd.grad(kl_div_with_temperature(z, mean_p.log(), 4.0), z)
    assert not torch.allclose(g_mean, g_ens, atol=1e-4)  # the two definitions differ at T = 4
    with pytest.raises(ConfigError, match="feature terms"):
        MultiTeacherTask(Net(), build_objective([{"term": "ce"}, {"term": "at", "layers": "layer1"}]), [Net(), Net()],
                         rule="ensemble")
