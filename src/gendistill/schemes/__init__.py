"""Schemes: how teachers and students interact. Each is a small task object run by the one trainer."""

from .offline import DistillTask

__all__ = ["DistillTask"]
