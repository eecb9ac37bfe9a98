from .checkpoint import load_model, save_model
from .evaluate import predict_logits, select_device
from .trainer import FidelityProbe, Trainer, seed_everything

__all__ = ["Trainer", "FidelityProbe", "seed_everything", "predict_logits", "select_device", "load_model", "save_model"]
