"""Graph-based relational knowledge: terms that match graphs built over the samples of a batch.

* ``irg``: instance relationship graphs (Liu et al. 2019): vertices (the logits), edges (pairwise distances
  of each listed layer's features) and the transformation between consecutive layers.
* ``graph_kd``: graph knowledge distillation (Lassance et al. 2020): normalised cosine-similarity (k-NN)
  graphs of a layer's representations, matched between teacher and student; dimension-agnostic.
* ``mhgd``: multi-head graph distillation (Lee & Song 2019): multi-head attention graphs between the
  samples' embeddings at consecutive layers, learned on the teacher, matched by the student.

Teacher features are detached; everything is computed in float32.
"""

from __future__ import annotations

import math
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor, nn
from torch.nn.modules.lazy import LazyModuleMixin
from torch.nn.parameter import UninitializedBuffer, UninitializedParameter

from ..registry import METHODS
from .base import Batch, KnowledgeTerm, Outputs
from .feature import (
    LazyChannelMLP,
    channel_adapter,
    check_procedure,
    float32_forward,
    layer_chain,
    layer_pairs,
    pool_to,
    student_feature,
    teacher_feature,
    unique,
)


def _nonnegative(**values: float) -> None:
    for key, value in values.items():
        if not value >= 0:
            raise ValueError(f"{key} must be >= 0, got {value}")


# --------------------------------------------------------------------------------------------------------
# IRG


def irg_edges(f: Tensor, eps: float = 1e-12) -> Tensor:
    """``E[i, j] = ||f_i - f_j||^2 / max_{i,j} ||f_i - f_j||^2`` (zero diagonal), ``f`` flattened per sample."""
    f = f.reshape(f.shape[0], -1)
    sq = f.pow(2).sum(dim=1)
    d = (sq[:, None] + sq[None, :] - 2 * f @ f.t()).clamp_min(eps)
    d = d * (1.0 - torch.eye(f.shape[0], device=f.device, dtype=f.dtype))
    return d / d.max()


def _pool_channels(x: Tensor, channels: int) -> Tensor:
    """Average adjacent channels of ``(N, C, *S)`` down to ``channels`` (pairs when ``C = 2 channels``)."""
    if x.shape[1] == channels:
        return x
    n, c = x.shape[:2]
    flat = x.reshape(n, c, -1).transpose(1, 2)  # (N, S, C)
    return F.adaptive_avg_pool1d(flat, channels).transpose(1, 2).reshape(n, channels, *x.shape[2:])


def irg_transformation(f1: Tensor, f2: Tensor, eps: float = 1e-12) -> Tensor:
    """Per-sample squared distance between a network's features at two layers, ``||f1_i - f2_i||^2 / max_i``:
    the larger map is average-pooled to the smaller spatial size and the wider one's adjacent channels
    averaged down to the narrower count (the reference halves the channels of the later layer)."""
    if f1.dim() > 2 and f2.dim() > 2:
        size = tuple(min(p, q) for p, q in zip(f1.shape[2:], f2.shape[2:], strict=True))
        f1, f2 = pool_to(f1, size), pool_to(f2, size)
    c = min(f1.shape[1], f2.shape[1])
    f1, f2 = _pool_channels(f1, c), _pool_channels(f2, c)
    d = (f1.reshape(f1.shape[0], -1) - f2.reshape(f2.shape[0], -1)).pow(2).sum(dim=1).clamp_min(eps)
    return d / d.max()


