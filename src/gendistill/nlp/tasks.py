"""Bundled sequence tasks, generated locally from a seed: nothing is downloaded.

==============  ===============================================================================================
dataset         items
==============  ===============================================================================================
seq_reverse     ``"3141" -> "1413"``: reverse a digit string (deterministic)
seq_sort        ``"dbca" -> "abcd"``: sort letters (deterministic)
seq_add         ``"27+915" -> "942"``: multi-digit addition (deterministic)
seq_translit    an ambiguous transliteration: every source word is written in one of two *spelling
                conventions* (60% / 40%), chosen once per item, so the correct outputs of a source are two
                different strings; ``valid`` counts an output correct when it is either (the multimodal task)
pcfg_lm         sentences from a small probabilistic context-free grammar, for causal language models
==============  ===============================================================================================

Every bundle is a :class:`SequenceBundle` with ``domain="sequence"``. Layout of one item (see docs/sequence.md):
``x = [source, left-padded to S | <bos> t_1 .. t_{n}, right-padded to T]`` (length ``S + T``) and
``y = [t_1 .. t_n <eos>, -100 ...]`` (length ``T``): the model predicts ``y[j]`` from ``x[:, :S + j + 1]``.
Language-model corpora have ``S = 0``.
"""

from __future__ import annotations

import random
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import torch

from ..data import DatasetBundle, Split
from ..errors import DataError
from ..registry import DATASETS
from .tokenizer import BOS, EOS, PAD, Tokenizer

Pair = tuple[str, str]


@dataclass
class SequenceSplit(Split):
    """An in-memory split that knows its bundle (tokenizer, lengths, ``accepts``) for decoded metrics, and, in
    multi-task data, which task each item belongs to (``groups``: an index into ``bundle.group_names``)."""

    bundle: Any = field(default=None, repr=False, compare=False)
    groups: torch.Tensor | None = field(default=None, repr=False, compare=False)

    def head(self, n: int) -> SequenceSplit:
        return self.subset(torch.arange(min(n, len(self))))

    def subset(self, index: torch.Tensor) -> SequenceSplit:
        """The items at ``index`` (a split of the same bundle)."""
        groups = self.groups[index] if self.groups is not None else None
        return SequenceSplit(self.x[index], self.y[index], bundle=self.bundle, groups=groups)


@dataclass
class SequenceBundle(DatasetBundle):
    """A dataset bundle of token sequences: ``num_classes`` is the vocabulary size and ``input_shape`` is
    ``(S, T)``, the source and target lengths. ``accepts(source, output)`` says whether an output is a
    correct one (several may be); ``cache_topk`` is how many teacher log-probabilities per position the
    teacher cache keeps (0: every one)."""

    tokenizer: Tokenizer | None = None
    accepts: Callable[[str, str], bool] | None = None
    cache_topk: int = 0
    groups: torch.Tensor | None = None  # per training item: which task it belongs to (multi-task data)
    group_names: tuple[str, ...] = ()
    group_tokens: tuple[int, ...] = ()  # per task: the token id of the marker that opens its sources

    def group_of(self, x: torch.Tensor) -> torch.Tensor:
        """Each row's task (index into ``group_names``), read from the marker token opening its source (the
        first non-padding token; sources are left-padded); -1 for a row with no known marker."""
        src = x[:, : self.src_len]
        first = src.gather(1, (src != PAD).long().argmax(1, keepdim=True)).squeeze(1)
        out = torch.full_like(first, -1)
        for g, token in enumerate(self.group_tokens):
            out[first == token] = g
        return out

    @property
    def src_len(self) -> int:
        return self.input_shape[0]

    @property
    def tgt_len(self) -> int:
        return self.input_shape[1]


def encode_pairs(pairs: list[Pair], tok: Tokenizer, src_len: int, tgt_len: int) -> SequenceSplit:
    """Token tensors in the layout of the module docstring; a DataError when an item does not fit."""
    if not pairs:
        raise DataError("the task has no items; give num_train and num_test > 0")
    n = len(pairs)
    x = torch.full((n, src_len + tgt_len), PAD, dtype=torch.long)
    y = torch.full((n, tgt_len), -100, dtype=torch.long)
    for i, (src, tgt) in enumerate(pairs):
        s, t = tok.encode(src), tok.encode(tgt)
        if len(s) > src_len or len(t) + 1 > tgt_len:
            raise DataError(f"item {i} ({src!r} -> {tgt!r}) is longer than the model's maximum "
                            f"(source {src_len}, target {tgt_len - 1} tokens)")
        if s:
            x[i, src_len - len(s) : src_len] = torch.tensor(s)
        x[i, src_len] = BOS
        if t:
            x[i, src_len + 1 : src_len + 1 + len(t)] = torch.tensor(t)
            y[i, : len(t)] = torch.tensor(t)
        y[i, len(t)] = EOS
    return SequenceSplit(x, y)


