"""The sequence-classification domain: token rows with one class label each (:mod:`gendistill.nlp.classify`).

Everything is classification's -- batches, accuracy / NLL / Brier / ECE, top-1 agreement and KL(teacher ||
student), ensembles of generations, the teacher cache, CKA and reliability analyses -- except for the models:
they read token ids, so they are built with the task's ``vocab_size`` (``seq_classifier``, ``hf_classifier``),
checked on real rows of the task (not on zeros), and a teacher whose vocabulary is not the task's is a
one-line error. Compression figures are parameters and checkpoint size (no FLOP count of token-id inputs).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import torch
from torch import nn

from ..data import DatasetBundle
from ..engine.settings import TrainConfig
from ..errors import ConfigError
from ..models import build_model, create_model
from ..registry import DOMAINS, MODELS
from . import Domain, build_checked
from .classification import ClassificationBatches, ClassificationDomain


def vocabulary(model: nn.Module) -> int | None:
    """The number of token ids ``model`` reads (its ``vocab_size``, or its input embedding's rows)."""
    if hasattr(model, "vocab_size"):
        return int(model.vocab_size)
    get = getattr(model, "get_input_embeddings", None)
    return int(get().weight.shape[0]) if get is not None else None


def _data(data: Any) -> DatasetBundle:
    if getattr(data, "vocab_size", 0) < 1:
        raise ConfigError(f"the sequence_classification domain needs a token dataset with a vocab_size (seq_label), "
                          f"got {type(data).__name__}")
    return data


@DOMAINS.register("sequence_classification", summary="token sequences with one label each: classification's "
                  "metrics and fidelity; models read token ids (seq_classifier, hf_classifier)")
class SequenceClassificationDomain(ClassificationDomain):
    name = "sequence_classification"

    def build_model(self, spec: Any, data: DatasetBundle) -> nn.Module:
        data = _data(data)
        if isinstance(spec, (str, dict)):
            kw = {"name": spec} if isinstance(spec, str) else dict(spec)
            name = kw.pop("name")
            if name in MODELS and MODELS.get(name).meta.get("domain") != self.name:
                raise ConfigError(f"model {name} is for {MODELS.get(name).meta.get('domain', 'classification')} "
                                  f"datasets, not token sequences with one label; use seq_classifier or hf_classifier")
            kw.setdefault("vocab_size", data.vocab_size)
            return create_model(name, data.num_classes, data.input_shape, **kw)
        return build_model(spec, data.num_classes, data.input_shape)

    def check_model(self, spec: Any, data: DatasetBundle, where: str) -> nn.Module:
        return build_checked(self, spec, _data(data), where)

    def check_teacher(self, teacher: nn.Module, data: DatasetBundle, role: str = "the teacher") -> None:
        data = _data(data)
        vocab = vocabulary(teacher)
        if vocab is not None and vocab != data.vocab_size:
            raise ConfigError(f"{role} reads a vocabulary of {vocab} tokens but {data.name}'s tokenizer has "
                              f"{data.vocab_size}; teacher, student and data must share one vocabulary")
        device = next(teacher.parameters()).device
        was = teacher.training
        teacher.eval()
        try:
            with torch.no_grad():
                out = teacher(data.test.x[:2].to(device))
        except (TypeError, ValueError, RuntimeError, IndexError) as e:
            raise ConfigError(f"{role} ({type(teacher).__name__}) cannot read {data.name}'s token rows: "
                              f"{' '.join(str(e).split())[:200]}") from None
        finally:
            teacher.train(was)
        if tuple(out.shape) != (2, data.num_classes):
            raise ConfigError(f"{role} outputs {tuple(out.shape[1:])} per item but {data.name} has "
                              f"{data.num_classes} classes; give a model with {data.num_classes} outputs")

    def train_source(self, data: DatasetBundle, train: TrainConfig, *, seed: int, device: Any,
                     views: int) -> ClassificationBatches:
        if train.augment:
            raise ConfigError("train.augment is for images; token sequences have no augmentations")
        return ClassificationBatches(data.train, train, seed=seed, device=torch.device(device), plan=None)

    def compression(self, model: nn.Module, data: Any, *, checkpoint: Path | None, speed: bool,
                    device: Any) -> dict[str, Any]:
        return Domain.compression(self, model, data, checkpoint=checkpoint, speed=speed, device=device)
