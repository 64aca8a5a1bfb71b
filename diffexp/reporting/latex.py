"""Writing the tables: raw CSVs and booktabs LaTeX, every cell escaped."""

from __future__ import annotations

from pathlib import Path

import pandas as pd

from diffexp.reporting.table_display import display_blocks
from diffexp.reporting.tables import Tables

_TEX_SPECIAL = {
    "\\": r"\textbackslash{}",
    "&": r"\&",
    "%": r"\%",
    "$": r"\$",
    "#": r"\#",
    "_": r"\_",
    "{": r"\{",
    "}": r"\}",
    "~": r"\textasciitilde{}",
    "^": r"\textasciicircum{}",
    "∞": r"$\infty$",
    "–": "--",
    "<": r"\textless{}",
    ">": r"\textgreater{}",
    "·": r"$\cdot$",
}


def tex_escape(text) -> str:
    return "".join(_TEX_SPECIAL.get(c, c) for c in str(text))


def latex_table(df: pd.DataFrame, caption: str, label: str) -> str:
    """A booktabs ``table`` (needs \\usepackage{booktabs}); every cell is escaped."""
    spec = "l" * min(3, len(df.columns)) + "r" * max(0, len(df.columns) - 3)
    lines = [
        r"\begin{table}[t]",
        r"\centering",
        r"\small",
        rf"\caption{{{tex_escape(caption)}}}",
        rf"\label{{tab:{label}}}",
        rf"\begin{{tabular}}{{{spec}}}",
        r"\toprule",
        " & ".join(tex_escape(c) for c in df.columns) + r" \\",
        r"\midrule",
    ]
    lines += [" & ".join(tex_escape(v) for v in row) + r" \\" for row in df.itertuples(index=False)]
    lines += [r"\bottomrule", r"\end{tabular}", r"\end{table}", ""]
    return "\n".join(lines)


def write_tables(tables: Tables, out_dir: Path, extra_blocks: list[tuple[str, str, pd.DataFrame]] = ()) -> list[Path]:
    """Raw CSVs (all metrics) and the display blocks as LaTeX into ``out_dir/tables``: one .tex
    per block key (blocks sharing a key, e.g. one per cell, go into the same file)."""
    folder = Path(out_dir) / "tables"
    folder.mkdir(parents=True, exist_ok=True)
    written = []
    for name in ("budgets", "efficiency", "auc", "robust", "ablation"):
        path = folder / f"{name}.csv"
        getattr(tables, name).to_csv(path, index=False)
        written.append(path)
    by_key: dict[str, list[str]] = {}
    for key, title, df in [*extra_blocks, *display_blocks(tables)]:
        by_key.setdefault(key, []).append(
            latex_table(df, title, f"{key}-{len(by_key.get(key, [])) + 1}".replace("_", "-"))
        )
    for key, parts in by_key.items():
        path = folder / f"{key}.tex"
        path.write_text("\n".join(parts))
        written.append(path)
    return written
