"""Relation-based knowledge: terms that transfer how samples in a batch relate to each other.

Each term reads one embedding per sample: the logits by default, or a tapped layer given by ``layers``
(a name, ``{student: ..., teacher: ...}``, or for SP a list of those), flattened to ``(N, D)``. Student and
teacher widths may differ: the relations (distances, angles, similarities) live in ``N x N`` space.
Teacher embeddings are detached; everything is computed in float32.
"""

from __future__ import annotations

import math
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from ..errors import ConfigError
from ..registry import METHODS
from .base import Batch, KnowledgeTerm, Outputs
from .feature import float32_forward, layer_pairs, unique


def embedding(out: Outputs, layer: str | None, *, teacher: bool) -> Tensor:
    """``(N, D)`` float32 embedding: the logits (``layer=None``) or a tapped feature flattened per sample."""
    x = out.logits if layer is None else out.feature(layer)
    x = x.reshape(x.shape[0], -1).float()
    return x.detach() if teacher else x


class RelationTerm(KnowledgeTerm):
    """Shared ``layers`` handling: ``None`` reads the logits on both sides."""

    multi_layer = False
    min_batch = 2  # relations need at least two samples

    def __init__(self, layers: Any = None):
        super().__init__()
        if layers is None:
            self.pairs: list[tuple[str | None, str | None]] = [(None, None)]
        else:
            self.pairs = list(layer_pairs(layers, term=self.name, multi=self.multi_layer))
        self.student_layers = unique(s for s, _ in self.pairs if s is not None)
        self.teacher_layers = unique(t for _, t in self.pairs if t is not None)

    def embeddings(self, student: Outputs, teacher: Outputs | None) -> list[tuple[Tensor, Tensor]]:
        n = student.logits.shape[0]
        if n < self.min_batch:
            raise RuntimeError(
                f"{self.name} relates samples within a batch and needs at least {self.min_batch}, got {n}"
            )
        return [
            (embedding(student, s, teacher=False), embedding(teacher, t, teacher=True)) for s, t in self.pairs
        ]

    def pair_loss(self, s: Tensor, t: Tensor) -> Tensor:
        """The loss between one student embedding ``(N, D_s)`` and its teacher embedding ``(N, D_t)``."""
        raise NotImplementedError

    @float32_forward
    def forward(self, student: Outputs, teacher: Outputs | None, batch: Batch) -> Tensor:
        return sum(self.pair_loss(s, t) for s, t in self.embeddings(student, teacher))


# --------------------------------------------------------------------------------------------------------
# RKD


def pairwise_distances(e: Tensor, eps: float = 1e-12) -> Tensor:
    """Euclidean distance matrix ``d[i, j] = ||e_i - e_j||`` (zero diagonal), from the Gram matrix of the
    batch-centred embeddings (distances are translation invariant; centring limits cancellation)."""
    e = e - e.mean(dim=0, keepdim=True)
    sq = e.pow(2).sum(dim=1)
    d2 = (sq[:, None] + sq[None, :] - 2 * e @ e.t()).clamp_min(eps)
    off = 1.0 - torch.eye(e.shape[0], device=e.device, dtype=e.dtype)
    return d2.sqrt() * off


def rkd_distance(s: Tensor, t: Tensor, pairs: str = "all") -> Tensor:
    """``sum_{i != j} huber( d_s(i,j) / mu_s, d_t(i,j) / mu_t ) / M`` with ``mu`` the mean pairwise distance
    (over ``i != j``) and ``M = N^2`` (``pairs="all"``, the authors' code: the zero diagonal is averaged in)
    or ``M = N (N - 1)`` (``pairs="distinct"``).

    Both distance matrices have an exact zero diagonal, whose entries add nothing to a sum (``huber(0, 0) = 0``),
    so the sums run over the whole matrices: no boolean mask, whose gather (and its scatter in the backward
    pass) costs more than the distances themselves."""
    n = s.shape[0]
    distinct = n * (n - 1)
    ds, dt = pairwise_distances(s), pairwise_distances(t)
    total = F.smooth_l1_loss(ds / (ds.sum() / distinct), dt / (dt.sum() / distinct), reduction="sum")
    return total / (n * n if pairs == "all" else distinct)


