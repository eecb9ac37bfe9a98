"""Sequence models and language models: bundled tasks, a local tokenizer, transformer models with a KV cache,
decoding, token-level distillation losses, the top-k teacher cache and sequence metrics. The domain itself is
:mod:`gendistill.domains.sequence`; the sequence schemes (``seq_kd``, ``seq_interp``, ``on_policy``) are in
:mod:`gendistill.schemes`. See docs/sequence.md."""

from . import classify, hf, losses, models, tasks  # noqa: F401  (register terms, models and datasets; hf imports

#                                                   transformers only when an hf_* model is built)
from .tokenizer import BOS, EOS, PAD, Tokenizer

__all__ = ["BOS", "EOS", "PAD", "Tokenizer", "losses", "models", "tasks"]
