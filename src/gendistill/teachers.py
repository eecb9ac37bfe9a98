"""What produces the targets. The student never needs to know which kind of teacher it learns from.

A teacher is called with a batch of inputs (and their indices) and returns :class:`Outputs` without
gradients. Every teacher model is frozen: ``requires_grad=False`` and eval mode, always.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import Tensor, nn

from .errors import ConfigError
from .knowledge.base import Outputs
from .knowledge.taps import TappedModel


def freeze(model: nn.Module) -> nn.Module:
    model.eval()
    for p in model.parameters():
        p.requires_grad_(False)
    return model


class FrozenTeacher:
    """A single frozen model. ``layers`` are tapped so feature-based terms can read them."""

    def __init__(self, model: nn.Module, layers: Sequence[str] = ()):
        self.model = freeze(model)
        self.layers = tuple(layers)
        self._run = TappedModel(model, self.layers, role="teacher")

    @property
    def models(self) -> list[nn.Module]:
        return [self.model]

    def to(self, device: torch.device) -> FrozenTeacher:
        self.model.to(device)
        return self

    def __call__(self, x: Tensor, index: Tensor | None = None, view: Tensor | None = None) -> Outputs:
        if self.model.training:  # stays in eval mode even if someone called .train() on it
            self.model.eval()
        # no_grad, not inference_mode: its outputs are normal tensors a student's loss can save for backward,
        # without copying the logits and every tapped feature map on each step
        with torch.no_grad():
            return self._run(x)

    def close(self) -> None:
        self._run.close()


class EnsembleTeacher:
    """Mean of the members' probabilities; its logits are ``log(mean_m softmax(z_m))``.

    gendistill's one definition of an ensemble teacher (the lineage's ``teacher: ensemble`` and
    ``multi_teacher``'s ``rule: ensemble``): the members' probabilities are averaged at temperature 1, and
    a term at temperature ``T`` softens that mean, ``softmax(log(mean_m p_m) / T)``. ``multi_teacher``'s
    ``rule: mean`` is the other common definition, the mean of the softened members,
    ``mean_m softmax(z_m / T)`` (the same at ``T = 1``)."""

    def __init__(self, models: Sequence[nn.Module], layers: Sequence[str] = ()):
        if not models:
            raise ValueError("an ensemble teacher needs at least one model")
        if layers:
            raise ConfigError(
                "feature-based terms need one teacher network, but the teacher is an ensemble; "
                "use generations.teacher=previous or a logit-based objective"
            )
        self.members = [FrozenTeacher(m) for m in models]
        self.layers = ()

    @property
    def models(self) -> list[nn.Module]:
        return [m.model for m in self.members]

    def to(self, device: torch.device) -> EnsembleTeacher:
        for m in self.members:
            m.to(device)
        return self

    @torch.no_grad()
    def __call__(self, x: Tensor, index: Tensor | None = None, view: Tensor | None = None) -> Outputs:
        probs = torch.stack([m(x).logits.float().softmax(-1) for m in self.members]).mean(0)
        return Outputs(probs.clamp_min(1e-12).log())

    def close(self) -> None:
        for m in self.members:
            m.close()


# ------------------------------------------------------------------------------------------ output cache


def fingerprint(models: Sequence[nn.Module], x: Tensor) -> str:
    """A key that changes when any teacher weight or the inputs change (full hash of weights, and of the
    inputs' shape plus a strided sample of their values)."""
    import hashlib

    h = hashlib.sha256()
    for m in models:
        for k, v in m.state_dict().items():
            h.update(k.encode())
            h.update(v.detach().cpu().contiguous().view(-1).view(torch.uint8).numpy().tobytes())
    flat = x.detach().reshape(-1)
    step = max(1, flat.numel() // 65536)
    h.update(str(tuple(x.shape)).encode())
    h.update(flat[::step].float().cpu().numpy().tobytes())
    return h.hexdigest()[:20]


class CachedTeacher:
    """Teacher outputs computed once over the training inputs, then looked up by sample index.

    A generation's teacher is fixed and, without random augmentation, its inputs are too, so running it on
    every step of every epoch repeats the same computation. The cache holds logits (and tapped features, when
    a knowledge term needs them) in ``dtype`` (float16 by default): in memory, or memory-mapped in the run
    directory (``<path>.npy`` plus a key file) when larger than ``mmap_mb``. Calls without ``index`` (inputs
    that are not training samples) fall through to the live teacher.
    """

    def __init__(self, live, logits: Tensor, features: dict[str, Tensor] | None = None, how: str = "in memory"):
        self.live = live
        self.logits = logits
        self.features = features or {}
        self.layers = tuple(self.features)
        self.how = how
        self.views = logits.shape[0] if logits.ndim == 3 else 0
        self._lookup: tuple[Tensor, dict[str, Tensor]] | None = None  # float32 copies, see _prepare

    # float32 copies of an in-memory cache up to this size, so a step gathers without converting
    FLOAT32_COPY_MB = 256.0

    def _prepare(self) -> tuple[Tensor, dict[str, Tensor]] | None:
        """The stored outputs in float32, converted once (float16 -> float32 is exact, so a step reads the same
        values as converting its gathered rows), for in-memory caches whose float32 copy fits
        ``FLOAT32_COPY_MB``; ``None`` otherwise (memory-mapped or large: rows are converted per step)."""
        if self.how.startswith("memory-mapped"):
            return None
        tensors = [self.logits, *self.features.values()]
        if sum(t.numel() for t in tensors) * 4 / 2**20 > self.FLOAT32_COPY_MB:
            return None
        return self.logits.float(), {k: v.float() for k, v in self.features.items()}

    @property
    def models(self) -> list[nn.Module]:
        return self.live.models

    def to(self, device: torch.device) -> CachedTeacher:
        self.live.to(device)
        if not self.how.startswith("memory-mapped"):
            self.logits = self.logits.to(device)
            self.features = {k: v.to(device) for k, v in self.features.items()}
        self._lookup = self._prepare()
        return self

    def __call__(self, x: Tensor, index: Tensor | None = None, view: Tensor | None = None) -> Outputs:
        if index is None:
            return self.live(x)
        dev = x.device
        idx = index.to(self.logits.device)
        if self.views:  # replayed augmentation: outputs of recorded view ``view[i]`` of sample ``index[i]``
            if view is None:
                raise RuntimeError("this teacher cache holds augmented views; the batch must say which view")
            key = (view.to(self.logits.device), idx)
        else:
            key = idx
        if self._lookup is not None and self._lookup[0].device == self.logits.device:
            logits, features = self._lookup
            return Outputs(logits[key].to(dev, non_blocking=True),
                           {k: v[key].to(dev, non_blocking=True) for k, v in features.items()} if features else {})
        logits = self.logits[key].to(dev, non_blocking=True).float()
        feats = {k: v[key].to(dev, non_blocking=True).float() for k, v in self.features.items()}
        return Outputs(logits, feats)

    def close(self) -> None:
        self.live.close()

    def describe(self) -> str:
        n, c = self.logits.shape[-2:]
        extra = f" + features {list(self.features)}" if self.features else ""
        if self.views:
            extra += f", {self.views} replayed augmented views per sample"
        return f"cached teacher outputs ({n} x {c} logits{extra}, {str(self.logits.dtype).removeprefix('torch.')}, {self.how})"

    @classmethod
    def from_logits(cls, live, logits: Tensor, dtype: torch.dtype = torch.float16) -> CachedTeacher:
        """Wrap logits that were already computed (e.g. by the lineage's evaluation pass)."""
        return cls(live, logits.to(dtype), None, "in memory, reused from the evaluation pass")

    @classmethod
    def build_views(cls, live, plan, *, batch_size: int = 1024, dtype: torch.dtype = torch.float16) -> CachedTeacher:
        """Teacher outputs on every recorded augmented view of every training sample (``plan.views`` passes)."""
        dev = next(live.models[0].parameters()).device
        n = len(plan.x_full)
        logits, feats = [], []
        for v in range(plan.views):
            chunk_l, chunk_f = [], []
            for i in range(0, n, batch_size):
                out = live(plan.view_inputs(v, i, min(n, i + batch_size)).to(dev))
                chunk_l.append(out.logits.to(dtype))
                chunk_f.append({k: t.to(dtype) for k, t in out.features.items()})
            logits.append(torch.cat(chunk_l))
            feats.append({k: torch.cat([c[k] for c in chunk_f]) for k in chunk_f[0]})
        stacked = {k: torch.stack([f[k] for f in feats]) for k in feats[0]}
        mb = (sum(t.numel() * t.element_size() for t in stacked.values()) + sum(t.numel() * t.element_size() for t in logits)) / 2**20
        return cls(live, torch.stack(logits), stacked, f"in memory ({mb:.1f} MB)")

    @classmethod
    def build(cls, live, x: Tensor, *, batch_size: int = 1024, dtype: torch.dtype = torch.float16,
              path: str | None = None, mmap_mb: float = 512.0) -> CachedTeacher:
        """One inference pass of ``live`` over ``x``. With ``path`` and an output larger than ``mmap_mb``,
        the outputs go to memory-mapped ``.npy`` files whose key (teacher weights + inputs) is checked on
        reuse; a stale file is recomputed."""
        import os

        import numpy as np

        from .io import read_json, write_json

        dev = next(live.models[0].parameters()).device
        probe = live(x[:1].to(dev))
        shapes = {"logits": tuple(probe.logits.shape[1:]), **{k: tuple(v.shape[1:]) for k, v in probe.features.items()}}
        itemsize = torch.empty((), dtype=dtype).element_size()
        total_mb = sum(len(x) * int(np.prod(s)) * itemsize for s in shapes.values()) / 2**20
        np_dtype = np.float16 if dtype == torch.float16 else np.float32
        use_mmap = path is not None and total_mb > mmap_mb
        if use_mmap:
            key = fingerprint(live.models, x)
            key_file = f"{path}.key.json"
            arrays = {}
            fresh = os.path.exists(key_file) and read_json(key_file).get("key") == key
            for name, shape in shapes.items():
                file = f"{path}.{name.replace('/', '_')}.npy"
                if fresh and os.path.exists(file):
                    arrays[name] = np.load(file, mmap_mode="r+")  # writable view: torch warns on read-only arrays
                else:
                    fresh = False
                    arrays[name] = np.lib.format.open_memmap(file, mode="w+", dtype=np_dtype, shape=(len(x), *shape))
            if not fresh:
                for i in range(0, len(x), batch_size):
                    out = live(x[i : i + batch_size].to(dev))
                    arrays["logits"][i : i + batch_size] = out.logits.float().cpu().numpy()
                    for k, v in out.features.items():
                        arrays[k][i : i + batch_size] = v.float().cpu().numpy()
                for a in arrays.values():
                    a.flush()
                write_json(key_file, {"key": key, "dtype": str(np_dtype.__name__), "samples": len(x)})
            tensors = {k: torch.from_numpy(np.asarray(v)) for k, v in arrays.items()}
            how = f"memory-mapped at {path}.*.npy ({total_mb:.0f} MB)" + ("" if fresh else ", computed now")
        else:
            chunks: dict[str, list[Tensor]] = {k: [] for k in shapes}
            for i in range(0, len(x), batch_size):
                out = live(x[i : i + batch_size].to(dev))
                chunks["logits"].append(out.logits.to(dtype))
                for k, v in out.features.items():
                    chunks[k].append(v.to(dtype))
            tensors = {k: torch.cat(v) for k, v in chunks.items()}
            how = f"in memory ({total_mb:.1f} MB)"
        logits = tensors.pop("logits")
        return cls(live, logits, tensors, how)
