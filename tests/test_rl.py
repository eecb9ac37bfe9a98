"""RL distillation: the policy losses on hand-made cases, rollouts and the DAgger memory, a tiny CartPole
lineage that learns from a hand-made teacher (and resumes to the same numbers), and bad input."""

from __future__ import annotations

import json
import math
from pathlib import Path

import pytest
import torch

from gendistill.errors import ConfigError
from gendistill.knowledge import Batch, Outputs
from gendistill.rl.losses import PolicyKL, PolicyMSE, PolicyNLL
from gendistill.rl.metrics import mean_ci, policy_fidelity
from gendistill.rl.rollouts import DAggerSchedule


def _loss(term, student, teacher):
    s, t = torch.tensor([student]), torch.tensor([teacher])
    return term(Outputs(s), Outputs(t), Batch(s, torch.zeros(1, dtype=torch.long))).item()


def test_policy_losses_by_hand():
    # tau = 1: p = softmax([1, 0]) = [e, 1] / (e + 1); KL(p || [1/2, 1/2]) = sum p log(2 p)
    p = [math.e / (math.e + 1), 1 / (math.e + 1)]
    assert _loss(PolicyKL(tau=1.0), [0.0, 0.0], [1.0, 0.0]) == pytest.approx(sum(q * math.log(2 * q) for q in p), abs=1e-6)
    # tau = 0.01 makes the teacher one-hot: KL = -log softmax(q_S)[argmax q_T] = log 2
    assert _loss(PolicyKL(tau=0.01), [0.0, 0.0], [1.0, 0.0]) == pytest.approx(math.log(2), abs=1e-6)
    assert _loss(PolicyMSE(), [0.0, 0.0], [1.0, 2.0]) == pytest.approx(5.0)  # 1^2 + 2^2
    # softmax([0, log 3]) = [1/4, 3/4]; the teacher's greedy action is 0 -> -log(1/4)
    assert _loss(PolicyNLL(), [0.0, math.log(3)], [2.0, 1.0]) == pytest.approx(math.log(4), abs=1e-6)
    with pytest.raises(ValueError):
        PolicyKL(tau=0.0)


def test_fidelity_and_confidence_interval_by_hand():
    t = torch.log(torch.tensor([[0.5, 0.5], [0.9, 0.1]]))
    s = torch.log(torch.tensor([[0.25, 0.75], [0.9, 0.1]]))
    fid = policy_fidelity(t, s)
    assert fid["agreement"] == 0.5  # argmax of a tie is action 0; the student picks 1
    assert fid["kl"] == pytest.approx((0.5 * math.log(2) + 0.5 * math.log(0.5 / 0.75)) / 2)
    ci = mean_ci([1.0, 2.0, 3.0])  # std 1, t(0.975, 2) = 4.3027
    assert (ci["mean"], ci["std"]) == (2.0, 1.0) and ci["ci95"] == pytest.approx(4.302653 / math.sqrt(3), rel=1e-5)


def test_dagger_schedule():
    s = DAggerSchedule.parse({"steps": 10, "start": 2, "beta0": 0.8, "decay": 0.5})
    assert [s.beta(e) for e in (1, 2, 3, 4)] == [None, 0.8, 0.4, 0.2]
    assert DAggerSchedule.parse(None).beta(5) is None  # off by default
    with pytest.raises(ConfigError, match="unknown dagger option"):
        DAggerSchedule.parse({"stepz": 1})


# ------------------------------------------------------------------------------------------ with gymnasium
W = torch.tensor([0.1, 0.5, 1.0, 0.5])  # push right iff w . s > 0 balances CartPole (return 500)


def linear_teacher():
    """A ReLU MLP (width 2, depth 1) whose greedy action is exactly [w . s > 0]: q = [relu(-w.s), relu(w.s)]."""
    from gendistill.models.mlp import MLP

    m = MLP(4, 2, width=2, depth=1)
    with torch.no_grad():
        m.layer1[0].weight.copy_(torch.stack([W, -W]))
        m.layer1[0].bias.zero_()
        m.fc.weight.copy_(torch.tensor([[0.0, 10.0], [10.0, 0.0]]))
        m.fc.bias.zero_()
    return m


@pytest.fixture
def teacher_file(tmp_path):
    pytest.importorskip("gymnasium")
    from gendistill.engine.checkpoint import save_model

    path = tmp_path / "teacher.safetensors"
    save_model(linear_teacher(), path)
    path.with_suffix(".json").write_text(json.dumps({"width": 2, "depth": 1}))
    return path


