"""Statistics over seeds, CKA, knowledge ablations, reliability bins and the report: values checked
against hand computations."""

from __future__ import annotations

import json
import math

import pytest
import torch
from torch import nn

from gendistill import metrics
from gendistill.analysis.plots import ece_from_bins
from gendistill.analysis.report import compare_runs, load_run, write_report
from gendistill.analysis.stats import aggregate_summaries, paired_comparison, summarize
from gendistill.knowledge import Batch, Outputs
from gendistill.knowledge.ablations import (
    CWTM,
    DKPP,
    KDDomain,
    KDInstance,
    KDUniverse,
    TfKD,
    permute_non_argmax,
)
from gendistill.metrics import reliability_bins
from gendistill.registry import METHODS
from gendistill.similarity import cka_matrix, linear_cka, penultimate_features

T_975_DF4 = 2.7764451051977934  # Student t quantile 0.975, 4 degrees of freedom (tables)


def logits_of(probs) -> torch.Tensor:
    return torch.tensor(probs, dtype=torch.float64).log().float()


def kl(q, p) -> float:
    return sum(a * math.log(a / b) for a, b in zip(q, p, strict=True) if a > 0)


# ------------------------------------------------------------------------------------------ stats


def test_summarize_known_sample():
    s = summarize([1, 2, 3, 4, 5])
    std = math.sqrt(10 / 4)  # sum of squared deviations 10, n - 1 = 4
    half = T_975_DF4 * std / math.sqrt(5)
    assert s["mean"] == pytest.approx(3.0)
    assert s["std"] == pytest.approx(1.5811388, abs=1e-6)
    assert s["ci95"] == pytest.approx([3 - half, 3 + half], abs=1e-9)
    assert s["n"] == 5 and s["values"] == [1.0, 2.0, 3.0, 4.0, 5.0]


def test_summarize_single_value_has_no_spread_or_interval():
    s = summarize([0.7])
    assert s["mean"] == 0.7 and s["std"] is None and s["ci95"] is None and s["n"] == 1  # no spread: unavailable


def test_paired_comparison_matches_hand_t_test():
    a, b = [2.1, 3.3, 4.0, 5.0], [1.0, 2.0, 3.0, 4.5]
    d = [x - y for x, y in zip(a, b, strict=True)]  # 1.1, 1.3, 1.0, 0.5
    m = sum(d) / 4
    sd = math.sqrt(sum((v - m) ** 2 for v in d) / 3)
    t = m / (sd / 2)
    # two-sided p for 3 degrees of freedom, closed form of the t CDF
    p = 1 - (2 / math.pi) * (math.sqrt(3) * t / (3 + t * t) + math.atan(t / math.sqrt(3)))
    r = paired_comparison(a, b)
    assert r["mean_diff"] == pytest.approx(0.975)
    assert r["p_value"] == pytest.approx(p, rel=1e-6)
    assert r["p_value"] == pytest.approx(0.0105543, abs=1e-6)
    assert r["n"] == 4 and r["test"] == "paired t-test"
    assert r["ci95"][0] < m < r["ci95"][1]
    assert paired_comparison([1.0], [0.5])["p_value"] is None
    assert paired_comparison([1.0, 2.0], [1.0, 2.0])["p_value"] is None
    with pytest.raises(ValueError):
        paired_comparison([1.0, 2.0], [1.0])


def seed_summary(seed: int, acc: list[float], nll: list[float], ens_acc: float) -> dict:
    gens = []
    for k, (a, n) in enumerate(zip(acc, nll, strict=True)):
        gens.append(
            {
                "gen": k,
                "arch": "mlp",
                "teacher": None if k == 0 else f"gen{k - 1}",
                "test_acc": a,
                "test_nll": n,
                "test_ece": 0.05 - 0.01 * k,
                "agreement_teacher": None if k == 0 else 0.9 + 0.01 * seed,
                "kl_teacher": None if k == 0 else 0.1 * (k + seed),
                "agreement_gen0": None if k == 0 else 0.88,
            }
        )
    return {
        "seed": seed,
        "generations": gens,
        "ensembles": [{"members": [1, 2], "test_acc": ens_acc, "test_nll": 0.3, "test_ece": 0.02}],
    }


