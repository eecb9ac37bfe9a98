"""Feature-based knowledge: terms that match intermediate feature maps of student and teacher.

Every term here reads tapped features (``Outputs.features``) named by its ``layers`` option, which is

* a layer name, the same on both sides: ``layers: layer3``;
* a pair: ``layers: {student: layer2, teacher: layer3}``;
* for multi-layer methods (AT, FSP, NST) a list of those: ``layers: [layer1, layer2, layer3]``.

Features may be ``(N, C)``, ``(N, C, L)`` (1-D convolutions) or ``(N, C, H, W)``; spatial dimensions are
handled generically. Where student and teacher maps differ in spatial size, the larger one is average-pooled
(adaptively) to the smaller one. Teacher features are always detached; everything is computed in float32.

Learned adapters (the FitNets regressor, the VID mean network) are parameters of the term: the trainer puts
``objective.parameters()`` in the optimizer and drops them when the student is exported. Their channel
counts are read from the first batch (lazy modules), so the trainer runs the objective once before it builds
the optimizer; a state dict saved after that loads into a fresh, not yet called term.
"""

from __future__ import annotations

import functools
import math
from collections.abc import Callable
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor, nn
from torch.nn.modules.lazy import LazyModuleMixin
from torch.nn.parameter import UninitializedBuffer, UninitializedParameter

from ..errors import ConfigError
from ..registry import METHODS
from .base import Batch, KnowledgeTerm, Outputs

# --------------------------------------------------------------------------------------------------------
# layer specs


def layer_pair(spec: Any) -> tuple[str, str]:
    """``"layer3"`` -> ``("layer3", "layer3")``; ``{student: a, teacher: b}`` -> ``(a, b)``."""
    if isinstance(spec, str) and spec:
        return spec, spec
    if isinstance(spec, dict) and set(spec) == {"student", "teacher"}:
        s, t = spec["student"], spec["teacher"]
        if isinstance(s, str) and s and isinstance(t, str) and t:
            return s, t
    raise ValueError(
        f"a layer is a submodule name (e.g. 'layer3') or {{student: <name>, teacher: <name>}}; got {spec!r}"
    )


def layer_pairs(spec: Any, *, term: str, min_count: int = 1, multi: bool = True) -> list[tuple[str, str]]:
    """Parse a ``layers`` option into a list of (student layer, teacher layer) pairs."""
    if spec is None:
        raise ValueError(
            f"{term} needs 'layers': a layer name such as 'layer3', or {{student: ..., teacher: ...}}"
            + (", or a list of those" if multi else "")
        )
    if isinstance(spec, (list, tuple)):
        if not multi:
            raise ValueError(
                f"{term} reads one layer; give a name or {{student: ..., teacher: ...}}, not a list"
            )
        specs = list(spec)
    else:
        specs = [spec]
    if len(specs) < min_count:
        raise ValueError(f"{term} needs at least {min_count} layers, got {len(specs)}")
    return [layer_pair(s) for s in specs]


def unique(names: Any) -> tuple[str, ...]:
    return tuple(dict.fromkeys(names))


def layer_chain(layers: Any, *, term: str) -> tuple[list[tuple[str, str]], tuple[str, ...], tuple[str, ...]]:
    """A chain of at least two layers ``[l1, l2, ...]`` (terms on consecutive pairs: FSP, MHGD, LONDON):
    its (student, teacher) pairs, then the student's and the teacher's layer names."""
    if layers is not None and not isinstance(layers, (list, tuple)):
        raise ValueError(f"{term} needs a list of at least two layers, e.g. [layer1, layer2, layer3]")
    pairs = layer_pairs(layers, term=term, min_count=2)
    return pairs, unique(s for s, _ in pairs), unique(t for _, t in pairs)