@METHODS.register(
    "irg",
    kind="relation",
    paper="Liu, Cao, Li, Yuan, Hu, Li & Duan 2019, Knowledge Distillation via Instance Relationship Graph "
    "(CVPR 2019)",
)
class IRG(KnowledgeTerm):
    """Instance Relationship Graph (Liu et al. 2019).

    For a batch, the IRG of a layer has the samples' features as vertices and their pairwise squared
    Euclidean distances as edges, normalised by the largest, ``E_l[i, j] = ||f_i - f_j||^2 / max``; the IRG
    transformation between two layers ``l1 < l2`` of one network is the per-sample distance
    ``Tr[i] = ||f_i^{l1} - f_i^{l2}||^2 / max`` (the earlier map pooled to the later one's size, the wider
    one's adjacent channels averaged to the narrower count). With ``z`` the logits:

    ``L = w_v mean (z_s - z_t)^2 + w_e mean_l mean (E_l^s - E_l^t)^2 + w_t mean_(l1,l2) mean (Tr^s - Tr^t)^2``

    (transformations between consecutive ``transform_layers``, by default the ``layers``). The official code
    is Caffe; this follows the PyTorch re-implementation in Knowledge-Distillation-Zoo (AberHu), whose value
    it equals on its case (edges of two maps and the penultimate features, the transformation between the
    two maps; pinned in ``tests/test_reference_values.py``), and its weights ``w_v = 0.1, w_e = 5, w_t = 5``.
    Student and teacher widths may differ (edges and transformations live in ``N x N`` / ``N`` space); the
    logits must have the same number of classes.

    Args:
        layers: a layer or a list of layers (names or ``{student: ..., teacher: ...}``); edges for each.
        transform_layers: the layers whose consecutive pairs give transformations (default: ``layers``).
        vertex_weight / edge_weight / transform_weight: ``w_v``, ``w_e``, ``w_t`` (>= 0).
    """

    name = "irg"

    def __init__(self, layers: Any = None, vertex_weight: float = 0.1, edge_weight: float = 5.0,
                 transform_weight: float = 5.0, transform_layers: Any = None):
        super().__init__()
        self.pairs = layer_pairs(layers, term=self.name)
        self.transform_pairs = layer_pairs(transform_layers, term=self.name) if transform_layers else self.pairs
        self.student_layers = unique(s for s, _ in [*self.pairs, *self.transform_pairs])
        self.teacher_layers = unique(t for _, t in [*self.pairs, *self.transform_pairs])
        _nonnegative(vertex_weight=vertex_weight, edge_weight=edge_weight, transform_weight=transform_weight)
        self.vertex_weight, self.edge_weight = float(vertex_weight), float(edge_weight)
        self.transform_weight = float(transform_weight)

    @float32_forward
    def forward(self, student: Outputs, teacher: Outputs | None, batch: Batch) -> Tensor:
        if student.logits.shape[0] < 2:
            raise RuntimeError("irg relates samples within a batch and needs at least 2")
        fs = [student_feature(student, s) for s, _ in self.pairs]
        ft = [teacher_feature(teacher, t) for _, t in self.pairs]
        vertex = F.mse_loss(student.logits.float(), teacher.logits.detach().float())
        edge = sum(F.mse_loss(irg_edges(a), irg_edges(b)) for a, b in zip(fs, ft, strict=True)) / len(fs)
        total = self.vertex_weight * vertex + self.edge_weight * edge
        gs = [student_feature(student, s) for s, _ in self.transform_pairs]
        gt = [teacher_feature(teacher, t) for _, t in self.transform_pairs]
        if len(gs) > 1:
            tr = sum(F.mse_loss(irg_transformation(gs[k], gs[k + 1]), irg_transformation(gt[k], gt[k + 1]))
                     for k in range(len(gs) - 1)) / (len(gs) - 1)
            total = total + self.transform_weight * tr
        return total


# --------------------------------------------------------------------------------------------------------
# graph KD (Lassance et al.)


def similarity_graph(f: Tensor, eps: float = 1e-12) -> Tensor:
    """``A = D^{-1/2} S D^{-1/2}``: ``S`` the cosine similarities of the samples' flattened features with a
    zero diagonal, ``D`` its degrees (clamped at ``eps``; non-negative features keep them positive)."""
    f = F.normalize(f.reshape(f.shape[0], -1), dim=1)
    s = (f @ f.t()) * (1.0 - torch.eye(f.shape[0], device=f.device, dtype=f.dtype))
    d = s.sum(dim=1).clamp_min(eps).rsqrt()
    return d[:, None] * s * d[None, :]


def knn_mask(a: Tensor, k: int) -> Tensor:
    """Symmetric 0/1 mask keeping, in each row, the ``k`` largest off-diagonal entries (``i ~ j`` if either
    is among the other's ``k`` nearest neighbours)."""
    n = a.shape[0]
    k = min(k, n - 1)
    masked = a.masked_fill(torch.eye(n, dtype=torch.bool, device=a.device), float("-inf"))
    idx = masked.topk(k, dim=1).indices
    m = torch.zeros_like(a).scatter_(1, idx, 1.0)
    return torch.maximum(m, m.t())