def two_seed_summaries() -> list[dict]:
    return [
        seed_summary(0, [0.80, 0.82, 0.83], [0.60, 0.55, 0.50], 0.85),
        seed_summary(1, [0.78, 0.81, 0.84], [0.62, 0.56, 0.52], 0.86),
    ]


def test_aggregate_two_seeds():
    per_seed = two_seed_summaries()
    per_seed[1]["generations"][2]["resumed"] = True
    agg = aggregate_summaries(per_seed)
    assert agg["seeds"] == [0, 1] and agg["n_seeds"] == 2
    g0, g1, g2 = agg["generations"]
    assert g0["gen"] == 0 and g0["arch"] == "mlp" and g0["teacher"] is None
    assert g0["agreement_teacher"] is None and "vs_gen0" not in g0
    assert g1["teacher"] == "gen0"
    assert g1["test_acc"]["mean"] == pytest.approx(0.815)
    assert g1["test_acc"]["std"] == pytest.approx(math.sqrt(2 * 0.005**2))
    assert g1["test_acc"]["values"] == [0.82, 0.81]
    assert g1["kl_teacher"]["mean"] == pytest.approx(0.15)
    # paired differences gen2 - gen0: 0.03 and 0.06
    vs = g2["vs_gen0"]["test_acc"]
    assert vs["mean_diff"] == pytest.approx(0.045) and vs["n"] == 2
    assert vs["p_value"] == pytest.approx(paired_comparison([0.83, 0.84], [0.80, 0.78])["p_value"])
    assert set(g2["vs_gen0"]) == {"test_acc", "test_nll", "test_ece"}
    assert g2["resumed"] == {"per_seed": [None, True]}
    (ens,) = agg["ensembles"]
    assert ens["members"] == [1, 2] and ens["test_acc"]["mean"] == pytest.approx(0.855)
    assert ens["vs_gen0"]["test_acc"]["mean_diff"] == pytest.approx(0.065)
    json.dumps(agg)  # serializable as summary.json


def test_aggregate_rejects_disagreeing_architectures():
    per_seed = two_seed_summaries()
    per_seed[1]["generations"][1]["arch"] = "cnn1d"
    with pytest.raises(ValueError, match="arch"):
        aggregate_summaries(per_seed)


# ------------------------------------------------------------------------------------------ CKA


def test_cka_identity_invariances_and_hand_case():
    g = torch.Generator().manual_seed(0)
    x = torch.randn(50, 8, generator=g)
    q, _ = torch.linalg.qr(torch.randn(8, 8, generator=g, dtype=torch.float64))
    y = torch.randn(50, 5, generator=g)
    assert linear_cka(x, x) == pytest.approx(1.0, abs=1e-12)
    base = linear_cka(x, y)
    assert 0 < base < 1
    assert linear_cka(x.double() @ q, y) == pytest.approx(base, abs=1e-10)
    assert linear_cka(3.7 * x.double(), y) == pytest.approx(base, abs=1e-10)
    # one feature each: CKA is the squared Pearson correlation. x-mean = (-1, 0, 1), y-mean = (0, -1, 1):
    # (x.y)^2 / (|x|^2 |y|^2) = 1 / (2 * 2)
    assert linear_cka(
        torch.tensor([[1.0], [2.0], [3.0]]), torch.tensor([[1.0], [0.0], [2.0]])
    ) == pytest.approx(0.25)


def test_cka_gram_form_and_matrix():
    g = torch.Generator().manual_seed(1)
    a, b = torch.randn(6, 40, generator=g), torch.randn(6, 30, generator=g)  # D > N: the N x N form is used
    ac, bc = a.double() - a.double().mean(0), b.double() - b.double().mean(0)
    hand = (bc.T @ ac).pow(2).sum() / (torch.linalg.norm(ac.T @ ac) * torch.linalg.norm(bc.T @ bc))
    assert linear_cka(a, b) == pytest.approx(hand.item(), abs=1e-12)
    m = cka_matrix([a, b, a])
    assert m.shape == (3, 3) and m.dtype == torch.float64
    assert torch.allclose(m, m.T) and torch.allclose(m.diagonal(), torch.ones(3, dtype=torch.float64))
    assert m[0, 1].item() == pytest.approx(hand.item(), abs=1e-12)


