"""The sequence domain: seq2seq tasks and causal language models through the one lineage and trainer.

Items are token rows in the layout of :mod:`gendistill.nlp.tasks` (``x = [source | <bos> target]``,
``y`` = the target with ``-100`` where no label is); models return teacher-forced logits ``(N, T, V)``
(:mod:`gendistill.nlp.models`). Predictions are those logits with NaN at unlabelled positions; metrics are
token accuracy, NLL and perplexity on reference prefixes, and -- for tasks with a source -- exact match,
``valid`` (the output is one of the correct ones) and BLEU of greedy and beam-4 outputs; fidelity is per-token
top-1 agreement and KL(teacher || student); ensembles average token probabilities. The teacher cache keeps
the teacher's top-k log-probabilities per position (``data.cache_topk``; 0 keeps all of them).
"""

from __future__ import annotations

import time
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

import torch
from torch import Tensor, nn

from ..data import Split
from ..data.loader import TensorLoader
from ..engine import distributed
from ..engine.evaluate import predict_logits
from ..engine.settings import TrainConfig
from ..engine.task import DistillTask, Task
from ..errors import ConfigError
from ..knowledge.base import Batch, Objective
from ..models import build_model
from ..nlp import metrics as SM
from ..nlp.cache import TopKTeacher
from ..nlp.decoding import beam_search, greedy
from ..nlp.models import is_sequence_model
from ..nlp.tasks import SequenceBundle
from ..registry import DOMAINS, MODELS
from ..teachers import EnsembleTeacher, FrozenTeacher
from . import Domain, build_checked

#: decoded metrics (exact match, valid, BLEU) are computed on at most this many items of a split
FITS = "seq_decoder, seq_encdec, hf_causal_lm or hf_seq2seq_lm"
DECODE_ITEMS = 512


class SequenceBatches:
    """In-memory batches of token rows (``Batch(x, y, index)``), shuffled from the seed; the trainer's
    BatchSource protocol."""

    memory_format = None

    def __init__(self, split: Split, batch_size: int, seed: int, device: torch.device):
        world, rank = distributed.world_size(), distributed.rank()
        self.split, self.num_samples, self.device = split, len(split), device
        self.loader = TensorLoader(split.x.to(device), split.y.to(device), batch_size, shuffle=True, seed=seed,
                                   drop_last=world > 1, rank=rank, world_size=world)

    def __len__(self) -> int:
        return len(self.loader)

    def __iter__(self) -> Iterator[Batch]:
        for x, y, idx in self.loader:
            yield Batch(x, y, idx)

    def example(self, n: int) -> Batch:
        return Batch(self.split.x[:n].to(self.device), self.split.y[:n].to(self.device),
                     torch.arange(n, device=self.device))

    def state_dict(self) -> dict[str, Any]:
        return self.loader.state_dict()

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.loader.load_state_dict(state)


def _bundle(data: Any) -> SequenceBundle:
    if not isinstance(data, SequenceBundle):
        raise ConfigError(f"the sequence domain needs a sequence dataset (seq_*, pcfg_lm), got {type(data).__name__}")
    return data


def _device(model: nn.Module) -> torch.device:
    return next(model.parameters()).device


@DOMAINS.register("sequence", summary="seq2seq and causal LMs: token accuracy, NLL/perplexity, exact match, valid, "
                  "BLEU; per-token agreement and KL; sequence agreement")