@METHODS.register(
    "graph_kd",
    kind="relation",
    paper="Lassance, Bontonou, Hacene, Gripon, Tang & Ortega 2020, Deep Geometric Knowledge Distillation "
    "with Graphs (ICASSP 2020, arXiv:1911.03080)",
)
class GraphKD(KnowledgeTerm):
    """Graph knowledge distillation (Lassance et al. 2020): match the geometry of the latent spaces.

    For each listed layer, a graph over the batch: cosine similarities of the samples' flattened features,
    zero diagonal, normalised by the degrees, ``A = D^{-1/2} S D^{-1/2}``; with ``k`` set, only the edges
    of the teacher's symmetric ``k``-nearest-neighbour graph are kept (the same mask on both graphs);
    ``power`` raises both to ``A^p`` (paths of length ``p``); ``classes: intra`` / ``inter`` keep only the
    edges between samples of the same / of different labels. Then

    ``L = mean_layers sum_{i,j} ( A^s_p[i, j] - A^t_p[i, j] )^2``

    (the authors' summed squared error, averaged over the layers). The graphs are ``N x N`` whatever the
    feature widths: dimension-agnostic, no adapter. Cosine degrees are positive for non-negative features:
    tap post-ReLU layers (e.g. ``pool``); a degree <= 0 is clamped.

    Args:
        layers: a layer or a list of layers (names or ``{student: ..., teacher: ...}``); required.
        k: neighbours per sample in the teacher's k-NN graph (``null``: the full graph).
        power: ``p``, integer >= 1.
        classes: ``all`` (default), ``intra`` or ``inter``.
    """

    name = "graph_kd"

    def __init__(self, layers: Any = None, k: int | None = None, power: int = 1, classes: str = "all"):
        super().__init__()
        self.pairs = layer_pairs(layers, term=self.name)
        self.student_layers = unique(s for s, _ in self.pairs)
        self.teacher_layers = unique(t for _, t in self.pairs)
        if k is not None and (isinstance(k, bool) or not isinstance(k, int) or k < 1):
            raise ValueError(f"k must be a positive integer or null, got {k!r}")
        if isinstance(power, bool) or not isinstance(power, int) or power < 1:
            raise ValueError(f"power must be an integer >= 1, got {power!r}")
        if classes not in ("all", "intra", "inter"):
            raise ValueError(f"classes must be 'all', 'intra' or 'inter', got {classes!r}")
        self.k, self.power, self.classes = k, power, classes

    @float32_forward
    def forward(self, student: Outputs, teacher: Outputs | None, batch: Batch) -> Tensor:
        n = student.logits.shape[0]
        if n < 2:
            raise RuntimeError("graph_kd relates samples within a batch and needs at least 2")
        same = (batch.y[:, None] == batch.y[None, :]).float()
        total = None
        for s_name, t_name in self.pairs:
            a_s = similarity_graph(student_feature(student, s_name))
            a_t = similarity_graph(teacher_feature(teacher, t_name))
            if self.classes != "all":
                m = same if self.classes == "intra" else 1.0 - same
                a_s, a_t = a_s * m, a_t * m
            if self.k is not None:
                m = knn_mask(a_t, self.k)
                a_s, a_t = a_s * m, a_t * m
            p_s, p_t = a_s, a_t
            for _ in range(self.power - 1):
                p_s, p_t = p_s @ a_s, p_t @ a_t
            loss = (p_s - p_t).pow(2).sum()
            total = loss if total is None else total + loss
        return total / len(self.pairs)


# --------------------------------------------------------------------------------------------------------
# MHGD (Lee & Song)


def embed_samples(f: Tensor) -> Tensor:
    """A unit vector per sample: ``(N, C, *S)`` averaged over positions, then L2-normalised, ``(N, C)``."""
    v = f.reshape(f.shape[0], f.shape[1], -1).mean(dim=2)
    return F.normalize(v, dim=1)


def _linear_bn(x: Tensor, p: dict[str, Tensor], key: str, bn: dict[str, Tensor] | None, train: bool) -> Tensor:
    """Linear then batch norm; ``bn=None``: the batch's own statistics, no running statistics updated."""
    h = F.linear(x, p[f"{key}_w"], p[f"{key}_b"])
    mean, var = (None, None) if bn is None else (bn[f"{key}_mean"], bn[f"{key}_var"])
    return F.batch_norm(h, mean, var, p[f"{key}_g"], p[f"{key}_beta"], train or bn is None, 0.1, 1e-5)


