"""Hugging Face causal language models as teachers or students (optional extra: ``pip install transformers``).

``hf_causal_lm`` wraps any ``AutoModelForCausalLM`` -- loaded from a *local* directory (``path``; nothing is
downloaded: ``local_files_only``) or built with random weights from a config dict (``config: {model_type: gpt2,
n_layer: 2, ...}``) -- behind the sequence models' interface (:mod:`gendistill.nlp.models`): teacher-forced
logits ``(N, T, V)`` for the target positions, and ``start`` / ``step`` decoding through the model's own
key/value cache. Its submodules are tappable by name (``model.transformer.h.1`` ...), so feature and relation
terms apply to its hidden states. The model's vocabulary must be the task's (``num_classes``); a model with
another vocabulary is a one-line error, as is a task longer than its position table.
"""

from __future__ import annotations

import inspect
from typing import Any

import torch
from torch import Tensor, nn

from ..errors import ConfigError
from ..registry import MODELS
from .tokenizer import BOS, EOS, PAD


def _transformers():
    try:
        import transformers
    except ImportError:
        raise ConfigError("hf_causal_lm needs the transformers package: pip install transformers") from None
    transformers.logging.set_verbosity_error()
    return transformers


@MODELS.register("hf_causal_lm", input_rank=2, domain="sequence", summary="a Hugging Face AutoModelForCausalLM (local path or a config "
                 "dict for random weights); needs transformers")
class HFCausalLM(nn.Module):
    def __init__(self, num_classes: int, input_shape: tuple[int, ...], path: str | None = None,
                 config: dict[str, Any] | None = None):
        super().__init__()
        tf = _transformers()
        if (path is None) == (config is None):
            raise ConfigError("hf_causal_lm needs exactly one of path (a local model directory) or config (a dict)")
        if path is not None:
            try:
                self.model = tf.AutoModelForCausalLM.from_pretrained(path, local_files_only=True)
            except (OSError, ValueError) as e:
                raise ConfigError(f"hf_causal_lm cannot load {path!r} locally ({' '.join(str(e).split())[:160]})") from None
        else:
            cfg = dict(config)
            kind = cfg.pop("model_type", None)
            if kind is None:
                raise ConfigError("hf_causal_lm config needs a model_type (gpt2, llama ...)")
            cfg.setdefault("vocab_size", num_classes)  # random weights: the task's vocabulary unless given
            cfg.setdefault("bos_token_id", BOS)
            cfg.setdefault("eos_token_id", EOS)
            cfg.setdefault("pad_token_id", PAD)
            self.model = tf.AutoModelForCausalLM.from_config(tf.AutoConfig.for_model(kind, **cfg))
        vocab = self.model.get_output_embeddings().weight.shape[0]
        if vocab != num_classes:
            raise ConfigError(f"the Hugging Face model's vocabulary has {vocab} tokens but the task's tokenizer has "
                              f"{num_classes}; teacher, student and data must share one vocabulary")
        self.src_len, self.tgt_len = int(input_shape[0]), int(input_shape[1])
        positions = getattr(self.model.config, "max_position_embeddings", None) or getattr(
            self.model.config, "n_positions", None)
        if positions is not None and positions < self.src_len + self.tgt_len:
            raise ConfigError(f"the task's sequences ({self.src_len} + {self.tgt_len} tokens) are longer than the "
                              f"model's maximum ({positions} positions)")

    def forward(self, x: Tensor) -> Tensor:
        return self.model(input_ids=x, use_cache=False).logits[:, self.src_len :]

    def _cached(self, tokens: Tensor, past: Any = None) -> tuple[Tensor, Any]:
        """Logits of ``tokens`` after ``past`` and the grown key/value cache (``cache=`` in transformers >= 5.2x,
        ``past_key_values=`` before)."""
        name = "cache" if "cache" in inspect.signature(self.model.forward).parameters else "past_key_values"
        out = self.model(input_ids=tokens, use_cache=True, **({name: past} if past is not None else {}))
        return out.logits[:, -1], out.get("cache", out.get("past_key_values"))

    def start(self, src: Tensor, use_cache: bool = True) -> tuple[Tensor, dict]:
        prefix = torch.cat([src, torch.full((len(src), 1), BOS, dtype=torch.long, device=src.device)], 1)
        if not use_cache:
            return self.model(input_ids=prefix, use_cache=False).logits[:, -1], {"past": None, "prefix": prefix}
        logits, past = self._cached(prefix)
        return logits, {"past": past, "prefix": prefix}

    def step(self, tokens: Tensor, state: dict) -> tuple[Tensor, dict]:
        prefix = torch.cat([state["prefix"], tokens], 1)
        if state["past"] is None:
            return self.model(input_ids=prefix, use_cache=False).logits[:, -1], {**state, "prefix": prefix}
        logits, past = self._cached(tokens, state["past"])
        return logits, {"past": past, "prefix": prefix}
