"""Graph-based relational terms (issue 13): IRG and graph KD, values by hand on small cases."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from gendistill.knowledge import Batch, Outputs, build_objective, build_term

rng = np.random.default_rng(7)


def outs(logits, **features) -> Outputs:
    t = lambda a: torch.tensor(np.asarray(a), dtype=torch.float32)  # noqa: E731
    return Outputs(t(logits), {k: t(v) for k, v in features.items()})


def value(spec, s, t, y=None) -> float:
    term, _ = build_term(spec)
    n = s.logits.shape[0]
    y = torch.zeros(n, dtype=torch.long) if y is None else torch.tensor(y)
    return float(term(s, t, Batch(torch.zeros(n, 1), y)).detach())


def graph(f):
    u = f.reshape(len(f), -1)
    u = u / np.linalg.norm(u, axis=1, keepdims=True)
    s = u @ u.T
    np.fill_diagonal(s, 0.0)
    d = s.sum(1) ** -0.5
    return d[:, None] * s * d[None, :]


def test_graph_kd_by_hand_full_knn_power_and_classes():
    fs, ft = np.abs(rng.normal(size=(5, 3))), np.abs(rng.normal(size=(5, 6, 2)))  # different widths
    s, t = outs(np.zeros((5, 2)), h=fs), outs(np.zeros((5, 2)), h=ft)
    a_s, a_t = graph(fs), graph(ft)
    assert value({"term": "graph_kd", "layers": "h"}, s, t) == pytest.approx(np.sum((a_s - a_t) ** 2), rel=1e-5)
    # power 2: paths of length two
    got = value({"term": "graph_kd", "layers": "h", "power": 2}, s, t)
    assert got == pytest.approx(np.sum((a_s @ a_s - a_t @ a_t) ** 2), rel=1e-5)
    # k = 1: the teacher's nearest neighbour of each sample, symmetrised, masks both graphs
    m = np.zeros((5, 5))
    masked = a_t.copy()
    np.fill_diagonal(masked, -np.inf)
    m[np.arange(5), masked.argmax(1)] = 1
    m = np.maximum(m, m.T)
    got = value({"term": "graph_kd", "layers": "h", "k": 1}, s, t)
    assert got == pytest.approx(np.sum(((a_s - a_t) * m) ** 2), rel=1e-5)
    # intra-class edges only
    y = [0, 0, 1, 1, 1]
    same = (np.array(y)[:, None] == np.array(y)[None, :]).astype(float)
    got = value({"term": "graph_kd", "layers": "h", "classes": "intra"}, s, t, y)
    assert got == pytest.approx(np.sum(((a_s - a_t) * same) ** 2), rel=1e-5)
    # invariant to scaling a sample's features (cosine graph), zero for identical geometry
    assert value({"term": "graph_kd", "layers": "h"}, outs(np.zeros((5, 2)), h=3 * fs), outs(np.zeros((5, 2)), h=fs)) \
        == pytest.approx(0.0, abs=1e-10)


def test_irg_by_hand_and_bad_options():
    zs, zt = rng.normal(size=(4, 3)), rng.normal(size=(4, 3))
    fs, ft = rng.normal(size=(4, 2)), rng.normal(size=(4, 5))

    def edges(f):
        d = ((f[:, None] - f[None]) ** 2).sum(-1)
        return d / d.max()

    expected = 0.1 * np.mean((zs - zt) ** 2) + 5.0 * np.mean((edges(fs) - edges(ft)) ** 2)
    assert value({"term": "irg", "layers": "f"}, outs(zs, f=fs), outs(zt, f=ft)) == pytest.approx(expected, rel=1e-5)
    # the transformation between two layers of each network: per-sample squared distance / max
    gs, gt = rng.normal(size=(4, 2)), rng.normal(size=(4, 5))
    hs, ht = rng.normal(size=(4, 4)), rng.normal(size=(4, 10))

    def tr(a, b):  # the wider one's adjacent channels averaged down to the narrower count
        c = min(a.shape[1], b.shape[1])
        a = a.reshape(4, c, -1).mean(-1)
        b = b.reshape(4, c, -1).mean(-1)
        d = ((a - b) ** 2).sum(1)
        return d / d.max()

    got = value({"term": "irg", "layers": ["g", "h"], "vertex_weight": 0, "edge_weight": 0, "transform_weight": 1},
                outs(zs, g=gs, h=hs), outs(zt, g=gt, h=ht))
    assert got == pytest.approx(np.mean((tr(gs, hs) - tr(gt, ht)) ** 2), rel=1e-5)
    from gendistill.errors import ConfigError

    for bad, msg in (({"term": "graph_kd"}, "layers"), ({"term": "graph_kd", "layers": "h", "k": 0}, "k must"),
                     ({"term": "graph_kd", "layers": "h", "classes": "some"}, "classes"),
                     ({"term": "irg", "layers": "h", "edge_weight": -1}, "edge_weight")):
        with pytest.raises(ConfigError, match=msg):
            build_objective([bad])


def test_graph_terms_backpropagate_to_the_student_only():
    fs = torch.tensor(np.abs(rng.normal(size=(6, 4))), dtype=torch.float32, requires_grad=True)
    ft = torch.tensor(np.abs(rng.normal(size=(6, 3))), dtype=torch.float32, requires_grad=True)
    zs = torch.randn(6, 3, requires_grad=True)
    for spec in ({"term": "graph_kd", "layers": "h", "k": 2}, {"term": "irg", "layers": "h"}):
        term, _ = build_term(spec)
        loss = term(Outputs(zs, {"h": fs}), Outputs(torch.randn(6, 3), {"h": ft}), Batch(torch.zeros(6, 1), torch.zeros(6, dtype=torch.long)))
        loss.backward()
        assert fs.grad is not None and fs.grad.abs().sum() > 0 and ft.grad is None
        fs.grad = None
