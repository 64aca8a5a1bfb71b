"""One self-contained HTML page: figures and image grids inlined as base64, no scripts, no external
resources, so it can be mailed, archived or opened offline and always looks the same.

Every string that comes from a study (run names, tags, params, configs, prompts) passes through
:func:`esc` (``html.escape``), and the page's Content-Security-Policy forbids scripts as a second
line of defence: a prompt like ``<script>alert(1)</script>`` shows up as text.
"""

from __future__ import annotations

import base64
import html
import re
from dataclasses import dataclass, field
from pathlib import Path

import pandas as pd

_NUMERIC = re.compile(r"^[\s\-–0-9.,\[\]∞x%]+$")

CSS = """
body{font:14px/1.45 system-ui,-apple-system,"Segoe UI",Roboto,sans-serif;color:#1d1d1f;margin:0;background:#fff}
main{max-width:1220px;margin:0 auto;padding:18px 24px 48px}
h1{font-size:24px;margin:6px 0 2px}h2{font-size:19px;margin:30px 0 8px;border-bottom:1px solid #ddd;padding-bottom:4px}
h3{font-size:15px;margin:18px 0 6px}.sub{color:#555;margin:0 0 10px}.note{color:#8a4b00}
table{border-collapse:collapse;margin:6px 0 14px;font-size:12.5px}
th,td{border-bottom:1px solid #e3e3e3;padding:3px 9px;text-align:left;vertical-align:top}
th{background:#f4f5f7;font-weight:600}table.runs td{white-space:nowrap}
td.num{text-align:right;font-variant-numeric:tabular-nums;white-space:nowrap}
figure{margin:8px 0 18px}figure img{max-width:100%;height:auto;border:1px solid #eee}
figcaption{color:#555;font-size:12.5px;margin-top:3px}
.grid{display:flex;gap:10px;align-items:flex-start;margin:6px 0 12px}
.grid .label{width:110px;font-weight:600;padding-top:4px}
.grid figure{margin:0}details{margin:3px 0}summary{cursor:pointer}
pre{background:#f7f7f9;border:1px solid #e5e5e5;padding:8px;overflow:auto;max-height:380px;font-size:12px}
nav a{margin-right:12px;color:#0b57d0;text-decoration:none}
ul.verdict{padding-left:20px;margin:8px 0 12px}ul.verdict li{margin:4px 0;font-size:14.5px}
table.verdict{width:100%}table.verdict td:last-child{width:36%}table.verdict td,table.outcomes td{font-size:12px}
"""


def esc(value) -> str:
    """Escape any value for HTML text or attribute context."""
    return html.escape("" if value is None else str(value), quote=True)


def data_uri(png: bytes, mime: str = "image/png") -> str:
    return f"data:{mime};base64,{base64.b64encode(png).decode('ascii')}"


def table_html(df: pd.DataFrame, cls: str = "") -> str:
    """A plain table; every header and cell escaped; number-like cells right-aligned."""
    head = "".join(f"<th>{esc(c)}</th>" for c in df.columns)
    body = []
    for row in df.itertuples(index=False):
        cells = []
        for value in row:
            text = "–" if value is None or (isinstance(value, float) and pd.isna(value)) else str(value)
            num = ' class="num"' if _NUMERIC.match(text) else ""
            cells.append(f"<td{num}>{esc(text)}</td>")
        body.append("<tr>" + "".join(cells) + "</tr>")
    return f'<table class="{esc(cls)}"><thead><tr>{head}</tr></thead><tbody>{"".join(body)}</tbody></table>'


@dataclass
class Figure:
    title: str
    caption: str
    png: bytes
    key: str = ""
    panels: list[int] | None = None  # fewest points per panel, read back from the figure's SVG


def _facts(f: Figure) -> str:
    if f.panels is None:
        return ""
    empty = sum(1 for p in f.panels if p == 0)
    return f' data-panels="{len(f.panels)}" data-empty-panels="{empty}" data-min-points="{min(f.panels, default=0)}"'