def channel_adapter(adapters: nn.ModuleList, i: int, x: Tensor, channels: int, *, auto: bool = True) -> nn.Module | None:
    """Slot ``i`` of a list of lazy channel adapters, for input ``x`` going to ``channels``: the adapter to
    apply, or ``None`` (an ``Identity`` slot; or, with ``auto``, an adapter not built yet whose input already has
    ``channels``: it becomes ``Identity`` here, on the first call, before the trainer builds the optimizer)."""
    a = adapters[i]
    if isinstance(a, nn.Identity):
        return None
    if auto and x.shape[1] == channels and any(isinstance(p, UninitializedParameter) for p in a.parameters()):
        adapters[i] = nn.Identity()
        return None
    return a


# --------------------------------------------------------------------------------------------------------
# tensor helpers


def float32_forward(forward: Callable[..., Tensor]) -> Callable[..., Tensor]:
    """Run a term's ``forward`` with autocast off, so its matmuls stay in float32 under mixed precision."""

    @functools.wraps(forward)
    def wrapper(self: KnowledgeTerm, student: Outputs, teacher: Outputs | None, batch: Batch) -> Tensor:
        device_type = student.logits.device.type
        if not torch.amp.is_autocast_available(device_type):
            return forward(self, student, teacher, batch)
        with torch.autocast(device_type=device_type, enabled=False):
            return forward(self, student, teacher, batch)

    return wrapper


def student_feature(out: Outputs, name: str) -> Tensor:
    return out.feature(name).float()


def teacher_feature(out: Outputs, name: str) -> Tensor:
    return out.feature(name).detach().float()


def as_ncs(x: Tensor) -> Tensor:
    """``(N, C, *spatial)`` -> ``(N, C, S)`` with ``S`` the number of positions (1 for ``(N, C)``)."""
    return x.reshape(x.shape[0], x.shape[1], -1)


def pool_to(x: Tensor, size: tuple[int, ...]) -> Tensor:
    """Adaptive average pooling of the spatial dims of ``x`` to ``size`` (a no-op when already that size)."""
    if tuple(x.shape[2:]) == tuple(size):
        return x
    pools = {1: F.adaptive_avg_pool1d, 2: F.adaptive_avg_pool2d, 3: F.adaptive_avg_pool3d}
    return pools[len(size)](x, size)


def match_spatial(a: Tensor, b: Tensor, what: str = "features") -> tuple[Tensor, Tensor]:
    """Pool ``a`` and ``b`` to their common (element-wise smaller) spatial size."""
    if a.dim() != b.dim():
        raise ConfigError(
            f"{what}: cannot match a {a.dim()}-D feature {tuple(a.shape)} with a {b.dim()}-D feature "
            f"{tuple(b.shape)}; tap layers of the same kind"
        )
    if a.dim() <= 2:
        return a, b
    size = tuple(min(p, q) for p, q in zip(a.shape[2:], b.shape[2:], strict=True))
    return pool_to(a, size), pool_to(b, size)


def require_spatial(x: Tensor, term: str, layer: str) -> None:
    if x.dim() < 3:
        raise ConfigError(
            f"{term} needs spatial feature maps (N, C, L) or (N, C, H, W); layer {layer!r} gives shape "
            f"{tuple(x.shape)}. Tap a convolutional layer."
        )


def channel_linear(x: Tensor, weight: Tensor, bias: Tensor | None) -> Tensor:
    """A 1x1 convolution for any number of spatial dims: ``y[n, o, ...] = sum_c W[o, c] x[n, c, ...] + b[o]``."""
    return F.linear(x.movedim(1, -1), weight, bias).movedim(-1, 1)


