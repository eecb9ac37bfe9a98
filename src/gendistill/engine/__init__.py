"""The engine: the task protocol, the one training loop, checkpoints, evaluation and distributed helpers."""

from .checkpoint import load_model, save_model
from .evaluate import predict_logits, select_device
from .settings import TrainConfig, parse_train
from .task import DistillTask, StudentTask, Task
from .trainer import BatchSource, Trainer, seed_everything

__all__ = ["Task", "StudentTask", "DistillTask", "BatchSource", "Trainer", "TrainConfig", "parse_train",
           "seed_everything", "predict_logits", "select_device", "load_model", "save_model"]