def test_rollouts_and_the_dagger_memory(teacher_file):
    from gendistill.rl.rollouts import DAggerSource, greedy, rollout

    teacher = linear_teacher()
    got = rollout(greedy(teacher), "CartPole-v1", episodes=2, seed=0)
    assert got.returns == [500.0, 500.0] and got.states.shape == (1000, 4)
    part = rollout(greedy(teacher), "CartPole-v1", steps=30, seed=0)
    assert part.states.shape == (30, 4) and part.returns == []  # an unfinished episode has no return
    src = DAggerSource(got.states[:100], teacher, "CartPole-v1", 32, seed=0, device=torch.device("cpu"),
                       schedule=DAggerSchedule(steps=50, start=2, beta0=0.5))
    src.bind(torch.nn.Sequential(torch.nn.Flatten(), torch.nn.Linear(4, 2)))  # a (bad) student
    assert len(src) == 4 and sum(len(b) for b in src) == 100 and len(src.states) == 100  # epoch 1: teacher only
    state = src.state_dict()
    second = [b.x for b in src]  # epoch 2: 50 student/mixture states, relabelled by the teacher
    assert len(src.states) == 150 and src.added[0]["beta"] == 0.5 and sum(len(x) for x in second) == 100
    assert torch.equal(src.labels, greedy(teacher)(src.states))
    src.load_state_dict(state)  # resume: the same states in the same order
    assert all(torch.equal(a, b.x) for a, b in zip(second, src))


def _lineage(teacher_file, **data):
    from gendistill.lineage import Lineage
    from gendistill.rl.data import gym_states

    bundle = gym_states(env="CartPole-v1", teacher={"path": str(teacher_file)}, states=2000, test_episodes=1,
                        eval_episodes=3, dagger={"steps": 300, "start": 2}, **data)
    lineage = Lineage(student={"name": "mlp", "width": 16, "depth": 1}, generations=2,
                      objective=[{"term": "policy_kl", "tau": 0.01}], progress="off",
                      train={"epochs": 12, "batch_size": 32, "lr": 0.01, "fidelity_samples": 64})
    return bundle, lineage


def _numbers(result):
    return [{k: v for k, v in g.items() if isinstance(v, float) and "seconds" not in k and "_us" not in k}
            for g in result.generations]


def test_a_tiny_cartpole_lineage_learns_and_resumes(teacher_file, tmp_path, monkeypatch):
    bundle, lineage = _lineage(teacher_file)
    full = lineage.fit(bundle, teacher=bundle.teacher, out=tmp_path / "run")
    g = full.generations
    assert g[0]["test_return"] == 500.0 and g[0]["teacher"] == "given"
    assert g[1]["test_return"] >= 450 and g[1]["agreement_teacher"] > 0.9, g[1]
    assert g[2]["teacher"] == "gen1" and g[2]["agreement_gen0"] > 0.85
    assert g[1]["test_agreement_student_states"] > 0.9 and g[1]["test_kl_student_states"] >= 0
    analysis = json.loads((tmp_path / "run/analysis/ensemble_returns.json").read_text())
    assert analysis[0]["members"] == [1, 2] and analysis[0]["return"] > 0

    from gendistill.engine import trainer as trainer_mod

    real = trainer_mod.Trainer._save

    def crash(self, run, epoch):
        real(self, run, epoch)
        if self.desc == "gen1" and epoch == 3:  # after DAgger added states (epochs 2 and 3)
            raise KeyboardInterrupt

    monkeypatch.setattr(trainer_mod.Trainer, "_save", crash)
    bundle, lineage = _lineage(teacher_file)
    with pytest.raises(KeyboardInterrupt):
        lineage.fit(bundle, teacher=bundle.teacher, out=tmp_path / "cut")
    monkeypatch.setattr(trainer_mod.Trainer, "_save", real)
    bundle, lineage = _lineage(teacher_file)
    resumed = lineage.fit(bundle, teacher=bundle.teacher, out=tmp_path / "cut", resume=True)
    assert _numbers(resumed) == _numbers(full)


def test_bad_input_is_a_one_line_config_error(teacher_file, tmp_path):
    from gendistill.engine.checkpoint import save_model
    from gendistill.models.mlp import MLP
    from gendistill.rl.data import gym_states

    with pytest.raises(ConfigError, match="unknown environment 'NoSuchEnv-v0'"):
        gym_states(env="NoSuchEnv-v0")
    three = tmp_path / "three.safetensors"
    save_model(MLP(4, 3, width=2, depth=1), three)
    with pytest.raises(ConfigError, match="has 3 actions but CartPole-v1 has 2"):
        gym_states(env="CartPole-v1", teacher={"path": str(three), "width": 2, "depth": 1})
    with pytest.raises(ConfigError, match="unknown teacher option"):
        gym_states(env="CartPole-v1", teacher={"algo": "dqn", "stepz": 3})


def test_multitask_student_learns_two_environments(teacher_file):
    from gendistill.models.mlp import MLP
    from gendistill.rl.multitask import MultiTaskPolicy, distill_multitask

    torch.manual_seed(0)
    acrobot = MLP(6, 3, width=8, depth=1).eval()  # an arbitrary fixed policy: only agreement is asked of it
    res = distill_multitask(["CartPole-v1", "Acrobot-v1"], [linear_teacher(), acrobot], states=1000, width=32,
                            train={"epochs": 6, "batch_size": 32, "lr": 0.01}, eval_episodes=2)
    cart, acro = res["tasks"]
    assert cart["env"] == "CartPole-v1" and cart["agreement"] > 0.75 and acro["agreement"] > 0.85, [(t["agreement"], t["student_return"]) for t in res["tasks"]]
    assert cart["teacher_return"] == 500.0 and cart["student_return"] >= 400
    out = MultiTaskPolicy([4, 6], [2, 3], width=8)(torch.zeros(5, 6), task=1)
    assert out.shape == (5, 3)
    with pytest.raises(ConfigError, match="has 3 actions but CartPole-v1 has 2"):
        distill_multitask(["CartPole-v1"], [acrobot.__class__(4, 3, 8, 1)])


