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
th{background:#f4f5f7;font-weight:600}table.runs td{white-space:nowrap}td.num{text-align:right;font-variant-numeric:tabular-nums;white-space:nowrap}
figure{margin:8px 0 18px}figure img{max-width:100%;height:auto;border:1px solid #eee}
figcaption{color:#555;font-size:12.5px;margin-top:3px}
.grid{display:flex;gap:10px;align-items:flex-start;margin:6px 0 12px}.grid .label{width:110px;font-weight:600;padding-top:4px}
.grid figure{margin:0}details{margin:3px 0}summary{cursor:pointer}
pre{background:#f7f7f9;border:1px solid #e5e5e5;padding:8px;overflow:auto;max-height:380px;font-size:12px}
nav a{margin-right:12px;color:#0b57d0;text-decoration:none}
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
class ImageCell:
    caption: str
    png: bytes


@dataclass
class ImageRow:
    label: str
    cells: list[ImageCell]


@dataclass
class ImageSection:
    title: str
    rows: list[ImageRow]


@dataclass
class Figure:
    title: str
    caption: str
    png: bytes


@dataclass
class Page:
    """Everything the page shows, already computed and formatted."""

    title: str
    subtitle: str
    summary: pd.DataFrame
    summary_title: str
    figures: list[Figure]
    tables: list[tuple[str, str, pd.DataFrame]]
    image_sections: list[ImageSection]
    runs: pd.DataFrame
    provenance: dict
    configs: list[tuple[str, str]] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)


def _figures(figures: list[Figure]) -> str:
    return "".join(
        f'<figure><h3>{esc(f.title)}</h3><img src="{data_uri(f.png)}" alt="{esc(f.title)}">'
        f"<figcaption>{esc(f.caption)}</figcaption></figure>"
        for f in figures
    )


def _images(sections: list[ImageSection]) -> str:
    parts = []
    for section in sections:
        parts.append(f"<h3>{esc(section.title)}</h3>")
        for row in section.rows:
            cells = "".join(
                f'<figure><img src="{data_uri(c.png)}" alt="{esc(c.caption)}"><figcaption>{esc(c.caption)}</figcaption></figure>'
                for c in row.cells
            )
            parts.append(f'<div class="grid"><div class="label">{esc(row.label)}</div>{cells}</div>')
    return "".join(parts)


def _provenance(prov: dict, configs: list[tuple[str, str]]) -> str:
    info = pd.DataFrame([(k, v) for k, v in prov.items() if not isinstance(v, dict)], columns=["", "value"])
    machine = pd.DataFrame(list(prov.get("machine", {}).items()), columns=["machine", "value"])
    packages = pd.DataFrame(list(prov.get("packages", {}).items()), columns=["package", "version"])
    config_html = "".join(f"<details><summary>{esc(label)}</summary><pre>{esc(text)}</pre></details>" for label, text in configs)
    return (
        table_html(info) + '<div class="grid">' + table_html(machine) + table_html(packages) + "</div>"
        + (f"<h3>Run configurations</h3>{config_html}" if configs else "")
    )


def render(page: Page) -> str:
    """The complete HTML document."""
    notes = "".join(f'<p class="note">{esc(n)}</p>' for n in page.notes)
    tables = "".join(f"<h3>{esc(title)}</h3>{table_html(df)}" for _, title, df in page.tables)
    sections = [
        ("summary", "Summary", f"<p class='sub'>{esc(page.summary_title)}</p>{table_html(page.summary, 'summary')}"),
        ("figures", "Figures", _figures(page.figures) or "<p>No metric curves found.</p>"),
        ("tables", "Tables", tables or "<p>No tables (no reward metrics found).</p>"),
        ("samples", "Samples over training", _images(page.image_sections) or "<p>No eval images were logged.</p>"),
        ("runs", "Runs", table_html(page.runs, "runs")),
        ("provenance", "Provenance", _provenance(page.provenance, page.configs)),
    ]
    nav = "".join(f'<a href="#{key}">{esc(name)}</a>' for key, name, _ in sections)
    body = "".join(f'<section id="{key}"><h2>{esc(name)}</h2>{content}</section>' for key, name, content in sections)
    return (
        "<!doctype html>\n<html lang=\"en\"><head><meta charset=\"utf-8\">"
        "<meta http-equiv=\"Content-Security-Policy\" content=\"default-src 'none'; img-src data:; style-src 'unsafe-inline'\">"
        '<meta name="viewport" content="width=device-width, initial-scale=1">'
        f'<link rel="icon" href="data:,"><title>{esc(page.title)}</title><style>{CSS}</style></head>'
        f"<body><main><h1>{esc(page.title)}</h1><p class=\"sub\">{esc(page.subtitle)}</p>{notes}<nav>{nav}</nav>{body}</main></body></html>\n"
    )


def write(page: Page, path: Path) -> Path:
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(render(page), encoding="utf-8")
    return path