class LazyChannelMLP(LazyModuleMixin, nn.Module):
    """``depth`` 1x1 convolutions with ReLU between them; in/out channels come from the first call.

    ``forward(x, out_channels)`` maps ``(N, C_in, *spatial)`` to ``(N, out_channels, *spatial)``. Hidden
    layers have ``hidden`` channels (default: ``out_channels``). Parameters are created on ``x``'s device, in
    float32, with the default ``nn.Linear`` initialisation. ``weight0, bias0, weight1, ...`` are plain
    attributes, so tests can set them (e.g. to the identity) after the first call.
    """

    def __init__(self, depth: int = 1, hidden: int | None = None, bias: bool = True):
        super().__init__()
        if depth < 1:
            raise ValueError(f"depth must be >= 1, got {depth}")
        if hidden is not None and hidden < 1:
            raise ValueError(f"hidden channels must be >= 1, got {hidden}")
        self.depth = depth
        self.hidden = hidden
        for k in range(depth):
            self.register_parameter(f"weight{k}", UninitializedParameter())
            self.register_parameter(f"bias{k}", UninitializedParameter() if bias else None)

    def initialize_parameters(self, x: Tensor, out_channels: int) -> None:
        if not self.has_uninitialized_params():
            return
        hidden = self.hidden or out_channels
        dims = [x.shape[1]] + [hidden] * (self.depth - 1) + [out_channels]
        with torch.no_grad():
            for k in range(self.depth):
                w, b = getattr(self, f"weight{k}"), getattr(self, f"bias{k}")
                w.materialize((dims[k + 1], dims[k]), device=x.device, dtype=torch.float32)
                nn.init.kaiming_uniform_(w, a=math.sqrt(5))
                if b is not None:
                    b.materialize((dims[k + 1],), device=x.device, dtype=torch.float32)
                    bound = 1.0 / math.sqrt(dims[k])
                    nn.init.uniform_(b, -bound, bound)

    def forward(self, x: Tensor, out_channels: int) -> Tensor:
        h = x.float()
        for k in range(self.depth):
            w, b = getattr(self, f"weight{k}"), getattr(self, f"bias{k}")
            if k == self.depth - 1 and w.shape[0] != out_channels:
                raise RuntimeError(
                    f"adapter was built for {w.shape[0]} output channels, now asked for {out_channels}"
                )
            h = channel_linear(h, w, b)
            if k < self.depth - 1:
                h = F.relu(h)
        return h


class LazyChannelBatchNorm(LazyModuleMixin, nn.Module):
    """Batch normalisation over channel 1 of ``(N, C, *spatial)`` (any number of spatial dims), with the
    channel count read from the first call; ``nn.BatchNorm*d``'s defaults (momentum 0.1, eps 1e-5, affine)."""

    def __init__(self, momentum: float = 0.1, eps: float = 1e-5):
        super().__init__()
        self.momentum, self.eps = momentum, eps
        self.weight = UninitializedParameter()
        self.bias = UninitializedParameter()
        self.register_buffer("running_mean", UninitializedBuffer())
        self.register_buffer("running_var", UninitializedBuffer())

    def initialize_parameters(self, x: Tensor) -> None:
        if not self.has_uninitialized_params():
            return
        c = x.shape[1]
        with torch.no_grad():
            for t, fill in ((self.weight, 1.0), (self.bias, 0.0), (self.running_mean, 0.0), (self.running_var, 1.0)):
                t.materialize((c,), device=x.device, dtype=torch.float32)
                t.fill_(fill)

    def forward(self, x: Tensor) -> Tensor:
        return F.batch_norm(x, self.running_mean, self.running_var, self.weight, self.bias, self.training,
                            self.momentum, self.eps)


class HintRegressor(nn.Module):
    """FitNets' regressor ``r``: a 1x1 convolution to the teacher's channels, then (``kind="conv_bn_relu"``,
    RepDistiller's ``ConvReg``) batch norm and ReLU, so ``r(h_s)`` lives where the teacher's post-BN, post-ReLU
    hint does; ``kind="conv"`` is the bare 1x1 convolution."""

    def __init__(self, kind: str):
        super().__init__()
        self.kind = kind
        self.conv = LazyChannelMLP(depth=1)
        self.bn = LazyChannelBatchNorm() if kind == "conv_bn_relu" else None

    def forward(self, x: Tensor, out_channels: int) -> Tensor:
        h = self.conv(x, out_channels)
        return h if self.bn is None else F.relu(self.bn(h))