@dataclass
class Page:
    """Everything the page shows, already computed and formatted."""

    title: str
    subtitle: str
    verdict_sentences: list[str]
    verdict: pd.DataFrame
    verdict_note: str
    outcomes: pd.DataFrame
    figures: list[Figure]
    samples: list[Figure]
    tables: list[tuple[str, str, pd.DataFrame]]
    runs: pd.DataFrame
    provenance: dict
    configs: list[tuple[str, str]] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)


def _figures(figures: list[Figure]) -> str:
    return "".join(
        f'<figure id="figure-{esc(f.key)}"{_facts(f)}><h3>{esc(f.title)}</h3>'
        f'<img src="{data_uri(f.png)}" alt="{esc(f.title)}">'
        f"<figcaption>{esc(f.caption)}</figcaption></figure>"
        for f in figures
    )


def _verdict(page: Page) -> str:
    if page.verdict.empty:
        return "<p>No verdict: the study logged no evaluation-set reward (eval_reward_mean).</p>"
    items = "".join(f"<li>{esc(s)}</li>" for s in page.verdict_sentences)
    tables = "".join(  # one table per cell: four rows, no column repeating the cell's name
        f"<h3>{esc(cell)}</h3>{table_html(rows.drop(columns='Cell'), 'verdict')}"
        for cell, rows in page.verdict.groupby("Cell", sort=False)
    )
    outcomes = (
        "<h3>Ground truths, other rewards and diversity (evaluation set, base model → final)</h3>"
        + table_html(page.outcomes, "outcomes")
        if not page.outcomes.empty
        else ""
    )
    return f'<ul class="verdict">{items}</ul>{tables}<p class="sub">{esc(page.verdict_note)}</p>{outcomes}'


def _provenance(prov: dict, configs: list[tuple[str, str]]) -> str:
    info = pd.DataFrame([(k, v) for k, v in prov.items() if not isinstance(v, dict)], columns=["", "value"])
    machine = pd.DataFrame(list(prov.get("machine", {}).items()), columns=["machine", "value"])
    packages = pd.DataFrame(list(prov.get("packages", {}).items()), columns=["package", "version"])
    config_html = "".join(
        f"<details><summary>{esc(label)}</summary><pre>{esc(text)}</pre></details>" for label, text in configs
    )
    return (
        table_html(info)
        + '<div class="grid">'
        + table_html(machine)
        + table_html(packages)
        + "</div>"
        + (f"<h3>Run configurations</h3>{config_html}" if configs else "")
    )


def render(page: Page) -> str:
    """The complete HTML document."""
    notes = "".join(f'<p class="note">{esc(n)}</p>' for n in page.notes)
    tables = "".join(f"<h3>{esc(title)}</h3>{table_html(df)}" for _, title, df in page.tables)
    sections = [
        ("verdict", "Verdict", _verdict(page)),
        ("figures", "Figures", _figures(page.figures) or "<p>No metric curves found.</p>"),
        ("samples", "Samples", _figures(page.samples) or "<p>No evaluation samples were logged.</p>"),
        ("tables", "Tables", tables or "<p>No tables (no reward metrics found).</p>"),
        ("runs", "Runs", table_html(page.runs, "runs")),
        ("provenance", "Provenance", _provenance(page.provenance, page.configs)),
    ]
    nav = "".join(f'<a href="#{key}">{esc(name)}</a>' for key, name, _ in sections)
    body = "".join(f'<section id="{key}"><h2>{esc(name)}</h2>{content}</section>' for key, name, content in sections)
    return (
        '<!doctype html>\n<html lang="en"><head><meta charset="utf-8">'
        '<meta http-equiv="Content-Security-Policy" content="default-src \'none\'; img-src data:; style-src '
        "'unsafe-inline'\">"
        '<meta name="viewport" content="width=device-width, initial-scale=1">'
        f'<link rel="icon" href="data:,"><title>{esc(page.title)}</title><style>{CSS}</style></head>'
        f'<body><main><h1>{esc(page.title)}</h1><p class="sub">{esc(page.subtitle)}</p>{notes}'
        f"<nav>{nav}</nav>{body}</main></body></html>\n"
    )


def write(page: Page, path: Path) -> Path:
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(render(page), encoding="utf-8")
    return path
