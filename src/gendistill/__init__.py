"""gendistill: multi-generation knowledge distillation for PyTorch."""

from . import knowledge
from .config import RunConfig, TrainConfig, load_config
from .data import DatasetBundle, load_dataset
from .errors import CheckpointError, ConfigError, DataError, GendistillError, NonFiniteLossError
from .lineage import Lineage, LineageResult
from .models import build_model, create_model

__version__ = "0.1.0"

__all__ = [
    "Lineage", "LineageResult", "RunConfig", "TrainConfig", "load_config", "DatasetBundle", "load_dataset",
    "create_model", "build_model", "knowledge", "GendistillError", "ConfigError", "DataError",
    "CheckpointError", "NonFiniteLossError",
]
