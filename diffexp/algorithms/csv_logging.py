"""A CSV logger that survives resumption.

Lightning's CSV writer deletes an existing ``metrics.csv`` when it starts, so a resumed run would
lose its history. This one keeps the rows, and on resume drops those logged after the checkpoint
(after a kill, the epochs past the last checkpoint are re-run and must not be counted twice).
"""

from __future__ import annotations

import csv
import os

from lightning.pytorch.loggers import CSVLogger
from lightning.pytorch.loggers.csv_logs import ExperimentWriter


class MetricsFileError(ValueError):
    """A ``metrics.csv`` this logger cannot continue; the message names the file."""


class _KeepingWriter(ExperimentWriter):
    def _check_log_dir_exists(self) -> None:
        if os.path.isfile(self.metrics_file_path):
            self.metrics_keys = sorted(self._read()[0] or [])

    def _read(self) -> tuple[list[str] | None, list[dict]]:
        try:
            with open(self.metrics_file_path, newline="", encoding="utf-8") as f:
                reader = csv.DictReader(f)
                rows = list(reader)
                for row in rows:
                    float(row["step"])
                return reader.fieldnames, rows
        except (csv.Error, KeyError, ValueError, TypeError) as err:
            raise MetricsFileError(
                f"{self.metrics_file_path} is not a metrics table this run wrote ({type(err).__name__}: {err}); "
                "move it away to resume without it"
            ) from None

    def truncate_after(self, step: int) -> None:
        """Drop rows whose ``step`` (= reward queries) is beyond ``step``."""
        self.save()
        if not os.path.isfile(self.metrics_file_path):
            return
        fields, rows = self._read()
        rows = [r for r in rows if float(r["step"]) <= step]
        tmp = self.metrics_file_path + ".tmp"
        with open(tmp, "w", newline="") as f:
            writer = csv.DictWriter(f, fieldnames=fields)
            writer.writeheader()
            writer.writerows(rows)
        os.replace(tmp, self.metrics_file_path)


class ResumableCSVLogger(CSVLogger):
    @property
    def experiment(self) -> _KeepingWriter:
        if self._experiment is None:
            self._fs.makedirs(self.root_dir, exist_ok=True)
            self._experiment = _KeepingWriter(log_dir=self.log_dir)
        return self._experiment

    def truncate_after(self, step: int) -> None:
        self.experiment.truncate_after(step)