def test_packed_multitask_teacher_and_student_by_hand():
    from gendistill.rl.multitask import MASKED, MultiTaskPolicy, MultiTaskTeacher, TaskSlice, pack

    cart = torch.nn.Linear(4, 2)
    acro = torch.nn.Linear(6, 3)
    s4, s6 = torch.randn(3, 4), torch.randn(2, 6)
    x = torch.cat([pack(s4, 0, 6), pack(s6, 1, 6)])
    assert x.shape == (5, 7) and x[:3, 0].tolist() == [0, 0, 0] and x[:3, 5:].abs().sum() == 0  # task id, padding
    teacher = MultiTaskTeacher([cart, acro], [(4,), (6,)], [2, 3])
    with torch.no_grad():
        out = teacher(x)
        assert torch.allclose(out[:3, :2], cart(s4)) and (out[:3, 2] == MASKED).all()
        assert torch.allclose(out[3:], acro(s6))
        student = MultiTaskPolicy([4, 6], [2, 3], width=8)
        assert torch.allclose(student(x)[3:], student(s6, task=1)) and (student(x)[:3, 2] == MASKED).all()
        assert torch.allclose(TaskSlice(teacher, 1, 6, 3)(s6), acro(s6))  # a task's view on its raw states


def test_multitask_distillation_runs_through_the_cli(teacher_file, tmp_path):
    """gym_multitask + multitask_mlp through `gendistill run`: the teachers are generation 0 of the run
    directory, the student learns both tasks, per-task metrics are in summary.json, and resume works."""
    import subprocess
    import sys

    import yaml

    from gendistill.engine.checkpoint import save_model
    from gendistill.models.mlp import MLP

    torch.manual_seed(0)
    acro = tmp_path / "acrobot.safetensors"
    save_model(MLP(6, 3, width=8, depth=1), acro)
    acro.with_suffix(".json").write_text(json.dumps({"width": 8, "depth": 1}))
    cfg = {"name": "mt", "out": str(tmp_path), "seeds": [0],
           "data": {"name": "gym_multitask", "states": 600, "test_episodes": 1, "eval_episodes": 2,
                    "tasks": [{"env": "CartPole-v1", "teacher": {"path": str(teacher_file)}},
                              {"env": "Acrobot-v1", "teacher": {"path": str(acro)}}]},
           "model": {"name": "multitask_mlp", "width": 32, "depth": 1},
           "generations": {"count": 1, "ensembles": False},
           "objective": [{"term": "policy_kl", "tau": 0.01}],
           "train": {"epochs": 6, "batch_size": 32, "lr": 0.01, "device": "cpu", "threads": 1,
                     "fidelity_samples": 64}}
    path = tmp_path / "mt.yaml"
    path.write_text(yaml.safe_dump(cfg))
    cli = [sys.executable, "-m", "gendistill", "run", str(path), "--progress", "off"]
    done = subprocess.run(cli, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr[-2000:]
    gens = json.loads((tmp_path / "mt/summary.json").read_text())["generations"]
    assert gens[0]["teacher"] == "given" and gens[0]["test_return@CartPole-v1"] == 500.0
    assert gens[1]["arch"].startswith("multitask_mlp") and gens[1]["agreement_gen0"] > 0.85, gens[1]
    assert gens[1]["test_agree_t@CartPole-v1"] > 0.75 and gens[1]["test_agree_t@Acrobot-v1"] > 0.85, gens[1]
    assert (tmp_path / "mt/gen1/model.safetensors").exists()
    again = subprocess.run([*cli, "--resume"], capture_output=True, text=True, timeout=300)  # finished: read back
    assert again.returncode == 0, again.stderr[-2000:]
    assert json.loads((tmp_path / "mt/summary.json").read_text())["generations"][1]["agreement_gen0"] == \
        gens[1]["agreement_gen0"]
    from gendistill.rl.multitask import gym_multitask

    with pytest.raises(ConfigError, match="data.tasks needs at least two tasks"):
        gym_multitask(tasks=cfg["data"]["tasks"][:1])
    with pytest.raises(ConfigError, match="unknown environment 'NoSuchEnv-v0'"):
        gym_multitask(tasks=[*cfg["data"]["tasks"], {"env": "NoSuchEnv-v0"}])


@pytest.mark.parametrize("path", sorted((Path(__file__).parents[1] / "examples" / "rl").glob("*.yaml")),
                         ids=lambda p: p.stem)
def test_every_rl_example_config_validates(path):
    from gendistill.config import load_config

    assert load_config(path).data.name in ("gym", "gym_multitask")
