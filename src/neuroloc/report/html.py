"""A self-contained HTML report: one file with inline CSS and base64 PNGs that opens anywhere, offline.

Every piece of user text is escaped, and a Content-Security-Policy forbids scripts and any resource
that is not inline, so a report can be shared and opened safely.
"""

from __future__ import annotations

import base64
import json
import os
from dataclasses import dataclass, field
from html import escape
from pathlib import Path
from typing import Any, Sequence

import pandas as pd
from matplotlib.figure import Figure

from ..errors import NeurolocError
from ..io import atomic_write_text, package_version
from .figures import figure_to_png

PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"

_CSP = "default-src 'none'; img-src data:; style-src 'unsafe-inline'"

_CSS = """
body { font-family: system-ui, -apple-system, "Segoe UI", Roboto, "Helvetica Neue", Arial, sans-serif;
       max-width: 1100px; margin: 2rem auto; padding: 0 1.25rem; color: #1a1a1a; line-height: 1.5; }
h1 { font-size: 1.8rem; border-bottom: 2px solid #0072B2; padding-bottom: .3rem; }
h2 { font-size: 1.3rem; margin-top: 2.5rem; border-bottom: 1px solid #ddd; padding-bottom: .2rem; }
nav ol { padding-left: 1.4rem; }
a { color: #0072B2; }
figure { margin: 1rem 0; }
figure img { max-width: 100%; height: auto; border: 1px solid #eee; }
.caption { color: #444; font-size: .92rem; font-style: italic; }
.table-wrap { overflow-x: auto; margin: 1rem 0; }
table.dataframe { border-collapse: collapse; font-size: .88rem; font-variant-numeric: tabular-nums; }
table.dataframe th, table.dataframe td { border: 1px solid #ddd; padding: .25rem .6rem; text-align: right; }
table.dataframe thead th { background: #f2f2f2; }
table.dataframe tbody tr:nth-child(even) { background: #fafafa; }
details { margin-top: 2.5rem; background: #f7f7f7; border: 1px solid #ddd; border-radius: 4px;
          padding: .5rem 1rem; }
summary { cursor: pointer; font-weight: 600; }
pre { overflow-x: auto; font-size: .85rem; }
footer { margin-top: 2rem; color: #777; font-size: .8rem; }
""".strip()


@dataclass
class Section:
    """One titled part of the report: free text, figures (Figures or PNG bytes), tables, a caption."""

    title: str
    text: str | None = None
    figures: list[Figure | bytes] = field(default_factory=list)
    tables: list[pd.DataFrame] = field(default_factory=list)
    caption: str | None = None


def _png(figure: Figure | bytes, where: str) -> bytes:
    """PNG bytes of a figure; raw bytes must really be a PNG, or the browser shows a broken image."""
    if isinstance(figure, Figure):
        return figure_to_png(figure)
    if isinstance(figure, (bytes, bytearray)) and bytes(figure[:8]) == PNG_SIGNATURE:
        return bytes(figure)
    raise NeurolocError(f"{where}: a figure must be a matplotlib Figure or PNG bytes, got {type(figure).__name__}")


def _paragraphs(text: str) -> str:
    """Blank-line separated paragraphs, each escaped, single newlines kept as line breaks."""
    blocks = [b.strip() for b in text.replace("\r\n", "\n").split("\n\n") if b.strip()]
    return "\n".join("<p>" + escape(b).replace("\n", "<br>") + "</p>" for b in blocks)


def _table(df: pd.DataFrame) -> str:
    """A table as HTML: a row counter is not shown (an unnamed integer index, filtered or not; labels in the
    index are), missing values of any dtype as –, and a column with no value at all is left out."""
    plain = df.index.name is None and pd.api.types.is_integer_dtype(df.index)
    df = df.iloc[:, df.notna().any().to_numpy()] if len(df) else df
    df = df.apply(lambda column: column if pd.api.types.is_float_dtype(column) or not column.isna().any()
                  else column.astype(object).where(column.notna(), "–"))
    html = df.to_html(escape=True, border=0, na_rep="–", index=not plain, float_format=lambda x: f"{x:.4g}")
    return f'<div class="table-wrap">{html}</div>'


def _section(index: int, section: Section) -> str:
    where = f"section {section.title!r}"
    parts = [f'<section id="section-{index}">', f"<h2>{escape(section.title)}</h2>"]
    if section.text:
        parts.append(_paragraphs(section.text))
    for number, figure in enumerate(section.figures, start=1):
        data = base64.b64encode(_png(figure, where)).decode("ascii")
        alt = escape(f"{section.title}, figure {number}")
        parts.append(f'<figure><img src="data:image/png;base64,{data}" alt="{alt}"></figure>')
    parts.extend(_table(table) for table in section.tables)
    if section.caption:
        parts.append(f'<p class="caption">{escape(section.caption)}</p>')
    parts.append("</section>")
    return "\n".join(parts)


def render_report(title: str, sections: Sequence[Section], manifest: dict[str, Any] | None = None) -> str:
    """The whole report as one HTML string: title, contents, sections, and the manifest (collapsed)."""
    body = [f"<h1>{escape(title)}</h1>"]
    if len(sections) > 1:
        links = "".join(f'<li><a href="#section-{i}">{escape(s.title)}</a></li>' for i, s in enumerate(sections))
        body.append(f"<nav><ol>{links}</ol></nav>")
    body.extend(_section(i, s) for i, s in enumerate(sections))
    if manifest is not None:
        text = json.dumps(manifest, indent=2, ensure_ascii=False, default=str)
        body.append(f"<details><summary>Run manifest</summary><pre>{escape(text)}</pre></details>")
    body.append(f"<footer>Generated by neuroloc {escape(package_version())}</footer>")
    return "\n".join([
        "<!DOCTYPE html>",
        '<html lang="en">',
        "<head>",
        '<meta charset="utf-8">',
        f'<meta http-equiv="Content-Security-Policy" content="{_CSP}">',
        '<meta name="viewport" content="width=device-width, initial-scale=1">',
        f"<title>{escape(title)}</title>",
        f"<style>\n{_CSS}\n</style>",
        "</head>",
        "<body>",
        *body,
        "</body>",
        "</html>",
        "",
    ])


def write_report(path: str | os.PathLike, title: str, sections: Sequence[Section],
                 manifest: dict[str, Any] | None = None) -> Path:
    """Render the report and write it atomically to `path` (UTF-8); returns the path."""
    atomic_write_text(path, render_report(title, sections, manifest))
    return Path(path)