class SequenceDomain(Domain):
    """Sequence models (see the module docstring)."""

    name = "sequence"
    train_keys = ("token_acc",)
    epoch_keys = ("test_token_acc", "test_nll")

    # ------------------------------------------------------------------------------------------ models
    def build_model(self, spec: Any, data: SequenceBundle) -> nn.Module:
        name = spec if isinstance(spec, str) else spec.get("name") if isinstance(spec, dict) else None
        if isinstance(name, str) and name in MODELS and MODELS.get(name).meta.get("domain") not in (None, self.name):
            raise ConfigError(f"model {name} is for {MODELS.get(name).meta['domain']} datasets, not for sequence "
                              f"tasks; use {FITS}")
        model = build_model(spec, data.num_classes, data.input_shape)
        if not is_sequence_model(model):
            raise ConfigError(f"{type(model).__name__} is not a sequence model (it has no start/step decoding); "
                              f"use {FITS} with a sequence dataset")
        return model

    def check_model(self, spec: Any, data: SequenceBundle, where: str) -> nn.Module:
        return build_checked(self, spec, _bundle(data), where)

    def check_teacher(self, teacher: nn.Module, data: SequenceBundle, role: str = "the teacher") -> None:
        data = _bundle(data)
        if not is_sequence_model(teacher):
            raise ConfigError(f"{role} ({type(teacher).__name__}) is not a sequence model; give a seq_decoder or "
                              "seq_encdec model trained on this task")
        if (teacher.src_len, teacher.tgt_len) != tuple(data.input_shape):
            raise ConfigError(f"{role} takes sequences of {teacher.src_len} + {teacher.tgt_len} tokens but "
                              f"{data.name} has {data.src_len} + {data.tgt_len}; sequences longer than the model's "
                              "maximum do not fit")
        with torch.no_grad():
            out = teacher.to("cpu")(data.test.x[:2]) if _device(teacher).type == "cpu" else teacher(
                data.test.x[:2].to(_device(teacher)))
        if out.shape[1:] != (data.tgt_len, data.num_classes):
            raise ConfigError(f"{role} outputs {tuple(out.shape[1:])} per item but {data.name} needs "
                              f"({data.tgt_len}, {data.num_classes}) (target length, vocabulary); the tokenizer "
                              "and the model do not match")

    # ------------------------------------------------------------------------------------------ training
    def train_source(self, data: SequenceBundle, train: TrainConfig, *, seed: int, device: Any,
                     views: int) -> SequenceBatches:
        if train.augment:
            raise ConfigError("train.augment is for images; the sequence domain has no augmentations")
        return SequenceBatches(data.train, train.batch_size, seed, torch.device(device))

    def default_task(self, student: nn.Module, objective: Objective, teacher: Any | None) -> Task:
        if any(t.name == "ce" for t in objective.terms):
            raise ConfigError("the 'ce' term is for one label per item; sequence models use 'token_ce'")
        return DistillTask(student, objective, teacher)

    # ------------------------------------------------------------------------------------------ evaluation
    def predict(self, model: nn.Module, split: Split) -> Tensor:
        logits = predict_logits(model, split.x, batch_size=256, device=_device(model))
        return logits.masked_fill((split.y == -100)[..., None], float("nan"))

    def metrics(self, model: nn.Module | None, pred: Tensor, split: Split) -> dict[str, float]:
        out = SM.token_metrics(pred, split.y)
        data = getattr(split, "bundle", None)
        if model is None or data is None or data.src_len == 0:
            return out
        n = min(len(split), DECODE_ITEMS)
        src = split.x[:n, : data.src_len].to(_device(model))
        refs = [data.tokenizer.decode(r.clamp_min(0)) for r in split.y[:n]]
        sources = [data.tokenizer.decode(s) for s in split.x[:n, : data.src_len]]
        for name, tokens in (("", greedy(model, src)), ("beam_", beam_search(model, src, 4)[0][:, 0])):
            hyps = [data.tokenizer.decode(t) for t in tokens.cpu()]
            accepts = data.accepts or (lambda s, h, r=None: False)
            out[f"{name}exact"] = sum(h == r for h, r in zip(hyps, refs)) / n
            out[f"{name}valid"] = sum(h == r or accepts(s, h) for s, h, r in zip(sources, hyps, refs)) / n
            out.update({f"{name}{k}": v for k, v in SM.text_scores(hyps, refs, data.tokenizer.split).items()})
        return out

    def groups(self, split: Split) -> dict[str, tuple[Split, Tensor]]:
        """The tasks of a multi-task dataset (``seq_multi``): each task's items of ``split``."""
        data, groups = getattr(split, "bundle", None), getattr(split, "groups", None)
        if data is None or groups is None or len(data.group_names) < 2:
            return {}
        out = {}
        for g, name in enumerate(data.group_names):
            index = (groups == g).nonzero().squeeze(1)
            if len(index):
                out[name] = (split.subset(index), index)
        return out

    def epoch_metrics(self, model: nn.Module, split: Split) -> dict[str, float]:
        m = SM.token_metrics(self.predict(model, split), split.y)
        return {"test_token_acc": m["token_acc"], "test_nll": m["nll"]}

    def fidelity(self, teacher_pred: Tensor, student_pred: Tensor) -> dict[str, float]:
        return SM.token_fidelity(teacher_pred, student_pred)

    def ensemble(self, preds: Sequence[Tensor]) -> Tensor:
        return SM.ensemble(preds)

    def analyses(self, models: list[nn.Module], test_preds: list[Tensor], data: SequenceBundle) -> dict[str, Any]:
        """Per generation: parameters and greedy decoding speed (tokens/s, KV cache, CPU batch of the test
        split); the matrix of sequence agreement (greedy outputs identical) between generations."""
        if data.src_len == 0:
            return {}
        n = min(len(data.test), DECODE_ITEMS)
        src = data.test.x[:n, : data.src_len]
        outs, speed = [], []
        for m in models:
            t0 = time.perf_counter()
            tokens = greedy(m, src.to(_device(m))).cpu()
            dt = time.perf_counter() - t0
            outs.append(tokens)
            speed.append({"params": sum(p.numel() for p in m.parameters()),
                          "tokens_per_s": float((tokens != 0).sum()) / max(dt, 1e-9)})
        matrix = [[float((a == b).all(1).float().mean()) for b in outs] for a in outs]
        return {"sequence_agreement": {"gens": list(range(len(models))), "test": matrix}, "decoding": speed}

    # ------------------------------------------------------------------------------------------ teachers
    def teacher(self, models: list[nn.Module], layers: tuple[str, ...]) -> FrozenTeacher | EnsembleTeacher:
        return FrozenTeacher(models[0], layers) if len(models) == 1 else EnsembleTeacher(models, layers)

    def cache_teacher(self, teacher: Any, source: SequenceBatches, data: SequenceBundle, train: TrainConfig, *,
                      layers: tuple[str, ...], train_pred: Tensor | None, path: Path | None) -> Any | None:
        if layers or train_pred is None:
            return None
        dtype = torch.float16 if train.cache_dtype == "float16" else torch.float32
        return TopKTeacher.from_predictions(teacher, train_pred, data.cache_topk, path, dtype)
