"""Hugging Face models as teachers or students (optional extra: ``pip install transformers``).

Three wrappers, each loaded from a *local* directory (``path``; nothing is downloaded: ``local_files_only``) or
built with random weights from a config dict (``config: {model_type: gpt2, n_layer: 2, ...}``; the task's
vocabulary size and the special token ids are filled in unless given):

================  =========================================  ===================================================
model             wraps                                      domain / interface
================  =========================================  ===================================================
hf_causal_lm      any ``AutoModelForCausalLM`` (GPT-2,       ``sequence``: the row ``[source | <bos> target]``
                  Llama ...)                                 read causally, padding masked; target logits
hf_seq2seq_lm     any ``AutoModelForSeq2SeqLM`` (T5, BART)   ``sequence``: the source (left-padded, masked by an
                                                             attention mask) encoded, ``<bos> target`` decoded
hf_classifier     any ``AutoModelForSequenceClassification`` ``sequence_classification``: token rows (``<bos>``
                  (BERT, GPT-2 ...)                          first, right-padded, masked) -> class logits
================  =========================================  ===================================================

The sequence models have the interface of :mod:`gendistill.nlp.models` (teacher-forced logits ``(N, T, V)``;
``start`` / ``step`` decoding through the model's own key/value cache, so greedy, beam search, sampling,
sequence-level KD and on-policy sampling use gendistill's decoder).

**Hidden-state taps.** Every wrapper has one tap point per hidden state the model returns with
``output_hidden_states`` -- ``hidden.0`` (the embeddings) to ``hidden.<L>`` (the last layer); for seq2seq models
``encoder_hidden.<i>`` and ``decoder_hidden.<i>`` -- named in a term's ``layers`` like any image model's layer
(``layers: {student: hidden.1, teacher: hidden.2}``). A tap gives ``(N, D, L)`` (channels first, like a 1-D
convolution's map, so FitNets, AT, RKD, SP ... read it unchanged) with the padded positions (attention mask 0)
set to zero, so they add nothing to a feature term and get no gradient. The hidden states are only requested
while a tap is attached. The model's own submodules (``model.transformer.h.1`` ...) can be tapped too.

**Checks** (one-line errors): the model's vocabulary must be the task's (``num_classes`` for sequence models,
``vocab_size`` for classifiers) -- so a teacher and a student whose vocabularies differ never both fit the task;
the task's rows must fit the model's position table (``max_position_embeddings`` / ``n_positions``).
"""

from __future__ import annotations

import inspect
from typing import Any

import torch
from torch import Tensor, nn

from ..errors import ConfigError
from ..registry import MODELS
from .taps import emit, tap_points, tapped
from .tokenizer import BOS, EOS, PAD


def _transformers(name: str):
    try:
        import transformers
    except ImportError:
        raise ConfigError(f"{name} needs the transformers package: pip install transformers") from None
    transformers.logging.set_verbosity_error()
    return transformers


def _load(name: str, auto: str, path: str | None, config: dict[str, Any] | None, vocab: int,
          extra: dict[str, Any] | None = None) -> nn.Module:
    """``Auto<...>.from_pretrained(path, local_files_only=True)`` or ``from_config`` of a config dict (the task's
    vocabulary and special token ids filled in unless given)."""
    tf = _transformers(name)
    factory = getattr(tf, auto)
    if (path is None) == (config is None):
        raise ConfigError(f"{name} needs exactly one of path (a local model directory) or config (a dict)")
    if path is not None:
        try:
            model = factory.from_pretrained(path, local_files_only=True, **(extra or {}))
        except (OSError, ValueError) as e:
            raise ConfigError(f"{name} cannot load {path!r} locally ({' '.join(str(e).split())[:160]})") from None
        if model.config.pad_token_id is None:  # the rows are padded with the task's <pad> (GPT-2 has none)
            model.config.pad_token_id = PAD
        return model
    cfg = dict(config)
    kind = cfg.pop("model_type", None)
    if kind is None:
        raise ConfigError(f"{name} config needs a model_type (e.g. gpt2, llama, t5, bart, bert)")
    cfg.setdefault("vocab_size", vocab)  # random weights: the task's vocabulary unless given
    for key, value in (("bos_token_id", BOS), ("eos_token_id", EOS), ("pad_token_id", PAD),
                       ("decoder_start_token_id", BOS)):
        cfg.setdefault(key, value)
    cfg.update(extra or {})
    try:
        return factory.from_config(tf.AutoConfig.for_model(kind, **cfg))
    except (KeyError, ValueError, TypeError) as e:
        raise ConfigError(f"{name} cannot build a {kind!r} model from its config ({' '.join(str(e).split())[:160]})"
                          ) from None


