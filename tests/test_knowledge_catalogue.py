"""The knowledge catalogue: response (DKD, DIST), feature (FitNets, AT, FSP, NST, VID) and relation
(RKD, SP, PKT, CC, CRD) terms.

Every method's value is checked against a hand computation (closed form or explicit NumPy arithmetic),
plus: zero (or minimal) for identical student and teacher, scale invariance (RKD), different widths,
gradients to the student only, building from config dicts, and config errors.
"""

import math

import numpy as np
import pytest
import torch
from torch import nn

from gendistill.errors import ConfigError
from gendistill.knowledge import Batch, FeatureTap, Outputs, build_objective, build_term, relation
from gendistill.knowledge.feature import VID, FitNet
from gendistill.knowledge.relation import CRD
from gendistill.registry import METHODS

MINE = [
    "dkd",
    "dist",
    "fitnet",
    "at",
    "fsp",
    "nst",
    "vid",
    "rkd_distance",
    "rkd_angle",
    "rkd",
    "sp",
    "pkt",
    "cc",
    "crd",
]


def term(spec: dict):
    t, _ = build_term(spec)
    return t


def outs(logits, **features) -> Outputs:
    return Outputs(
        torch.as_tensor(logits, dtype=torch.float32),
        {k: torch.as_tensor(v, dtype=torch.float32) for k, v in features.items()},
    )


def batch(n: int, y=None, index=None) -> Batch:
    y = torch.zeros(n, dtype=torch.long) if y is None else torch.as_tensor(y)
    return Batch(torch.zeros(n, 1), y, None if index is None else torch.as_tensor(index))


def value(t, s: Outputs, te: Outputs, b: Batch) -> float:
    return float(t(s, te, b).detach())


def softmax(z):
    e = np.exp(z - z.max(axis=-1, keepdims=True))
    return e / e.sum(axis=-1, keepdims=True)


def huber(x):
    a = np.abs(x)
    return np.where(a < 1, 0.5 * x * x, a - 0.5)


# ---------------------------------------------------------------------------------------------------------
# response: DKD, DIST


ZS = np.array([[1.0, 2.0, 0.5, -1.0], [0.2, -0.3, 1.5, 0.0], [0.0, 0.1, 0.0, 3.0]])
ZT = np.array([[2.0, 1.0, 0.0, -0.5], [1.0, 0.0, 0.5, 0.2], [-1.0, 0.3, 0.2, 2.0]])
Y = np.array([0, 2, 3])


def test_dkd_hand_computation_and_kd_decomposition():
    T, alpha, beta = 2.0, 0.5, 3.0
    total, kd_total, decomposed = 0.0, 0.0, 0.0
    for i, y in enumerate(Y):
        ps, pt = softmax(ZS[i] / T), softmax(ZT[i] / T)
        bs, bt = np.array([ps[y], 1 - ps[y]]), np.array([pt[y], 1 - pt[y]])
        tckd = np.sum(bt * np.log(bt / bs))
        others = [c for c in range(4) if c != y]
        qs, qt = softmax(ZS[i, others] / T), softmax(ZT[i, others] / T)
        nckd = np.sum(qt * np.log(qt / qs))
        total += alpha * tckd + beta * nckd
        kd_total += np.sum(pt * np.log(pt / ps))
        decomposed += tckd + (1 - pt[y]) * nckd  # the paper's identity KD = TCKD + (1 - p_t) NCKD
    n = len(Y)
    got = value(
        term({"term": "dkd", "alpha": alpha, "beta": beta, "temperature": T}), outs(ZS), outs(ZT), batch(n, Y)
    )
    assert got == pytest.approx(T * T * total / n, rel=1e-5)
    assert kd_total == pytest.approx(decomposed, rel=1e-9)
    same = value(term({"term": "dkd"}), outs(ZT), outs(ZT), batch(n, Y))
    assert same == pytest.approx(0.0, abs=1e-6)


def test_dist_hand_computation():
    tau, beta, gamma = 2.0, 1.5, 0.5
    ys, yt = softmax(ZS / tau), softmax(ZT / tau)

    def pearson(a, b):
        a, b = a - a.mean(), b - b.mean()
        return np.sum(a * b) / np.sqrt(np.sum(a * a) * np.sum(b * b))

    inter = 1 - np.mean([pearson(ys[i], yt[i]) for i in range(3)])
    intra = 1 - np.mean([pearson(ys[:, c], yt[:, c]) for c in range(4)])
    expected = tau**2 * (beta * inter + gamma * intra)
    got = value(
        term({"term": "dist", "beta": beta, "gamma": gamma, "tau": tau}), outs(ZS), outs(ZT), batch(3)
    )
    assert got == pytest.approx(expected, rel=1e-5)
    assert value(term({"term": "dist"}), outs(ZT), outs(ZT), batch(3)) == pytest.approx(0.0, abs=1e-6)


# ---------------------------------------------------------------------------------------------------------
# feature: FitNets, AT, FSP, NST, VID

rng = np.random.default_rng(0)


