"""The console: what a person at a terminal sees, and what a log file (cron, a scheduler) gets instead.

At a terminal, each stage shows one live progress display (rich); anywhere else, plain lines at a steady cadence,
with no carriage returns or escape codes. Third-party progress bars are switched off and library messages go to
the stage's log file. `--quiet` keeps only results and errors; `--verbose` also echoes library messages.
"""

from distill.console.logs import stage_log
from distill.console.progress import Progress, configure, progress, say

__all__ = ["Progress", "configure", "progress", "say", "stage_log"]
