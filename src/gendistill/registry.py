"""String registries for models, datasets and knowledge terms (timm style).

``@MODELS.register("cnn1d")`` puts a factory in a dict under its name; ``MODELS.create("cnn1d", ...)``
builds it. Each entry carries metadata (kind, paper, summary) so ``gendistill list`` needs no hand-kept table.
"""

from __future__ import annotations

import difflib
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from .errors import ConfigError


@dataclass
class Entry:
    name: str
    factory: Callable[..., Any]
    meta: dict[str, Any] = field(default_factory=dict)

    @property
    def summary(self) -> str:
        if "summary" in self.meta:
            return self.meta["summary"]
        doc = (self.factory.__doc__ or "").strip()
        return doc.splitlines()[0] if doc else ""


class Registry:
    """A name -> factory table for one kind of thing ("model", "dataset", "method")."""

    def __init__(self, kind: str):
        self.kind = kind
        self._entries: dict[str, Entry] = {}

    def register(self, name: str | None = None, **meta: Any) -> Callable:
        def decorator(factory: Callable) -> Callable:
            key = (name or factory.__name__).lower()
            if key in self._entries:
                raise ValueError(f"{self.kind} {key!r} is registered twice")
            self._entries[key] = Entry(key, factory, meta)
            return factory

        return decorator

    def __contains__(self, name: str) -> bool:
        return name.lower() in self._entries

    def names(self) -> list[str]:
        return sorted(self._entries)

    def entries(self) -> list[Entry]:
        return [self._entries[n] for n in self.names()]

    def get(self, name: str) -> Entry:
        key = str(name).lower()
        if key not in self._entries:
            close = difflib.get_close_matches(key, self.names(), n=1)
            hint = f" (did you mean {close[0]!r}?)" if close else ""
            raise ConfigError(f"unknown {self.kind} {name!r}{hint}; available: {', '.join(self.names())}")
        return self._entries[key]

    def create(self, name: str, **kwargs: Any) -> Any:
        return self.get(name).factory(**kwargs)


MODELS = Registry("model")
DATASETS = Registry("dataset")
METHODS = Registry("method")
SCHEMES = Registry("scheme")
DOMAINS = Registry("domain")