class MHAPair(LazyModuleMixin, nn.Module):
    """MHGD's attention network for one pair of consecutive layers ``(prev, cur)`` of the teacher, sized
    from the first call: ``D_`` = width of ``prev``, ``D`` = width of ``cur``, ``D2 = (D + D_) // 2`` per
    head, ``De = (D_ + D) // 2`` in the estimator (the reference's sizes).

    * :meth:`graph`: ``G[h, i, j] = <BN(W_s v_i)_h, BN(W_r u_j)_h>`` for ``v = cur``, ``u = prev`` (sender
      and receiver: linear + batch norm to ``D2 * heads``, feature ``d * heads + h`` in head ``h``), ``(H, N, N)``;
    * :meth:`estimate`: ``v^_i = normalize( W_1 concat_h sum_j softmax_j(G)[h, i, j] mask[h, i]
      ReLU(BN(W_0 u_j)) )``, the current embeddings predicted from the previous layer's through the graph
      (``mask`` drops about half the heads per sample at random in training, the reference's ``drop_head``).
    """

    def __init__(self, heads: int):
        super().__init__()
        self.heads = heads
        for k in ("s", "r", "e0"):
            for part in ("w", "b", "g", "beta"):
                self.register_parameter(f"{k}_{part}", UninitializedParameter())
            self.register_buffer(f"{k}_mean", UninitializedBuffer())
            self.register_buffer(f"{k}_var", UninitializedBuffer())
        self.e1_w = UninitializedParameter()
        self.e1_b = UninitializedParameter()

    def initialize_parameters(self, cur: Tensor, prev: Tensor) -> None:
        if not self.has_uninitialized_params():
            return
        d, d_ = cur.shape[1], prev.shape[1]
        h, d2, de = self.heads, (d + d_) // 2, (d_ + d) // 2
        dims = {"s": (d2 * h, d), "r": (d2 * h, d_), "e0": (de, d_), "e1": (d, de * h)}
        with torch.no_grad():
            for k, (out, inp) in dims.items():
                w, b = getattr(self, f"{k}_w"), getattr(self, f"{k}_b")
                w.materialize((out, inp), device=cur.device, dtype=torch.float32)
                nn.init.kaiming_uniform_(w, a=math.sqrt(5))
                b.materialize((out,), device=cur.device, dtype=torch.float32)
                if k == "e1":  # the reference's zero bias on the estimator's output layer
                    b.zero_()
                    continue
                nn.init.uniform_(b, -1 / math.sqrt(inp), 1 / math.sqrt(inp))
                for name, fill in (("g", 1.0), ("beta", 0.0), ("mean", 0.0), ("var", 1.0)):
                    t = getattr(self, f"{k}_{name}")
                    t.materialize((out,), device=cur.device, dtype=torch.float32)
                    t.fill_(fill)

    def _params(self, frozen: bool) -> tuple[dict[str, Tensor], dict[str, Tensor]]:
        p = {n: (v.detach() if frozen else v) for n, v in self.named_parameters()}
        bn = {n: v for n, v in self.named_buffers()}
        return p, bn

    def graph(self, cur: Tensor, prev: Tensor, frozen: bool = False, statistics: str = "batch") -> Tensor:
        """``(H, N, N)`` attention logits. ``frozen`` (the distillation stage's shared, fixed network):
        parameters detached, running statistics not updated, and batch norm on the batch's own statistics
        (``statistics="batch"``) or on the running ones (``"running"``)."""
        p, bn = self._params(frozen)
        train = self.training
        if frozen:
            bn, train = (None, True) if statistics == "batch" else (bn, False)
        n, h = cur.shape[0], self.heads
        s = _linear_bn(cur, p, "s", bn, train).reshape(n, -1, h).permute(2, 0, 1)  # (H, N, D2)
        r = _linear_bn(prev, p, "r", bn, train).reshape(n, -1, h).permute(2, 1, 0)  # (H, D2, N)
        return s @ r

    def estimate(self, cur: Tensor, prev: Tensor, drop_heads: bool) -> Tensor:
        p, bn = self._params(False)
        n, h = cur.shape[0], self.heads
        a = torch.softmax(self.graph(cur, prev), dim=-1)  # (H, N, N)
        if drop_heads and self.training:
            noise = torch.randn(h, n, 1, device=a.device)
            a = a * (noise - noise.mean(dim=0, keepdim=True) > 0).float()
        x = F.relu(_linear_bn(prev, p, "e0", bn, self.training))  # (N, De)
        x = (a @ x).permute(1, 0, 2).reshape(n, -1)  # (N, H * De)
        return F.normalize(F.linear(x, p["e1_w"], p["e1_b"]), dim=1)

    def forward(self, cur: Tensor, prev: Tensor) -> Tensor:  # materialises the parameters
        return self.graph(cur, prev)


