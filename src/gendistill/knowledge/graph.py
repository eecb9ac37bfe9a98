"""Graph-based relational knowledge: terms that match graphs built over the samples of a batch.

* ``irg``: instance relationship graphs (Liu et al. 2019): vertices (the logits), edges (pairwise distances
  of each listed layer's features) and the transformation between consecutive layers.
* ``graph_kd``: graph knowledge distillation (Lassance et al. 2020): normalised cosine-similarity (k-NN)
  graphs of a layer's representations, matched between teacher and student; dimension-agnostic.

Teacher features are detached; everything is computed in float32.
"""

from __future__ import annotations

from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor

from ..registry import METHODS
from .base import Batch, KnowledgeTerm, Outputs
from .feature import float32_forward, layer_pairs, pool_to, student_feature, teacher_feature, unique


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


__all__ = ["IRG", "GraphKD", "irg_edges", "irg_transformation", "similarity_graph", "knn_mask"]