def test_fitnet_identity_with_spatial_pooling():
    s = rng.normal(size=(2, 3, 4, 4))
    t = rng.normal(size=(2, 3, 2, 2))
    pooled = s.reshape(2, 3, 2, 2, 2, 2).mean(axis=(3, 5))  # 2x2 average pooling of the student
    expected = np.mean((pooled - t) ** 2)
    got = value(
        term({"term": "fitnet", "layers": "h", "regressor": False}),
        outs([[0.0]] * 2, h=s),
        outs([[0.0]] * 2, h=t),
        batch(2),
    )
    assert got == pytest.approx(expected, rel=1e-5)


def test_fitnet_regressor_hand_computation_on_1d_features():
    s = rng.normal(size=(2, 3, 5))  # (N, C, L) as from 1-D convolutions
    t = rng.normal(size=(2, 2, 5))
    fit = term({"term": "fitnet", "layers": {"student": "a", "teacher": "b"}, "regressor": "conv"})
    so, to = outs([[0.0]] * 2, a=s), outs([[0.0]] * 2, b=t)
    with torch.no_grad():  # the trainer's dry run materialises the regressor
        fit(so, to, batch(2))
    W = np.array([[1.0, -2.0, 0.5], [0.0, 3.0, 1.0]])
    bias = np.array([0.1, -0.2])
    with torch.no_grad():
        fit.regressor.conv.weight0.copy_(torch.tensor(W))
        fit.regressor.conv.bias0.copy_(torch.tensor(bias))
    pred = np.einsum("oc,ncl->nol", W, s) + bias[None, :, None]
    assert value(fit, so, to, batch(2)) == pytest.approx(np.mean((pred - t) ** 2), rel=1e-5)
    # an identity regressor and equal features give zero
    with torch.no_grad():
        fit.regressor.conv.weight0.copy_(torch.tensor([[1.0, 0.0, 0.0], [0.0, 1.0, 0.0]]))
        fit.regressor.conv.bias0.zero_()
    assert value(fit, so, outs([[0.0]] * 2, b=s[:, :2]), batch(2)) == pytest.approx(0.0, abs=1e-7)


def test_fitnet_default_regressor_is_conv_bn_relu():
    # RepDistiller's ConvReg: relu(batchnorm(conv(h_s))), batch statistics in training mode
    s = rng.normal(size=(4, 3, 5))
    t = np.abs(rng.normal(size=(4, 2, 5)))
    fit = term({"term": "fitnet", "layers": {"student": "a", "teacher": "b"}})
    so, to = outs([[0.0]] * 4, a=s), outs([[0.0]] * 4, b=t)
    with torch.no_grad():
        fit(so, to, batch(4))
    W = np.array([[1.0, -2.0, 0.5], [0.0, 3.0, 1.0]])
    with torch.no_grad():
        fit.regressor.conv.weight0.copy_(torch.tensor(W))
        fit.regressor.conv.bias0.zero_()
        fit.regressor.bn.running_mean.zero_()
        fit.regressor.bn.running_var.fill_(1.0)
    h = np.einsum("oc,ncl->nol", W, s)
    mu, var = h.mean(axis=(0, 2), keepdims=True), h.var(axis=(0, 2), keepdims=True)
    pred = np.maximum((h - mu) / np.sqrt(var + 1e-5), 0.0)
    assert value(fit, so, to, batch(4)) == pytest.approx(np.mean((pred - t) ** 2), rel=1e-5)
    with pytest.raises(ConfigError, match="regressor"):
        term({"term": "fitnet", "layers": "a", "regressor": "mlp"})


def test_at_closed_form_and_multilayer():
    # one channel, two positions: Q_s = [1, 4]/sqrt(17), Q_t = [4, 1]/sqrt(17) -> mean squared diff 9/17
    s, t = [[[[1.0, 2.0]]]], [[[[2.0, 1.0]]]]
    got = value(term({"term": "at", "layers": "f"}), outs([[0.0]], f=s), outs([[0.0]], f=t), batch(1))
    assert got == pytest.approx(9 / 17, rel=1e-6)

    s1, t1 = rng.normal(size=(2, 3, 4, 4)), rng.normal(size=(2, 5, 2, 2))  # teacher map smaller: pool student
    s2, t2 = rng.normal(size=(2, 3, 6)), rng.normal(size=(2, 4, 6))

    def q(f):
        a = (f**2).mean(axis=1).reshape(f.shape[0], -1)
        return a / np.linalg.norm(a, axis=1, keepdims=True)

    s1p = s1.reshape(2, 3, 2, 2, 2, 2).mean(axis=(3, 5))
    expected = np.mean((q(s1p) - q(t1)) ** 2) + np.mean((q(s2) - q(t2)) ** 2)
    at = term({"term": "at", "layers": ["a", "b"]})
    got = value(at, outs([[0.0]] * 2, a=s1, b=s2), outs([[0.0]] * 2, a=t1, b=t2), batch(2))
    assert got == pytest.approx(expected, rel=1e-5)