def test_penultimate_features_reads_input_of_last_linear():
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(4, 6), nn.ReLU(), nn.Dropout(0.5), nn.Linear(6, 3))
    x = torch.randn(10, 4)
    feats = penultimate_features(model, x, batch_size=3)
    assert feats.shape == (10, 6)
    assert torch.allclose(feats, torch.relu(model[0](x)).detach())  # eval mode: dropout off
    assert model.training  # mode restored


# ------------------------------------------------------------------------------------------ ablations


def test_ablations_are_registered():
    for name in ("cwtm", "dkpp", "kd_universe", "kd_domain", "kd_instance", "tf_kd"):
        entry = METHODS.get(name)
        assert entry.meta["kind"] == "ablation" and entry.meta["paper"]
    assert TfKD().needs_teacher is False


def test_cwtm_hand_value():
    teacher = Outputs(logits_of([[0.7, 0.2, 0.1], [0.25, 0.5, 0.25]]))
    student = Outputs(logits_of([[1 / 3, 1 / 3, 1 / 3], [0.5, 0.25, 0.25]]).requires_grad_())
    batch = Batch(torch.zeros(2, 1), torch.tensor([0, 1]))
    loss = CWTM()(student, teacher, batch)
    # w = max teacher prob = (0.7, 0.5); CE = (log 3, -log 0.25)
    assert loss.item() == pytest.approx((0.7 * math.log(3) + 0.5 * math.log(4)) / 1.2, rel=1e-5)
    loss.backward()


def test_dkpp_keeps_argmax_and_multiset():
    g = torch.Generator().manual_seed(0)
    p = torch.randn(64, 7, generator=g).softmax(-1)
    q = permute_non_argmax(p, torch.Generator().manual_seed(3))
    assert torch.equal(q.argmax(-1), p.argmax(-1))
    assert torch.equal(q.gather(1, p.argmax(-1, keepdim=True)), p.gather(1, p.argmax(-1, keepdim=True)))
    assert torch.equal(q.sort(-1).values, p.sort(-1).values)
    assert not torch.equal(q, p)
    assert torch.equal(q, permute_non_argmax(p, torch.Generator().manual_seed(3)))  # seeded: reproducible


def test_dkpp_hand_value():
    # the two non-argmax probabilities are equal, so any permutation gives the same target
    teacher = Outputs(logits_of([[0.6, 0.2, 0.2]]))
    student = Outputs(torch.zeros(1, 3))
    loss = DKPP(temperature=1.0, seed=0)(student, teacher, Batch(torch.zeros(1, 1), torch.tensor([0])))
    assert loss.item() == pytest.approx(kl([0.6, 0.2, 0.2], [1 / 3] * 3), rel=1e-5)
    a = DKPP(seed=5)(
        Outputs(torch.randn(8, 5)),
        Outputs(torch.randn(8, 5)),
        Batch(torch.zeros(8), torch.zeros(8, dtype=torch.long)),
    )
    b = DKPP(seed=5)(
        Outputs(torch.randn(8, 5)),
        Outputs(torch.randn(8, 5)),
        Batch(torch.zeros(8), torch.zeros(8, dtype=torch.long)),
    )
    assert a.isfinite() and b.isfinite()


