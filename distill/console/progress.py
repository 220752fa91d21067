"""Progress displays: a rich bar at a terminal, plain timestamped lines at a steady cadence elsewhere."""

from __future__ import annotations

import os
import sys
import time
from dataclasses import dataclass
from typing import Any

QUIET, NORMAL, VERBOSE = 0, 1, 2


@dataclass
class Settings:
    verbosity: int = NORMAL
    interactive: bool | None = None  # None: decided by whether stderr is a terminal
    # Seconds between plain progress lines; a cron log gets a line every half minute, not one per request.
    interval_s: float = float(os.environ.get("DISTILL_PROGRESS_INTERVAL_S", "30"))


SETTINGS = Settings()


def configure(verbosity: int = NORMAL, interactive: bool | None = None) -> None:
    """Set once by the command line. Also turns off the progress bars of the Hugging Face libraries, which would
    otherwise draw their own bars (with carriage returns) into a log file; set before they are imported."""
    SETTINGS.verbosity, SETTINGS.interactive = verbosity, interactive
    os.environ.setdefault("HF_HUB_DISABLE_PROGRESS_BARS", "1")  # huggingface_hub and transformers
    os.environ.setdefault("HF_DATASETS_DISABLE_PROGRESS_BARS", "1")
    os.environ.setdefault("TQDM_DISABLE", "1")  # any other tqdm bar in this process or its children


def is_interactive() -> bool:
    if SETTINGS.interactive is not None:
        return SETTINGS.interactive
    return sys.stderr.isatty() and os.environ.get("TERM") != "dumb"


def say(message: str, level: int = NORMAL) -> None:
    """A line for the person running distill, on stderr (stdout carries results), unless they asked for less."""
    if SETTINGS.verbosity >= level:
        print(message, file=sys.stderr, flush=True)


def _clock(seconds: float | None) -> str:
    if seconds is None:
        return "?"
    seconds = int(seconds)
    return f"{seconds // 3600}:{seconds // 60 % 60:02d}:{seconds % 60:02d}" if seconds >= 3600 else \
        f"{seconds // 60}:{seconds % 60:02d}"


def _fields(fields: dict[str, Any]) -> str:
    return "".join(f", {k} {v:.4g}" if isinstance(v, float) else f", {k} {v}" for k, v in fields.items()
                   if v is not None)


class Progress:
    """One task's progress, with `update`/`close` like tqdm so callers need not care where output goes.

    `fields` (a loss, a metric) are shown beside the count and kept until replaced.
    """

    def __init__(self, description: str, total: int | None, unit: str = "it") -> None:
        self.description, self.total, self.unit = description, total, unit
        self.done = 0
        self.fields: dict[str, Any] = {}
        self.started = self.last_line = time.monotonic()
        self.closed = False
        self.printed: int | None = None  # the count the last plain line showed
        self.live = _RichBar(self) if SETTINGS.verbosity >= NORMAL and is_interactive() else None
        if self.live is None:
            self._line()

    def update(self, advance: int = 1, completed: int | None = None, **fields: Any) -> None:
        self.done = completed if completed is not None else self.done + advance
        self.fields.update(fields)
        if self.live is not None:
            self.live.refresh()
        elif time.monotonic() - self.last_line >= SETTINGS.interval_s:
            self._line()

    def close(self) -> None:
        if self.closed:
            return
        self.closed = True
        if self.live is not None:
            self.live.stop()
        elif self.printed != self.done:  # the last line already says where it ended
            self._line()

    def __enter__(self) -> Progress:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()

    def _line(self) -> None:
        self.last_line, self.printed = time.monotonic(), self.done
        say(f"{time.strftime('%H:%M:%S')} {self.description}: {self.status()}")

    def status(self) -> str:
        """The progress in words: count, share, rate, elapsed and remaining time, and the fields."""
        elapsed = time.monotonic() - self.started
        rate = self.done / elapsed if elapsed > 0 else 0.0
        count = f"{self.done}/{self.total} {self.unit}" if self.total else f"{self.done} {self.unit}"
        share = f" ({100 * self.done / self.total:.0f}%)" if self.total else ""
        left = (self.total - self.done) / rate if self.total and rate > 0 else None
        timing = f", {rate:.3g} {self.unit}/s, {_clock(elapsed)} elapsed" + (
            f", {_clock(left)} left" if self.total and self.done < self.total else "")
        return count + share + timing + _fields(self.fields)


def progress(description: str, total: int | None, unit: str = "it") -> Progress:
    return Progress(description, total, unit)


class _RichBar:
    """A rich progress bar on stderr for one `Progress`."""

    def __init__(self, owner: Progress) -> None:
        from rich.console import Console
        from rich.progress import BarColumn, MofNCompleteColumn, TextColumn, TimeElapsedColumn, TimeRemainingColumn
        from rich.progress import Progress as RichProgress

        self.owner = owner
        self.bar = RichProgress(TextColumn("[bold]{task.description}"), BarColumn(), MofNCompleteColumn(),
                                TextColumn(owner.unit), TimeElapsedColumn(), TimeRemainingColumn(),
                                TextColumn("{task.fields[info]}"), console=Console(stderr=True))
        self.task = self.bar.add_task(owner.description, total=owner.total, info="")
        self.bar.start()

    def refresh(self) -> None:
        self.bar.update(self.task, completed=self.owner.done, info=_fields(self.owner.fields).lstrip(", "))

    def stop(self) -> None:
        self.refresh()
        self.bar.stop()