def test_fsp_closed_form_and_pooling():
    # student: a = [1, 2], b = [3, 4] over two positions -> G = (3 + 8) / 2 = 5.5; teacher all ones -> G = 1
    so = outs([[0.0]], a=[[[1.0, 2.0]]], b=[[[3.0, 4.0]]])
    to = outs([[0.0]], a=[[[1.0, 1.0]]], b=[[[1.0, 1.0]]])
    assert value(term({"term": "fsp", "layers": ["a", "b"]}), so, to, batch(1)) == pytest.approx(4.5**2)

    f = {
        k: rng.normal(size=shape)
        for k, shape in [("l1", (2, 2, 4, 4)), ("l2", (2, 3, 2, 2)), ("l3", (2, 3, 2, 2))]
    }
    g = {k: rng.normal(size=v.shape) for k, v in f.items()}

    def gram(a, b):
        if a.shape[2] > b.shape[2]:
            a = a.reshape(2, a.shape[1], 2, 2, 2, 2).mean(axis=(3, 5))
        a, b = a.reshape(2, a.shape[1], -1), b.reshape(2, b.shape[1], -1)
        return np.einsum("ncs,nds->ncd", a, b) / a.shape[2]

    expected = sum(
        np.mean((gram(f[p], f[q]) - gram(g[p], g[q])) ** 2) for p, q in [("l1", "l2"), ("l2", "l3")]
    )
    got = value(
        term({"term": "fsp", "layers": ["l1", "l2", "l3"]}),
        outs([[0.0]] * 2, **f),
        outs([[0.0]] * 2, **g),
        batch(2),
    )
    assert got == pytest.approx(expected, rel=1e-5)


def test_fsp_without_adapter_needs_equal_channels():
    so = outs([[0.0]], a=np.ones((1, 2, 3)), b=np.ones((1, 2, 3)))
    to = outs([[0.0]], a=np.ones((1, 4, 3)), b=np.ones((1, 2, 3)))
    with pytest.raises(ConfigError, match="equal channel counts.*adapter: auto"):
        term({"term": "fsp", "layers": ["a", "b"], "adapter": False})(so, to, batch(1))
    with pytest.raises(ConfigError, match="objective.fsp: fsp adapter must be 'auto', true or false"):
        term({"term": "fsp", "layers": ["a", "b"], "adapter": "yes"})


def test_fsp_adapter_bridges_channels_by_hand():
    # student a has 1 channel, teacher a 2: "auto" learns r_a (1 -> 2) and keeps b as it is (1 = 1 channel).
    # With r_a(x) = [2x, -x] (no bias): a_s = [1, 2] -> [[2, 4], [-1, -2]], b_s = [3, 4] -> G_s = [[11], [-5.5]]
    so = outs([[0.0]], a=[[[1.0, 2.0]]], b=[[[3.0, 4.0]]])
    to = outs([[0.0]], a=[[[1.0, 1.0], [0.0, 2.0]]], b=[[[1.0, 1.0]]])  # G_t = [[1], [1]]
    t = term({"term": "fsp", "layers": ["a", "b"]})
    with torch.no_grad():
        t(so, to, batch(1))  # the dry run builds r_a and drops r_b
    assert isinstance(t.adapters[1], torch.nn.Identity)
    assert [tuple(p.shape) for p in t.parameters()] == [(2, 1), (2,)]
    with torch.no_grad():
        t.adapters[0].weight0.copy_(torch.tensor([[2.0], [-1.0]]))
        t.adapters[0].bias0.zero_()
    assert value(t, so, to, batch(1)) == pytest.approx(((11 - 1) ** 2 + (-5.5 - 1) ** 2) / 2)
    # adapter: true adapts every layer, even those with equal channels
    t_all = term({"term": "fsp", "layers": ["a", "b"], "adapter": True})
    with torch.no_grad():
        t_all(so, to, batch(1))
    assert [tuple(p.shape) for p in t_all.parameters()] == [(2, 1), (2,), (1, 1), (1,)]


def test_nst_closed_form_and_polynomial_kernel():
    # student: two orthonormal channel maps, teacher: one map [1, 1]/sqrt 2; k = (x.y)^2
    # MMD^2 = mean k(s,s) + mean k(t,t) - 2 mean k(s,t) = 0.5 + 1 - 2 * 0.5 = 0.5
    so, to = outs([[0.0]], f=[[[1.0, 0.0], [0.0, 2.0]]]), outs([[0.0]], f=[[[3.0, 3.0]]])
    assert value(term({"term": "nst", "layers": "f"}), so, to, batch(1)) == pytest.approx(0.5, rel=1e-6)

    s, t = rng.normal(size=(2, 3, 2, 3)), rng.normal(size=(2, 5, 2, 3))
    d, c = 3, 1.0

    def unit(f):
        f = f.reshape(2, f.shape[1], -1)
        return f / np.linalg.norm(f, axis=2, keepdims=True)

    us, ut = unit(s), unit(t)
    k = lambda a, b: ((np.einsum("nid,njd->nij", a, b) + c) ** d).mean(axis=(1, 2))  # noqa: E731
    expected = np.mean(k(us, us) + k(ut, ut) - 2 * k(us, ut))
    got = value(
        term({"term": "nst", "layers": "f", "degree": d, "c": c}),
        outs([[0.0]] * 2, f=s),
        outs([[0.0]] * 2, f=t),
        batch(2),
    )
    assert got == pytest.approx(expected, rel=1e-5)


def _identity_vid(vid: VID, channels: int) -> None:
    with torch.no_grad():
        for k in range(3):
            getattr(vid.mean, f"weight{k}").copy_(torch.eye(channels))
            assert getattr(vid.mean, f"bias{k}") is None  # bias-free, as the reference code