def test_kd_universe_hand_values():
    teacher = Outputs(logits_of([[0.7, 0.2, 0.1], [0.25, 0.5, 0.25]]))
    student = Outputs(torch.zeros(2, 3))
    batch = Batch(torch.zeros(2, 1), torch.tensor([0, 1]))
    # mean teacher prob of the true class m = (0.7 + 0.5) / 2 = 0.6 -> target (0.6, 0.2, 0.2) up to order
    loss = KDUniverse(temperature=1.0)(student, teacher, batch)
    assert loss.item() == pytest.approx(kl([0.6, 0.2, 0.2], [1 / 3] * 3), rel=1e-5)
    # fixed eps = 0.3: target (1 - 0.3) onehot + 0.3 / 3 = (0.8, 0.1, 0.1); T = 2 scales by 4
    loss = KDUniverse(temperature=2.0, epsilon=0.3)(student, teacher, batch)
    assert loss.item() == pytest.approx(4 * kl([0.8, 0.1, 0.1], [1 / 3] * 3), rel=1e-5)
    with pytest.raises(ValueError):
        KDUniverse(epsilon=1.5)


def test_kd_domain_consistent_per_class_and_hand_value():
    term = KDDomain(temperature=1.0, seed=0)
    term.setup(num_train=10, num_classes=4)
    perms = term.perms.clone()
    assert torch.equal(perms, KDDomain(seed=0)._permutations(4, torch.device("cpu")))  # seeded
    for c in range(4):
        assert perms[c, c] == c and sorted(perms[c].tolist()) == [0, 1, 2, 3]
    p = [[0.1, 0.6, 0.2, 0.1], [0.3, 0.4, 0.1, 0.2], [0.4, 0.3, 0.2, 0.1]]
    y = torch.tensor([1, 1, 0])
    s = [[0.1, 0.2, 0.3, 0.4], [0.25, 0.25, 0.25, 0.25], [0.4, 0.3, 0.2, 0.1]]
    loss = term(Outputs(logits_of(s)), Outputs(logits_of(p)), Batch(torch.zeros(3, 1), y))
    expected = []
    for i in range(3):
        q = [0.0] * 4
        for j in range(4):
            q[perms[y[i], j]] = p[i][j]  # the same permutation for every sample of a class
        assert q[y[i]] == p[i][y[i]]
        expected.append(kl(q, s[i]))
    assert loss.item() == pytest.approx(sum(expected) / 3, rel=1e-5)


def test_kd_instance_class_means_hand_value():
    a, b, c = [0.7, 0.2, 0.1], [0.5, 0.3, 0.2], [0.1, 0.8, 0.1]
    teacher = Outputs(logits_of([a, b, c]))
    batch = Batch(torch.zeros(3, 1), torch.tensor([0, 0, 1]))
    mean0 = [(x + y) / 2 for x, y in zip(a, b, strict=True)]  # (0.6, 0.25, 0.15)
    loss = KDInstance(temperature=1.0, momentum=None)(Outputs(torch.zeros(3, 3)), teacher, batch)
    uniform = [1 / 3] * 3
    assert loss.item() == pytest.approx((2 * kl(mean0, uniform) + kl(c, uniform)) / 3, rel=1e-5)
    # running mean: first batch initialises, the second blends with momentum 0.9
    term = KDInstance(temperature=1.0, momentum=0.9)
    term(Outputs(torch.zeros(3, 3)), teacher, batch)
    d = [0.2, 0.2, 0.6]
    term(Outputs(torch.zeros(1, 3)), Outputs(logits_of([d])), Batch(torch.zeros(1, 1), torch.tensor([0])))
    blended = [0.9 * m + 0.1 * x for m, x in zip(mean0, d, strict=True)]
    assert term.class_mean[0].tolist() == pytest.approx(blended, abs=1e-6)
    assert term.class_mean[1].tolist() == pytest.approx(c, abs=1e-6)
    assert term.seen.tolist() == [True, True, False]