def _check_vocab(name: str, model: nn.Module, vocab: int) -> None:
    have = model.get_input_embeddings().weight.shape[0]
    if have != vocab:
        raise ConfigError(f"{name}: the Hugging Face model's vocabulary has {have} tokens but the task's tokenizer "
                          f"has {vocab}; teacher, student and data must share one vocabulary (build the model with "
                          "the task's vocabulary, or use a task tokenized with the model's)")


def max_positions(config: Any) -> int | None:
    """The length of the model's position table (None: relative positions, e.g. T5)."""
    for key in ("max_position_embeddings", "n_positions"):
        value = getattr(config, key, None)
        if isinstance(value, int):
            return value
    return None


def _check_length(name: str, model: nn.Module, length: int, what: str) -> None:
    positions = max_positions(model.config)
    if positions is not None and positions < length:
        raise ConfigError(f"{name}: the task's {what} ({length} tokens) are longer than the model's maximum "
                          f"({positions} positions); use a model with more positions or shorter items")


def _cache_name(model: nn.Module) -> str:
    """``cache=`` in transformers >= 5.2x, ``past_key_values=`` before."""
    return "cache" if "cache" in inspect.signature(model.forward).parameters else "past_key_values"


def _cache_of(out: Any) -> Any:
    return out.get("cache", out.get("past_key_values"))


def _count_hidden(model: nn.Module, **inputs: Tensor) -> dict[str, int]:
    """How many hidden states of each kind the model returns (one dummy forward in eval mode: no RNG drawn)."""
    was = model.training
    model.eval()
    with torch.no_grad():
        out = model(**inputs, output_hidden_states=True, use_cache=False)
    model.train(was)
    return {k: len(v) for k, v in out.items() if k.endswith("hidden_states") and v is not None}


@MODELS.register("hf_causal_lm", input_rank=2, domain="sequence", summary="a Hugging Face AutoModelForCausalLM (local path or a config "
                 "dict for random weights); hidden-state taps hidden.<i>; needs transformers")
class HFCausalLM(nn.Module):
    def __init__(self, num_classes: int, input_shape: tuple[int, ...], path: str | None = None,
                 config: dict[str, Any] | None = None):
        super().__init__()
        self.model = _load("hf_causal_lm", "AutoModelForCausalLM", path, config, num_classes)
        _check_vocab("hf_causal_lm", self.model, num_classes)
        self.src_len, self.tgt_len = int(input_shape[0]), int(input_shape[1])
        _check_length("hf_causal_lm", self.model, self.src_len + self.tgt_len, "rows (source + target)")
        n = _count_hidden(self.model, input_ids=torch.full((1, 2), BOS))
        self.hidden = tap_points(n["hidden_states"])

    def _run(self, tokens: Tensor, prefix: Tensor, past: Any = None, cache: bool = False, hidden: bool = False):
        """The model on ``tokens`` (the end of ``prefix``; the rest is in the key/value cache ``past``) with the
        attention mask of ``prefix``: padding is never attended to."""
        grown = {_cache_name(self.model): past} if past is not None else {}
        return self.model(input_ids=tokens, attention_mask=(prefix != PAD).long(), use_cache=cache,
                          output_hidden_states=hidden, **grown)

    def forward(self, x: Tensor) -> Tensor:
        taps = tapped(self.hidden)
        out = self._run(x, x, hidden=taps)
        if taps:
            emit(self.hidden, out.hidden_states, x != PAD)
        return out.logits[:, self.src_len :]

    def start(self, src: Tensor, use_cache: bool = True) -> tuple[Tensor, dict]:
        prefix = torch.cat([src, torch.full((len(src), 1), BOS, dtype=torch.long, device=src.device)], 1)
        out = self._run(prefix, prefix, cache=use_cache)
        return out.logits[:, -1], {"past": _cache_of(out) if use_cache else None, "prefix": prefix}

    def step(self, tokens: Tensor, state: dict) -> tuple[Tensor, dict]:
        prefix = torch.cat([state["prefix"], tokens], 1)
        if state["past"] is None:
            return self._run(prefix, prefix).logits[:, -1], {**state, "prefix": prefix}
        out = self._run(tokens, prefix, state["past"], cache=True)
        return out.logits[:, -1], {"past": _cache_of(out), "prefix": prefix}


@MODELS.register("hf_seq2seq_lm", input_rank=2, domain="sequence", summary="a Hugging Face AutoModelForSeq2SeqLM (T5, BART ...; local "
                 "path or a config dict); taps encoder_hidden.<i>, decoder_hidden.<i>; needs transformers")
