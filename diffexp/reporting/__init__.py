"""Comparison reports for diffexp studies.

Reads a study's results from MLflow (:mod:`.load`), computes the verdict (:mod:`.verdict`) and
sample-efficiency statistics (:mod:`.stats`, :mod:`.tables`), draws figures (:mod:`.figures`)
and writes one self-contained HTML file (:mod:`.html`) plus PNG/SVG figures and CSV/LaTeX tables.
:func:`.report.build_report` ties it together; :func:`.cli.add_report_command` adds ``diffexp report``.

Heavy imports (mlflow, matplotlib) happen inside the modules that need them, so importing this
package is cheap.
"""

from __future__ import annotations

__all__ = ["add_report_command", "build_report"]


def __getattr__(name: str):
    if name == "build_report":
        from diffexp.reporting.report import build_report

        return build_report
    if name == "add_report_command":
        from diffexp.reporting.cli import add_report_command

        return add_report_command
    raise AttributeError(name)
