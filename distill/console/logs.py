"""Library messages of a stage (transformers, peft, torch and Python warnings) go to the stage's log file."""

from __future__ import annotations

import importlib.util
import logging
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from distill.console.progress import SETTINGS, VERBOSE, say

FORMAT = "%(asctime)s %(levelname)s %(name)s: %(message)s"


class _FolderFileHandler(logging.FileHandler):
    """Creates its folder and file at the first message only, so a stage that fails before doing anything
    leaves no folder behind (`distill status` tells a missing stage from an unfinished one by its folder)."""

    def __init__(self, path: Path) -> None:
        super().__init__(path, mode="a", encoding="utf-8", delay=True)

    def _open(self):  # noqa: ANN202 - logging's own signature
        Path(self.baseFilename).parent.mkdir(parents=True, exist_ok=True)
        return super()._open()


def _route_transformers(into_root: bool) -> None:
    """transformers prints through its own stderr handler and does not propagate; route it to ours instead."""
    if importlib.util.find_spec("transformers") is None:
        return
    import transformers.utils.logging as hf_logging

    if into_root:
        hf_logging.disable_default_handler()
        hf_logging.enable_propagation()
        if SETTINGS.verbosity >= VERBOSE:
            hf_logging.set_verbosity_info()
    else:
        hf_logging.enable_default_handler()
        hf_logging.disable_propagation()


@contextmanager
def stage_log(stage: str, path: Path) -> Iterator[None]:
    """While a stage runs: its library messages and warnings are appended to `path` (and echoed under
    --verbose); a line says where the stage's log is."""
    handler = _FolderFileHandler(path)
    handler.setFormatter(logging.Formatter(FORMAT))
    root = logging.getLogger()
    echo = logging.StreamHandler(sys.stderr) if SETTINGS.verbosity >= VERBOSE else None
    previous_level = root.level
    root.setLevel(logging.INFO if SETTINGS.verbosity >= VERBOSE else logging.WARNING)
    for h in (handler, echo):
        if h is not None:
            root.addHandler(h)
    logging.captureWarnings(True)
    _route_transformers(into_root=True)
    say(f"{time.strftime('%H:%M:%S')} {stage}: started (library messages: {path})")
    try:
        yield
    finally:
        if path.parent.is_dir():  # the stage ran: its log says when it ended, even with nothing else to say
            handler.handle(logging.makeLogRecord({"name": "distill", "levelname": "INFO", "levelno": logging.INFO,
                                                  "msg": f"{stage}: ended"}))
        _route_transformers(into_root=False)
        logging.captureWarnings(False)
        for h in (handler, echo):
            if h is not None:
                root.removeHandler(h)
        handler.close()
        root.setLevel(previous_level)