def test_tf_kd_hand_values():
    batch = Batch(torch.zeros(1, 1), torch.tensor([0]))
    student = Outputs(torch.zeros(1, 3))
    loss = TfKD(correct_prob=0.9, temperature=1.0, form="paper")(student, None, batch)
    assert loss.item() == pytest.approx(kl([0.9, 0.05, 0.05], [1 / 3] * 3), rel=1e-5)
    # T = 2: virtual teacher softened as p^(1/2) renormalised, loss scaled by T^2
    r = [math.sqrt(0.9), math.sqrt(0.05), math.sqrt(0.05)]
    q = [v / sum(r) for v in r]
    loss = TfKD(correct_prob=0.9, temperature=2.0, form="paper")(student, None, batch)
    assert loss.item() == pytest.approx(4 * kl(q, [1 / 3] * 3), rel=1e-5)
    # the authors' code (default): target softmax(p^d / T), student at T = 1, mean over N*C entries, x multiplier
    e = [math.exp(0.9 / 2), math.exp(0.05 / 2), math.exp(0.05 / 2)]
    q = [v / sum(e) for v in e]
    loss = TfKD(correct_prob=0.9, temperature=2.0, multiplier=5.0)(student, None, batch)
    assert loss.item() == pytest.approx(5.0 * kl(q, [1 / 3] * 3) / 3, rel=1e-5)


def test_ablation_terms_backpropagate():
    torch.manual_seed(0)
    s = torch.randn(6, 5, requires_grad=True)
    t = Outputs(torch.randn(6, 5))
    batch = Batch(torch.zeros(6, 1), torch.tensor([0, 1, 2, 3, 4, 0]))
    for term in (CWTM(), DKPP(), KDUniverse(), KDDomain(), KDInstance(), TfKD()):
        loss = term(Outputs(s), t if term.needs_teacher else None, batch)
        (grad,) = torch.autograd.grad(loss, s)
        assert loss.ndim == 0 and loss.isfinite() and grad.abs().sum() > 0, term.name


# ------------------------------------------------------------------------------------------ reliability


def test_reliability_bins_reproduce_metrics_ece():
    g = torch.Generator().manual_seed(0)
    logits = torch.randn(500, 10, generator=g) * 3
    y = torch.randint(0, 10, (500,), generator=g)
    bins = reliability_bins(logits, y)
    assert len(bins["bin_count"]) == 16 and sum(bins["bin_count"]) == 500
    assert ece_from_bins(bins) == pytest.approx(metrics.ece(logits, y), abs=1e-6)
    # saturated softmax (confidence exactly 1.0 in float32), right and wrong: torchmetrics' own bin
    sat = torch.tensor([[100.0, 0, 0], [100.0, 0, 0], [0, 100.0, 0], [2.0, 0, 0], [0, 0, 3.0]])
    ys = torch.tensor([0, 1, 1, 0, 2])
    bins = reliability_bins(sat, ys, n_bins=15)
    assert bins["bin_count"][-1] == 3 and bins["bin_lower"][-1] == 1.0
    assert ece_from_bins(bins) == pytest.approx(metrics.ece(sat, ys), abs=1e-6)


# ------------------------------------------------------------------------------------------ report


def write_history(path, epochs=3, shift=0.0):
    path.parent.mkdir(parents=True, exist_ok=True)
    lines = [
        "epoch,lr,train_loss,train_ce,train_kd,train_acc,test_acc,test_nll,holdout_agreement,holdout_kl,seconds"
    ]
    for e in range(1, epochs + 1):
        lines.append(
            f"{e},0.01,{1 / e + shift},{0.5 / e},{0.5 / e},{0.5 + 0.1 * e},{0.45 + 0.1 * e + shift},"
            f"{1 / e},{0.8 + 0.05 * e},{0.2 / e},0.5"
        )
    path.write_text("\n".join(lines) + "\n")


def write_analysis(folder, seed: int):
    g = torch.Generator().manual_seed(seed)
    an = folder / "analysis"
    an.mkdir(parents=True, exist_ok=True)
    m = [[1.0, 0.9, 0.85], [0.9, 1.0, 0.93], [0.85, 0.93, 1.0]]
    (an / "agreement_matrix.json").write_text(json.dumps({"gens": [0, 1, 2], "test": m}))
    (an / "cka.json").write_text(json.dumps({"gens": [0, 1, 2], "test": m}))
    rel = {
        f"gen{k}": reliability_bins(
            torch.randn(200, 5, generator=g) * 2, torch.randint(0, 5, (200,), generator=g)
        )
        for k in range(3)
    }
    (an / "reliability.json").write_text(json.dumps(rel))