def angle_cosines(e: Tensor, eps: float = 1e-12) -> tuple[Tensor, Tensor]:
    """``cos[j, i, k] = <e_i - e_j, e_k - e_j> / (||e_i - e_j|| ||e_k - e_j||)`` (the angle at vertex ``j``),
    exactly 0 on the invalid triplets (``i == j`` or ``k == j``), and the mask of valid triplets.

    With ``u_ji = (e_i - e_j) / ||e_i - e_j||`` (0 for ``i == j``), ``cos[j] = U_j U_j^T``: one batched matrix
    product over ``(N, N, D)`` differences when ``D <= 64``; for wider embeddings the same from the Gram matrix
    ``G`` of the centred embeddings, ``<e_i - e_j, e_k - e_j> = G_ik - r_ji - r_jk`` with
    ``r_ji = G_ji - G_jj / 2``, so no ``(N, N, D)`` tensor is formed. ``eps`` bounds the distances below
    (``sqrt(eps)``) for coincident samples."""
    eye = torch.eye(e.shape[0], dtype=torch.bool, device=e.device)
    return _angle_cosines(e, eps), ~eye[:, :, None] & ~eye[:, None, :]


_BMM_MAX_DIM = 64  # embeddings up to this width use the batched product of differences (faster below ~64)


def _angle_cosines(e: Tensor, eps: float = 1e-12) -> Tensor:
    e = e - e.mean(dim=0, keepdim=True)
    n, dim = e.shape
    off = 1.0 - torch.eye(n, dtype=e.dtype, device=e.device)
    inv = off / pairwise_distances(e, eps).clamp_min(math.sqrt(eps))  # 0 on the diagonal
    if dim <= _BMM_MAX_DIM:
        u = (e[None, :, :] - e[:, None, :]) * inv[:, :, None]  # u[j, i] = (e_i - e_j) / ||e_i - e_j||
        return torch.bmm(u, u.transpose(1, 2))
    g = e @ e.t()
    r = g - 0.5 * g.diagonal()[:, None]
    return (g[None, :, :] - r[:, :, None] - r[:, None, :]) * (inv[:, :, None] * inv[:, None, :])


def rkd_angle(s: Tensor, t: Tensor, pairs: str = "all") -> Tensor:
    """``sum_{(i,j,k): i != j, k != j} huber( cos_s[j,i,k], cos_t[j,i,k] ) / M`` with ``M = N^3`` (``pairs="all"``,
    the authors' code, whose degenerate triplets have cosine 0 on both sides) or ``M`` the number of valid
    triplets ``N (N - 1)^2`` (``pairs="distinct"``). The invalid triplets are exactly 0 on both sides here, so
    the sum runs over all ``N^3`` (no boolean gather)."""
    n = s.shape[0]
    cs, ct = _angle_cosines(s), _angle_cosines(t)
    total = F.smooth_l1_loss(cs, ct, reduction="sum")
    return total / (n**3 if pairs == "all" else n * (n - 1) ** 2)


def _check_pairs(pairs: str) -> str:
    if pairs not in ("all", "distinct"):
        raise ValueError(f"pairs must be 'all' (the authors' code) or 'distinct', got {pairs!r}")
    return pairs


_RKD_PAPER = "Park, Kim, Lu & Cho 2019, Relational Knowledge Distillation (CVPR 2019, arXiv:1904.05068)"