def make_bundle(name: str, train: list[Pair], test: list[Pair], level: str = "char",
                accepts: Callable[[str, str], bool] | None = None, cache_topk: int = 0,
                src_len: int | None = None, tgt_len: int | None = None, vocab: list[Pair] | None = None) -> SequenceBundle:
    """A :class:`SequenceBundle` from ``(source, target)`` text pairs (lengths fitted to the data unless given;
    the vocabulary from ``vocab``'s pairs when given, else from the data)."""
    if not train or not test:
        raise DataError(f"task {name!r} is empty (train {len(train)}, test {len(test)} items)")
    every = vocab if vocab is not None else train + test
    tok = Tokenizer.from_texts([s for s, _ in every] + [t for _, t in every], level)
    S = src_len if src_len is not None else max(len(tok.split(s)) for s, _ in every)
    T = tgt_len if tgt_len is not None else max(len(tok.split(t)) for _, t in every) + 1
    if cache_topk < 0:
        raise DataError(f"cache_topk must be >= 0 (0 caches every log-probability), got {cache_topk}")
    bundle = SequenceBundle(name, encode_pairs(train, tok, S, T), encode_pairs(test, tok, S, T), len(tok), (S, T),
                            domain="sequence", tokenizer=tok, accepts=accepts, cache_topk=cache_topk)
    bundle.train.bundle = bundle.test.bundle = bundle
    return bundle


def _check(num_train: int, num_test: int) -> None:
    if num_train < 1 or num_test < 1:
        raise DataError(f"the task is empty: num_train={num_train}, num_test={num_test}; both must be >= 1")


def _split(gen: Callable[[random.Random], Pair], num_train: int, num_test: int, seed: int) -> tuple[list, list]:
    _check(num_train, num_test)
    rng = random.Random(seed)
    items = [gen(rng) for _ in range(num_train + num_test)]
    return items[:num_train], items[num_train:]


@DATASETS.register("seq_reverse", summary="sequences: reverse a digit string (deterministic seq2seq)")
def seq_reverse(num_train: int = 2000, num_test: int = 256, min_len: int = 3, max_len: int = 8, seed: int = 0,
                cache_topk: int = 0) -> SequenceBundle:
    def gen(r: random.Random) -> Pair:
        s = "".join(r.choice("0123456789") for _ in range(r.randint(min_len, max_len)))
        return s, s[::-1]

    return make_bundle("seq_reverse", *_split(gen, num_train, num_test, seed), cache_topk=cache_topk)


@DATASETS.register("seq_sort", summary="sequences: sort letters (deterministic seq2seq)")
def seq_sort(num_train: int = 2000, num_test: int = 256, min_len: int = 3, max_len: int = 8, seed: int = 0,
             cache_topk: int = 0) -> SequenceBundle:
    def gen(r: random.Random) -> Pair:
        s = "".join(r.choice("abcdefgh") for _ in range(r.randint(min_len, max_len)))
        return s, "".join(sorted(s))

    return make_bundle("seq_sort", *_split(gen, num_train, num_test, seed), cache_topk=cache_topk)


@DATASETS.register("seq_add", summary="sequences: multi-digit addition 'a+b' -> sum (deterministic seq2seq)")
def seq_add(num_train: int = 3000, num_test: int = 256, digits: int = 3, seed: int = 0,
            cache_topk: int = 0) -> SequenceBundle:
    def gen(r: random.Random) -> Pair:
        a, b = r.randrange(10**digits), r.randrange(10**digits)
        return f"{a}+{b}", str(a + b)

    return make_bundle("seq_add", *_split(gen, num_train, num_test, seed), cache_topk=cache_topk)


# Two spelling conventions of a toy script: letters not listed map to themselves in both.
CONVENTIONS = (
    {"k": "c", "f": "ph", "s": "z", "i": "y", "x": "ks"},   # convention A (probability p_first)
    {"k": "k", "f": "f", "s": "s", "i": "ie", "x": "x"},    # convention B
)
SOURCE_LETTERS = "kfsixaeonrt"


def transliterate(src: str, convention: int) -> str:
    table = CONVENTIONS[convention]
    return "".join(table.get(c, c) for c in src)


def translit_accepts(src: str, out: str) -> bool:
    """An output is correct when it is the source written in either convention."""
    return any(out == transliterate(src, c) for c in range(len(CONVENTIONS)))


@DATASETS.register("seq_translit", summary="sequences: ambiguous transliteration, two correct outputs per source")
def seq_translit(num_train: int = 2000, num_test: int = 256, min_len: int = 3, max_len: int = 7,
                 p_first: float = 0.6, seed: int = 0, cache_topk: int = 0) -> SequenceBundle:
    if not 0.0 < p_first < 1.0:
        raise DataError(f"p_first must be in (0, 1), got {p_first}")

    def gen(r: random.Random) -> Pair:
        s = "".join(r.choice(SOURCE_LETTERS) for _ in range(r.randint(min_len, max_len)))
        return s, transliterate(s, 0 if r.random() < p_first else 1)

    return make_bundle("seq_translit", *_split(gen, num_train, num_test, seed), accepts=translit_accepts,
                       cache_topk=cache_topk)