class SpatialPairTerm(KnowledgeTerm):
    """Shared ``layers`` handling of terms that compare spatial maps layer pair by layer pair (AT, NST):
    ``L = sum_pairs pair_loss(F_s, F_t)``, both maps pooled to their common spatial size first."""

    def __init__(self, layers: Any = None):
        super().__init__()
        self.pairs = layer_pairs(layers, term=self.name)
        self.student_layers = unique(s for s, _ in self.pairs)
        self.teacher_layers = unique(t for _, t in self.pairs)

    def pair_loss(self, fs: Tensor, ft: Tensor) -> Tensor:
        raise NotImplementedError

    @float32_forward
    def forward(self, student: Outputs, teacher: Outputs | None, batch: Batch) -> Tensor:
        total = None
        for s_name, t_name in self.pairs:
            fs, ft = student_feature(student, s_name), teacher_feature(teacher, t_name)
            require_spatial(fs, self.name, s_name)
            require_spatial(ft, self.name, t_name)
            loss = self.pair_loss(*match_spatial(fs, ft, self.name))
            total = loss if total is None else total + loss
        return total


def check_procedure(term: str, procedure: str, stage1_epochs: int | None) -> None:
    if procedure not in ("two_stage", "joint"):
        raise ValueError(f"{term} procedure must be 'two_stage' or 'joint', got {procedure!r}")
    if stage1_epochs is not None and (
        isinstance(stage1_epochs, bool) or not isinstance(stage1_epochs, int) or stage1_epochs < 1
    ):
        raise ValueError(f"stage1_epochs must be a positive integer or null, got {stage1_epochs!r}")


def first_stage(stage1_epochs: int | None, epochs: int) -> int:
    """Epochs of stage 1: ``stage1_epochs`` if given, else ``max(1, round(epochs / 9))`` (RepDistiller's 30
    initialisation epochs before 240), and always at least one epoch short of the run."""
    k = stage1_epochs if stage1_epochs is not None else max(1, round(epochs / 9))
    return max(0, min(k, epochs - 1))


# --------------------------------------------------------------------------------------------------------
# terms


@METHODS.register(
    "fitnet",
    kind="feature",
    paper="Romero, Ballas, Kahou, Chassang, Gatta & Bengio 2015, FitNets: Hints for Thin Deep Nets "
    "(ICLR 2015, arXiv:1412.6550)",
)
class FitNet(KnowledgeTerm):
    """FitNets hint loss (Romero et al. 2015).

    ``L = mean_{n,c,positions} ( r(h_s) - h_t )^2``

    with ``h_s`` the student's *guided* layer, ``h_t`` the teacher's *hint* layer and ``r`` the learned
    regressor. By default (``regressor: conv_bn_relu``) ``r`` is RepDistiller's ``ConvReg``: a convolution
    to the teacher's channel count, batch norm and ReLU, so it matches a post-BN, post-ReLU hint (the
    value equals RepDistiller's ``HintLoss(ConvReg(h_s), h_t)``, pinned in ``tests/test_reference_values.py``).
    ``regressor: conv`` is a bare 1x1 convolution (a linear map for ``(N, C)`` features; gendistill's
    earlier default), ``false`` the identity (equal channel counts needed). The paper's ``1/2 ||.||^2``
    summed over elements differs from this mean by a constant factor, absorbed in the term's weight.
    Spatial sizes are matched by average-pooling the larger map; ``ConvReg`` (and the paper) shrink the map
    with the convolution's kernel instead.

    Training stages: the paper first trains the student up to the guided layer on this loss alone (stage
    1), then the whole student with KD (stage 2). ``procedure: two_stage`` runs those two stages within one
    generation: the first ``stage1_epochs`` epochs on the hint alone (the layers above the guided one get no
    gradient from it), then the rest of the objective (e.g. ``ce`` + ``kd``) without it; one optimizer and
    learning-rate schedule span both stages. The default, ``procedure: joint``, adds the hint for the whole
    run, as RepDistiller's "FitNet" baseline (the figure most papers compare with) does.

    Args:
        layers: the student and teacher layer (one name, or ``{student: ..., teacher: ...}``).
        regressor: ``conv_bn_relu`` (default, RepDistiller's ConvReg), ``conv`` (1x1 conv only) or
            ``false`` (identity). ``true`` means the default.
        procedure: ``joint`` (default) or ``two_stage`` (the paper's hint pre-training, then the rest).
        stage1_epochs: epochs of stage 1 (default: ``max(1, round(epochs / 9))``).
    """

    name = "fitnet"

    def __init__(self, layers: Any = None, regressor: bool | str = "conv_bn_relu", procedure: str = "joint",
                 stage1_epochs: int | None = None):
        super().__init__()
        check_procedure(self.name, procedure, stage1_epochs)
        self.procedure, self._stage1 = procedure, stage1_epochs
        ((s, t),) = layer_pairs(layers, term=self.name, multi=False)
        self.student_layers, self.teacher_layers = (s,), (t,)
        if regressor is True:
            regressor = "conv_bn_relu"
        if regressor not in ("conv_bn_relu", "conv", False):
            raise ValueError(f"fitnet regressor must be 'conv_bn_relu', 'conv' or false, got {regressor!r}")
        self.regressor = HintRegressor(regressor) if regressor else None

    def stage1_epochs(self, epochs: int) -> int:
        return first_stage(self._stage1, epochs) if self.procedure == "two_stage" else 0

    @float32_forward
    def forward(self, student: Outputs, teacher: Outputs | None, batch: Batch) -> Tensor:
        hs = student_feature(student, self.student_layers[0])
        ht = teacher_feature(teacher, self.teacher_layers[0])
        hs, ht = match_spatial(hs, ht, self.name)
        if self.regressor is not None:
            hs = self.regressor(hs, ht.shape[1])
        elif hs.shape[1] != ht.shape[1]:
            raise ConfigError(
                f"fitnet with regressor: false needs equal channels; student {self.student_layers[0]!r} has "
                f"{hs.shape[1]}, teacher {self.teacher_layers[0]!r} has {ht.shape[1]}"
            )
        return F.mse_loss(hs, ht)