@METHODS.register("rkd_distance", kind="relation", paper=_RKD_PAPER)
class RKDDistance(RelationTerm):
    """RKD distance-wise loss (Park et al. 2019).

    ``psi_D(i, j) = ||e_i - e_j||_2 / mu``, ``mu = mean_{i != j} ||e_i - e_j||_2`` (per network),

    ``L = (1/N^2) sum_{i != j} huber( psi_D^s(i, j), psi_D^t(i, j) )``, ``huber`` the smooth L1 with threshold 1.

    Invariant to scaling either embedding. The paper's weight is 25. By default (``pairs: all``) the sum is
    divided by all ``N^2`` entries, the zero diagonal included, as the authors' code (and RepDistiller's
    ``RKDLoss``) do, so the paper's weight means the same; ``pairs: distinct`` averages over ``i != j`` only
    (a factor ``N / (N - 1)`` larger).

    Args:
        layers: the layer to read (default: the logits).
        pairs: ``all`` (default, reference code) or ``distinct``.
    """

    name = "rkd_distance"

    def __init__(self, layers: Any = None, pairs: str = "all"):
        super().__init__(layers)
        self.pairs_mode = _check_pairs(pairs)

    def pair_loss(self, s: Tensor, t: Tensor) -> Tensor:
        return rkd_distance(s, t, self.pairs_mode)


@METHODS.register("rkd_angle", kind="relation", paper=_RKD_PAPER)
class RKDAngle(RelationTerm):
    """RKD angle-wise loss (Park et al. 2019).

    ``psi_A(i, j, k) = cos angle(e_i, e_j, e_k) = < (e_i - e_j)/||e_i - e_j||, (e_k - e_j)/||e_k - e_j|| >``,

    ``L = (1/N^3) sum_{i != j, k != j} huber( psi_A^s(i, j, k), psi_A^t(i, j, k) )``.

    Invariant to scaling (and translating) either embedding. The paper's weight is 50. The cosines are
    computed from the Gram matrix of the batch-centred embeddings (the same numbers as the authors'
    ``normalize(e_i - e_j)`` products, up to rounding). By default (``pairs: all``) the sum is divided by all
    ``N^3`` triplets, the degenerate ones (cosine 0 on both sides in the authors' code) included, as the
    reference code does; ``pairs: distinct`` averages over the ``N (N - 1)^2`` valid triplets.

    Args:
        layers: the layer to read (default: the logits).
        pairs: ``all`` (default, reference code) or ``distinct``.
    """

    name = "rkd_angle"

    def __init__(self, layers: Any = None, pairs: str = "all"):
        super().__init__(layers)
        self.pairs_mode = _check_pairs(pairs)

    def pair_loss(self, s: Tensor, t: Tensor) -> Tensor:
        return rkd_angle(s, t, self.pairs_mode)


@METHODS.register("rkd", kind="relation", paper=_RKD_PAPER)
class RKD(RelationTerm):
    """RKD, distance and angle together: ``L = distance_weight * L_D + angle_weight * L_A`` (see
    ``rkd_distance`` and ``rkd_angle``); the defaults are the paper's weights 25 and 50.

    Args:
        layers: the layer to read (default: the logits).
        distance_weight: weight of the distance-wise loss.
        angle_weight: weight of the angle-wise loss.
        pairs: ``all`` (default, the authors' code) or ``distinct``; see ``rkd_distance``.
    """

    name = "rkd"

    def __init__(self, layers: Any = None, distance_weight: float = 25.0, angle_weight: float = 50.0,
                 pairs: str = "all"):
        super().__init__(layers)
        self.pairs_mode = _check_pairs(pairs)
        if distance_weight < 0 or angle_weight < 0 or distance_weight + angle_weight == 0:
            raise ValueError(
                f"distance_weight and angle_weight must be >= 0 and not both 0, got {distance_weight}, {angle_weight}"
            )
        self.distance_weight, self.angle_weight = float(distance_weight), float(angle_weight)

    def pair_loss(self, s: Tensor, t: Tensor) -> Tensor:
        total = 0.0
        if self.distance_weight:
            total = total + self.distance_weight * rkd_distance(s, t, self.pairs_mode)
        if self.angle_weight:
            total = total + self.angle_weight * rkd_angle(s, t, self.pairs_mode)
        return total


# --------------------------------------------------------------------------------------------------------
# SP, PKT, CC


