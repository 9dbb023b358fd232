"""A small document model rendered both as Markdown and as one self-contained HTML file.

A `Doc` is a list of blocks: headings, paragraphs, bullet lists, tables, code blocks and PNG images.
`to_markdown(doc, base)` links images relative to `base` (the Markdown file's folder); `to_html(doc)` inlines
them as base64 data URIs, with inline CSS only, so the HTML file references nothing outside itself. All text
is plain (escaped in HTML; in Markdown, table cells have their pipes escaped).
"""
from __future__ import annotations

import base64
import html
import os
from dataclasses import dataclass, field
from pathlib import Path


@dataclass
class Doc:
    title: str
    blocks: list[tuple] = field(default_factory=list)

    def h(self, text: str, level: int = 2) -> None:
        self.blocks.append(("h", level, text))

    def p(self, text: str) -> None:
        self.blocks.append(("p", text))

    def bullets(self, items: list[str]) -> None:
        self.blocks.append(("ul", list(items)))

    def table(self, headers: list[str], rows: list[list[str]], note: str | None = None,
              align: str | None = None) -> None:
        """`align`: one "l" or "r" per column (default: the first left, the others right)."""
        align = align or "l" + "r" * (len(headers) - 1)
        if len(align) != len(headers) or set(align) - {"l", "r"}:
            raise ValueError(f"table align must be one 'l'/'r' per column ({len(headers)}), got {align!r}")
        self.blocks.append(("table", list(headers), [list(map(str, r)) for r in rows], note, align))

    def code(self, text: str, lang: str = "") -> None:
        self.blocks.append(("code", text, lang))

    def image(self, path: str | os.PathLike, caption: str = "") -> None:
        self.blocks.append(("img", Path(path), caption))


def _md_cell(text: str) -> str:
    return text.replace("|", "\\|").replace("\n", " ")


def to_markdown(doc: Doc, base: str | os.PathLike) -> str:
    out = [f"# {doc.title}", ""]
    for b in doc.blocks:
        kind = b[0]
        if kind == "h":
            out += ["#" * b[1] + " " + b[2], ""]
        elif kind == "p":
            out += [b[1], ""]
        elif kind == "ul":
            out += [f"* {item}" for item in b[1]] + [""]
        elif kind == "table":
            _, headers, rows, note, align = b
            out.append("| " + " | ".join(_md_cell(h) for h in headers) + " |")
            out.append("|" + "|".join("---" if a == "l" else "---:" for a in align) + "|")
            out += ["| " + " | ".join(_md_cell(c) for c in r) + " |" for r in rows]
            out += [""] + ([note, ""] if note else [])
        elif kind == "code":
            out += [f"```{b[2]}", b[1].rstrip("\n"), "```", ""]
        elif kind == "img":
            rel = os.path.relpath(b[1], base)
            out += [f"![{b[2]}]({Path(rel).as_posix()})", ""] + ([f"*{b[2]}*", ""] if b[2] else [])
    return "\n".join(out).rstrip() + "\n"


_CSS = """body{font-family:system-ui,-apple-system,Segoe UI,Helvetica,Arial,sans-serif;max-width:1200px;margin:2em auto;
padding:0 1em;color:#222;line-height:1.45}h1{border-bottom:2px solid #ddd}
h2{border-bottom:1px solid #eee;margin-top:2em}
table{border-collapse:collapse;margin:0.6em 0;font-size:0.92em}th,td{border:1px solid #ccc;padding:3px 8px}
td{text-align:right}th{background:#f3f3f3}
pre{background:#f7f7f7;border:1px solid #e5e5e5;padding:0.6em;overflow-x:auto;font-size:0.85em}
figure{margin:1em 0}img{max-width:100%;border:1px solid #eee}figcaption{color:#555;font-size:0.9em}
.note{color:#555;font-size:0.9em}"""


def _data_uri(path: Path) -> str:
    return "data:image/png;base64," + base64.b64encode(path.read_bytes()).decode("ascii")


def to_html(doc: Doc) -> str:
    e = html.escape
    out = ["<!DOCTYPE html>", '<html lang="en"><head><meta charset="utf-8">',
           f"<title>{e(doc.title)}</title><style>{_CSS}</style></head><body>", f"<h1>{e(doc.title)}</h1>"]
    for b in doc.blocks:
        kind = b[0]
        if kind == "h":
            out.append(f"<h{b[1]}>{e(b[2])}</h{b[1]}>")
        elif kind == "p":
            out.append(f"<p>{e(b[1])}</p>")
        elif kind == "ul":
            out.append("<ul>" + "".join(f"<li>{e(i)}</li>" for i in b[1]) + "</ul>")
        elif kind == "table":
            _, headers, rows, note, align = b
            style = ['' if a == "r" else ' style="text-align:left"' for a in align]
            out.append("<table><thead><tr>" + "".join(f"<th{st}>{e(h)}</th>" for h, st in zip(headers, style,
                                                                                            strict=True))
                       + "</tr></thead><tbody>")
            out += ["<tr>" + "".join(f"<td{st}>{e(c)}</td>" for c, st in zip(r, style, strict=False)) + "</tr>"
                    for r in rows]
            out.append("</tbody></table>" + (f'<p class="note">{e(note)}</p>' if note else ""))
        elif kind == "code":
            out.append(f"<pre><code>{e(b[1].rstrip())}</code></pre>")
        elif kind == "img":
            cap = f"<figcaption>{e(b[2])}</figcaption>" if b[2] else ""
            out.append(f'<figure><img alt="{e(b[2])}" src="{_data_uri(b[1])}">{cap}</figure>')
    out.append("</body></html>")
    return "\n".join(out) + "\n"
