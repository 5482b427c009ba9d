"""Layout measured in headless Chromium: what a reader's browser shows of a built page.

``measure(page)`` loads a copy of the page (beside the original, so its assets resolve) with a small
script appended that, once the page has loaded, records the width of the article column, the body
text size, every table's width and how far it sticks out of the column, and every image's natural
and shown width; the script writes its record into the DOM, which Chromium dumps.
"""

from __future__ import annotations

import html
import json
import re
import shutil
import subprocess
import tempfile
from pathlib import Path

_SCRIPT = r"""
window.addEventListener('load', () => {
  const article = document.querySelector('article.bd-article') || document.querySelector('main') || document.body;
  const a = article.getBoundingClientRect();
  const p = article.querySelector('section > p') || article.querySelector('p') || document.body;
  const output = article.querySelector('.cell_output');   // the narrowest place a figure is shown
  const out = {column: a.width, output_column: output ? output.getBoundingClientRect().width : a.width,
               body_px: parseFloat(getComputedStyle(p).fontSize), tables: [], images: []};
  for (const t of article.querySelectorAll('table')) {
    const r = t.getBoundingClientRect();
    // a table may scroll inside its own box only where a chapter asked for it (class uhop-scroll)
    const box = t.closest('.uhop-scroll');
    const boxRight = box ? box.getBoundingClientRect().right : r.right;
    out.tables.push({width: r.width, overflow: (box ? boxRight : r.right) - a.right, scrolls: !!box,
                     text: t.innerText.replace(/\s+/g, ' ').slice(0, 80)});
  }
  for (const img of article.querySelectorAll('img')) {
    // figures made by code cells: in a cell's output, or glued into the text (myst-nb figures)
    if (!(img.getAttribute('src') || '').includes('_images/')) continue;
    // an image in a tab not shown has no layout: only its natural width can be checked
    out.images.push({src: img.getAttribute('src'), natural: img.naturalWidth, visible: !!img.offsetParent,
                     shown: img.getBoundingClientRect().width});
  }
  // printed output that is wider than its box (cut off, or only readable by scrolling)
  out.printed = [];
  for (const q of article.querySelectorAll('.cell_output pre')) {
    if (q.offsetParent && q.scrollWidth > q.clientWidth + 1) out.printed.push(q.innerText.slice(0, 80));
  }
  const pre = document.createElement('pre');
  pre.id = 'uhop-measure';
  pre.textContent = JSON.stringify(out);
  document.body.appendChild(pre);
});
"""


def chromium() -> str | None:
    for name in ("chromium", "chromium-browser", "google-chrome", "chrome"):
        if shutil.which(name):
            return shutil.which(name)
    return None


def measure(page: Path, width: int = 1280) -> dict:
    """Layout record of ``page`` at a window ``width`` px wide (see the module docstring)."""
    browser = chromium()
    if browser is None:
        raise FileNotFoundError("Chromium is not installed")
    head, sep, tail = page.read_text(errors="replace").rpartition("</body>")
    text = f"{head}<script>{_SCRIPT}</script>{sep}{tail}"
    with tempfile.NamedTemporaryFile("w", suffix=".html", prefix="_measure_", dir=page.parent,
                                     delete=False) as f:
        f.write(text)
        probe = Path(f.name)
    try:
        with tempfile.TemporaryDirectory() as profile:
            cmd = ["timeout", "90", browser, "--headless", "--no-sandbox", "--disable-gpu", "--hide-scrollbars",
                   "--disable-background-networking", "--disable-component-update", "--disable-sync",
                   "--no-first-run", f"--user-data-dir={profile}", f"--window-size={width},2000",
                   "--virtual-time-budget=15000", "--dump-dom", probe.as_uri()]
            result = subprocess.run(cmd, capture_output=True, text=True, timeout=120)
    finally:
        probe.unlink(missing_ok=True)
    found = re.search(r'<pre id="uhop-measure"[^>]*>(.*?)</pre>', result.stdout, flags=re.S)
    if found is None:
        raise RuntimeError(f"no layout record from Chromium for {page} (exit code {result.returncode}): "
                           f"{result.stderr[-1500:]}")
    return json.loads(html.unescape(found.group(1)))