def make_single_run(root, summary: dict):
    root.mkdir(parents=True)
    (root / "summary.json").write_text(json.dumps(summary))
    (root / "config.yaml").write_text("name: fake\nseeds: [0]\n")
    for k in range(3):
        write_history(root / f"gen{k}" / "history.csv")
    write_analysis(root, 0)


def test_write_report_single_seed(tmp_path):
    run = tmp_path / "single"
    make_single_run(run, two_seed_summaries()[0])
    html_path, md_path = write_report(run)
    page, md = html_path.read_text(), md_path.read_text()
    assert "data:image/png;base64," in page and "<table>" in page and 'src="plots/' not in page
    assert "| model | teacher | test acc (%) | NLL | ECE (%) | agree w/ teacher (%) |" in md
    assert "| gen1 (mlp) | gen0 | 82.00 | 0.5500 |" in md
    assert "| ens(gen1..gen2) | — | 85.00 |" in md
    assert "## Compared with generation 0" in md and "+3.00" in md  # gen2 - gen0 accuracy, pp
    assert "## Definitions" in md and "sum_i KL(p_t,i || p_s,i)" in md
    for name in (
        "test_acc",
        "agreement_teacher",
        "kl_teacher",
        "test_ece",
        "training_gen0",
        "training_gen2",
        "agreement_matrix_test",
        "cka_test",
        "reliability",
    ):
        assert (run / "plots" / f"{name}.png").exists(), name
        assert f"](plots/{name}.png)" in md


def test_write_report_skips_absent_inputs(tmp_path):
    run = tmp_path / "bare"
    run.mkdir()
    (run / "summary.json").write_text(json.dumps(two_seed_summaries()[1]))
    html_path, md_path = write_report(run)
    assert "| gen2 (mlp) | gen1 | 84.00 |" in md_path.read_text()
    assert (
        not (run / "plots" / "reliability.png").exists()
        and not (run / "plots" / "training_gen0.png").exists()
    )
    assert (run / "plots" / "test_acc.png").exists()


def make_seed_run(root, with_top: bool):
    for s in two_seed_summaries():
        d = root / f"seed{s['seed']}"
        d.mkdir(parents=True)
        (d / "summary.json").write_text(json.dumps(s))
        for k in range(3):
            write_history(d / f"gen{k}" / "history.csv", shift=0.01 * s["seed"])
        write_analysis(d, s["seed"])
    if with_top:
        (root / "summary.json").write_text(json.dumps(aggregate_summaries(two_seed_summaries())))


@pytest.mark.parametrize("with_top", [True, False])
def test_write_report_two_seeds(tmp_path, with_top):
    run = tmp_path / "agg"
    make_seed_run(run, with_top)
    assert load_run(run).aggregated
    html_path, md_path = write_report(run)
    page, md = html_path.read_text(), md_path.read_text()
    assert page.count("data:image/png;base64,") >= 8
    # gen1 accuracy over seeds: mean 81.50, std 0.71, t(0.975, 1) = 12.706 -> CI half-width 6.35
    assert "| gen1 (mlp) | gen0 | 81.50 ± 0.71 [75.15, 87.85] |" in md
    assert "2 seeds (0, 1)" in md
    assert "| model | Δ test acc (pp) [95% CI] | p |" in md
    assert "Bins pooled over 2 seeds" in md and "mean over 2 seeds" in md


def test_compare_runs(tmp_path):
    make_single_run(tmp_path / "a", two_seed_summaries()[0])
    make_seed_run(tmp_path / "b", with_top=True)
    table = compare_runs([tmp_path / "a", tmp_path / "b"])
    lines = table.splitlines()
    assert lines[0] == "| metric (test) | a | b (2 seeds) |"
    assert "| gen0 test acc (%) | 80.00 | 79.00 ± 1.41 |" in lines
    assert any(ln.startswith("| gen1 KL(t‖s) | 0.1000 | 0.1500 ± 0.0707 |") for ln in lines)
    assert "| ens(gen1..gen2) test acc (%) | 85.00 | 85.50 ± 0.71 |" in lines
