"""Progress display: a rich progress bar on a terminal, one plain line per epoch otherwise (logs, CI)."""

from __future__ import annotations

import sys
from typing import Any

from rich.console import Console
from rich.progress import (
    BarColumn,
    MofNCompleteColumn,
    Progress,
    TextColumn,
    TimeElapsedColumn,
    TimeRemainingColumn,
)


def format_row(row: dict[str, Any], keys: list[str]) -> str:
    return "  ".join(f"{k} {row[k]:.4g}" for k in keys if isinstance(row.get(k), (int, float)))


class EpochProgress:
    """Shows steps within a training run. ``mode``: "auto" (bar on a terminal), "bar", "lines" or "off"."""

    def __init__(self, desc: str, epochs: int, steps_per_epoch: int, mode: str = "auto"):
        self.desc, self.epochs, self.steps = desc, epochs, steps_per_epoch
        if mode == "auto":
            mode = "bar" if sys.stderr.isatty() else "lines"
        self.mode = mode
        self.console = Console(stderr=True)
        self._bar: Progress | None = None
        self._task = None

    def __enter__(self) -> EpochProgress:
        if self.mode == "bar":
            self._bar = Progress(
                TextColumn("[bold]{task.description}"), BarColumn(), MofNCompleteColumn(),
                TextColumn("{task.fields[info]}"), TimeElapsedColumn(), TimeRemainingColumn(),
                console=self.console, transient=False,
            )
            self._bar.start()
            self._task = self._bar.add_task(self.desc, total=self.epochs * self.steps, info="")
        return self

    def start(self, epoch: int) -> None:
        if self._bar is not None:
            self._bar.update(self._task, completed=(epoch - 1) * self.steps, info=f"epoch {epoch}/{self.epochs}")

    def advance(self) -> None:
        if self._bar is not None:
            self._bar.advance(self._task)

    def epoch_end(self, row: dict[str, Any], keys: list[str]) -> None:
        text = f"epoch {row['epoch']}/{self.epochs}  {format_row(row, keys)}"
        if self._bar is not None:
            self._bar.update(self._task, info=text)
        elif self.mode == "lines":
            self.console.print(f"[{self.desc}] {text}", highlight=False, soft_wrap=True, markup=False)

    def __exit__(self, *exc) -> None:
        if self._bar is not None:
            self._bar.stop()


def log(message: str, mode: str = "auto") -> None:
    """A one-line note on stderr (which path was used, what was resumed), unless progress is off."""
    from .distributed import is_main

    if mode != "off" and is_main():
        Console(stderr=True).print(message, highlight=False, markup=False, soft_wrap=True)