GRAMMAR: dict[str, list[tuple[float, list[str]]]] = {
    "S": [(0.7, ["NP", "VP"]), (0.3, ["NP", "VP", "PP"])],
    "NP": [(0.5, ["Det", "N"]), (0.3, ["Det", "Adj", "N"]), (0.2, ["Name"])],
    "VP": [(0.6, ["V", "NP"]), (0.4, ["Vi"])],
    "PP": [(1.0, ["P", "NP"])],
    "Det": [(0.6, ["the"]), (0.4, ["a"])],
    "N": [(0.3, ["cat"]), (0.3, ["dog"]), (0.2, ["bird"]), (0.2, ["tree"])],
    "Adj": [(0.5, ["small"]), (0.3, ["red"]), (0.2, ["old"])],
    "Name": [(0.5, ["ann"]), (0.5, ["bob"])],
    "V": [(0.5, ["sees"]), (0.3, ["likes"]), (0.2, ["chases"])],
    "Vi": [(0.6, ["sleeps"]), (0.4, ["runs"])],
    "P": [(0.5, ["near"]), (0.5, ["under"])],
}


def pcfg_sentence(r: random.Random, symbol: str = "S") -> list[str]:
    if symbol not in GRAMMAR:
        return [symbol]
    probs, rules = zip(*GRAMMAR[symbol])
    rhs = r.choices(rules, weights=probs)[0]
    return [w for s in rhs for w in pcfg_sentence(r, s)]


@DATASETS.register("pcfg_lm", summary="sequences: sentences of a probabilistic grammar, for causal LMs (word level)")
def pcfg_lm(num_train: int = 3000, num_test: int = 256, seed: int = 0, cache_topk: int = 0) -> SequenceBundle:
    train, test = _split(lambda r: ("", " ".join(pcfg_sentence(r))), num_train, num_test, seed)
    return make_bundle("pcfg_lm", train, test, level="word", cache_topk=cache_topk, src_len=0)


MULTI_TASKS: dict[str, tuple[str, Callable[[random.Random], Pair]]] = {
    "reverse": ("R", lambda r: (lambda s: (s, s[::-1]))("".join(r.choice("0123456789") for _ in range(r.randint(3, 7))))),
    "sort": ("S", lambda r: (lambda s: (s, "".join(sorted(s))))("".join(r.choice("abcdefgh") for _ in range(r.randint(3, 7))))),
    "add": ("A", lambda r: (lambda a, b: (f"{a}+{b}", str(a + b)))(r.randrange(1000), r.randrange(1000))),
}


@DATASETS.register("seq_multi", summary="sequences: several tasks in one (reverse, sort, add; a task marker opens "
                   "each source), for multi-task students (BAM)")
def seq_multi(tasks: str = "reverse,sort,add", only: str | None = None, num_train: int = 1000, num_test: int = 128,
              seed: int = 0, cache_topk: int = 0) -> SequenceBundle:
    """``num_train`` / ``num_test`` items per task. ``only`` keeps one task's items with the *same* vocabulary and
    lengths as the whole mixture, so a single-task teacher trained on it fits a multi-task student."""
    names = [t.strip() for t in tasks.split(",") if t.strip()]
    unknown = [t for t in names if t not in MULTI_TASKS]
    if unknown or not names:
        raise DataError(f"unknown task {unknown[0] if unknown else tasks!r} in seq_multi; choose from "
                        f"{', '.join(MULTI_TASKS)}")
    if only is not None and only not in names:
        raise DataError(f"seq_multi only={only!r} is not one of its tasks ({', '.join(names)})")
    _check(num_train, num_test)
    train, test, groups = [], [], []
    for g, t in enumerate(names):
        mark, gen = MULTI_TASKS[t]
        tr, te = _split(gen, num_train, num_test, seed * 100 + g)
        train += [(mark + s, y) for s, y in tr]
        test += [(mark + s, y) for s, y in te]
        groups += [g] * len(tr)
    every = train + test
    keep = (lambda items, g0: items) if only is None else (
        lambda items, per: items[names.index(only) * per : (names.index(only) + 1) * per])
    S, T = max(len(s) for s, _ in every), max(len(t) for _, t in every) + 1
    bundle = make_bundle("seq_multi" if only is None else f"seq_multi[{only}]", keep(train, num_train),
                         keep(test, num_test), vocab=every, src_len=S, tgt_len=T, cache_topk=cache_topk)
    gid = torch.tensor(groups)
    bundle.groups = gid if only is None else torch.full((num_train,), names.index(only))
    bundle.group_names = tuple(names)
    bundle.group_tokens = tuple(bundle.tokenizer.encode(MULTI_TASKS[t][0])[0] for t in names)
    bundle.train.groups = bundle.groups
    bundle.test.groups = bundle.group_of(bundle.test.x)
    return bundle
