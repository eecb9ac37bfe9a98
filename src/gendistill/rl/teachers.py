"""RL teachers: trained with stable-baselines3 from a config, or loaded from a local file.

A teacher is exported to gendistill's own :class:`~gendistill.models.mlp.MLP` (``flatten -> [Linear -> ReLU] x
depth -> fc``), so it runs, is saved and is frozen like every other generation. Its outputs are

* **DQN** (the Q-value teacher of Rusu et al. 2016): the Q-values ``q(s, .)``;
* **PPO** (a stochastic policy): the action logits of its policy head (its value head is dropped).

Both use ReLU MLPs of ``width`` x ``depth`` (SB3's ``net_arch``), so the weights map one to one. A trained
teacher is saved as ``<key>.safetensors`` plus ``<key>.json`` (the config that rebuilds it: environment,
algorithm, width, depth, steps, seed, its measured return) in a cache folder keyed by that config, and is
loaded from there on the next run. ``path:`` loads a teacher from a local file instead: a ``.safetensors``
written here (its ``.json`` next to it) or a stable-baselines3 ``.zip``.
"""

from __future__ import annotations

import hashlib
import json
import os
import time
from pathlib import Path
from typing import Any

import torch
from torch import nn

from ..engine.checkpoint import read_safetensors, save_model
from ..errors import ConfigError
from ..io import atomic_write_text
from ..models.mlp import MLP
from .envs import make_env, space_dims

ALGOS = ("dqn", "ppo")

# Short CPU budgets that solve CartPole (rl-baselines3-zoo's tuned settings, fewer steps).
DEFAULTS: dict[str, dict[str, Any]] = {
    "dqn": {"learning_rate": 2.3e-3, "batch_size": 64, "buffer_size": 100_000, "learning_starts": 1000,
            "gamma": 0.99, "target_update_interval": 10, "train_freq": 256, "gradient_steps": 128,
            "exploration_fraction": 0.16, "exploration_final_eps": 0.04},
    "ppo": {"n_steps": 256, "batch_size": 256, "gae_lambda": 0.8, "gamma": 0.98, "n_epochs": 20,
            "ent_coef": 0.0, "learning_rate": 1e-3, "clip_range": 0.2},
}


def default_cache_dir() -> Path:
    root = os.environ.get("GENDISTILL_CACHE") or os.path.join(os.path.expanduser("~"), ".cache", "gendistill")
    return Path(root) / "rl-teachers"


def teacher_spec(env_id: str, options: dict[str, Any] | None) -> dict[str, Any]:
    """The full teacher config (defaults filled); bad values are one-line ConfigErrors."""
    o = dict(options or {})
    spec = {"env": env_id, "algo": str(o.pop("algo", "dqn")).lower(), "steps": int(o.pop("steps", 50_000)),
            "width": int(o.pop("width", 64)), "depth": int(o.pop("depth", 2)), "seed": int(o.pop("seed", 0)),
            "hyper": dict(o.pop("hyper", {})), "path": o.pop("path", None),
            "cache_dir": o.pop("cache_dir", None)}
    if o:
        raise ConfigError(f"unknown teacher option(s) {sorted(o)}; known: algo, steps, width, depth, seed, hyper, "
                          "path, cache_dir")
    if spec["algo"] not in ALGOS:
        raise ConfigError(f"teacher.algo must be one of {', '.join(ALGOS)}, got {spec['algo']!r}")
    if spec["steps"] < 1 or spec["width"] < 1 or spec["depth"] < 1:
        raise ConfigError("teacher.steps, teacher.width and teacher.depth must be >= 1")
    return spec


def teacher_key(spec: dict[str, Any]) -> str:
    keyed = {k: spec[k] for k in ("env", "algo", "steps", "width", "depth", "seed", "hyper")}
    digest = hashlib.sha1(json.dumps(keyed, sort_keys=True).encode()).hexdigest()[:12]
    return f"{spec['env'].replace('/', '-')}-{spec['algo']}-{digest}"


def _mlp(obs_shape: tuple[int, ...], n_actions: int, width: int, depth: int) -> MLP:
    import math

    return MLP(math.prod(obs_shape), n_actions, width, depth)


def _copy_linears(linears: list[nn.Linear], model: MLP) -> MLP:
    targets = [getattr(model, f"layer{i + 1}")[0] for i in range(model.depth)] + [model.fc]
    if len(targets) != len(linears):
        raise ConfigError(f"the stable-baselines3 network has {len(linears)} linear layers, the teacher MLP "
                          f"{len(targets)}; set teacher.depth to match")
    with torch.no_grad():
        for src, dst in zip(linears, targets):
            if src.weight.shape != dst.weight.shape:
                raise ConfigError(f"the stable-baselines3 layer {tuple(src.weight.shape)} does not match the teacher "
                                  f"MLP's {tuple(dst.weight.shape)}; set teacher.width to match")
            dst.weight.copy_(src.weight)
            dst.bias.copy_(src.bias)
    return model


