"""The ``rl`` domain: policies distilled from a teacher's states (Rusu et al. 2016), through the one lineage.

Items are environment states; a model's outputs are Q-values or action logits, and its *prediction* on a
split is the action distribution ``log softmax(outputs / data.temperature)`` (what fidelity and ensembles
compare; ensembles average action probabilities). Generation 0 is the RL teacher the ``gym`` dataset
trained or loaded; every later generation is a student trained over a :class:`~gendistill.rl.rollouts.DAggerSource`
(the teacher's replay memory, optionally aggregated with the student's own relabelled rollouts), so
born-again policies are generations each taught by the one before.

Metrics (``test_*`` in the tables) come from greedy episodes of the model in the environment: ``return``
(mean over ``data.eval_episodes`` episodes), ``return_std``, ``return_ci95``, ``episode_length``, and, on
the states the model itself visits, ``agreement_student_states`` / ``kl_student_states`` with the original
teacher (generation 0); ``agreement_teacher`` / ``kl_teacher`` are measured on held-out teacher-visited
states. ``params`` and ``inference_us`` (one state, CPU) size the policy. Ensembles of generations are
rolled out in ``analysis/ensemble_returns.json``.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np
import torch
from torch import Tensor, nn

from ..errors import ConfigError
from ..registry import DOMAINS
from ..rl.data import MultiTaskInfo, PolicyInfo
from ..rl.metrics import action_logprobs, evaluate_policy, inference_us, mean_ci, policy_fidelity
from ..rl.multitask import TaskSlice
from ..rl.rollouts import DAggerSource, rollout
from .classification import ClassificationDomain


def _info(split: Any) -> PolicyInfo:
    info = getattr(split, "info", None)
    if info is None:
        raise ConfigError("the rl domain needs the gym dataset's state splits (data: {name: gym, ...})")
    return info


@DOMAINS.register("rl", summary="policies: return, action agreement and KL on teacher- and student-visited states")
class RLDomain(ClassificationDomain):
    """Policy distillation (see the module docstring). Models are built as in classification (an ``mlp``
    over the flattened observation, one output per action)."""

    name = "rl"
    train_keys = ()
    epoch_keys = ("test_agree_gen0",)

    def __init__(self) -> None:
        self._memo: dict[tuple[int, int], tuple[nn.Module, dict[str, float]]] = {}

    def check_teacher(self, teacher: nn.Module, data: Any) -> None:
        with torch.no_grad():
            out = teacher.cpu()(data.test.x[:2].cpu())
        if out.ndim != 2 or out.shape[1] != data.num_classes:
            raise ConfigError(f"the teacher has {tuple(out.shape[1:])} outputs per state but {data.name} has "
                              f"{data.num_classes} actions; give a teacher trained on this environment")

    def train_source(self, data: Any, train: Any, *, seed: int, device: Any, views: int) -> DAggerSource:
        info = _info(data.train)
        return DAggerSource(data.train.x, info.teacher, info.env, train.batch_size, seed=seed,
                            device=torch.device(device), schedule=info.dagger, max_steps=info.max_steps)

    def cache_teacher(self, *args: Any, **kwargs: Any) -> None:
        return None  # DAgger adds states while training: the teacher runs live (small networks, cheap)

    # ------------------------------------------------------------------------------------------ evaluation
    def predict(self, model: nn.Module, split: Any) -> Tensor:
        return action_logprobs(super().predict(model, split), _info(split).temperature)

    def metrics(self, model: nn.Module | None, pred: Tensor, split: Any) -> dict[str, float]:
        if model is None:  # an ensemble of generations: rolled out in analyses()
            return {}
        key = (id(model), id(split))
        if key not in self._memo:
            info = _info(split)
            teacher = info.teacher if model is not info.teacher else None
            got = evaluate_policy(model, teacher, info.env, episodes=info.eval_episodes, seed=info.eval_seed,
                                  temperature=info.temperature, max_steps=info.max_steps)
            if teacher is None:
                got["agreement_student_states"], got["kl_student_states"] = 1.0, 0.0
            got["inference_us"] = inference_us(model, split.x)
            self._memo[key] = (model, got)
        return dict(self._memo[key][1])

    def epoch_metrics(self, model: nn.Module, split: Any) -> dict[str, float]:
        pred = self.predict(model, split)
        return {"test_agree_gen0": (pred.argmax(-1).cpu() == split.y.cpu()).float().mean().item()}

    def fidelity(self, teacher_pred: Tensor, student_pred: Tensor) -> dict[str, float]:
        return policy_fidelity(teacher_pred, student_pred)

    def ensemble(self, preds: Sequence[Tensor]) -> Tensor:
        return torch.stack([p.float().exp() for p in preds]).mean(0).clamp_min(1e-12).log()

    def analyses(self, models: list[nn.Module], test_preds: list[Tensor], data: Any) -> dict[str, Any]:
        """Returns of the mean-action-probability ensembles of generations 1..k and 0..k (greedy)."""
        info = _info(data.test)
        k_max = len(models) - 1
        groups = [list(range(1, k + 1)) for k in range(2, k_max + 1)] + [list(range(0, k + 1)) for k in
                                                                         range(1, k_max + 1)]
        rows = []
        for members in groups:
            nets = [models[i].cpu().eval() for i in members]

            def act(x: Tensor, nets: list[nn.Module] = nets) -> Tensor:
                with torch.no_grad():
                    return torch.stack([action_logprobs(m(x), info.temperature).exp() for m in nets]).mean(0).argmax(-1)

            got = rollout(act, info.env, episodes=info.eval_episodes, seed=info.eval_seed, max_steps=info.max_steps)
            stats = mean_ci(got.returns)
            rows.append({"members": members, "return": stats["mean"], "return_std": stats["std"],
                         "return_ci95": stats["ci95"], "episodes": len(got.returns),
                         "median_return": float(np.median(got.returns))})
        return {"ensemble_returns": rows, "teacher": {k: v for k, v in info.record.items() if k != "hyper"}}


@DOMAINS.register("rl_multitask", summary="multi-task policies: per-task return and agreement (packed task states)")
class RLMultiTaskDomain(RLDomain):
    """Multi-task policy distillation (Rusu et al. 2016, Sec. 4.2) through the one lineage: the ``gym_multitask``
    dataset packs every task's states with its task id (:func:`gendistill.rl.multitask.pack`), generation 0 is
    the single-task teachers as one module, students are ``multitask_mlp`` (per-task input layers and heads,
    shared trunk; the domain fills in its ``layout``) or any model of the packed rows. No DAgger (the paper's
    multi-task students learn from the teachers' memories). Metrics per task (keys ``<metric>@<env>``): greedy
    ``return`` and ``ci95`` (t-interval over episodes) in that environment, agreement with its teacher on
    held-out teacher states (``agree_t``), agreement and KL on the states the model visits (``agree_s``,
    ``kl_s``)."""

    name = "rl_multitask"

    @staticmethod
    def _layout(spec: Any, data: Any) -> Any:
        if isinstance(spec, str):
            spec = {"name": spec}
        if isinstance(spec, dict) and spec.get("name") == "multitask_mlp":
            return {**spec, "layout": _multi(data.train).layout}
        return spec

    def build_model(self, spec: Any, data: Any) -> nn.Module:
        return super().build_model(self._layout(spec, data), data)

    def check_model(self, spec: Any, data: Any, where: str) -> nn.Module:
        return super().check_model(self._layout(spec, data), data, where)

    def train_source(self, data: Any, train: Any, *, seed: int, device: Any, views: int) -> DAggerSource:
        info = _multi(data.train)
        return DAggerSource(data.train.x, info.teacher, info.env, train.batch_size, seed=seed,
                            device=torch.device(device), schedule=info.dagger)  # dagger.steps 0: memory only

    def metrics(self, model: nn.Module | None, pred: Tensor, split: Any) -> dict[str, float]:
        if model is None:
            return {}
        key = (id(model), id(split))
        if key not in self._memo:
            info = _multi(split)
            width = split.x.shape[1] - 1
            task = split.x[:, 0].round().long().cpu()
            got: dict[str, float] = {}
            for k, (env, (_, n)) in enumerate(zip(info.envs, info.layout)):
                policy = TaskSlice(model, k, width, n)
                teacher = TaskSlice(info.teacher, k, width, n) if model is not info.teacher else None
                one = evaluate_policy(policy, teacher, env, episodes=info.eval_episodes, seed=info.eval_seed,
                                      temperature=info.temperature, max_steps=info.max_steps)
                rows = task == k
                one["agree_t"] = (pred[rows].argmax(-1).cpu() == split.y.cpu()[rows]).float().mean().item()
                if teacher is None:
                    one["agreement_student_states"], one["kl_student_states"] = 1.0, 0.0
                got.update({f"{short}@{env}": one[m] for m, short in _TASK_KEYS.items()})
            got["inference_us"] = inference_us(model, split.x)
            self._memo[key] = (model, got)
        return dict(self._memo[key][1])

    def analyses(self, models: list[nn.Module], test_preds: list[Tensor], data: Any) -> dict[str, Any]:
        return {}


_TASK_KEYS = {"return": "return", "return_ci95": "ci95", "agree_t": "agree_t", "agreement_student_states": "agree_s",
              "kl_student_states": "kl_s"}


def _multi(split: Any) -> MultiTaskInfo:
    info = _info(split)
    if not isinstance(info, MultiTaskInfo):
        raise ConfigError("the rl_multitask domain needs the gym_multitask dataset (data: {name: gym_multitask, ...})")
    return info


__all__ = ["RLDomain", "RLMultiTaskDomain"]
