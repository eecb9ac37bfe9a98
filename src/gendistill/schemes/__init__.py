"""Schemes: how teachers and students interact. Each is a small task object run by the one trainer, declared
with :func:`~gendistill.schemes.spec.scheme` in its own module; every module of this package is imported here,
so a new scheme is one new file."""

import importlib
import pkgutil

from .spec import SchemeContext, SchemeSpec, build_task, scheme, scheme_spec

for _module in pkgutil.iter_modules(__path__):
    if _module.name not in ("spec", "common"):
        importlib.import_module(f"{__name__}.{_module.name}")

__all__ = ["SchemeContext", "SchemeSpec", "build_task", "scheme", "scheme_spec"]
