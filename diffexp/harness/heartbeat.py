"""A running trial's heartbeat: proof to other workers that it is alive, and how a worker learns
that its own trial was declared dead (``TrialLost``)."""

from __future__ import annotations

import threading
import time

from diffexp.algorithms.run_record import HEARTBEAT_ATTR


class TrialLost(RuntimeError):
    """This worker's trial was declared dead by another worker (missed heartbeats)."""


class Heartbeat:
    """Records a running trial's heartbeat every ``interval`` seconds from a thread, and notices
    when the trial is no longer RUNNING (another worker declared it dead)."""

    def __init__(self, storage, trial_id: int, interval: int, journal: bool):
        self.storage, self.trial_id, self.interval, self.journal = storage, trial_id, interval, journal
        self.lost = False
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._loop, daemon=True, name=f"heartbeat-{trial_id}")

    def beat(self) -> None:
        from optuna.trial import TrialState

        try:
            if self.journal:
                self.storage.set_trial_system_attr(self.trial_id, HEARTBEAT_ATTR, time.time())
            else:
                self.storage.record_heartbeat(self.trial_id)
            if self.storage.get_trial(self.trial_id).state != TrialState.RUNNING:
                self.lost = True
        except Exception as err:  # noqa: BLE001 - an unfinished trial whose state changed, a storage hiccup
            if "finished" in str(err).lower():
                self.lost = True

    def _loop(self) -> None:
        while not self._stop.wait(self.interval):
            self.beat()

    def __enter__(self):
        self.beat()
        self._thread.start()
        return self

    def __exit__(self, *exc):
        self._stop.set()
        self._thread.join(timeout=self.interval + 5)