class HFSeq2SeqLM(nn.Module):
    """An encoder-decoder: the source ``x[:, :S]`` (left-padded) is encoded with attention mask ``src != <pad>``;
    the decoder reads ``<bos> t_1 .. t_n`` (``x[:, S:]``) causally and cross-attends to the real source
    positions. Decoding encodes the source once and grows the decoder's key/value cache."""

    def __init__(self, num_classes: int, input_shape: tuple[int, ...], path: str | None = None,
                 config: dict[str, Any] | None = None):
        super().__init__()
        self.model = _load("hf_seq2seq_lm", "AutoModelForSeq2SeqLM", path, config, num_classes)
        _check_vocab("hf_seq2seq_lm", self.model, num_classes)
        self.src_len, self.tgt_len = int(input_shape[0]), int(input_shape[1])
        if self.src_len == 0:
            raise ConfigError("hf_seq2seq_lm needs a source; use hf_causal_lm for language modelling")
        _check_length("hf_seq2seq_lm", self.model, max(self.src_len, self.tgt_len), "sources or targets")
        n = _count_hidden(self.model, input_ids=torch.full((1, 2), BOS), decoder_input_ids=torch.full((1, 2), BOS))
        self.encoder_hidden = tap_points(n["encoder_hidden_states"])
        self.decoder_hidden = tap_points(n["decoder_hidden_states"])

    @staticmethod
    def source_mask(src: Tensor) -> Tensor:
        mask = src != PAD
        mask[:, -1] = True  # an all-padding source still has one position to attend to
        return mask.long()

    def forward(self, x: Tensor) -> Tensor:
        src, tgt = x[:, : self.src_len], x[:, self.src_len :]
        mask = self.source_mask(src)
        taps = tapped(self.encoder_hidden) or tapped(self.decoder_hidden)
        out = self.model(input_ids=src, attention_mask=mask, decoder_input_ids=tgt, use_cache=False,
                         output_hidden_states=taps)
        if taps:
            emit(self.encoder_hidden, out.encoder_hidden_states, mask.bool())
            emit(self.decoder_hidden, out.decoder_hidden_states, tgt != PAD)
        return out.logits

    def _decode(self, tokens: Tensor, state: dict, past: Any = None, cache: bool = True) -> tuple[Tensor, Any]:
        """Next-token logits after ``tokens`` (and the key/value cache ``past``) and the grown cache."""
        grown = {_cache_name(self.model): past} if past is not None else {}
        out = self.model(encoder_outputs=(state["memory"],), attention_mask=state["mask"], decoder_input_ids=tokens,
                         use_cache=cache, **grown)
        return out.logits[:, -1], _cache_of(out) if cache else None

    def start(self, src: Tensor, use_cache: bool = True) -> tuple[Tensor, dict]:
        mask = self.source_mask(src)
        memory = self.model.get_encoder()(input_ids=src, attention_mask=mask).last_hidden_state
        prefix = torch.full((len(src), 1), BOS, dtype=torch.long, device=src.device)
        state = {"memory": memory, "mask": mask, "prefix": prefix}
        logits, past = self._decode(prefix, state, cache=use_cache)
        return logits, {**state, "past": past, "cache": use_cache}

    def step(self, tokens: Tensor, state: dict) -> tuple[Tensor, dict]:
        prefix = torch.cat([state["prefix"], tokens], 1)
        if not state["cache"]:
            return self._decode(prefix, state, cache=False)[0], {**state, "prefix": prefix}
        logits, past = self._decode(tokens, state, state["past"])
        return logits, {**state, "past": past, "prefix": prefix}


@MODELS.register("hf_classifier", input_rank=1, domain="sequence_classification",
                 summary="a Hugging Face AutoModelForSequenceClassification (BERT, GPT-2 ...; local path or a config "
                 "dict) over token rows; taps hidden.<i>; needs transformers")
class HFSequenceClassifier(nn.Module):
    """Class logits ``(N, C)`` of token rows ``(N, L)`` (``<bos>`` first, right-padded); the attention mask is
    ``x != <pad>``. ``vocab_size`` is the task's (the sequence-classification domain passes it)."""

    def __init__(self, num_classes: int, input_shape: tuple[int, ...], vocab_size: int, path: str | None = None,
                 config: dict[str, Any] | None = None):
        super().__init__()
        extra = {"num_labels": num_classes}
        self.model = _load("hf_classifier", "AutoModelForSequenceClassification", path, config, vocab_size, extra)
        _check_vocab("hf_classifier", self.model, vocab_size)
        self.seq_len, self.vocab_size = int(input_shape[0]), int(vocab_size)
        _check_length("hf_classifier", self.model, self.seq_len, "rows")
        n = _count_hidden(self.model, input_ids=torch.full((1, 2), BOS))
        self.hidden = tap_points(n["hidden_states"])

    def forward(self, x: Tensor) -> Tensor:
        x = x.long()
        mask = x != PAD
        mask[:, 0] = True
        taps = tapped(self.hidden)
        out = self.model(input_ids=x, attention_mask=mask.long(), output_hidden_states=taps)
        if taps:
            emit(self.hidden, out.hidden_states, mask)
        return out.logits
