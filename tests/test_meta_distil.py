"""MetaDistil (issue 13): the pilot update, the teacher's meta-step on the quiz set, the held-out quiz set."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn
from torch.func import functional_call

from gendistill.config import TrainConfig
from gendistill.data import load_dataset
from gendistill.knowledge import Batch, build_objective
from gendistill.lineage import Lineage
from gendistill.schemes import build_task


def _task(data, **kw):
    torch.manual_seed(0)
    make = lambda: nn.Sequential(nn.Linear(8, 6), nn.ReLU(), nn.Linear(6, 3))  # noqa: E731
    return build_task("meta_distil", student=make(), objective=build_objective("ce"), data=data, gen=1,
                      previous=[make()], train=TrainConfig(lr=0.05), **kw)


def test_teacher_step_is_the_meta_gradient_of_the_pilot_students_quiz_loss():
    data = load_dataset("synthetic", num_classes=3, dim=8, num_train=64, num_test=16, seed=0)
    task = _task(data, teacher_optimizer="sgd", teacher_lr=0.5)
    task.teacher_opt.param_groups[0]["momentum"] = 0.0  # plain SGD: the step is -lr * grad
    x, y = data.train.x[:16], data.train.y[:16]
    xq, yq = data.train.x[40:56], data.train.y[40:56]
    # the meta-gradient by hand: unroll the pilot step with explicit tensors
    theta = [p.detach().clone().requires_grad_(True) for p in task.meta_teacher.parameters()]
    names = [n for n, _ in task.meta_teacher.named_parameters()]
    t_logits = functional_call(task.meta_teacher, dict(zip(names, theta, strict=True)), (x,))
    w = dict(task.student.named_parameters())
    loss = task.student_loss(functional_call(task.student, w, (x,)), t_logits, y)
    g = torch.autograd.grad(loss, list(w.values()), create_graph=True)
    pilot = {k: v - 0.05 * gi for (k, v), gi in zip(w.items(), g, strict=True)}
    quiz = F.cross_entropy(functional_call(task.student, pilot, (xq,)), yq)
    expected = [t - 0.5 * gt for t, gt in zip(theta, torch.autograd.grad(quiz, theta), strict=True)]
    got_quiz = task._meta_step(x, y, xq, yq)
    assert got_quiz.item() == quiz.item()
    for p, e in zip(task.meta_teacher.parameters(), expected, strict=True):
        assert torch.allclose(p, e, atol=1e-6)
    assert any(not torch.allclose(p, t) for p, t in zip(task.meta_teacher.parameters(), theta, strict=True))


def test_the_quiz_set_is_held_out_from_the_students_loss():
    data = load_dataset("synthetic", num_classes=3, dim=8, num_train=64, num_test=16, seed=0)
    task = _task(data, quiz=0.25)
    assert int(task.quiz.sum()) == 16
    task.eval()  # no meta-step: compare the student's loss only
    idx = torch.arange(64)
    y = data.train.y.clone()
    a = task(Batch(data.train.x, y, idx))["loss"]
    y[task.quiz] = (y[task.quiz] + 1) % 3  # scramble the quiz labels: the student's loss must not change
    b = task(Batch(data.train.x, y, idx))["loss"]
    assert a.item() == b.item()


def test_meta_distil_runs_in_a_lineage_and_its_teacher_moves(tmp_path):
    data = load_dataset("synthetic", num_classes=3, dim=8, num_train=96, num_test=32, seed=0)
    result = Lineage(student={"name": "mlp", "width": 16}, generations=1, scheme={"name": "meta_distil"},
                     progress="off", ensembles=False,
                     train=TrainConfig(epochs=2, batch_size=32, lr=0.01, fidelity_samples=0)).fit(data, out=tmp_path / "r")
    assert len(result.generations) == 2 and result.generations[1]["test_acc"] > 0.34
    history = (tmp_path / "r" / "gen1" / "history.csv").read_text().splitlines()
    assert "train_quiz_loss" in history[0]