def attention_map(f: Tensor, p: float) -> Tensor:
    """``Q = mean_c |f_c|^p`` flattened over positions and L2-normalised: ``(N, C, *S) -> (N, prod S)``."""
    q = f.abs().pow(p).mean(dim=1).reshape(f.shape[0], -1)
    return F.normalize(q, dim=1)


@METHODS.register(
    "at",
    kind="feature",
    paper="Zagoruyko & Komodakis 2017, Paying More Attention to Attention: Improving the Performance of "
    "Convolutional Neural Networks via Attention Transfer (ICLR 2017, arXiv:1612.03928)",
)
class AttentionTransfer(SpatialPairTerm):
    """Activation-based attention transfer (Zagoruyko & Komodakis 2017).

    For each layer pair ``j``, the attention map ``Q = vec( sum_c |A_c|^p )`` (here the mean over channels,
    which is the same after normalisation) is L2-normalised, and

    ``L = sum_j mean_{n,k} ( Q_s,j / ||Q_s,j|| - Q_t,j / ||Q_t,j|| )_k^2``

    as in the authors' code (``(at(x) - at(y)).pow(2).mean()``; the paper's ``beta / 2`` with
    ``beta = 1000`` goes into the term's weight). Channel counts may differ; spatial sizes are matched by
    average-pooling the larger map before the attention map is taken.

    Args:
        layers: one layer or a list of layers (names or ``{student: ..., teacher: ...}``).
        p: exponent of the attention map (the paper uses 2).
    """

    name = "at"

    def __init__(self, layers: Any = None, p: float = 2.0):
        super().__init__(layers)
        if not p > 0:
            raise ValueError(f"p must be > 0, got {p}")
        self.p = float(p)

    def pair_loss(self, fs: Tensor, ft: Tensor) -> Tensor:
        return (attention_map(fs, self.p) - attention_map(ft, self.p)).pow(2).mean()


def fsp_matrix(a: Tensor, b: Tensor) -> Tensor:
    """``G[n, i, j] = (1/S) sum_x a[n, i, x] b[n, j, x]`` after pooling both to a common spatial size."""
    a, b = match_spatial(a, b, "fsp")
    a, b = as_ncs(a), as_ncs(b)
    return torch.bmm(a, b.transpose(1, 2)) / a.shape[2]


