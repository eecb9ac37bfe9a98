"""Distillation for reinforcement learning: policy distillation (Rusu et al. 2016), DAgger-style student
rollouts, born-again policies through the lineage, multi-task students, and random network distillation
(Burda et al. 2018) for stable-baselines3's PPO. gymnasium, stable-baselines3 and minatar are imported only
when an environment is made or a teacher trained (``pip install 'gendistill[rl]'``).

Importing this package registers the ``gym`` and ``gym_multitask`` datasets, the ``rl`` and ``rl_multitask``
domains, the ``multitask_mlp`` model and the ``policy_*`` terms."""

from ..domains import rl as _domain  # noqa: F401,E402
from . import data, losses  # noqa: F401
