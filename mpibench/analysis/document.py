"""A small document model rendered twice: Markdown (report.md) and self-contained HTML (report.html).

Building blocks once and rendering them two ways keeps the two reports identical in content without a
Markdown library. Inline text may use **bold** and `code`; everything else is escaped.
"""

from __future__ import annotations

import base64
import html
import re
from dataclasses import dataclass
from pathlib import Path


@dataclass
class Heading:
    text: str
    level: int = 2


@dataclass
class Para:
    text: str


@dataclass
class Bullets:
    items: list[str]


@dataclass
class Table:
    header: list[str]
    rows: list[list[str]]
    align: str = ""  # one letter per column: l or r (default: first column left, others right)


@dataclass
class Image:
    path: Path  # relative to the report's directory
    alt: str
    caption: str


@dataclass
class Code:
    text: str


def to_markdown(blocks: list) -> str:
    out = []
    for b in blocks:
        if isinstance(b, Heading):
            out.append("#" * b.level + " " + b.text)
        elif isinstance(b, Para):
            out.append(b.text)
        elif isinstance(b, Bullets):
            out.append("\n".join(f"- {item}" for item in b.items))
        elif isinstance(b, Table):
            align = _align(b)
            out.append("\n".join([
                "| " + " | ".join(_cell(h) for h in b.header) + " |",
                "|" + "|".join("---:" if a == "r" else ":---" for a in align) + "|",
                *("| " + " | ".join(_cell(c) for c in row) + " |" for row in b.rows)]))
        elif isinstance(b, Image):
            out.append(f"![{b.alt}]({b.path.as_posix()})\n\n*{b.caption}*")
        elif isinstance(b, Code):
            out.append("```\n" + b.text.rstrip("\n") + "\n```")
    return "\n\n".join(out) + "\n"


def to_html(blocks: list, title: str, base: Path) -> str:
    """One HTML page; images are read from `base` and inlined as data URIs."""
    body = []
    for b in blocks:
        if isinstance(b, Heading):
            body.append(f"<h{b.level}>{_inline(b.text)}</h{b.level}>")
        elif isinstance(b, Para):
            body.append(f"<p>{_inline(b.text)}</p>")
        elif isinstance(b, Bullets):
            body.append("<ul>" + "".join(f"<li>{_inline(i)}</li>" for i in b.items) + "</ul>")
        elif isinstance(b, Table):
            align = _align(b)
            head = "".join(f"<th>{_inline(h)}</th>" for h in b.header)
            rows = "".join("<tr>" + "".join(f'<td class="{a}">{_inline(c)}</td>' for a, c in zip(align, row))
                           + "</tr>" for row in b.rows)
            body.append(f"<table><thead><tr>{head}</tr></thead><tbody>{rows}</tbody></table>")
        elif isinstance(b, Image):
            data = base64.b64encode((base / b.path).read_bytes()).decode("ascii")
            body.append(f'<figure><img src="data:image/png;base64,{data}" alt="{html.escape(b.alt)}">'
                        f"<figcaption>{_inline(b.caption)}</figcaption></figure>")
        elif isinstance(b, Code):
            body.append(f"<pre>{html.escape(b.text)}</pre>")
    return (f"<!DOCTYPE html>\n<html lang=\"en\"><head><meta charset=\"utf-8\"><title>{html.escape(title)}"
            f"</title><style>{_CSS}</style></head><body>\n" + "\n".join(body) + "\n</body></html>\n")


_CSS = ("body{font-family:system-ui,sans-serif;max-width:1200px;margin:2em auto;padding:0 1em;color:#222}"
        "table{border-collapse:collapse;margin:1em 0;font-size:0.9em}"
        "th,td{border:1px solid #ccc;padding:0.25em 0.6em}th{background:#f2f2f2}td.r{text-align:right}"
        "img{max-width:100%}figure{margin:1.5em 0}figcaption{font-style:italic;color:#555}"
        "pre{background:#f6f6f6;padding:0.8em;overflow-x:auto}code{background:#f2f2f2;padding:0 0.2em}")


def _align(t: Table) -> str:
    return t.align or "l" + "r" * (len(t.header) - 1)


def _cell(text: str) -> str:
    return str(text).replace("|", "\\|").replace("\n", " ")


def _inline(text: str) -> str:
    out = html.escape(str(text), quote=False)
    out = re.sub(r"`([^`]+)`", r"<code>\1</code>", out)
    return re.sub(r"\*\*([^*]+)\*\*", r"<strong>\1</strong>", out)