def sp_loss(s: Tensor, t: Tensor) -> Tensor:
    """``(1/N^2) || rownorm(S S^T) - rownorm(T T^T) ||_F^2``."""
    gs = F.normalize(s @ s.t(), dim=1)
    gt = F.normalize(t @ t.t(), dim=1)
    return (gs - gt).pow(2).sum() / s.shape[0] ** 2


@METHODS.register(
    "sp",
    kind="relation",
    paper="Tung & Mori 2019, Similarity-Preserving Knowledge Distillation (ICCV 2019, arXiv:1907.09682)",
)
class SP(RelationTerm):
    """Similarity-preserving KD (Tung & Mori 2019).

    With ``Q`` the ``(N, D)`` flattened activations of a layer, ``G = Q Q^T`` and ``G~`` its rows
    L2-normalised,

    ``L = sum_layers (1/N^2) || G~_s - G~_t ||_F^2``.

    The paper's weight is 3000 (CIFAR-10). Student and teacher widths may differ.

    Args:
        layers: a layer or list of layers (default: the logits).
    """

    name = "sp"
    multi_layer = True

    def pair_loss(self, s: Tensor, t: Tensor) -> Tensor:
        return sp_loss(s, t)


def pkt_probabilities(e: Tensor) -> Tensor:
    """``P[i, j] = K(e_i, e_j) / sum_{k != i} K(e_i, e_k)`` for ``j != i`` (0 on the diagonal), with the cosine
    kernel ``K(a, b) = (1 + cos(a, b)) / 2``."""
    e = F.normalize(e, dim=1)
    k = (e @ e.t() + 1.0) / 2.0
    k = k * (1.0 - torch.eye(e.shape[0], device=e.device, dtype=e.dtype))
    return k / k.sum(dim=1, keepdim=True)


def pkt_loss(s: Tensor, t: Tensor, eps: float = 1e-7) -> Tensor:
    """``mean_i sum_{j != i} P_t[i, j] log( P_t[i, j] / P_s[i, j] )``."""
    ps, pt = pkt_probabilities(s), pkt_probabilities(t)
    return (pt * torch.log((pt + eps) / (ps + eps))).sum(dim=1).mean()


def pkt_loss_code(s: Tensor, t: Tensor, eps: float = 1e-7) -> Tensor:
    """The authors' ``cosine_similarity_loss``: the kernel keeps the diagonal (``K(e_i, e_i) = 1``) in each
    row's normaliser and the KL terms are averaged over all ``N^2`` entries:
    ``(1/N^2) sum_{i,j} P_t[i, j] log( (P_t[i, j] + eps) / (P_s[i, j] + eps) )``, ``eps = 1e-7``."""

    def probs(e: Tensor) -> Tensor:
        e = e / (e.norm(dim=1, keepdim=True) + eps)
        k = (e @ e.t() + 1.0) / 2.0
        return k / k.sum(dim=1, keepdim=True)

    ps, pt = probs(s), probs(t)
    return (pt * torch.log((pt + eps) / (ps + eps))).mean()


@METHODS.register(
    "pkt",
    kind="relation",
    paper="Passalis & Tefas 2018, Learning Deep Representations with Probabilistic Knowledge Transfer "
    "(ECCV 2018, arXiv:1803.10837)",
)
class PKT(RelationTerm):
    """Probabilistic Knowledge Transfer (Passalis & Tefas 2018).

    Conditional probabilities from the cosine kernel ``K(a, b) = (1 + cos(a, b)) / 2``:
    ``p_{j|i} = K(e_i, e_j) / sum_{k != i} K(e_i, e_k)`` (``j != i``), for teacher (``p``) and student (``q``):

    ``L = (1/N) sum_i sum_{j != i} p_{j|i} log( p_{j|i} / q_{j|i} )`` (``form: paper``, a mean over anchors
    of KL divergences).

    The default, ``form: code``, is the authors' code (``passalis/probabilistic_kt``, copied in
    RepDistiller's ``PKT``): the diagonal ``K(e_i, e_i) = 1`` stays in each row's probabilities and the
    terms are averaged over all ``N^2`` entries (about ``1/N`` of the paper form's value), so the weights
    used with the reference code (e.g. RepDistiller's 30000) mean the same here. Student and teacher widths
    may differ.

    Args:
        layers: the layer to read (default: the logits).
        form: ``code`` (default, the authors' code) or ``paper``.
    """

    name = "pkt"

    def __init__(self, layers: Any = None, form: str = "code"):
        super().__init__(layers)
        if form not in ("code", "paper"):
            raise ValueError(f"form must be 'code' (the authors' code) or 'paper', got {form!r}")
        self.form = form

    def pair_loss(self, s: Tensor, t: Tensor) -> Tensor:
        return pkt_loss_code(s, t) if self.form == "code" else pkt_loss(s, t)