def test_vid_hand_computation_and_minimum():
    s = np.abs(rng.normal(size=(2, 2, 3, 3)))  # post-ReLU features, so ReLU(identity) is the identity
    t = rng.normal(size=(2, 2, 3, 3))
    vid = term({"term": "vid", "layers": "f", "init_variance": 2.0})
    so, to = outs([[0.0]] * 2, f=s), outs([[0.0]] * 2, f=t)
    with torch.no_grad():
        vid(so, to, batch(2))
    _identity_vid(vid, 2)
    var = 2.0  # softplus(alpha) + eps starts at init_variance exactly
    expected = np.mean(0.5 * ((t - s) ** 2 / var + np.log(var)))
    assert value(vid, so, to, batch(2)) == pytest.approx(expected, rel=1e-5)
    # equal features: the loss is at its minimum over the mean, log(var)/2, and the student gets no gradient
    fs = torch.tensor(s, dtype=torch.float32, requires_grad=True)
    loss = vid(Outputs(torch.zeros(2, 1), {"f": fs}), outs([[0.0]] * 2, f=s), batch(2))
    assert float(loss) == pytest.approx(0.5 * math.log(var), rel=1e-5)
    loss.backward()
    assert fs.grad.abs().max() < 1e-6


def test_adapters_survive_state_dict_round_trip():
    s, t = rng.normal(size=(4, 3, 2, 2)), rng.normal(size=(4, 5, 2, 2))
    so, to = outs([[0.0]] * 4, f=s), outs([[0.0]] * 4, f=t)
    for spec in ({"term": "fitnet", "layers": "f"}, {"term": "vid", "layers": "f", "hidden_channels": 7}):
        a = term(spec)
        with torch.no_grad():
            a(so, to, batch(4))
        assert all(p.requires_grad for p in a.parameters())
        torch.optim.SGD(a.parameters(), lr=0.1)  # no uninitialized parameters left
        b = term(spec)
        b.load_state_dict(a.state_dict())  # into a fresh, never-called term
        assert value(b, so, to, batch(4)) == pytest.approx(value(a, so, to, batch(4)), rel=1e-6)


# ---------------------------------------------------------------------------------------------------------
# relation: RKD, SP, PKT, CC, CRD

S3 = np.array([[0.0, 0.0], [3.0, 0.0], [0.0, 4.0]])
T3 = np.array([[0.0, 0.0, 1.0], [1.0, 0.0, 1.0], [0.0, 1.0, 1.0]])


def test_rkd_distance_closed_form():
    # student distances 3, 4, 5 (mean 4); teacher 1, 1, sqrt 2 (mean (2 + sqrt 2) / 3)
    ds = np.array([3, 4, 5]) / 4
    mt = (2 + math.sqrt(2)) / 3
    dt = np.array([1, 1, math.sqrt(2)]) / mt
    expected = huber(ds - dt).mean()
    got = value(term({"term": "rkd_distance", "pairs": "distinct"}), outs(S3), outs(T3), batch(3))
    assert got == pytest.approx(expected, rel=1e-5)
    # default (the authors' code): the 6 off-diagonal entries averaged over all 9
    got = value(term({"term": "rkd_distance"}), outs(S3), outs(T3), batch(3))
    assert got == pytest.approx(expected * 6 / 9, rel=1e-5)


def _angles(e):
    n = len(e)
    out = []
    for j in range(n):
        for i in range(n):
            for k in range(n):
                if i != j and k != j:
                    u, v = e[i] - e[j], e[k] - e[j]
                    out.append(u @ v / (np.linalg.norm(u) * np.linalg.norm(v)))
    return np.array(out)


def test_rkd_angle_and_combined_by_explicit_loops():
    s, t = rng.normal(size=(5, 4)), rng.normal(size=(5, 7))
    expected_angle = huber(_angles(s) - _angles(t)).mean()
    got = value(term({"term": "rkd_angle", "pairs": "distinct"}), outs(s), outs(t), batch(5))
    assert got == pytest.approx(expected_angle, rel=1e-4)
    # default (the authors' code): the 5 * 4 * 4 valid triplets averaged over all 5^3
    got = value(term({"term": "rkd_angle"}), outs(s), outs(t), batch(5))
    assert got == pytest.approx(expected_angle * 80 / 125, rel=1e-4)
    # closed form: the right angle of the 3-4-5 triangle has cosine 0 in both
    a = _angles(S3)
    assert a[:4] == pytest.approx(
        [1.0, 0.0, 0.0, 1.0], abs=1e-12
    )  # vertex 0: (i, k) = (1,1) (1,2) (2,1) (2,2)

    def dist(e):
        d = np.linalg.norm(e[:, None] - e[None], axis=2)[~np.eye(len(e), dtype=bool)]
        return d / d.mean()

    expected = 2.0 * huber(dist(s) - dist(t)).mean() + 3.0 * expected_angle
    rkd = term({"term": "rkd", "distance_weight": 2.0, "angle_weight": 3.0, "pairs": "distinct"})
    assert value(rkd, outs(s), outs(t), batch(5)) == pytest.approx(expected, rel=1e-4)


def test_rkd_angle_wide_embeddings_take_the_gram_path_to_the_same_value():
    # widths above relation._BMM_MAX_DIM (64) use the Gram matrix instead of the (N, N, D) differences
    s, t = rng.normal(size=(6, 70)), rng.normal(size=(6, 3))
    expected = huber(_angles(s) - _angles(t)).sum() / 6**3  # pairs="all": the authors' N^3 normaliser
    assert value(term({"term": "rkd_angle"}), outs(s), outs(t), batch(6)) == pytest.approx(expected, rel=1e-4)
    cos, valid = relation.angle_cosines(torch.tensor(s))
    assert valid.sum() == 6 * 5 * 5 and (cos[~valid] == 0).all()


