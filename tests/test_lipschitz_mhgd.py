"""LONDON (lipschitz_kd) and MHGD (mhgd): values by hand on small cases, power iteration against the exact
spectral norm, and MHGD's two-stage procedure through the objective."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
from typer.testing import CliRunner

from gendistill.cli import app
from gendistill.config import load_config
from gendistill.errors import ConfigError
from gendistill.knowledge import Batch, Outputs, build_objective, build_term
from gendistill.knowledge.lipschitz import power_iteration_norm, transmitting_matrix

rng = np.random.default_rng(13)


def tt(a, grad=False) -> torch.Tensor:
    return torch.tensor(np.asarray(a), dtype=torch.float32, requires_grad=grad)


def outs(n: int, grad=False, **features) -> Outputs:
    return Outputs(torch.zeros(n, 3), {k: tt(v, grad) for k, v in features.items()})


def batch(n: int) -> Batch:
    return Batch(torch.zeros(n, 1), torch.zeros(n, dtype=torch.long))


# ------------------------------------------------------------------------------------------------------
# lipschitz_kd


def test_power_iteration_matches_the_exact_spectral_norm():
    tm = torch.tensor(rng.normal(size=(6, 5, 7)), dtype=torch.float64)
    exact = torch.linalg.matrix_norm(tm, ord=2)
    assert torch.allclose(exact, torch.linalg.svdvals(tm)[:, 0])
    assert torch.allclose(power_iteration_norm(tm, 300), exact, rtol=1e-6)
    few = power_iteration_norm(tm, 2)  # a few steps estimate from below
    assert bool((few <= exact + 1e-9).all()) and bool((few > 0.5 * exact).all())
    # a hand-made transmitting matrix: F1 = I (2 channels x 2 positions), F2 = diag(3, 1) -> TM = diag(1.5, 0.5)
    f1, f2 = np.eye(2)[None], np.diag([3.0, 1.0])[None]
    tm = transmitting_matrix(tt(f1), tt(f2))
    assert np.allclose(tm.numpy(), [[[1.5, 0.0], [0.0, 0.5]]])
    assert float(power_iteration_norm(tm)) == pytest.approx(1.5, rel=1e-6)
    with pytest.raises(ValueError, match="iterations"):
        power_iteration_norm(tm, 0)


def test_lipschitz_kd_by_hand_on_vectors_and_maps():
    # vectors: TM[n] = f1_n f2_n^T (rank one), so sigma = ||f1_n|| ||f2_n||, exact after two iterations
    n = 4
    s = [rng.normal(size=(n, c)) for c in (3, 4, 2)]
    t = [rng.normal(size=(n, c)) for c in (3, 4, 2)]
    sig = lambda f, g: np.linalg.norm(f, axis=1) * np.linalg.norm(g, axis=1)  # noqa: E731
    expected = (np.mean((sig(s[0], s[1]) - sig(t[0], t[1])) ** 2) / 4
                + np.mean((sig(s[1], s[2]) - sig(t[1], t[2])) ** 2) / 2)
    spec = {"term": "lipschitz_kd", "layers": ["a", "b", "c"]}
    term, _ = build_term(spec)
    got = term(outs(n, a=s[0], b=s[1], c=s[2]), outs(n, a=t[0], b=t[1], c=t[2]), batch(n))
    assert float(got) == pytest.approx(expected, rel=1e-5)
    # maps of unequal widths against the SVD of the transmitting matrices, adapter off (sigma is a scalar)
    fs1, fs2 = rng.normal(size=(n, 2, 4, 4)), rng.normal(size=(n, 3, 2, 2))
    ft1, ft2 = rng.normal(size=(n, 5, 4, 4)), rng.normal(size=(n, 6, 2, 2))

    def svd_sigma(f1, f2):
        f1 = f1.reshape(n, f1.shape[1], 2, 2, 2, 2).mean(axis=(3, 5)).reshape(n, f1.shape[1], 4)  # pool to 2x2
        return np.linalg.svd(f1 @ f2.reshape(n, f2.shape[1], 4).transpose(0, 2, 1) / 4, compute_uv=False)[:, 0]

    expected = np.mean((svd_sigma(fs1, fs2) - svd_sigma(ft1, ft2)) ** 2) / 2
    term, _ = build_term({"term": "lipschitz_kd", "layers": ["a", "b"], "adapter": False, "iterations": 200})
    got = term(outs(n, a=fs1, b=fs2), outs(n, a=ft1, b=ft2), batch(n))
    assert float(got) == pytest.approx(expected, rel=1e-4)


def test_lipschitz_kd_connectors_gradients_and_errors():
    n = 6
    s = outs(n, True, a=rng.normal(size=(n, 2, 4, 4)), b=rng.normal(size=(n, 3, 2, 2)))
    t = outs(n, True, a=rng.normal(size=(n, 2, 4, 4)), b=rng.normal(size=(n, 6, 2, 2)))
    term, _ = build_term({"term": "lipschitz_kd", "layers": ["a", "b"]})
    term(s, t, batch(n)).backward()
    assert isinstance(term.adapters[0], torch.nn.Identity)  # 2 == 2 channels: no connector
    assert term.adapters[1].conv.weight0.shape == (6, 3) and term.adapters[1].conv.weight0.grad is not None
    assert s.features["a"].grad is not None and t.features["a"].grad is None  # teacher detached
    for bad, msg in (({"layers": "a"}, "list of at least two"), ({"layers": ["a"]}, "at least 2"),
                     ({"layers": ["a", "b"], "iterations": 0}, "iterations"),
                     ({"layers": ["a", "b"], "adapter": "yes"}, "adapter")):
        with pytest.raises(ConfigError, match=msg):
            build_term({"term": "lipschitz_kd", **bad})


# ------------------------------------------------------------------------------------------------------
# mhgd


def _emb(f):
    v = f.reshape(f.shape[0], f.shape[1], -1).mean(axis=2)
    return v / np.linalg.norm(v, axis=1, keepdims=True)


def _lin_bn(x, p, key, train):
    h = x @ p[f"{key}_w"].T + p[f"{key}_b"]
    mu, var = (h.mean(0), h.var(0)) if train else (p[f"{key}_mean"], p[f"{key}_var"])
    return p[f"{key}_g"] * (h - mu) / np.sqrt(var + 1e-5) + p[f"{key}_beta"]


def _graph(cur, prev, p, heads, train):
    n = cur.shape[0]
    s = _lin_bn(cur, p, "s", train).reshape(n, -1, heads).transpose(2, 0, 1)
    r = _lin_bn(prev, p, "r", train).reshape(n, -1, heads).transpose(2, 1, 0)
    return s @ r  # (H, N, N)


def _softmax(x):
    e = np.exp(x - x.max(-1, keepdims=True))
    return e / e.sum(-1, keepdims=True)


def _estimate(cur, prev, p, heads):
    n = cur.shape[0]
    a = _softmax(_graph(cur, prev, p, heads, True))
    x = np.maximum(_lin_bn(prev, p, "e0", True), 0.0)
    y = (a @ x).transpose(1, 0, 2).reshape(n, -1) @ p["e1_w"].T + p["e1_b"]
    return y / np.linalg.norm(y, axis=1, keepdims=True)


def _kl(gs, gt):
    ps, pt = _softmax(np.tanh(gs)), _softmax(np.tanh(gt))
    return np.sum(ps * (np.log(ps) - np.log(pt)))


def test_mhgd_by_hand_both_stages():
    rng = np.random.default_rng(5)  # this test's own draws, whatever runs before it
    n, heads = 5, 2
    fs = [rng.normal(size=(n, 3, 4, 4)), rng.normal(size=(n, 4, 2, 2)), rng.normal(size=(n, 6))]
    ft = [rng.normal(size=(n, 3, 4, 4)), rng.normal(size=(n, 4, 2, 2)), rng.normal(size=(n, 6))]
    s, t = outs(n, a=fs[0], b=fs[1], c=fs[2]), outs(n, a=ft[0], b=ft[1], c=ft[2])
    term, _ = build_term({"term": "mhgd", "layers": ["a", "b", "c"], "heads": heads, "drop_heads": False})
    term.eval()
    with torch.no_grad():
        term(s, t, batch(n))  # materialise; widths agree, so no adapters
        for m in term.attention:  # non-trivial running statistics and batch-norm affines
            for _, buf in [*m.named_buffers(), *((k, v) for k, v in m.named_parameters() if k.endswith("_g"))]:
                buf.copy_(torch.tensor(rng.uniform(0.5, 1.5, size=buf.shape)))
    term.train()
    assert all(isinstance(a, torch.nn.Identity) for a in term.adapters)
    assert term.attention[0].s_w.shape == (3 * heads, 4)  # D2 = (4 + 3) // 2 = 3 per head
    params = [{k: v.detach().double().numpy().copy() for k, v in [*m.named_parameters(), *m.named_buffers()]}
              for m in term.attention]
    vs, vt = [_emb(f) for f in fs], [_emb(f) for f in ft]
    def kl(batch_stats):
        return sum(_kl(_graph(vs[k + 1], vs[k], params[k], heads, batch_stats),
                       _graph(vt[k + 1], vt[k], params[k], heads, batch_stats)) for k in range(2))

    mha = sum(np.mean(1.0 - np.sum(_estimate(vt[k + 1], vt[k], params[k], heads) * vt[k + 1], axis=1))
              for k in range(2))
    term.stage = 2
    # (KL of two close float32 softmaxes: about 1e-4 relative rounding)
    assert float(term(s, t, batch(n))) == pytest.approx(kl(True), rel=1e-3)  # default: batch statistics
    term.statistics = "running"  # the reference's moving averages
    assert float(term(s, t, batch(n))) == pytest.approx(kl(False), rel=1e-3)
    assert all(torch.equal(b, torch.tensor(params[k][name], dtype=torch.float32))
               for k, m in enumerate(term.attention) for name, b in m.named_buffers())  # stage 2 updates no stats
    term.stage = 1
    assert float(term(s, t, batch(n)).detach()) == pytest.approx(mha, rel=1e-4)
    # the student's graphs equal the teacher's: zero KL
    term.stage = 2
    assert float(term(t, t, batch(n))) == pytest.approx(0.0, abs=1e-6)


def test_mhgd_two_stage_procedure_through_the_objective():
    n = 8
    fs = dict(a=rng.normal(size=(n, 2, 4, 4)), b=rng.normal(size=(n, 3)))
    ft = dict(a=rng.normal(size=(n, 4, 4, 4)), b=rng.normal(size=(n, 5)))
    obj = build_objective([{"term": "ce"}, {"term": "mhgd", "layers": ["a", "b"]}])
    term = obj.terms[1]
    assert term.stage1_epochs(15) == 4 and term.stage1_epochs(140) == 40  # the authors' 40 of 140
    t = outs(n, **ft)
    obj.eval()
    with torch.no_grad():
        obj(outs(n, **fs), t, batch(n))  # materialise (adapters: 2 -> 4 and 3 -> 5)
    obj.train()
    assert term.adapters[0].weight0.shape == (4, 2)
    obj.on_epoch_start(1, 15)  # stage 1: the attention network alone, on the teacher
    s = outs(n, True, **fs)
    parts = obj(s, t, batch(n))
    assert term.stage == 1 and torch.equal(parts["loss"], parts["mhgd"])
    parts["loss"].backward()
    assert term.attention[0].s_w.grad is not None and term.attention[0].e1_w.grad is not None
    assert s.features["a"].grad is None and term.adapters[0].weight0.grad is None  # the student is untouched
    term.zero_grad(set_to_none=True)
    obj.on_epoch_start(5, 15)  # stage 2: ce + the KL of the graphs; the attention network is fixed
    s = outs(n, True, **fs)
    parts = obj(s, t, batch(n))
    assert float(parts["loss"]) == pytest.approx(float(parts["ce"] + parts["mhgd"]), rel=1e-6)
    parts["loss"].backward()
    assert s.features["a"].grad is not None and term.adapters[0].weight0.grad is not None
    assert all(p.grad is None for p in term.attention.parameters())
    # joint (the gendistill variant): both losses from the first epoch
    joint = build_objective([{"term": "ce"}, {"term": "mhgd", "layers": ["a", "b"], "procedure": "joint"}])
    joint.on_epoch_start(1, 15)
    assert joint.stage is None and joint.terms[1].stage1_epochs(15) == 0


def test_mhgd_errors():
    for bad, msg in (({"layers": "a"}, "list of at least two"), ({"layers": ["a", "b"], "heads": 0}, "heads"),
                     ({"layers": ["a", "b"], "procedure": "staged"}, "procedure"),
                     ({"layers": ["a", "b"], "stage1_epochs": 0}, "stage1_epochs"),
                     ({"layers": ["a", "b"], "statistics": "moving"}, "statistics")):
        with pytest.raises(ConfigError, match=msg):
            build_term({"term": "mhgd", **bad})
    with pytest.raises(ConfigError, match="weight must be > 0"):  # stage 1 would have nothing to train
        build_objective([{"term": "ce"}, {"term": "mhgd", "weight": 0, "layers": ["a", "b"]}])
    term, _ = build_term({"term": "mhgd", "layers": ["a", "b"]})
    with pytest.raises(RuntimeError, match="at least 2"):
        term(outs(1, a=np.ones((1, 2)), b=np.ones((1, 2))), outs(1, a=np.ones((1, 2)), b=np.ones((1, 2))), batch(1))


@pytest.mark.parametrize("method", ["mhgd", "lipschitz_kd"])
def test_example_config_and_listing(method):
    cfg = load_config(Path(__file__).parents[1] / "examples" / "methods" / f"{method}.yaml")
    objective = build_objective(cfg.objective)
    assert objective.names == ["ce", method]
    assert objective.student_layers == ["layer1", "layer2", "layer3"]
    out = CliRunner().invoke(app, ["list", "methods"]).output
    assert method in out and {"mhgd": "Lee & Song 2019", "lipschitz_kd": "Shang"}[method] in out