@METHODS.register(
    "cc",
    kind="relation",
    paper="Peng, Jin, Liu, Zhou, Wu, Liu, Li & Zhang 2019, Correlation Congruence for Knowledge "
    "Distillation (ICCV 2019, arXiv:1904.01802)",
)
class CC(RelationTerm):
    """Correlation congruence (Peng et al. 2019).

    Embeddings are L2-normalised; the correlation matrix is ``C[i, j] = k(e_i, e_j)`` with either

    * ``kernel: gaussian`` (default): the Gaussian RBF ``exp(-gamma ||e_i - e_j||^2)`` approximated by its
      Taylor series of order ``P`` (the paper's generalised kernel; ``gamma = 0.4, P = 2`` as in common
      re-implementations). For unit vectors ``exp(-gamma ||x - y||^2) = exp(-2 gamma) exp(2 gamma x.y)``, so
      ``C[i, j] = exp(-2 gamma) sum_{p=0}^{P} (2 gamma e_i.e_j)^p / p!``;
    * ``kernel: bilinear``: the plain correlation ``C[i, j] = e_i.e_j``.

    ``L = (1/N^2) || C_s - C_t ||_F^2``. Student and teacher widths may differ. Only the correlation
    congruence term is here; the paper adds it to KD, which is a separate ``kd`` term.

    Args:
        layers: the layer to read (default: the logits).
        kernel: ``gaussian`` or ``bilinear``.
        gamma: RBF bandwidth (gaussian only), > 0.
        order: Taylor order ``P`` (gaussian only), >= 1.
    """

    name = "cc"

    def __init__(self, layers: Any = None, kernel: str = "gaussian", gamma: float = 0.4, order: int = 2):
        super().__init__(layers)
        if kernel not in ("gaussian", "bilinear"):
            raise ValueError(f"kernel must be 'gaussian' or 'bilinear', got {kernel!r}")
        if not gamma > 0:
            raise ValueError(f"gamma must be > 0, got {gamma}")
        if isinstance(order, bool) or not isinstance(order, int) or order < 1:
            raise ValueError(f"order must be an integer >= 1, got {order!r}")
        self.kernel, self.gamma, self.order = kernel, float(gamma), order

    def correlation(self, e: Tensor) -> Tensor:
        e = F.normalize(e, dim=1)
        sim = e @ e.t()
        if self.kernel == "bilinear":
            return sim
        two_g = 2.0 * self.gamma
        corr = torch.zeros_like(sim)
        for p in range(self.order + 1):
            corr = corr + (two_g**p / math.factorial(p)) * sim.pow(p)
        return math.exp(-two_g) * corr

    def pair_loss(self, s: Tensor, t: Tensor) -> Tensor:
        return (self.correlation(s) - self.correlation(t)).pow(2).mean()


# --------------------------------------------------------------------------------------------------------
# CRD


