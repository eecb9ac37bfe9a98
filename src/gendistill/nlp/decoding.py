"""Decoding: greedy, beam search and sampling (temperature, top-k, top-p), all through the models' key/value
cache (``model.start`` / ``model.step``, :mod:`gendistill.nlp.models`).

Every function returns target tokens ``(N, T)`` (``T`` = the model's target length): the tokens up to and
including ``<eos>``, then ``<pad>``. ``use_cache=False`` recomputes every prefix (for tests and comparisons).
"""

from __future__ import annotations

import torch
from torch import Tensor, nn

from .models import reorder
from .tokenizer import EOS, PAD


def _finish(tokens: Tensor) -> Tensor:
    """Pad after the first ``<eos>`` of every row."""
    ended = (tokens == EOS).long().cumsum(1)
    after = (ended - (tokens == EOS).long()) > 0
    return tokens.masked_fill(after, PAD)


def filter_logits(logits: Tensor, top_k: int = 0, top_p: float = 1.0) -> Tensor:
    """Keep the ``top_k`` most likely tokens and the smallest set whose probability reaches ``top_p``
    (nucleus, Holtzman et al. 2020); the rest get ``-inf``."""
    if top_k > 0:
        kth = logits.topk(min(top_k, logits.shape[-1]), -1).values[..., -1:]
        logits = logits.masked_fill(logits < kth, float("-inf"))
    if top_p < 1.0:
        sorted_logits, order = logits.sort(-1, descending=True)
        cum = sorted_logits.softmax(-1).cumsum(-1)
        drop = cum - sorted_logits.softmax(-1) >= top_p  # tokens after the nucleus is complete
        logits = logits.scatter(-1, order, sorted_logits.masked_fill(drop, float("-inf")))
    return logits


@torch.no_grad()
def sample(model: nn.Module, src: Tensor, *, temperature: float = 1.0, top_k: int = 0, top_p: float = 1.0,
           greedy: bool = False, use_cache: bool = True, generator: torch.Generator | None = None) -> Tensor:
    """Ancestral sampling (or greedy decoding with ``greedy=True``) from ``model`` given sources ``src``."""
    was = model.training
    model.eval()
    logits, state = model.start(src, use_cache)
    out = []
    done = torch.zeros(len(src), dtype=torch.bool, device=src.device)
    for t in range(model.tgt_len):
        if greedy:
            nxt = logits.argmax(-1)
        else:
            probs = filter_logits(logits.float() / temperature, top_k, top_p).softmax(-1)
            nxt = torch.multinomial(probs, 1, generator=generator).squeeze(1)
        nxt = nxt.masked_fill(done, PAD)
        out.append(nxt)
        done |= nxt == EOS
        if bool(done.all()) or t == model.tgt_len - 1:
            break
        logits, state = model.step(nxt[:, None], state)
    model.train(was)
    tokens = torch.stack(out, 1)
    if tokens.shape[1] < model.tgt_len:
        tokens = torch.cat([tokens, tokens.new_full((len(src), model.tgt_len - tokens.shape[1]), PAD)], 1)
    return _finish(tokens)


def greedy(model: nn.Module, src: Tensor, use_cache: bool = True) -> Tensor:
    return sample(model, src, greedy=True, use_cache=use_cache)


@torch.no_grad()
def beam_search(model: nn.Module, src: Tensor, beam: int = 4, *, n_best: int = 1, length_penalty: float = 0.0,
                use_cache: bool = True) -> tuple[Tensor, Tensor]:
    """Beam search: the ``n_best`` highest-scoring finished hypotheses per source.

    Score = sum of token log-probabilities / length**``length_penalty`` (0: plain log-probability). A
    hypothesis ends at ``<eos>`` or at the model's target length. Returns tokens ``(N, n_best, T)`` and scores
    ``(N, n_best)``, best first."""
    was = model.training
    model.eval()
    n, T = len(src), model.tgt_len
    dev = src.device
    logits, state = model.start(src, use_cache)
    logp = logits.float().log_softmax(-1)  # (n, V)
    V = logp.shape[-1]
    k = min(beam, V)
    scores, first = logp.topk(k, -1)  # (n, k)
    seqs = first.reshape(n * k, 1)
    state = reorder(state, torch.arange(n, device=dev).repeat_interleave(k))
    finished: list[list[tuple[float, list[int]]]] = [[] for _ in range(n)]
    alive = scores.reshape(-1).clone()

    def norm(score: float, length: int) -> float:
        return score / (length**length_penalty) if length_penalty else score

    for t in range(1, T + 1):
        last = seqs[:, -1]
        for r in range(n * k):  # move ended hypotheses to the finished lists
            if alive[r] > float("-inf") and (int(last[r]) == EOS or t == T):
                finished[r // k].append((norm(float(alive[r]), t), seqs[r].tolist()))
                alive[r] = float("-inf")
        if t == T or not bool((alive > float("-inf")).any()):
            break
        best_alive = alive.view(n, k).max(1).values.tolist()
        if all(len(f) >= k and sorted(h[0] for h in f)[-k] >= b and not length_penalty
               for f, b in zip(finished, best_alive)):
            break  # log-probabilities only fall: no live hypothesis can enter any top k
        logits, state = model.step(last[:, None], state)
        cand = alive[:, None] + logits.float().log_softmax(-1)  # (n*k, V)
        cand = cand.view(n, k * V)
        best, idx = cand.topk(k, -1)
        rows = (idx // V) + torch.arange(n, device=dev)[:, None] * k
        seqs = torch.cat([seqs[rows.reshape(-1)], (idx % V).reshape(-1, 1)], 1)
        state = reorder(state, rows.reshape(-1))
        alive = best.reshape(-1)
    model.train(was)
    tokens = torch.full((n, n_best, T), PAD, dtype=torch.long, device=dev)
    out_scores = torch.full((n, n_best), float("-inf"), device=dev)
    for i, hyps in enumerate(finished):
        hyps.sort(key=lambda h: -h[0])
        for j, (s, seq) in enumerate(hyps[:n_best]):
            tokens[i, j, : len(seq)] = torch.tensor(seq, device=dev)
            out_scores[i, j] = s
    return _finish(tokens.view(n * n_best, T)).view(n, n_best, T), out_scores


@torch.no_grad()
def sequence_logprob(model: nn.Module, x: Tensor, y: Tensor) -> Tensor:
    """Sum of log p(y_t | prefix) over the real positions of each row (``y != -100``)."""
    logp = model(x).float().log_softmax(-1)
    real = y != -100
    picked = logp.gather(-1, y.clamp_min(0)[..., None]).squeeze(-1)
    return (picked * real).sum(1)


def as_inputs(src: Tensor, tokens: Tensor) -> tuple[Tensor, Tensor]:
    """Model inputs ``x`` and targets ``y`` (the data layout) for sources ``src`` and decoded ``tokens``."""
    from .tokenizer import BOS

    bos = torch.full((len(src), 1), BOS, dtype=torch.long, device=src.device)
    x = torch.cat([src, bos, tokens[:, :-1]], 1)
    tgt = x[:, src.shape[1] + 1 :]
    x[:, src.shape[1] + 1 :] = tgt.masked_fill(tgt == EOS, PAD)  # <eos> is a target, never an input
    return x, tokens.masked_fill(tokens == PAD, -100)