def _kl_rows(gs: Tensor, gt: Tensor) -> Tensor:
    """``sum_{h,i} KL(softmax(gs[h, i]) || softmax(gt[h, i]))``, the reference's ``kld_loss``."""
    ls, lt = F.log_softmax(gs, dim=-1), F.log_softmax(gt, dim=-1)
    return (ls.exp() * (ls - lt)).sum()


@METHODS.register(
    "mhgd",
    kind="relation",
    paper="Lee & Song 2019, Graph-based Knowledge Distillation by Multi-head Attention Network (BMVC 2019, "
    "arXiv:1907.02226)",
)
class MHGD(KnowledgeTerm):
    """Multi-head graph distillation (Lee & Song 2019).

    Each listed layer gives one unit vector per sample, ``v^l_i`` (the map averaged over positions,
    L2-normalised). For each consecutive pair ``(l-1, l)`` an attention network learned on the *teacher*
    (:class:`MHAPair`, ``heads`` heads) relates the batch's samples at layer ``l`` to those at ``l-1``:
    ``G^l[h, i, j] = <BN(W_s v^l_i)_h, BN(W_r v^(l-1)_j)_h>``, a graph per head over the batch. It is trained
    self-supervised: an estimator predicts ``v^l_i`` from the previous layer's vectors through the graph,
    ``v^_i = normalize(W_1 concat_h sum_j softmax_j(G)[h,i,j] ReLU(BN(W_0 v^(l-1)_j)))``, with loss

    ``L_mha = sum_l mean_i (1 - <v^_i, v^l_i>)``   (teacher vectors; trains the attention network only).

    The student's graphs go through the same, fixed network (parameters detached; batch norm on each
    batch's own statistics, see (4) below), both squashed by ``tanh``, and the student matches the teacher
    row by row:

    ``L_mhgd = sum_l sum_{h,i} KL( softmax_j tanh G_s^l[h,i,:] || softmax_j tanh G_t^l[h,i,:] )``

    (KL from the student's graph, summed over heads and rows, as the reference's ``kld_loss``).

    Procedure. ``procedure: two_stage`` (default, the paper's and the authors' code's): the first
    ``stage1_epochs`` epochs train the attention network on ``L_mha`` alone (the student is not updated;
    the authors: 40 epochs before 100 of distillation, so the default is ``max(1, round(2 E / 7))``); then
    the student trains on the other terms plus ``L_mhgd`` (the term's value in each stage is that stage's
    loss). ``procedure: joint`` (a gendistill variant): both from the first epoch, the term's value
    ``L_mha + L_mhgd`` (also what a scheme that does not forward epochs to the objective gets).

    Against the authors' TensorFlow code (``sseung0703/KD_methods_with_TF``, ``nets/Relation.py`` ``MHGD``,
    ``op_util.Optimizer_w_MHGD``), whose sizes (8 heads, ``D2 = (D + D_)/2``), head dropout, ``tanh`` and
    KL are followed: (1) the reference embeds each map by its leading right singular vector (KD-SVD's
    ``SVD_eid``, the student's aligned to the teacher's), which needs equal student and teacher widths; here
    the spatial mean, normalised (the same vector for ``(N, C)`` features), and where the student's width
    differs a learned linear map (trained with the student) takes its vector to the teacher's width
    first; (2) the reference clips the distillation gradient of each student variable to the norm of its
    cross-entropy gradient times a sigmoid ramp; here the loss is added with the term's weight, unclipped;
    (3) its batch norms have a learned shift only (TensorFlow's default) and moving-average decay 0.999;
    here a learned scale and shift, momentum 0.1; (4) in the distillation stage its batch norms use their
    moving averages (``statistics: running`` here); the default here normalises the student's and the
    teacher's vectors each by the batch's own statistics, because the student's vectors, coming through a
    freshly initialised width adapter, are far from the teacher's statistics: with ``running`` on the
    ``cnn2d`` 8-from-32 pair the student's logits reached ``|G| ~ 90``, ``tanh`` saturated, and the KL did
    not move in 11 epochs (the reference needs no adapter: equal widths, aligned singular vectors).

    Args:
        layers: a list of at least two layers ``[l1, l2, ...]`` (names or ``{student: ..., teacher: ...}``);
            graphs for ``(l1, l2), (l2, l3), ...``.
        heads: attention heads (default 8, the authors').
        procedure: ``two_stage`` (default) or ``joint``.
        stage1_epochs: epochs of the attention network's pre-training (default ``max(1, round(2 E / 7))``).
        drop_heads: drop about half the heads per sample at random while training the estimator
            (default true, the reference's ``drop_head``).
        statistics: the distillation stage's batch-norm statistics: ``batch`` (default) or ``running`` (the
            reference's moving averages).
    """

    name = "mhgd"

    def __init__(self, layers: Any = None, heads: int = 8, procedure: str = "two_stage",
                 stage1_epochs: int | None = None, drop_heads: bool = True, statistics: str = "batch"):
        super().__init__()
        self.layers, self.student_layers, self.teacher_layers = layer_chain(layers, term=self.name)
        check_procedure(self.name, procedure, stage1_epochs)
        if isinstance(heads, bool) or not isinstance(heads, int) or heads < 1:
            raise ValueError(f"heads must be a positive integer, got {heads!r}")
        self.mode, self._stage1 = procedure, stage1_epochs
        self.procedure = "pretrain" if procedure == "two_stage" else "joint"
        self.drop_heads = bool(drop_heads)
        if statistics not in ("batch", "running"):
            raise ValueError(f"statistics must be 'batch' or 'running', got {statistics!r}")
        self.statistics = statistics
        self.attention = nn.ModuleList(MHAPair(heads) for _ in range(len(self.layers) - 1))
        # the student's vectors go to the teacher's width where the two differ (Identity where equal)
        self.adapters = nn.ModuleList(LazyChannelMLP(depth=1) for _ in self.layers)

    def stage1_epochs(self, epochs: int) -> int:
        if self.mode != "two_stage":
            return 0
        return self._stage1 if self._stage1 is not None else max(1, round(2 * epochs / 7))

    def _adapt(self, i: int, vs: Tensor, width: int) -> Tensor:
        a = channel_adapter(self.adapters, i, vs, width)
        return vs if a is None else F.normalize(a(vs, width), dim=1)

    @float32_forward
    def forward(self, student: Outputs, teacher: Outputs | None, batch: Batch) -> Tensor:
        if student.logits.shape[0] < 2:
            raise RuntimeError("mhgd relates samples within a batch and needs at least 2")
        vt = [embed_samples(teacher_feature(teacher, t)) for _, t in self.layers]
        fresh = any(m.has_uninitialized_params() for m in self.attention)
        if fresh:  # size the attention networks (and, below, the adapters) before the optimizer is built
            for k, m in enumerate(self.attention):
                m(vt[k + 1], vt[k])
        stage = None if fresh else self.stage
        total = None
        if stage in (None, 1):
            total = sum(torch.mean(1.0 - (m.estimate(vt[k + 1], vt[k], self.drop_heads) * vt[k + 1]).sum(dim=1))
                        for k, m in enumerate(self.attention))
            if stage == 1:
                return total
        vs = [self._adapt(i, embed_samples(student_feature(student, s)), vt[i].shape[1])
              for i, (s, _) in enumerate(self.layers)]
        kl = sum(_kl_rows(torch.tanh(m.graph(vs[k + 1], vs[k], frozen=True, statistics=self.statistics)),
                          torch.tanh(m.graph(vt[k + 1], vt[k], frozen=True, statistics=self.statistics)))
                 for k, m in enumerate(self.attention))
        return kl if total is None else total + kl


__all__ = ["IRG", "GraphKD", "MHGD", "MHAPair", "embed_samples", "irg_edges", "irg_transformation",
           "similarity_graph", "knn_mask"]
