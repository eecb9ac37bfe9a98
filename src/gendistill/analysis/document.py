"""The report's typed model: a report is a list of blocks, built once and rendered twice (Markdown and HTML,
:mod:`gendistill.analysis.render`). Inline text may use ``code`` spans and ``**bold**``."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path


@dataclass(frozen=True)
class Heading:
    text: str
    level: int = 2  # 1: the title


@dataclass(frozen=True)
class Paragraph:
    text: str


@dataclass(frozen=True)
class Bullets:
    items: list[str]


@dataclass(frozen=True)
class Table:
    headers: list[str]
    rows: list[list[str]]


@dataclass(frozen=True)
class Figure:
    path: Path
    caption: str
    wide: bool = False  # spans the whole width (training curves)


@dataclass(frozen=True)
class Code:
    text: str
    label: str = "config.yaml"
    language: str = "yaml"


Block = Heading | Paragraph | Bullets | Table | Figure | Code
