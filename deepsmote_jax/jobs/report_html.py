"""`report.html`: the report's Markdown as one self-contained page.

Python-Markdown (with its `tables` and `toc` extensions) turns the report into HTML; every image is then
embedded as a base64 `data:` URI, so the page needs no other file (links to the per-run reports stay relative
links), and an image that is missing is named instead of linked. Inline style sheet, no scripts, no external
assets.
"""

from __future__ import annotations

import base64
import html
import os
import pathlib
import re

import markdown

STYLE = """
body { font-family: system-ui, -apple-system, "Segoe UI", Roboto, sans-serif; margin: 1.5em auto; max-width: 1200px;
  padding: 0 1em; color: #222; line-height: 1.45; }
h1 { border-bottom: 2px solid #345; padding-bottom: .2em; }
h2 { border-bottom: 1px solid #ccd; padding-bottom: .1em; margin-top: 1.6em; }
table { border-collapse: collapse; margin: .6em 0; font-size: 0.9em; }
th, td { border: 1px solid #ccd; padding: .25em .5em; }
th { background: #eef1f6; }
td.num { text-align: right; font-variant-numeric: tabular-nums; }
tr:nth-child(even) td { background: #fafbfd; }
img { max-width: 100%; border: 1px solid #ddd; }
figure { margin: .8em 0; }
figcaption { font-size: .85em; color: #555; }
code { background: #f3f3f3; padding: 0 .2em; }
"""

_IMG = re.compile(r'<img alt="([^"]*)" src="([^"]+)"\s*/?>')
_MIME = {".png": "image/png", ".jpg": "image/jpeg", ".jpeg": "image/jpeg", ".gif": "image/gif", ".svg": "image/svg+xml"}


def data_uri(path: str | os.PathLike) -> str:
  path = pathlib.Path(path)
  mime = _MIME.get(path.suffix.lower(), "application/octet-stream")
  return f"data:{mime};base64," + base64.b64encode(path.read_bytes()).decode("ascii")


def _embed(match: re.Match, base: pathlib.Path) -> str:
  alt, target = match.group(1), html.unescape(match.group(2))
  path = base / target
  if target.startswith("data:") or not path.is_file():
    return f"<em>[missing image {html.escape(target)}]</em>"
  return f'<img alt="{alt}" title="{html.escape(target)}" src="{data_uri(path)}">'


def _escape_markup(md: str) -> str:
  """`<` and `>` outside code spans as entities: the report's text (class and file names) is text, never
  HTML, and Python-Markdown would pass it through as markup."""
  parts = re.split(r"(`[^`]*`)", md)
  return "".join(p if p.startswith("`") else p.replace("<", "&lt;").replace(">", "&gt;") for p in parts)


def markdown_to_html(md: str, base: str | os.PathLike, title: str = "Report") -> str:
  """The page for the report Markdown `md`, whose relative image paths are under `base`."""
  base = pathlib.Path(base)
  body = markdown.markdown(_escape_markup(md), extensions=["tables", "toc"], output_format="html")
  body = _IMG.sub(lambda m: _embed(m, base), body)
  return (
    '<!DOCTYPE html>\n<html lang="en">\n<head>\n<meta charset="utf-8">\n'
    f"<title>{html.escape(title)}</title>\n<style>{STYLE}</style>\n</head>\n<body>\n{body}\n</body>\n</html>\n"
  )
