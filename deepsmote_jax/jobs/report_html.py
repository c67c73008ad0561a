"""`report.html`: the report's Markdown as one self-contained page.

The subset of Markdown the report writes -- headings, pipe tables, paragraphs, `- ` lists, `**bold**`,
`` `code` ``, `[links](file)` and `![images](file.png)` -- turned into HTML with an inline style sheet; every
image is embedded as a base64 `data:` URI, so the page needs no other file (links to the per-run reports stay
relative links). No external assets, no scripts.
"""

from __future__ import annotations

import base64
import html
import os
import pathlib
import re

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

_IMAGE = re.compile(r"!\[([^\]]*)\]\(([^)\s]+)\)")
_LINK = re.compile(r"\[([^\]]+)\]\(([^)\s]+)\)")
_BOLD = re.compile(r"\*\*(.+?)\*\*")
_CODE = re.compile(r"`([^`]+)`")
_MIME = {".png": "image/png", ".jpg": "image/jpeg", ".jpeg": "image/jpeg", ".gif": "image/gif", ".svg": "image/svg+xml"}


def data_uri(path: str | os.PathLike) -> str:
  path = pathlib.Path(path)
  mime = _MIME.get(path.suffix.lower(), "application/octet-stream")
  return f"data:{mime};base64," + base64.b64encode(path.read_bytes()).decode("ascii")


def _inline(text: str, base: pathlib.Path) -> str:
  """Escaped text with bold, code, links and (embedded) images."""
  out, pos = [], 0
  for m in _IMAGE.finditer(text):
    out.append(_inline_text(text[pos : m.start()], base))
    out.append(_img(m.group(1), m.group(2), base))
    pos = m.end()
  out.append(_inline_text(text[pos:], base))
  return "".join(out)


def _inline_text(text: str, base: pathlib.Path) -> str:
  codes: list[str] = []

  def keep_code(m):
    codes.append(f"<code>{html.escape(m.group(1))}</code>")
    return f"\x00{len(codes) - 1}\x00"

  text = _CODE.sub(keep_code, text)
  text = html.escape(text.replace("\\*", "*"), quote=False)
  text = _BOLD.sub(r"<strong>\1</strong>", text)
  text = _LINK.sub(lambda m: f'<a href="{html.escape(m.group(2))}">{m.group(1)}</a>', text)
  return re.sub("\x00(\\d+)\x00", lambda m: codes[int(m.group(1))], text)


def _img(alt: str, target: str, base: pathlib.Path) -> str:
  path = base / target
  if not path.is_file():
    return f"<em>[missing image {html.escape(target)}]</em>"
  return f'<img alt="{html.escape(alt)}" title="{html.escape(target)}" src="{data_uri(path)}">'


def _cells(line: str) -> list[str]:
  line = line.strip()
  if line.startswith("|"):
    line = line[1:]
  if line.endswith("|") and not line.endswith("\\|"):
    line = line[:-1]
  return [c.strip().replace("\\|", "|") for c in re.split(r"(?<!\\)\|", line)]


def _table(lines: list[str], base: pathlib.Path) -> str:
  head = _cells(lines[0])
  sep = _cells(lines[1]) if len(lines) > 1 and set(lines[1].replace("|", "").strip()) <= set("-: ") else None
  align = ["num" if s.endswith(":") else "" for s in sep] if sep else [""] * len(head)
  body = lines[2:] if sep else lines[1:]
  out = ["<table>", "<tr>" + "".join(f"<th>{_inline(c, base)}</th>" for c in head) + "</tr>"]
  for line in body:
    cells = _cells(line)
    tds = [
      (f'<td class="{align[i]}">' if i < len(align) and align[i] else "<td>") + _inline(c, base) + "</td>"
      for i, c in enumerate(cells)
    ]
    out.append("<tr>" + "".join(tds) + "</tr>")
  out.append("</table>")
  return "\n".join(out)


def markdown_to_html(md: str, base: str | os.PathLike, title: str = "Report") -> str:
  """The page for the report Markdown `md`, whose relative image paths are under `base`."""
  base = pathlib.Path(base)
  lines = md.splitlines()
  body: list[str] = []
  i = 0
  while i < len(lines):
    line = lines[i]
    stripped = line.strip()
    if not stripped:
      i += 1
      continue
    heading = re.match(r"^(#{1,6})\s+(.*)$", stripped)
    if heading:
      level = len(heading.group(1))
      text = heading.group(2)
      anchor = re.sub(r"[^a-z0-9]+", "-", text.lower()).strip("-")
      body.append(f'<h{level} id="{anchor}">{_inline(text, base)}</h{level}>')
      i += 1
      continue
    if stripped.startswith("|"):
      block = []
      while i < len(lines) and lines[i].strip().startswith("|"):
        block.append(lines[i])
        i += 1
      body.append(_table(block, base))
      continue
    if stripped.startswith("- "):
      items = []
      while i < len(lines) and lines[i].strip().startswith("- "):
        items.append(f"<li>{_inline(lines[i].strip()[2:], base)}</li>")
        i += 1
      body.append("<ul>" + "".join(items) + "</ul>")
      continue
    image = _IMAGE.fullmatch(stripped)
    if image:
      body.append(f"<figure>{_img(image.group(1), image.group(2), base)}<figcaption>{html.escape(image.group(1))}")
      body[-1] += "</figcaption></figure>"
      i += 1
      continue
    para = []
    while i < len(lines) and lines[i].strip() and not re.match(r"^(#{1,6}\s|\||- )", lines[i].strip()):
      para.append(lines[i].strip())
      i += 1
    body.append(f"<p>{_inline(' '.join(para), base)}</p>")
  return (
    '<!DOCTYPE html>\n<html lang="en">\n<head>\n<meta charset="utf-8">\n'
    f"<title>{html.escape(title)}</title>\n<style>{STYLE}</style>\n</head>\n<body>\n"
    + "\n".join(body)
    + "\n</body>\n</html>\n"
  )