@METHODS.register(
    "fsp",
    kind="feature",
    paper="Yim, Joo, Bae & Kim 2017, A Gift from Knowledge Distillation: Fast Optimization, Network "
    "Minimization and Transfer Learning (CVPR 2017; no arXiv version)",
)
class FSP(KnowledgeTerm):
    """Flow of Solution Procedure (Yim et al. 2017).

    For consecutive listed layers ``(F1, F2)`` of one network, the FSP matrix is the Gram matrix across
    positions ``G[i, j] = (1/S) sum_x F1_i(x) F2_j(x)`` (``S`` positions; the larger map of the two is
    average-pooled to the smaller). With ``G_s``, ``G_t`` from student and teacher:

    ``L = sum_pairs mean_{n,i,j} ( G_s - G_t )^2``

    (the paper sums the squared entries; the mean only rescales the weight). ``G`` is ``C1 x C2``, so the
    paper pairs layers of equal channel counts. Where a student layer has fewer (or more) channels than its
    teacher layer, a learned 1x1 convolution ``r_l`` (trained with the student, dropped at export) maps the
    student's feature to the teacher's channel count first: ``G_s = G(r_1(F1_s), r_2(F2_s))``. Spatial sizes
    may differ between the two networks.

    Args:
        layers: a list of at least two layers ``[l1, l2, l3, ...]``; FSP matrices are taken for
            ``(l1, l2), (l2, l3), ...`` (each a name or ``{student: ..., teacher: ...}``).
        adapter: ``"auto"`` (default) adapts only the layers whose channel counts differ, ``true`` every
            layer, ``false`` none (then unequal channels are an error, as in the paper).
        procedure: ``two_stage`` (default, the paper's and RepDistiller's procedure) or ``joint``.
        stage1_epochs: epochs of stage 1 (default: ``max(1, round(epochs / 9))``, RepDistiller's 30 of 270).

    Procedure: the paper (and RepDistiller's ``init`` stage) trains the student on the FSP loss alone first,
    then trains it for the task *without* FSP. That is the default here, ``procedure: two_stage``: the first
    ``stage1_epochs`` epochs train on this term alone, the remaining ones on the objective's other terms
    (``ce``, and ``kd`` if given) alone; one optimizer and schedule span both stages (RepDistiller restarts
    the optimizer between them). ``procedure: joint`` adds FSP to the objective for the whole run (the
    default before issue 13). The staging needs a scheme that forwards epochs to the objective (``offline``,
    the default, does).
    """

    name = "fsp"

    def __init__(self, layers: Any = None, adapter: bool | str = "auto", procedure: str = "two_stage",
                 stage1_epochs: int | None = None):
        super().__init__()
        check_procedure(self.name, procedure, stage1_epochs)
        self.procedure, self._stage1 = procedure, stage1_epochs
        self.layers, self.student_layers, self.teacher_layers = layer_chain(layers, term=self.name)
        if adapter not in ("auto", True, False):
            raise ValueError(f"fsp adapter must be 'auto', true or false, got {adapter!r}")
        self.adapter = adapter
        # one lazy 1x1 conv per layer of the chain; "auto" swaps it for Identity on the first call where the
        # channel counts already agree (before the trainer builds the optimizer)
        self.adapters = nn.ModuleList(LazyChannelMLP(depth=1) if adapter else nn.Identity() for _ in self.layers)

    def stage1_epochs(self, epochs: int) -> int:
        return first_stage(self._stage1, epochs) if self.procedure == "two_stage" else 0

    def _adapt(self, i: int, hs: Tensor, channels: int) -> Tensor:
        a = channel_adapter(self.adapters, i, hs, channels, auto=self.adapter == "auto")
        return hs if a is None else a(hs, channels)

    @float32_forward
    def forward(self, student: Outputs, teacher: Outputs | None, batch: Batch) -> Tensor:
        feats_t = [teacher_feature(teacher, t) for _, t in self.layers]
        feats_s = [self._adapt(i, student_feature(student, s), ft.shape[1])
                   for i, ((s, _), ft) in enumerate(zip(self.layers, feats_t, strict=True))]
        total = None
        for i in range(len(self.layers) - 1):
            gs = fsp_matrix(feats_s[i], feats_s[i + 1])
            gt = fsp_matrix(feats_t[i], feats_t[i + 1])
            if gs.shape != gt.shape:
                (s1, t1), (s2, t2) = self.layers[i], self.layers[i + 1]
                raise ConfigError(
                    f"fsp with adapter: false needs equal channel counts in student and teacher: student "
                    f"({s1}, {s2}) gives a {tuple(gs.shape[1:])} FSP matrix, teacher ({t1}, {t2}) a "
                    f"{tuple(gt.shape[1:])} one; set adapter: auto to learn 1x1 adapters"
                )
            loss = (gs - gt).pow(2).mean()
            total = loss if total is None else total + loss
        return total