@pytest.mark.parametrize("method", ["rkd_distance", "rkd_angle", "rkd"])
def test_rkd_is_invariant_to_scaling(method):
    s, t = rng.normal(size=(6, 4)), rng.normal(size=(6, 9))  # different widths too
    rkd = term({"term": method})
    base = value(rkd, outs(s), outs(t), batch(6))
    assert base > 0
    assert value(rkd, outs(7.5 * s), outs(t), batch(6)) == pytest.approx(base, rel=1e-4)
    assert value(rkd, outs(s), outs(0.2 * t), batch(6)) == pytest.approx(base, rel=1e-4)


def test_sp_hand_computation_with_different_widths():
    s, t = rng.normal(size=(4, 3)), rng.normal(size=(4, 6))

    def g(e):
        m = e @ e.T
        return m / np.linalg.norm(m, axis=1, keepdims=True)

    expected = np.sum((g(s) - g(t)) ** 2) / 16
    assert value(term({"term": "sp"}), outs(s), outs(t), batch(4)) == pytest.approx(expected, rel=1e-5)
    # two layers: the sum of both; 4-D maps are flattened per sample
    f, h = rng.normal(size=(4, 2, 2, 2)), rng.normal(size=(4, 3, 2, 2))
    two = value(term({"term": "sp", "layers": ["a", "b"]}), outs(s, a=s, b=f), outs(t, a=t, b=h), batch(4))
    assert two == pytest.approx(
        expected + np.sum((g(f.reshape(4, -1)) - g(h.reshape(4, -1))) ** 2) / 16, rel=1e-5
    )


def test_pkt_by_explicit_loops():
    s, t = rng.normal(size=(4, 3)), rng.normal(size=(4, 5))

    def probs(e):
        n = len(e)
        u = e / np.linalg.norm(e, axis=1, keepdims=True)
        p = np.zeros((n, n))
        for i in range(n):
            for j in range(n):
                if i != j:
                    p[i, j] = (1 + u[i] @ u[j]) / 2
            p[i] /= p[i].sum()
        return p

    ps, pt = probs(s), probs(t)
    off = ~np.eye(4, dtype=bool)
    expected = np.sum(pt[off] * np.log(pt[off] / ps[off])) / 4
    assert value(term({"term": "pkt", "form": "paper"}), outs(s), outs(t), batch(4)) == pytest.approx(expected, rel=1e-4)
    # default (the authors' code): the diagonal kernel value 1 stays in, mean over all N^2 entries

    def probs_code(e):
        u = e / np.linalg.norm(e, axis=1, keepdims=True)
        k = (1 + u @ u.T) / 2
        return k / k.sum(axis=1, keepdims=True)

    ps, pt = probs_code(s), probs_code(t)
    expected = np.mean(pt * np.log(pt / ps))
    assert value(term({"term": "pkt"}), outs(s), outs(t), batch(4)) == pytest.approx(expected, rel=1e-4)


def test_cc_taylor_kernel_and_bilinear():
    s, t = rng.normal(size=(4, 3)), rng.normal(size=(4, 6))
    gamma = 0.4
    us = s / np.linalg.norm(s, axis=1, keepdims=True)
    ut = t / np.linalg.norm(t, axis=1, keepdims=True)

    def taylor(u, order):
        x = u @ u.T
        return math.exp(-2 * gamma) * sum((2 * gamma * x) ** p / math.factorial(p) for p in range(order + 1))

    expected = np.mean((taylor(us, 2) - taylor(ut, 2)) ** 2)
    assert value(term({"term": "cc"}), outs(s), outs(t), batch(4)) == pytest.approx(expected, rel=1e-5)

    # a high order approaches the exact Gaussian RBF exp(-gamma ||x - y||^2) on the unit vectors
    def rbf(u):
        return np.exp(-gamma * np.sum((u[:, None] - u[None]) ** 2, axis=2))

    exact = np.mean((rbf(us) - rbf(ut)) ** 2)
    assert value(term({"term": "cc", "order": 12}), outs(s), outs(t), batch(4)) == pytest.approx(
        exact, rel=1e-4
    )

    bilinear = np.mean((us @ us.T - ut @ ut.T) ** 2)
    assert value(term({"term": "cc", "kernel": "bilinear"}), outs(s), outs(t), batch(4)) == pytest.approx(
        bilinear, rel=1e-5
    )


def _crd_with_identity_heads(num_train: int, dim: int, **kw) -> CRD:
    crd = term({"term": "crd", "feat_dim": dim, **kw})
    crd.setup(num_train=num_train, num_classes=2)
    with torch.no_grad():
        crd.eval()  # like the trainer's dry run: no memory update
        crd(outs(np.ones((2, dim))), outs(np.ones((2, dim))), batch(2, index=[0, 1]))
        crd.train()
        crd.embed_s.weight.copy_(torch.eye(dim))
        crd.embed_s.bias.zero_()
        crd.embed_t.weight.copy_(torch.eye(dim))
        crd.embed_t.bias.zero_()
        crd.log_z_s.fill_(float("nan"))
        crd.log_z_t.fill_(float("nan"))
    return crd


