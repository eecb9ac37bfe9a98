"""Sequence metrics: token accuracy, NLL and perplexity on reference prefixes; exact match, ``valid`` (the
output is one of the correct ones) and BLEU of decoded outputs; fidelity per token (top-1 agreement and
KL(teacher || student)) and per sequence (the student's greedy output equals the teacher's).

Predictions (:meth:`SequenceDomain.predict`) are teacher-forced logits ``(N, T, V)`` with NaN at the
positions that carry no label, so every figure here is taken over real positions only.

BLEU: corpus BLEU-4 on the task's tokens (Papineni et al. 2002; brevity penalty; add-one smoothing of the
n-gram precisions for sentence BLEU, Lin & Och 2004). With ``sacrebleu`` installed (``pip install
gendistill[nlp]``), ``bleu`` is sacrebleu's corpus BLEU over the same tokens and ``chrf`` is added.
"""

from __future__ import annotations

import math
from collections import Counter
from collections.abc import Sequence

import torch
from torch import Tensor


def real_positions(pred: Tensor) -> Tensor:
    return ~torch.isnan(pred[..., 0])


def token_metrics(pred: Tensor, y: Tensor) -> dict[str, float]:
    """``token_acc``, ``nll`` (mean per real token) and ``ppl`` = exp(nll)."""
    real = y != -100
    logp = pred[real].float().log_softmax(-1)
    target = y[real]
    if len(target) == 0:
        return {"token_acc": float("nan"), "nll": float("nan"), "ppl": float("nan")}
    nll = -logp.gather(-1, target[:, None]).mean().item()
    return {"token_acc": (logp.argmax(-1) == target).float().mean().item(), "nll": nll, "ppl": math.exp(min(nll, 50))}


def token_fidelity(teacher: Tensor, student: Tensor) -> dict[str, float]:
    """Top-1 agreement and KL(teacher || student) per real token, averaged over tokens."""
    real = real_positions(teacher) & real_positions(student)
    t, s = teacher[real].float().log_softmax(-1), student[real].float().log_softmax(-1)
    if len(t) == 0:
        return {"agreement": float("nan"), "kl": float("nan")}
    return {"agreement": (t.argmax(-1) == s.argmax(-1)).float().mean().item(),
            "kl": (t.exp() * (t - s)).sum(-1).clamp_min(0).mean().item()}


def ensemble(preds: Sequence[Tensor]) -> Tensor:
    """log of the mean of the members' probabilities (NaN positions stay NaN)."""
    return torch.stack([p.float().softmax(-1) for p in preds]).mean(0).clamp_min(1e-12).log()


def _ngrams(tokens: Sequence[str], n: int) -> Counter:
    return Counter(tuple(tokens[i : i + n]) for i in range(len(tokens) - n + 1))


def bleu(hyps: Sequence[Sequence[str]], refs: Sequence[Sequence[str]], smooth: bool = False, max_n: int = 4) -> float:
    """Corpus BLEU-``max_n`` in [0, 100] over token lists (geometric mean of clipped n-gram precisions times
    the brevity penalty ``min(1, exp(1 - r / c))``); ``smooth`` adds one to every count (sentence BLEU)."""
    match, total = [0] * max_n, [0] * max_n
    hyp_len = sum(len(h) for h in hyps)
    ref_len = sum(len(r) for r in refs)
    for h, r in zip(hyps, refs):
        for n in range(1, max_n + 1):
            hn, rn = _ngrams(h, n), _ngrams(r, n)
            match[n - 1] += sum(min(c, rn[g]) for g, c in hn.items())
            total[n - 1] += max(len(h) - n + 1, 0)
    add = 1 if smooth else 0
    if hyp_len == 0 or any(m + add == 0 for m in match):
        return 0.0
    log_p = sum(math.log((m + add) / (t + add)) for m, t in zip(match, total) if t + add > 0) / max_n
    bp = 1.0 if hyp_len > ref_len else math.exp(1 - ref_len / hyp_len)
    return 100.0 * bp * math.exp(log_p)


def sentence_bleu(hyp: Sequence[str], ref: Sequence[str]) -> float:
    return bleu([hyp], [ref], smooth=True)


def text_scores(hyps: list[str], refs: list[str], tokenize) -> dict[str, float]:
    """``bleu`` (and ``chrf`` with sacrebleu installed) of decoded texts against references."""
    try:
        import sacrebleu  # optional extra
    except ImportError:
        return {"bleu": bleu([tokenize(h) for h in hyps], [tokenize(r) for r in refs])}
    joined = lambda texts: [" ".join(tokenize(t)) for t in texts]  # noqa: E731  (BLEU over the task's tokens)
    return {"bleu": sacrebleu.corpus_bleu(joined(hyps), [joined(refs)], tokenize="none").score,
            "chrf": sacrebleu.corpus_chrf(hyps, [refs]).score}
