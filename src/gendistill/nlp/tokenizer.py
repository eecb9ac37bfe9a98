"""A local tokenizer built from a task's own symbols: character- or word-level, nothing downloaded.

Ids 0, 1, 2 are ``<pad>``, ``<bos>``, ``<eos>``; the task's symbols follow in sorted order, so the same task
always gives the same vocabulary.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence

from ..errors import DataError

PAD, BOS, EOS = 0, 1, 2
SPECIALS = ("<pad>", "<bos>", "<eos>")


class Tokenizer:
    """``level="char"``: one token per character; ``level="word"``: one token per space-separated word."""

    def __init__(self, symbols: Iterable[str], level: str = "char"):
        if level not in ("char", "word"):
            raise DataError(f"tokenizer level must be 'char' or 'word', got {level!r}")
        self.level = level
        self.symbols = list(SPECIALS) + sorted(set(symbols) - set(SPECIALS))
        self.ids = {s: i for i, s in enumerate(self.symbols)}

    @classmethod
    def from_texts(cls, texts: Iterable[str], level: str = "char") -> Tokenizer:
        pieces = (list(t) if level == "char" else t.split() for t in texts)
        return cls({p for ps in pieces for p in ps}, level)

    def __len__(self) -> int:
        return len(self.symbols)

    def split(self, text: str) -> list[str]:
        return list(text) if self.level == "char" else text.split()

    def encode(self, text: str) -> list[int]:
        try:
            return [self.ids[p] for p in self.split(text)]
        except KeyError as e:
            raise DataError(f"symbol {e.args[0]!r} is not in this task's vocabulary ({len(self)} symbols); "
                            "the tokenizer and the data do not match") from None

    def decode(self, ids: Sequence[int]) -> str:
        """Text up to the first ``<eos>``; padding and ``<bos>`` are skipped."""
        out = []
        for i in ids:
            i = int(i)
            if i == EOS:
                break
            if i in (PAD, BOS):
                continue
            out.append(self.symbols[i])
        return ("" if self.level == "char" else " ").join(out)
