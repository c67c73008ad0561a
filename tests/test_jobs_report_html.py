"""deepsmote_jax.jobs.report_html: the report's Markdown as one self-contained page."""

from __future__ import annotations

import base64

import numpy as np
from PIL import Image

from deepsmote_jax.jobs import report_html

MD = """# Title <x>

Some **bold** and `code<1>` with a [link](run/report.md) and 5 % \\* note.

## Table

| Method | NG recall |
|---|---:|
| none | 3/3 (100.0 %) |

- one item
- two items

![a figure](fig.png)

![gone](missing.png)
"""


def test_markdown_to_html_embeds_images_and_escapes(tmp_path):
  Image.fromarray(np.zeros((4, 4), np.uint8)).save(tmp_path / "fig.png")
  page = report_html.markdown_to_html(MD, tmp_path, "T")
  assert page.startswith("<!DOCTYPE html>") and "<style>" in page
  assert "Title &lt;x&gt;</h1>" in page and "<h2" in page and "<x>" not in page
  assert "<strong>bold</strong>" in page and "<code>code&lt;1&gt;</code>" in page and "5 % * note" in page
  assert '<a href="run/report.md">link</a>' in page
  assert '<td style="text-align: right;">3/3 (100.0 %)</td>' in page and "NG recall</th>" in page
  assert "<li>one item</li>" in page and "<li>two items</li>" in page and "<ul>" in page
  data = base64.b64encode((tmp_path / "fig.png").read_bytes()).decode()
  assert f'src="data:image/png;base64,{data}"' in page
  assert "missing image missing.png" in page and 'src="missing.png"' not in page
  assert "http" not in page
