"""Sequence models: a decoder-only causal LM and an encoder-decoder, with a key/value cache for decoding.

Both take the layout of :mod:`gendistill.nlp.tasks` -- ``x = [source (S) | <bos> target (T)]`` -- and return
teacher-forced logits ``(N, T, V)`` for the target positions, so every loss, metric and teacher treats them
alike. The decoder-only model reads the whole row causally (a prefix LM; padding is a token it reads, losses
skip it); the encoder-decoder encodes the source (padding masked) and decodes the target.

Incremental decoding: ``start(src) -> state`` runs the source (and ``<bos>``) and returns the first
next-token logits; ``step(tokens, state)`` appends one token per row and returns the next logits, reusing
every earlier key and value; ``reorder(state, index)`` selects rows (beam search). ``use_cache=False`` makes
``step`` recompute the whole prefix instead, which the tests compare against.
"""

from __future__ import annotations

from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from ..errors import ConfigError
from ..registry import MODELS
from .taps import emit, tap_points, tapped
from .tokenizer import BOS, PAD

SIZES = {"tiny": (32, 1, 2), "small": (64, 2, 4), "base": (128, 3, 4), "large": (256, 4, 8)}  # width, layers, heads


class Attention(nn.Module):
    def __init__(self, width: int, heads: int, cross: bool = False):
        super().__init__()
        self.heads = heads
        self.q = nn.Linear(width, width)
        self.kv = nn.Linear(width, 2 * width)
        self.out = nn.Linear(width, width)
        self.cross = cross

    def _split(self, t: Tensor) -> Tensor:
        n, length, w = t.shape
        return t.view(n, length, self.heads, w // self.heads).transpose(1, 2)

    def forward(self, h: Tensor, source: Tensor, mask: Tensor | None, past: tuple[Tensor, Tensor] | None = None,
                causal: bool = False) -> tuple[Tensor, tuple[Tensor, Tensor]]:
        q = self._split(self.q(h))
        if self.cross and past is not None:  # the memory's keys/values were computed once
            k, v = past
        else:
            k, v = (self._split(t) for t in self.kv(source).chunk(2, -1))
            if past is not None:
                k, v = torch.cat([past[0], k], 2), torch.cat([past[1], v], 2)
        if causal and mask is None and q.shape[2] > 1:
            o = F.scaled_dot_product_attention(q, k, v, is_causal=True)
        else:
            o = F.scaled_dot_product_attention(q, k, v, attn_mask=mask)
        n, _, length, _ = o.shape
        return self.out(o.transpose(1, 2).reshape(n, length, -1)), (k, v)


class Block(nn.Module):
    """Pre-norm transformer block: self-attention, optional cross-attention, MLP."""

    def __init__(self, width: int, heads: int, cross: bool = False, dropout: float = 0.0):
        super().__init__()
        self.ln1, self.attn = nn.LayerNorm(width), Attention(width, heads)
        self.ln_x, self.xattn = (nn.LayerNorm(width), Attention(width, heads, cross=True)) if cross else (None, None)
        self.ln2 = nn.LayerNorm(width)
        self.mlp = nn.Sequential(nn.Linear(width, 4 * width), nn.GELU(), nn.Linear(4 * width, width))
        self.drop = nn.Dropout(dropout)

    def forward(self, h: Tensor, mask: Tensor | None = None, causal: bool = False, past: Any = None,
                memory: Tensor | None = None, mem_mask: Tensor | None = None) -> tuple[Tensor, Any]:
        self_past, cross_past = past if past is not None else (None, None)
        a = self.ln1(h)
        o, self_kv = self.attn(a, a, mask, self_past, causal)
        h = h + self.drop(o)
        cross_kv = None
        if self.xattn is not None:
            o, cross_kv = self.xattn(self.ln_x(h), memory, mem_mask, cross_past)
            h = h + self.drop(o)
        return h + self.drop(self.mlp(self.ln2(h))), (self_kv, cross_kv)


def _dims(size: str, width: int | None, layers: int | None, heads: int | None) -> tuple[int, int, int]:
    if size not in SIZES:
        raise ConfigError(f"model size must be one of {', '.join(SIZES)}, got {size!r}")
    w, n, h = SIZES[size]
    w, n, h = width or w, layers or n, heads or h
    if w % h:
        raise ConfigError(f"model width {w} must be divisible by heads {h}")
    return w, n, h


class SeqModel(nn.Module):
    """Shared pieces: embeddings, positions, the output head and the decoding interface."""

    src_len: int
    tgt_len: int

    def _init_common(self, vocab: int, input_shape: tuple[int, ...], width: int, positions: int) -> None:
        if len(input_shape) != 2:
            raise ConfigError(f"sequence models take input_shape (source length, target length), got {input_shape}; "
                              "use them with a sequence dataset (gendistill list datasets: seq_*, pcfg_lm)")
        self.vocab = int(vocab)
        self.src_len, self.tgt_len = int(input_shape[0]), int(input_shape[1])
        self.embed = nn.Embedding(vocab, width)
        self.pos = nn.Embedding(positions, width)
        self.ln_f = nn.LayerNorm(width)
        self.head = nn.Linear(width, vocab, bias=False)

    def check_input(self, x: Tensor) -> None:
        if x.ndim != 2 or x.shape[1] != self.src_len + self.tgt_len:
            raise ConfigError(f"the model takes token rows of length {self.src_len} + {self.tgt_len}, got shape "
                              f"{tuple(x.shape)}; the model and the data do not match")
        if int(x.max()) >= self.vocab:
            raise ConfigError(f"token id {int(x.max())} is outside the model's vocabulary of {self.vocab}; "
                              "the tokenizer and the model do not match")


@MODELS.register("seq_decoder", input_rank=2, domain="sequence", summary="decoder-only causal transformer LM (prefix LM for seq2seq); "
                 "sizes tiny/small/base/large")
class DecoderLM(SeqModel):
    def __init__(self, num_classes: int, input_shape: tuple[int, ...], size: str = "small", width: int | None = None,
                 layers: int | None = None, heads: int | None = None, dropout: float = 0.0):
        super().__init__()
        w, n, h = _dims(size, width, layers, heads)
        self._init_common(num_classes, input_shape, w, input_shape[0] + input_shape[1])
        self.blocks = nn.ModuleList([Block(w, h, dropout=dropout) for _ in range(n)])
        self.hidden = tap_points(n + 1)

    def _run(self, tokens: Tensor, start: int, past: list | None) -> tuple[Tensor, list]:
        pos = torch.arange(start, start + tokens.shape[1], device=tokens.device)
        h = self.embed(tokens) + self.pos(pos)
        new, states = [], [h]
        for i, block in enumerate(self.blocks):
            h, kv = block(h, causal=past is None, past=None if past is None else (past[i], None))
            new.append(kv[0])
            states.append(h)
        if past is None and tapped(self.hidden):
            emit(self.hidden, tuple(states), tokens != PAD)
        return self.head(self.ln_f(h)), new

    def forward(self, x: Tensor) -> Tensor:
        return self._run(x, 0, None)[0][:, self.src_len :]

    def start(self, src: Tensor, use_cache: bool = True) -> tuple[Tensor, dict]:
        bos = torch.full((len(src), 1), BOS, dtype=torch.long, device=src.device)
        prefix = torch.cat([src, bos], 1)
        logits, kv = self._run(prefix, 0, None)
        return logits[:, -1], {"kv": kv, "prefix": prefix, "cache": use_cache}

    def step(self, tokens: Tensor, state: dict) -> tuple[Tensor, dict]:
        prefix = torch.cat([state["prefix"], tokens], 1)
        if not state["cache"]:
            return self._run(prefix, 0, None)[0][:, -1], {**state, "prefix": prefix}
        logits, kv = self._run(tokens, prefix.shape[1] - 1, state["kv"])
        return logits[:, -1], {**state, "kv": kv, "prefix": prefix}


@MODELS.register("seq_encdec", input_rank=2, domain="sequence", summary="encoder-decoder transformer (seq2seq); sizes tiny/small/base/large")
class EncoderDecoder(SeqModel):
    def __init__(self, num_classes: int, input_shape: tuple[int, ...], size: str = "small", width: int | None = None,
                 layers: int | None = None, heads: int | None = None, dropout: float = 0.0):
        super().__init__()
        w, n, h = _dims(size, width, layers, heads)
        self._init_common(num_classes, input_shape, w, max(input_shape[0], input_shape[1]))
        self.encoder = nn.ModuleList([Block(w, h, dropout=dropout) for _ in range(n)])
        self.ln_enc = nn.LayerNorm(w)
        self.decoder = nn.ModuleList([Block(w, h, cross=True, dropout=dropout) for _ in range(n)])
        self.encoder_hidden, self.decoder_hidden = tap_points(n + 1), tap_points(n + 1)

    def encode(self, src: Tensor) -> tuple[Tensor, Tensor | None]:
        if src.shape[1] == 0:
            raise ConfigError("the encoder-decoder needs a source; use seq_decoder for language modelling")
        h = self.embed(src) + self.pos(torch.arange(src.shape[1], device=src.device))
        pad = src == PAD
        pad[:, -1] = False  # an all-padding row still attends to one position
        mask = (~pad)[:, None, None, :]
        states = [h]
        for block in self.encoder:
            h, _ = block(h, mask=mask)
            states.append(h)
        if tapped(self.encoder_hidden):
            emit(self.encoder_hidden, tuple(states), ~pad)
        return self.ln_enc(h), mask

    def _decode(self, tokens: Tensor, start: int, memory: Tensor, mem_mask: Tensor, past: list | None):
        h = self.embed(tokens) + self.pos(torch.arange(start, start + tokens.shape[1], device=tokens.device))
        new, states = [], [h]
        for i, block in enumerate(self.decoder):
            h, kv = block(h, causal=past is None, past=None if past is None else past[i], memory=memory,
                          mem_mask=mem_mask)
            new.append(kv)
            states.append(h)
        if past is None and tapped(self.decoder_hidden):
            emit(self.decoder_hidden, tuple(states), tokens != PAD)
        return self.head(self.ln_f(h)), new

    def forward(self, x: Tensor) -> Tensor:
        memory, mask = self.encode(x[:, : self.src_len])
        return self._decode(x[:, self.src_len :], 0, memory, mask, None)[0]

    def start(self, src: Tensor, use_cache: bool = True) -> tuple[Tensor, dict]:
        memory, mask = self.encode(src)
        prefix = torch.full((len(src), 1), BOS, dtype=torch.long, device=src.device)
        logits, kv = self._decode(prefix, 0, memory, mask, None)
        return logits[:, -1], {"kv": kv, "prefix": prefix, "memory": memory, "mask": mask, "cache": use_cache}

    def step(self, tokens: Tensor, state: dict) -> tuple[Tensor, dict]:
        prefix = torch.cat([state["prefix"], tokens], 1)
        if not state["cache"]:
            logits = self._decode(prefix, 0, state["memory"], state["mask"], None)[0]
            return logits[:, -1], {**state, "prefix": prefix}
        logits, kv = self._decode(tokens, prefix.shape[1] - 1, state["memory"], state["mask"], state["kv"])
        return logits[:, -1], {**state, "kv": kv, "prefix": prefix}


def reorder(state: Any, index: Tensor) -> Any:
    """Select rows ``index`` of every tensor in a decoding state (beam search)."""
    if isinstance(state, Tensor):
        return state.index_select(0, index)
    if hasattr(state, "reorder_cache"):  # a Hugging Face key/value cache object
        state.reorder_cache(index)
        return state
    if isinstance(state, dict):
        return {k: reorder(v, index) for k, v in state.items()}
    if isinstance(state, (list, tuple)):
        return type(state)(reorder(v, index) for v in state)
    return state


class SeqEnsemble(nn.Module):
    """The mean-probability ensemble of sequence models, with the same decoding interface."""

    def __init__(self, models: list[nn.Module]):
        super().__init__()
        self.members = nn.ModuleList(models)
        self.src_len, self.tgt_len = models[0].src_len, models[0].tgt_len

    @staticmethod
    def _mean(logits: list[Tensor]) -> Tensor:
        return torch.stack([z.float().log_softmax(-1) for z in logits]).exp().mean(0).clamp_min(1e-12).log()

    def forward(self, x: Tensor) -> Tensor:
        return self._mean([m(x) for m in self.members])

    def start(self, src: Tensor, use_cache: bool = True) -> tuple[Tensor, list]:
        outs = [m.start(src, use_cache) for m in self.members]
        return self._mean([o[0] for o in outs]), [o[1] for o in outs]

    def step(self, tokens: Tensor, state: list) -> tuple[Tensor, list]:
        outs = [m.step(tokens, s) for m, s in zip(self.members, state)]
        return self._mean([o[0] for o in outs]), [o[1] for o in outs]


def is_sequence_model(model: nn.Module) -> bool:
    return all(hasattr(model, a) for a in ("start", "step", "src_len", "tgt_len"))
