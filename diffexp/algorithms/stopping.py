"""Prompt, clean stops: SIGTERM or Ctrl-C ask a training to stop at its next sampling or update step.

The signal handler only sets a flag; the sampler (at every DDIM step) and the updates (at every
loss) check it and raise :class:`TrainingStopped`, so nothing is left half-written (checkpoints and
metric files are written between steps) and the last checkpoint stays the resume point. A second
Ctrl-C interrupts at once. The other way a run stops early, a non-finite reward, loss or weight,
raises :class:`NonFiniteError`.
"""

from __future__ import annotations

import contextlib
import signal
import threading

_requested: int | None = None


class TrainingStopped(RuntimeError):
    """The training was asked to stop (a signal); its last checkpoint is the resume point."""

    def __init__(self, signum: int, where: str):
        self.signum = signum
        super().__init__(f"stopped by {signal.Signals(signum).name} at {where}; re-run the same command to resume")


class NonFiniteError(RuntimeError):
    """A reward or loss became NaN/inf; the message names the epoch, the step and the reward."""


def _handle(signum, frame) -> None:
    global _requested
    if _requested is not None and signum == signal.SIGINT:
        raise KeyboardInterrupt  # a second Ctrl-C: stop now
    _requested = signum


def raise_if_stop_requested(where: str = "a step") -> None:
    if _requested is not None:
        raise TrainingStopped(_requested, where)


@contextlib.contextmanager
def stop_on_signals():
    """Within: SIGTERM and SIGINT request a stop (main thread only; elsewhere, nothing changes)."""
    global _requested
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    _requested = None
    previous = {s: signal.signal(s, _handle) for s in (signal.SIGTERM, signal.SIGINT)}
    try:
        yield
    finally:
        for s, handler in previous.items():
            signal.signal(s, handler)
        _requested = None