def poly_mmd2(a: Tensor, b: Tensor, degree: int, c: float) -> Tensor:
    """Per-sample squared MMD between the row sets of ``a[n]`` and ``b[n]`` with ``k(x, y) = (x.y + c)^d``."""

    def k(x: Tensor, y: Tensor) -> Tensor:
        return (torch.bmm(x, y.transpose(1, 2)) + c).pow(degree).mean(dim=(1, 2))

    return k(a, a) + k(b, b) - 2 * k(a, b)


@METHODS.register(
    "nst",
    kind="feature",
    paper="Huang & Wang 2017, Like What You Like: Knowledge Distill via Neuron Selectivity Transfer "
    "(arXiv:1707.01219)",
)
class NST(SpatialPairTerm):
    """Neuron Selectivity Transfer (Huang & Wang 2017).

    Each channel's map ``f_k`` (a vector over the ``S`` positions) is L2-normalised. For every sample, the
    student's ``C_s`` maps and the teacher's ``C_t`` maps are two samples from distributions compared by the
    squared maximum mean discrepancy with the polynomial kernel ``k(x, y) = (x^T y + c)^d``:

    ``MMD^2 = (1/C_t^2) sum_{i,i'} k(t_i, t_i') + (1/C_s^2) sum_{j,j'} k(s_j, s_j') - (2/(C_s C_t)) sum_{i,j} k(s_j, t_i)``

    ``L = sum_layers mean_n MMD^2``. The paper's choice is ``d = 2, c = 0`` and a weight ``lambda / 2`` with
    ``lambda = 50``. Channel counts may differ; spatial sizes are matched by pooling the larger map.

    Args:
        layers: one layer or a list of layers (names or ``{student: ..., teacher: ...}``).
        degree: kernel degree ``d`` (integer >= 1).
        c: kernel offset ``c`` (>= 0).
    """

    name = "nst"

    def __init__(self, layers: Any = None, degree: int = 2, c: float = 0.0):
        super().__init__(layers)
        if isinstance(degree, bool) or not isinstance(degree, int) or degree < 1:
            raise ValueError(f"degree must be an integer >= 1, got {degree!r}")
        if not c >= 0:
            raise ValueError(f"c must be >= 0, got {c}")
        self.degree, self.c = degree, float(c)

    def pair_loss(self, fs: Tensor, ft: Tensor) -> Tensor:
        fs, ft = F.normalize(as_ncs(fs), dim=2), F.normalize(as_ncs(ft), dim=2)
        return poly_mmd2(fs, ft, self.degree, self.c).mean()


