"""Classification over token sequences: a bundled, seeded task and a small transformer classifier.

``seq_label`` generates strings and one label per string, nothing downloaded:

===========  ==========================================================================  =======
task         label                                                                       classes
===========  ==========================================================================  =======
majority     the most frequent of the letters ``abc`` (strings of odd length drawn        3
             without ties)
sorted       whether the letters (``a-h``) are in sorted order (half the items sorted)    2
parity       whether the string of ``0`` / ``1`` holds an odd number of ones              2
===========  ==========================================================================  =======

Layout: ``x = [<bos> t_1 .. t_n, right-padded to L]`` (``L`` = ``max_len + 1``), ``y`` = the class. The bundle's
``domain`` is ``sequence_classification`` (:mod:`gendistill.domains.sequence_classification`): the metrics,
fidelity, tables and born-again generations of classification, with models that read token ids;
``vocab_size`` is the tokenizer's. ``<bos>`` doubles as the ``[CLS]`` position of BERT-style models.
"""

from __future__ import annotations

import random
from dataclasses import dataclass

import torch
from torch import Tensor, nn

from ..data import DatasetBundle, Split
from ..errors import DataError
from ..registry import DATASETS, MODELS
from .models import Block, _dims
from .taps import emit, tap_points, tapped
from .tokenizer import BOS, PAD, Tokenizer


@dataclass
class SequenceLabelBundle(DatasetBundle):
    """Token rows with one class label each; ``vocab_size`` is the tokenizer's."""

    tokenizer: Tokenizer | None = None
    vocab_size: int = 0


def _majority(r: random.Random, n: int) -> tuple[str, int]:
    while True:
        s = "".join(r.choice("abc") for _ in range(n | 1))  # odd length
        counts = [s.count(c) for c in "abc"]
        if counts.count(max(counts)) == 1:
            return s, counts.index(max(counts))


def _sorted(r: random.Random, n: int) -> tuple[str, int]:
    s = "".join(r.choice("abcdefgh") for _ in range(n))
    if r.random() < 0.5:
        return "".join(sorted(s)), 1
    while s == "".join(sorted(s)):
        s = "".join(r.choice("abcdefgh") for _ in range(n))
    return s, 0


def _parity(r: random.Random, n: int) -> tuple[str, int]:
    s = "".join(r.choice("01") for _ in range(n))
    return s, s.count("1") % 2


LABEL_TASKS = {"majority": (_majority, 3, "abc"), "sorted": (_sorted, 2, "abcdefgh"), "parity": (_parity, 2, "01")}


def encode_rows(texts: list[str], tok: Tokenizer, length: int) -> Tensor:
    x = torch.full((len(texts), length), PAD, dtype=torch.long)
    for i, s in enumerate(texts):
        ids = tok.encode(s)
        if len(ids) + 1 > length:
            raise DataError(f"item {i} ({s!r}) is longer than the rows ({length - 1} tokens after <bos>)")
        x[i, 0] = BOS
        x[i, 1 : 1 + len(ids)] = torch.tensor(ids, dtype=torch.long)
    return x


@DATASETS.register("seq_label", summary="sequence classification: majority / sorted / parity label of a token string "
                   "(for hf_classifier, seq_classifier)")
def seq_label(task: str = "majority", num_train: int = 2000, num_test: int = 256, min_len: int = 3, max_len: int = 9,
              seed: int = 0) -> SequenceLabelBundle:
    if task not in LABEL_TASKS:
        raise DataError(f"seq_label task must be one of {', '.join(LABEL_TASKS)}, got {task!r}")
    if num_train < 1 or num_test < 1:
        raise DataError(f"the task is empty: num_train={num_train}, num_test={num_test}; both must be >= 1")
    if not 1 <= min_len <= max_len:
        raise DataError(f"seq_label needs 1 <= min_len <= max_len, got {min_len}, {max_len}")
    gen, classes, letters = LABEL_TASKS[task]
    rng = random.Random(seed)
    items = [gen(rng, rng.randint(min_len, max_len)) for _ in range(num_train + num_test)]
    tok = Tokenizer(letters)
    length = max(len(s) for s, _ in items) + 1
    x = encode_rows([s for s, _ in items], tok, length)
    y = torch.tensor([label for _, label in items], dtype=torch.long)
    return SequenceLabelBundle(f"seq_label[{task}]", Split(x[:num_train], y[:num_train]),
                               Split(x[num_train:], y[num_train:]), classes, (length,),
                               domain="sequence_classification", tokenizer=tok, vocab_size=len(tok))


@MODELS.register("seq_classifier", input_rank=1, domain="sequence_classification",
                 summary="transformer encoder over token rows, mean-pooled over real tokens; sizes tiny/small/base/large")
class SequenceClassifier(nn.Module):
    """Token and position embeddings, ``layers`` pre-norm blocks attending to the real tokens only
    (``x != <pad>``), the mean of the final states over the real tokens, a linear head. Tap points
    ``hidden.0`` (embeddings) .. ``hidden.<layers>`` give ``(N, D, L)`` with padded positions zeroed, like the
    Hugging Face wrappers' (:mod:`gendistill.nlp.hf`)."""

    def __init__(self, num_classes: int, input_shape: tuple[int, ...], vocab_size: int, size: str = "small",
                 width: int | None = None, layers: int | None = None, heads: int | None = None):
        super().__init__()
        w, n, h = _dims(size, width, layers, heads)
        self.seq_len, self.vocab_size = int(input_shape[0]), int(vocab_size)
        self.embed = nn.Embedding(vocab_size, w)
        self.pos = nn.Embedding(self.seq_len, w)
        self.blocks = nn.ModuleList([Block(w, h) for _ in range(n)])
        self.ln_f = nn.LayerNorm(w)
        self.head = nn.Linear(w, num_classes)
        self.hidden = tap_points(n + 1)

    def forward(self, x: Tensor) -> Tensor:
        x = x.long()
        real = x != PAD
        real[:, 0] = True
        h = self.embed(x) + self.pos(torch.arange(x.shape[1], device=x.device))
        states = [h]
        for block in self.blocks:
            h, _ = block(h, mask=real[:, None, None, :])
            states.append(h)
        if tapped(self.hidden):
            emit(self.hidden, tuple(states), real)
        h = self.ln_f(h) * real[..., None]
        return self.head(h.sum(1) / real.sum(1, keepdim=True))