def nce_loss(logits: Tensor, log_z: Tensor, num_data: int) -> Tensor:
    """NCE loss of CRD. ``logits[:, 0]`` scores the positive, ``logits[:, 1:]`` the ``K`` negatives, each
    ``<v, m> / tau``; with ``x = exp(logits) / Z`` and noise probability ``P_n = 1 / num_data``:

    ``-(1/N) sum_n [ log( x_pos / (x_pos + K P_n) ) + sum_k log( K P_n / (x_k + K P_n) ) ]``

    computed in log space."""
    k = logits.shape[1] - 1
    log_x = logits - log_z
    log_noise = math.log(k / num_data)
    noise = torch.full_like(log_x, log_noise)
    log_d1 = log_x[:, 0] - torch.logaddexp(log_x[:, 0], noise[:, 0])
    log_d0 = log_noise - torch.logaddexp(log_x[:, 1:], noise[:, 1:])
    return -(log_d1.sum() + log_d0.sum()) / logits.shape[0]


@METHODS.register(
    "crd",
    kind="relation",
    paper="Tian, Krishnan & Isola 2020, Contrastive Representation Distillation (ICLR 2020, arXiv:1910.10699)",
)
class CRD(RelationTerm):
    """Contrastive Representation Distillation (Tian et al. 2020), NCE form with memory banks.

    Student and teacher embeddings are mapped by learned linear heads to ``feat_dim`` and L2-normalised:
    ``v_s = g_s(s) / ||g_s(s)||``, ``v_t = g_t(t) / ||g_t(t)||``. Two memory banks ``M_s, M_t`` of shape
    ``num_train x feat_dim`` hold one embedding per training sample. For sample ``i`` the positive is
    memory row ``i`` and ``K`` negatives are rows drawn uniformly from the other ``num_train - 1`` samples.
    With ``x = exp(<v, m> / tau) / Z`` (``Z`` a constant, ``mean(exp(<v, m>/tau)) * num_train``, fixed on
    the first call, as in the authors' code) the NCE loss is

    ``h(x) = -(1/N) sum_i [ log( x_pos / (x_pos + K/num_train) ) + sum_k log( (K/num_train) / (x_k + K/num_train) ) ]``

    and ``L = h(<v_s, M_t>) + h(<v_t, M_s>)`` (student against the teacher bank and the reverse).
    In training mode, after the loss, the rows of the batch are updated by momentum:
    ``M[i] <- normalize( momentum * M[i] + (1 - momentum) * v_i )``. The banks are per process (not
    synchronised under DDP). Negatives are drawn without regard to class (the authors' CIFAR code can also
    draw them from other classes only).

    ``setup(num_train=...)`` sizes the banks and clips ``num_negatives`` to ``num_train - 1``. The batch must
    carry ``index`` (each sample's position in the training set).

    Args:
        layers: the layer to read (default: the logits; the paper uses the penultimate features).
        feat_dim: embedding size of the heads and banks (paper: 128).
        num_negatives: ``K`` (paper: 16384; default here 4096).
        temperature: ``tau`` (paper: 0.07).
        momentum: memory update momentum (paper: 0.5).
    """

    name = "crd"
    min_batch = 1  # the negatives come from the memory banks

    def __init__(
        self,
        layers: Any = None,
        feat_dim: int = 128,
        num_negatives: int = 4096,
        temperature: float = 0.07,
        momentum: float = 0.5,
    ):
        super().__init__(layers)
        for key, value in (("feat_dim", feat_dim), ("num_negatives", num_negatives)):
            if isinstance(value, bool) or not isinstance(value, int) or value < 1:
                raise ValueError(f"{key} must be a positive integer, got {value!r}")
        if not temperature > 0:
            raise ValueError(f"temperature must be > 0, got {temperature}")
        if not 0.0 <= momentum < 1.0:
            raise ValueError(f"momentum must be in [0, 1), got {momentum}")
        self.feat_dim, self.num_negatives = feat_dim, num_negatives
        self.temperature, self.momentum = float(temperature), float(momentum)
        self.embed_s = nn.LazyLinear(feat_dim)
        self.embed_t = nn.LazyLinear(feat_dim)
        self.register_buffer("memory_s", torch.empty(0, feat_dim))
        self.register_buffer("memory_t", torch.empty(0, feat_dim))
        # log of the normalisation constants Z; NaN until fixed on the first call
        self.register_buffer("log_z_s", torch.tensor(float("nan")))
        self.register_buffer("log_z_t", torch.tensor(float("nan")))
        self.k = 0  # negatives per sample, set by setup()

    @property
    def num_train(self) -> int:
        return self.memory_s.shape[0]

    def setup(self, *, num_train: int, num_classes: int) -> None:
        if num_train < 2:
            raise ConfigError(f"crd needs at least 2 training samples, got {num_train}")
        self.k = min(self.num_negatives, num_train - 1)
        stdv = 1.0 / math.sqrt(self.feat_dim / 3)
        device = self.memory_s.device
        self.memory_s = torch.rand(num_train, self.feat_dim, device=device) * (2 * stdv) - stdv
        self.memory_t = torch.rand(num_train, self.feat_dim, device=device) * (2 * stdv) - stdv
        self.log_z_s.fill_(float("nan"))
        self.log_z_t.fill_(float("nan"))

    def sample_negatives(self, index: Tensor) -> Tensor:
        """``(N,) -> (N, K)`` indices drawn uniformly from ``[0, num_train)`` minus each row's own index."""
        r = torch.randint(0, self.num_train - 1, (index.shape[0], self.k), device=index.device)
        return r + (r >= index[:, None]).long()

    def _scores(self, v: Tensor, memory: Tensor, contrast: Tensor, log_z: Tensor) -> Tensor:
        if self.num_train <= 4 * contrast.shape[1]:
            # every sample against the whole bank, then the K + 1 chosen scores: a (N, num_train) matrix
            # product instead of gathering N (K + 1) bank rows (N x 1025 x 128 floats per side by default);
            # the bank is copied (num_train rows, fewer than the gathered ones) because the backward pass
            # needs it and the update below writes into it
            scores = (v @ memory.t().clone()).gather(1, contrast)
        else:  # a bank much larger than K: gather the rows
            scores = torch.bmm(memory[contrast], v[:, :, None]).squeeze(2)
        logits = scores / self.temperature
        if torch.isnan(log_z):
            with torch.no_grad():
                log_z.fill_(
                    torch.logsumexp(logits.flatten(), 0).item()
                    - math.log(logits.numel())
                    + math.log(self.num_train)
                )
        return nce_loss(logits, log_z, self.num_train)

    @float32_forward
    def forward(self, student: Outputs, teacher: Outputs | None, batch: Batch) -> Tensor:
        if batch.index is None:
            raise ConfigError(
                "crd needs batch.index (each sample's position in the training set) to use its memory banks; "
                "the data loader gave none. Use the in-memory loader or a dataset that returns indices."
            )
        if self.num_train == 0 or self.k == 0:
            raise RuntimeError("crd: call setup(num_train=..., num_classes=...) before the first forward")
        ((s, t),) = self.embeddings(student, teacher)
        index = batch.index.to(device=s.device, dtype=torch.long)
        if not ((index >= 0) & (index < self.num_train)).all():  # one host sync, not two
            raise ConfigError(
                f"crd: batch.index must be in [0, {self.num_train}), got [{index.min()}, {index.max()}]"
            )
        v_s = F.normalize(self.embed_s(s), dim=1)
        v_t = F.normalize(self.embed_t(t), dim=1)
        contrast = torch.cat([index[:, None], self.sample_negatives(index)], dim=1)
        loss = self._scores(v_s, self.memory_t, contrast, self.log_z_s) + self._scores(
            v_t, self.memory_s, contrast, self.log_z_t
        )
        if self.training:
            with torch.no_grad():
                for memory, v in ((self.memory_s, v_s), (self.memory_t, v_t)):
                    rows = memory[index] * self.momentum + v.detach() * (1.0 - self.momentum)
                    memory.index_copy_(0, index, F.normalize(rows, dim=1))
        return loss


__all__ = [
    "RKD",
    "RKDDistance",
    "RKDAngle",
    "SP",
    "PKT",
    "CC",
    "CRD",
    "pairwise_distances",
    "angle_cosines",
    "nce_loss",
]