class LazyChannelVariance(LazyModuleMixin, nn.Module):
    """Per-channel variance ``sigma_c^2 = softplus(alpha_c) + eps``, sized from the first call's channels."""

    def __init__(self, init_variance: float, eps: float):
        super().__init__()
        self.init_variance, self.eps = init_variance, eps
        self.alpha = UninitializedParameter()

    def initialize_parameters(self, target: Tensor) -> None:
        if not self.has_uninitialized_params():
            return
        with torch.no_grad():
            self.alpha.materialize((target.shape[1],), device=target.device, dtype=torch.float32)
            # inverse softplus, so that the initial variance is exactly init_variance
            self.alpha.fill_(math.log(math.expm1(self.init_variance - self.eps)))

    def forward(self, target: Tensor) -> Tensor:
        var = F.softplus(self.alpha) + self.eps
        return var.view(1, -1, *([1] * (target.dim() - 2)))


@METHODS.register(
    "vid",
    kind="feature",
    paper="Ahn, Hu, Damianou, Lawrence & Dai 2019, Variational Information Distillation for Knowledge "
    "Transfer (CVPR 2019, arXiv:1904.05835)",
)
class VID(KnowledgeTerm):
    """Variational Information Distillation (Ahn et al. 2019).

    Maximises a variational lower bound on the mutual information between teacher feature ``t`` and
    student feature ``s`` by fitting a Gaussian ``q(t | s) = N(mu(s), diag(sigma^2))`` with a learned mean
    network ``mu`` (three 1x1 convolutions without bias, ReLUs between them, as in the authors' code and
    RepDistiller's ``VIDLoss``; ``bias: true`` adds biases) and a learned
    per-channel variance ``sigma_c^2 = softplus(alpha_c) + eps`` (heteroscedastic in channels, constant
    over positions). The loss is the negative log-likelihood, without the constant ``log(2 pi) / 2``:

    ``L = mean_{n,c,positions} [ (t - mu(s))^2 / (2 sigma_c^2) + log(sigma_c^2) / 2 ]``

    (the paper sums over channels and positions; the mean rescales the weight). It is *not* zero when
    ``mu(s) = t``: its minimum over ``mu`` is ``mean_c log(sigma_c^2) / 2``, and ``sigma`` keeps shrinking as
    the fit improves. Spatial sizes are matched by pooling the larger map.

    Args:
        layers: the student and teacher layer (one name, or ``{student: ..., teacher: ...}``).
        hidden_channels: width of the mean network's hidden layers (default: the teacher's channels).
        init_variance: initial ``sigma^2`` (RepDistiller uses 5).
        eps: floor added to the variance.
        bias: give the mean network's convolutions biases (default ``False``, as the reference code).
    """

    name = "vid"

    def __init__(
        self,
        layers: Any = None,
        hidden_channels: int | None = None,
        init_variance: float = 5.0,
        eps: float = 1e-5,
        bias: bool = False,
    ):
        super().__init__()
        ((s, t),) = layer_pairs(layers, term=self.name, multi=False)
        self.student_layers, self.teacher_layers = (s,), (t,)
        if hidden_channels is not None and (
            isinstance(hidden_channels, bool) or not isinstance(hidden_channels, int) or hidden_channels < 1
        ):
            raise ValueError(f"hidden_channels must be a positive integer, got {hidden_channels!r}")
        if not eps > 0:
            raise ValueError(f"eps must be > 0, got {eps}")
        if not init_variance > eps:
            raise ValueError(f"init_variance must be > eps ({eps}), got {init_variance}")
        self.mean = LazyChannelMLP(depth=3, hidden=hidden_channels, bias=bool(bias))
        self.variance = LazyChannelVariance(float(init_variance), float(eps))

    @float32_forward
    def forward(self, student: Outputs, teacher: Outputs | None, batch: Batch) -> Tensor:
        hs = student_feature(student, self.student_layers[0])
        ht = teacher_feature(teacher, self.teacher_layers[0])
        hs, ht = match_spatial(hs, ht, self.name)
        mu = self.mean(hs, ht.shape[1])
        var = self.variance(ht)
        return (0.5 * ((ht - mu).pow(2) / var + var.log())).mean()


__all__ = [
    "FitNet",
    "AttentionTransfer",
    "FSP",
    "NST",
    "VID",
    "LazyChannelMLP",
    "attention_map",
    "fsp_matrix",
    "layer_pair",
    "layer_pairs",
    "match_spatial",
]