def test_crd_hand_computation_and_memory_update():
    # two training samples, K = 1 negative: for index 0 the negative is 1 and vice versa (no randomness)
    tau, mom = 0.5, 0.5
    crd = _crd_with_identity_heads(2, 2, temperature=tau, momentum=mom, num_negatives=4096)
    assert crd.k == 1
    ms = np.array([[1.0, 0.0], [0.0, 1.0]])
    mt = np.array([[0.6, 0.8], [-0.8, 0.6]])
    with torch.no_grad():
        crd.memory_s.copy_(torch.tensor(ms))
        crd.memory_t.copy_(torch.tensor(mt))
    s = np.array([[3.0, 4.0], [1.0, -1.0]])
    t = np.array([[0.0, 2.0], [2.0, 1.0]])
    vs = s / np.linalg.norm(s, axis=1, keepdims=True)
    vt = t / np.linalg.norm(t, axis=1, keepdims=True)

    def nce(v, memory):
        scores = np.array([[v[0] @ memory[0], v[0] @ memory[1]], [v[1] @ memory[1], v[1] @ memory[0]]]) / tau
        e = np.exp(scores)
        z = e.mean() * 2  # Z = mean(exp) * num_train, fixed on the first call
        x = e / z
        noise = 1 * (1 / 2)  # K * P_n
        return -np.sum(np.log(x[:, 0] / (x[:, 0] + noise)) + np.log(noise / (x[:, 1] + noise))) / 2

    expected = nce(vs, mt) + nce(vt, ms)
    got = value(crd, outs(s), outs(t), batch(2, index=[0, 1]))
    assert got == pytest.approx(expected, rel=1e-5)

    def upd(m, v):
        r = mom * m + (1 - mom) * v
        return r / np.linalg.norm(r, axis=1, keepdims=True)

    np.testing.assert_allclose(crd.memory_s.numpy(), upd(ms, vs), rtol=1e-5)
    np.testing.assert_allclose(crd.memory_t.numpy(), upd(mt, vt), rtol=1e-5)
    z = float(crd.log_z_s)
    crd(outs(s), outs(t), batch(2, index=[1, 0]))
    assert float(crd.log_z_s) == z  # Z is a constant after the first call


def test_crd_memory_bank_and_negatives():
    crd = term({"term": "crd", "feat_dim": 8, "num_negatives": 5})
    crd.setup(num_train=50, num_classes=3)
    assert tuple(crd.memory_s.shape) == (50, 8) and tuple(crd.memory_t.shape) == (50, 8)
    index = torch.arange(0, 50, 7)
    neg = crd.sample_negatives(index)
    assert tuple(neg.shape) == (len(index), 5)
    assert not (neg == index[:, None]).any() and neg.min() >= 0 and neg.max() < 50
    big = term({"term": "crd", "feat_dim": 8})  # default 4096 negatives, clipped to num_train - 1
    assert big.num_negatives == 4096
    big.setup(num_train=10, num_classes=3)
    assert big.k == 9
    assert tuple(big.sample_negatives(torch.tensor([0, 9])).shape) == (2, 9)


def test_crd_needs_index_and_setup():
    crd = term({"term": "crd", "feat_dim": 4})
    with pytest.raises(RuntimeError, match="setup"):
        crd(outs(np.ones((2, 3))), outs(np.ones((2, 3))), batch(2, index=[0, 1]))
    crd.setup(num_train=10, num_classes=3)
    with pytest.raises(ConfigError, match="batch.index"):
        crd(outs(np.ones((2, 3))), outs(np.ones((2, 3))), batch(2))


# ---------------------------------------------------------------------------------------------------------
# every method: config, gradients, identical inputs

N = 6
STUDENT_SHAPES = {"layer1": (N, 4, 4, 4), "layer2": (N, 6, 2, 2), "layer3": (N, 6, 2, 2), "pool": (N, 6)}
WIDE_TEACHER = {"layer1": (N, 8, 4, 4), "layer2": (N, 12, 2, 2), "layer3": (N, 12, 2, 2), "pool": (N, 12)}

CASES = {
    "dkd": {"term": "dkd", "alpha": 1.0, "beta": 8.0, "temperature": 4.0},
    "dist": {"term": "dist", "tau": 2.0},
    "fitnet": {"term": "fitnet", "layers": {"student": "layer2", "teacher": "layer3"}},
    "at": {"term": "at", "layers": ["layer1", "layer2"]},
    "fsp": {"term": "fsp", "layers": ["layer1", "layer2", "layer3"]},
    "nst": {"term": "nst", "layers": ["layer1", {"student": "layer2", "teacher": "layer3"}]},
    "vid": {"term": "vid", "layers": "layer3", "hidden_channels": 8},
    "rkd_distance": {"term": "rkd_distance", "layers": "pool"},
    "rkd_angle": {"term": "rkd_angle"},
    "rkd": {"term": "rkd", "layers": {"student": "pool", "teacher": "pool"}},
    "sp": {"term": "sp", "layers": ["layer2", "pool"]},
    "pkt": {"term": "pkt", "layers": "pool"},
    "cc": {"term": "cc", "layers": "layer3"},
    "crd": {"term": "crd", "layers": "pool", "feat_dim": 16, "num_negatives": 32},
}


