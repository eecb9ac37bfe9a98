"""Renderers of the report model (:mod:`gendistill.analysis.document`): GitHub-flavoured Markdown with linked
figures, and one self-contained HTML file with figures embedded as base64 data URIs."""

from __future__ import annotations

import base64
import html
import re
from pathlib import Path

from .document import Block, Bullets, Code, Figure, Heading, Paragraph, Table

_LEFT = {"model", "teacher", "metric (test)"}  # label columns, left-aligned; figures are right-aligned


def _md_inline(text: str) -> str:
    """Escape ``|`` for a Markdown table cell (GFM needs it escaped even inside code spans)."""
    return text.replace("|", "\\|")


def md_table(headers: list[str], rows: list[list[str]]) -> str:
    """GitHub-flavoured Markdown table; label columns left-aligned, figures right-aligned."""
    align = ["---" if h in _LEFT else "---:" for h in headers]
    lines = ["| " + " | ".join(_md_inline(h) for h in headers) + " |", "|" + "|".join(align) + "|"]
    lines += ["| " + " | ".join(_md_inline(c) for c in r) + " |" for r in rows]
    return "\n".join(lines) + "\n"


def render_markdown(blocks: list[Block], root: Path) -> str:
    """Markdown for ``blocks``; figure paths relative to ``root`` (the run directory)."""
    out: list[str] = []
    for b in blocks:
        if isinstance(b, Heading):
            out.append("#" * b.level + f" {b.text}\n")
        elif isinstance(b, Paragraph):
            out.append(b.text + "\n")
        elif isinstance(b, Bullets):
            out.append("\n".join(f"- {item}" for item in b.items) + "\n")
        elif isinstance(b, Table):
            out.append(md_table(b.headers, b.rows))
        elif isinstance(b, Figure):
            rel = Path(b.path).relative_to(root).as_posix()
            out.append(f"![{b.caption}]({rel})\n\n*{b.caption}*\n")
        elif isinstance(b, Code):
            out.append(f"```{b.language}\n" + b.text.rstrip("\n") + "\n```\n")
        else:  # pragma: no cover - a new block type must be rendered here
            raise TypeError(f"no Markdown for {type(b).__name__}")
    return "\n".join(out)


def _html_inline(text: str) -> str:
    text = html.escape(text)
    text = re.sub(r"`([^`]+)`", r"<code>\1</code>", text)
    return re.sub(r"\*\*([^*]+)\*\*", r"<strong>\1</strong>", text)


CSS = """
body{font-family:system-ui,-apple-system,"Segoe UI",sans-serif;max-width:1500px;margin:2em auto;padding:0 1.5em;
color:#222;line-height:1.45}
h1{font-size:1.6em;border-bottom:2px solid #ddd;padding-bottom:.3em}h2{font-size:1.25em;margin-top:1.6em}
.tw{overflow-x:auto;margin:.8em 0}table{border-collapse:collapse;font-size:.82em}
tbody tr:nth-child(even){background:#fafafa}tbody tr:hover{background:#eef5ff}
th,td{border:1px solid #ddd;padding:.3em .6em;text-align:right;white-space:nowrap}
th{background:#f4f4f4;white-space:normal;min-width:4em}.l{text-align:left}.ci{color:#666;font-size:.9em}
code{background:#f4f4f4;padding:0 .25em;border-radius:3px;font-size:.92em}
pre{background:#f7f7f7;padding:.8em;overflow-x:auto;font-size:.85em}
.figs{display:flex;flex-wrap:wrap;gap:1.2em}figure{margin:0;flex:1 1 460px;max-width:680px}
figure.wide{flex-basis:100%;max-width:100%}
figure img{max-width:100%;height:auto;border:1px solid #eee}figcaption{font-size:.85em;color:#555;max-width:640px}
"""


_INTERVAL = re.compile(r"^(.*\S) (\[[^\]]+\])$")


def _html_cell(text: str) -> str:
    """A figure with its interval (``m ± s [lo, hi]``) on two lines, so wide tables fit a window."""
    m = _INTERVAL.match(text)
    if m is None:
        return _html_inline(text)
    return f'{_html_inline(m.group(1))}<br><span class="ci">{_html_inline(m.group(2))}</span>'


def _html_table(t: Table) -> str:
    cls = ["" if h not in _LEFT else ' class="l"' for h in t.headers]
    head = "".join(f"<th{k}>{_html_inline(h)}</th>" for k, h in zip(cls, t.headers, strict=True))
    rows = "".join(
        "<tr>" + "".join(f"<td{k}>{_html_cell(c)}</td>" for k, c in zip(cls, r, strict=True)) + "</tr>"
        for r in t.rows
    )
    return f'<div class="tw"><table><thead><tr>{head}</tr></thead><tbody>{rows}</tbody></table></div>'


def _html_figure(f: Figure) -> str:
    data = base64.b64encode(Path(f.path).read_bytes()).decode("ascii")
    wide = ' class="wide"' if f.wide else ""
    return (f'<figure{wide}><img src="data:image/png;base64,{data}" alt="{html.escape(f.caption)}">'
            f"<figcaption>{_html_inline(f.caption)}</figcaption></figure>")


def render_html(blocks: list[Block]) -> str:
    """One self-contained HTML page; consecutive figures share a flowing row."""
    body: list[str] = []
    in_figs = False
    for b in blocks:
        if not isinstance(b, Figure) and in_figs:
            body.append("</div>")
            in_figs = False
        if isinstance(b, Heading):
            body.append(f"<h{b.level}>{_html_inline(b.text)}</h{b.level}>")
        elif isinstance(b, Paragraph):
            body.append(f"<p>{_html_inline(b.text)}</p>")
        elif isinstance(b, Bullets):
            body.append("<ul>" + "".join(f"<li>{_html_inline(i)}</li>" for i in b.items) + "</ul>")
        elif isinstance(b, Table):
            body.append(_html_table(b))
        elif isinstance(b, Figure):
            if not in_figs:
                body.append('<div class="figs">')
                in_figs = True
            body.append(_html_figure(b))
        elif isinstance(b, Code):
            body.append(f"<details><summary>{html.escape(b.label)}</summary><pre>{html.escape(b.text)}</pre></details>")
        else:  # pragma: no cover
            raise TypeError(f"no HTML for {type(b).__name__}")
    if in_figs:
        body.append("</div>")
    first = blocks[0] if blocks else None
    title = html.escape(first.text) if isinstance(first, Heading) and first.level == 1 else "gendistill report"
    return (
        f'<!DOCTYPE html>\n<html lang="en"><head><meta charset="utf-8"><title>{title}</title>'
        f"<style>{CSS}</style></head>\n<body>\n" + "\n".join(body) + "\n</body></html>\n"
    )
