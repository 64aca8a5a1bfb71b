"""Where a trial's output goes: its own log file, so the console shows the study, not the runs.

A training prints weight-loading bars, Lightning's tips, library warnings and a progress bar per
epoch; with two workers they interleave. During a trial both of the process's output streams
(file descriptors 1 and 2, so C-level and subprocess output too) go to ``<trial dir>/train.log``;
the worker's own lines go to a duplicate of the console taken before. ``--verbose`` keeps
everything on the console.
"""

from __future__ import annotations

import contextlib
import os
import sys
from pathlib import Path


def console():
    """A line-buffered stream on the current standard output that later redirections do not move
    (standard output itself when it is no file, e.g. captured by a test)."""
    try:
        return os.fdopen(os.dup(sys.stdout.fileno()), "w", buffering=1)
    except (OSError, ValueError):  # io.UnsupportedOperation is both
        return sys.stdout


@contextlib.contextmanager
def trial_output(path: Path, enabled: bool = True):
    """Standard output and error into ``path`` (appended: a resumed trial keeps its first log)."""
    if not enabled:
        yield
        return
    path.parent.mkdir(parents=True, exist_ok=True)
    sys.stdout.flush()
    sys.stderr.flush()
    saved = os.dup(1), os.dup(2)
    with open(path, "a", buffering=1) as log:
        os.dup2(log.fileno(), 1)
        os.dup2(log.fileno(), 2)
        try:
            yield
        finally:
            sys.stdout.flush()
            sys.stderr.flush()
            os.dup2(saved[0], 1)
            os.dup2(saved[1], 2)
            os.close(saved[0])
            os.close(saved[1])