def make_outputs(shapes, requires_grad: bool, seed: int) -> Outputs:
    g = torch.Generator().manual_seed(seed)
    feats = {k: torch.randn(*s, generator=g).relu().requires_grad_(requires_grad) for k, s in shapes.items()}
    return Outputs(torch.randn(N, 5, generator=g).requires_grad_(requires_grad), feats)


def run_case(method: str, student: Outputs, teacher: Outputs, train: bool = True):
    t = term(CASES[method])
    t.setup(num_train=40, num_classes=5)
    b = Batch(torch.zeros(N, 1), torch.arange(N) % 5, torch.arange(N) * 3)
    with torch.no_grad():  # the trainer's dry run
        t(student, teacher, b)
    t.train(train)
    return t, t(student, teacher, b)


def test_every_catalogue_method_is_registered_with_kind_and_paper():
    assert set(MINE) <= set(METHODS.names())
    assert set(CASES) == set(MINE)
    for name in MINE:
        meta = METHODS.get(name).meta
        assert meta["kind"] in ("response", "feature", "relation"), name
        assert "arXiv:" in meta["paper"] or "no arXiv" in meta["paper"], name
        assert "20" in meta["paper"], name


@pytest.mark.parametrize("method", MINE)
def test_gradients_reach_student_never_teacher(method):
    student = make_outputs(STUDENT_SHAPES, True, seed=1)
    teacher = make_outputs(WIDE_TEACHER, True, seed=2)
    t, loss = run_case(method, student, teacher)
    assert loss.dim() == 0 and loss.dtype == torch.float32 and torch.isfinite(loss)
    loss.backward()
    used = [student.logits] if not t.student_layers else [student.features[n] for n in t.student_layers]
    for x in used:
        assert x.grad is not None and torch.isfinite(x.grad).all() and x.grad.abs().sum() > 0
    assert teacher.logits.grad is None
    assert all(f.grad is None for f in teacher.features.values())
    for p in t.parameters():  # adapters are trained with the student
        assert p.grad is not None


def same_sided(layers):
    """The student's layer names on both sides, so that identical outputs mean identical features."""
    if isinstance(layers, list):
        return [same_sided(x) for x in layers]
    return layers["student"] if isinstance(layers, dict) else layers


@pytest.mark.parametrize("method", [m for m in MINE if m != "crd"])  # CRD's NCE loss has no zero
def test_identical_student_and_teacher_give_zero(method):
    student = make_outputs(STUDENT_SHAPES, False, seed=3)
    spec = {k: same_sided(v) if k == "layers" else v for k, v in CASES[method].items()}
    t = term(spec)
    if method == "fitnet":
        t = FitNet(layers="layer2", regressor=False)  # the learned regressor is covered by its own test
    if method == "vid":
        t = term({"term": "vid", "layers": "layer3"})  # hidden width = 6 channels, so it can be the identity
        with torch.no_grad():
            t(student, student, batch(N))
        _identity_vid(t, 6)
        expected = 0.5 * math.log(5.0)  # VID's minimum is log(sigma^2)/2, not 0
    else:
        expected = 0.0
    assert float(t(student, student, batch(N, np.arange(N) % 5))) == pytest.approx(expected, abs=1e-5)


def test_build_objective_from_config_with_every_method():
    spec = [{"term": "ce", "weight": 1.0}] + [dict(c, weight=0.5) for c in CASES.values()]
    objective = build_objective(spec)
    objective.setup(num_train=40, num_classes=5)
    assert set(objective.names) == {"ce", *MINE}
    assert objective.student_layers == ["layer1", "layer2", "layer3", "pool"]
    student = make_outputs(STUDENT_SHAPES, True, seed=4)
    teacher = make_outputs(WIDE_TEACHER, False, seed=5)
    b = Batch(torch.zeros(N, 1), torch.arange(N) % 5, torch.arange(N))
    with torch.no_grad():
        objective(student, teacher, b)
    parts = objective(student, teacher, b)
    assert torch.isfinite(parts["loss"])
    assert parts["loss"].item() == pytest.approx(
        sum(w * parts[n].item() for n, w in zip(objective.names, objective.weights, strict=True)), rel=1e-5
    )


BAD = [
    ({"term": "dkd", "temperature": 0}, "temperature"),
    ({"term": "dkd", "beta": -1}, "beta"),
    ({"term": "dist", "tau": 0}, "tau"),
    ({"term": "dist", "gamma": -0.5}, "gamma"),
    ({"term": "fitnet"}, "needs 'layers'"),
    ({"term": "fitnet", "layers": ["layer1", "layer2"]}, "one layer"),
    ({"term": "at", "layers": {"student": "layer1"}}, "student"),
    ({"term": "at", "layers": "layer1", "p": 0}, "p must"),
    ({"term": "fsp", "layers": "layer1"}, "at least two"),
    ({"term": "fsp", "layers": ["layer1"]}, "at least 2"),
    ({"term": "nst", "layers": "layer1", "degree": 0}, "degree"),
    ({"term": "vid", "layers": "layer1", "init_variance": -1}, "init_variance"),
    ({"term": "vid", "layers": "layer1", "hidden_channels": 0}, "hidden_channels"),
    ({"term": "rkd", "distance_weight": -1}, "distance_weight"),
    ({"term": "rkd_angle", "layers": ""}, "layer"),
    ({"term": "sp", "layers": 3}, "layer"),
    ({"term": "pkt", "bogus": 1}, "unknown option"),
    ({"term": "cc", "kernel": "laplace"}, "kernel"),
    ({"term": "cc", "order": 0}, "order"),
    ({"term": "crd", "num_negatives": 0}, "num_negatives"),
    ({"term": "crd", "momentum": 1.0}, "momentum"),
]


