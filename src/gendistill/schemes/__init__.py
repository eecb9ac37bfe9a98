"""Schemes: how teachers and students interact. Each is a small task object run by the one trainer."""

from . import (  # noqa: F401  (register schemes)
    adversarial,
    chain,
    data_free,
    evolution,
    multi_teacher,
    online,
    pseudo_label,
    self_distill,
    trajectory,
)
from .offline import DistillTask

__all__ = ["DistillTask"]