def export_sb3(agent: Any, obs_shape: tuple[int, ...], n_actions: int, width: int, depth: int) -> MLP:
    """The Q-network (DQN) or policy head (PPO) of a stable-baselines3 agent as a gendistill MLP."""
    policy = agent.policy
    if hasattr(policy, "q_net"):  # DQN: q_net.q_net = [Linear, ReLU] * depth + Linear
        linears = [m for m in policy.q_net.q_net if isinstance(m, nn.Linear)]
    else:  # PPO: mlp_extractor.policy_net = [Linear, ReLU] * depth, then action_net
        linears = [m for m in policy.mlp_extractor.policy_net if isinstance(m, nn.Linear)] + [policy.action_net]
    acts = {type(m) for m in policy.modules() if isinstance(m, (nn.Tanh, nn.ReLU))}
    if nn.Tanh in acts:
        raise ConfigError("the stable-baselines3 policy uses Tanh; gendistill teachers are ReLU MLPs "
                          "(policy_kwargs activation_fn=nn.ReLU)")
    return _copy_linears(linears, _mlp(obs_shape, n_actions, width, depth)).eval()


def train_sb3(spec: dict[str, Any]) -> Any:
    """Train a stable-baselines3 agent as ``spec`` says (CPU, seeded)."""
    try:
        import stable_baselines3 as sb3
    except ImportError:  # pragma: no cover
        raise ConfigError("training an rl teacher needs stable-baselines3: pip install 'gendistill[rl]'") from None
    env = make_env(spec["env"], seed=spec["seed"])
    hyper = {**DEFAULTS[spec["algo"]], **spec["hyper"]}
    arch = [spec["width"]] * spec["depth"]
    if spec["algo"] == "dqn":
        agent = sb3.DQN("MlpPolicy", env, seed=spec["seed"], device="cpu", verbose=0,
                        policy_kwargs={"net_arch": arch, "activation_fn": nn.ReLU}, **hyper)
    else:
        agent = sb3.PPO("MlpPolicy", env, seed=spec["seed"], device="cpu", verbose=0,
                        policy_kwargs={"net_arch": {"pi": arch, "vf": arch}, "activation_fn": nn.ReLU}, **hyper)
    agent.learn(total_timesteps=spec["steps"])
    return agent


def load_or_train(spec: dict[str, Any], log=print) -> tuple[MLP, dict[str, Any]]:
    """The teacher network and its record (the spec, where it came from, training seconds)."""
    env = make_env(spec["env"])
    obs_shape, n_actions = space_dims(env)
    if spec["path"] is not None:
        return _load_file(Path(spec["path"]), spec, obs_shape, n_actions)
    folder = Path(spec["cache_dir"]) if spec["cache_dir"] else default_cache_dir()
    key = teacher_key(spec)
    weights, meta_path = folder / f"{key}.safetensors", folder / f"{key}.json"
    if weights.exists() and meta_path.exists():
        model = _mlp(obs_shape, n_actions, spec["width"], spec["depth"])
        model.load_state_dict(read_safetensors(weights))
        return model.eval(), {**json.loads(meta_path.read_text()), "source": f"cache {weights}"}
    log(f"[teacher] training {spec['algo'].upper()} on {spec['env']} for {spec['steps']} steps (cached as {weights})")
    t0 = time.perf_counter()
    torch_threads = torch.get_num_threads()
    agent = train_sb3(spec)
    torch.set_num_threads(torch_threads)
    model = export_sb3(agent, obs_shape, n_actions, spec["width"], spec["depth"])
    record = {k: spec[k] for k in ("env", "algo", "steps", "width", "depth", "seed", "hyper")}
    record["train_seconds"] = round(time.perf_counter() - t0, 1)
    folder.mkdir(parents=True, exist_ok=True)
    save_model(model, weights, {"teacher": key})
    atomic_write_text(meta_path, json.dumps(record, indent=2))
    return model, {**record, "source": f"trained, cached at {weights}"}


def _load_file(path: Path, spec: dict[str, Any], obs_shape: tuple[int, ...], n_actions: int) -> tuple[MLP, dict]:
    if not path.exists():
        raise ConfigError(f"teacher.path {path} does not exist")
    if path.suffix == ".zip":
        import stable_baselines3 as sb3

        cls = sb3.DQN if spec["algo"] == "dqn" else sb3.PPO
        agent = cls.load(str(path), device="cpu")
        model = export_sb3(agent, obs_shape, n_actions, spec["width"], spec["depth"])
        return model, {**spec, "source": f"stable-baselines3 file {path}"}
    meta = path.with_suffix(".json")
    record = json.loads(meta.read_text()) if meta.exists() else {}
    width, depth = int(record.get("width", spec["width"])), int(record.get("depth", spec["depth"]))
    state = read_safetensors(path)
    out = state.get("fc.weight")
    if out is not None and out.shape[0] != n_actions:
        raise ConfigError(f"the teacher {path} has {out.shape[0]} actions but {spec['env']} has {n_actions}; give a "
                          "teacher trained on this environment")
    model = _mlp(obs_shape, n_actions, width, depth)
    try:
        model.load_state_dict(state)
    except RuntimeError:
        raise ConfigError(f"the teacher {path} does not fit a width-{width}, depth-{depth} MLP on {spec['env']} "
                          f"(observation {obs_shape}); write its width and depth in {meta.name}") from None
    return model.eval(), {**record, "source": f"file {path}"}