@pytest.mark.parametrize("spec, words", BAD, ids=[f"{s['term']}-{w}" for s, w in BAD])
def test_bad_options_give_config_errors(spec, words):
    with pytest.raises(ConfigError, match=words) as info:
        build_objective([spec])
    assert spec["term"] in str(info.value)


def test_spatial_terms_reject_flat_features():
    flat = outs(np.zeros((2, 3)), f=np.ones((2, 4)))
    for spec in ({"term": "at", "layers": "f"}, {"term": "nst", "layers": "f"}):
        with pytest.raises(ConfigError, match="spatial"):
            term(spec)(flat, flat, batch(2))


# ---------------------------------------------------------------------------------------------------------
# real models, tapped


class TinyConv(nn.Module):
    def __init__(self, width: int, num_classes: int = 3):
        super().__init__()
        self.layer1 = nn.Sequential(nn.Conv2d(1, width, 3, padding=1), nn.ReLU())
        self.layer2 = nn.Sequential(nn.Conv2d(width, 2 * width, 3, stride=2, padding=1), nn.ReLU())
        self.layer3 = nn.Sequential(nn.Conv2d(2 * width, 2 * width, 3, padding=1), nn.ReLU())
        self.pool = nn.Sequential(nn.AdaptiveAvgPool2d(1), nn.Flatten())
        self.fc = nn.Linear(2 * width, num_classes)

    def forward(self, x):
        return self.fc(self.pool(self.layer3(self.layer2(self.layer1(x)))))


def test_objective_on_tapped_conv_models_trains_student_only():
    torch.manual_seed(0)
    student, teacher = TinyConv(4), TinyConv(8)
    objective = build_objective(
        [
            {"term": "ce"},
            {"term": "at", "weight": 100, "layers": ["layer1", "layer2"]},
            {"term": "fitnet", "layers": "layer3"},
            {"term": "vid", "weight": 0.1, "layers": {"student": "layer2", "teacher": "layer3"}},
            {"term": "rkd", "layers": "pool"},
            {"term": "crd", "weight": 0.1, "layers": "pool", "feat_dim": 8},
        ]
    )
    x, y, index = torch.randn(16, 1, 8, 8), torch.arange(16) % 3, torch.arange(16)
    objective.setup(num_train=16, num_classes=3)
    with (
        FeatureTap(student, objective.student_layers, "student") as ts,
        FeatureTap(teacher, objective.teacher_layers, "teacher") as tt,
    ):
        assert tt.features == {}

        def step():
            s_out = Outputs(student(x), dict(ts.features))
            t_out = Outputs(teacher(x), dict(tt.features))  # grad mode on: the terms must detach the teacher
            return objective(s_out, t_out, Batch(x, y, index))

        with torch.no_grad():
            step()
        assert ts.features["layer1"].shape == (16, 4, 8, 8) and tt.features["layer3"].shape == (16, 16, 4, 4)
        optimizer = torch.optim.AdamW([*student.parameters(), *objective.parameters()], lr=1e-3)
        parts = step()
        parts["loss"].backward()
        optimizer.step()
    assert set(parts) == {"loss", "ce", "at", "fitnet", "vid", "rkd", "crd"}
    assert all(p.grad is not None for p in student.parameters())
    assert all(p.grad is None for p in teacher.parameters())
    assert all(p.grad is not None for p in objective.parameters())


def test_tap_on_missing_layer_lists_available_names():
    with pytest.raises(ConfigError, match="layer4") as info:
        FeatureTap(TinyConv(2), ["layer4"], "student")
    message = str(info.value)
    for name in ("layer1", "layer2", "layer3", "pool", "fc"):
        assert name in message


@pytest.mark.parametrize("method", ["dkd", "fitnet", "vid", "sp", "cc", "crd"])
def test_terms_compute_in_float32_under_autocast(method):
    student = make_outputs(STUDENT_SHAPES, False, seed=6)
    teacher = make_outputs(WIDE_TEACHER, False, seed=7)
    t, _ = run_case(method, student, teacher, train=False)  # eval: CRD's banks stay fixed
    b = Batch(torch.zeros(N, 1), torch.arange(N) % 5, torch.arange(N) * 3)
    torch.manual_seed(0)  # the same CRD negatives in both calls
    plain = t(student, teacher, b)
    torch.manual_seed(0)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        mixed = t(student, teacher, b)
    assert mixed.dtype == torch.float32
    assert float(mixed) == pytest.approx(float(plain), rel=1e-6)


@pytest.mark.parametrize("method", ["rkd_distance", "rkd_angle", "rkd", "sp", "pkt", "cc"])
def test_relation_terms_need_two_samples(method):
    one = outs(np.ones((1, 3)))
    with pytest.raises(RuntimeError, match="at least 2"):
        term({"term": method})(one, one, batch(1))
