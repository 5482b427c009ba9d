"""The strict book build and what a reader's browser sees.

`make test` runs `jupyter-book build . -W -n --keep-going` first and records its exit code in
_build/book-build.rc; these tests fail when that build failed (a crashing notebook, a Sphinx
warning, a broken cross-reference) and then check the built site: headless Chromium renders
intro.html and a theory chapter and the math must be typeset by the local MathJax, and no page may
link to a file that does not exist.

Run on their own (plain `pytest`) they skip when no build exists; `make test` sets
UHOP_REQUIRE_BOOK=1 so that a missing build or a missing Chromium is a failure, not a skip.
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import tempfile
from html.parser import HTMLParser
from pathlib import Path
from urllib.parse import unquote, urlsplit

import pytest

from _book import BUILD

HTML = BUILD / "html"
REQUIRE = os.environ.get("UHOP_REQUIRE_BOOK") == "1"
pytestmark = pytest.mark.book


def _missing(reason: str):
    if REQUIRE:
        pytest.fail(reason)
    pytest.skip(reason)


# ipykernel 7 prints this to stderr for every kernel it starts; it is not a Sphinx warning.
_KERNEL_NOISE = re.compile(r"\[IPKernelApp\] WARNING \| Kernel is running over TCP without encryption")


def test_strict_book_build_succeeded():
    rc_file = BUILD / "book-build.rc"
    if not rc_file.exists():
        _missing("no book build found: run `make test` (it builds the book strictly first)")
    rc = int(rc_file.read_text().strip() or 1)
    log = (BUILD / "book-build.log").read_text(errors="replace") if (BUILD / "book-build.log").exists() else ""
    problems = [
        line
        for line in log.splitlines()
        if re.search(r"WARNING|ERROR|Traceback|Exception", line) and not _KERNEL_NOISE.search(line)
    ]
    assert rc == 0, "strict book build failed (exit code %d):\n%s\nfull log: %s" % (
        rc,
        "\n".join(problems[-40:]) or log[-4000:],
        BUILD / "book-build.log",
    )
    assert not problems, "the build log has warnings:\n" + "\n".join(problems[-40:])


def _chromium() -> str | None:
    for name in ("chromium", "chromium-browser", "google-chrome", "chrome"):
        if shutil.which(name):
            return shutil.which(name)
    return None


def _dump_dom(page: Path) -> str:
    browser = _chromium()
    if browser is None:
        _missing("Chromium is not installed (apt-get install chromium); .ci/run installs it")
    with tempfile.TemporaryDirectory() as profile:
        cmd = [
            "timeout", "60", browser, "--headless", "--no-sandbox", "--disable-gpu",
            "--disable-background-networking", "--disable-component-update", "--disable-sync",
            "--no-first-run", f"--user-data-dir={profile}", "--virtual-time-budget=5000",
            "--dump-dom", page.as_uri(),
        ]
        result = subprocess.run(cmd, capture_output=True, text=True, timeout=90)
    assert result.returncode == 0, f"chromium failed on {page}: {result.stderr[-2000:]}"
    return result.stdout


def _text_outside_scripts(dom: str) -> str:
    dom = re.sub(r"<script\b.*?</script>", "", dom, flags=re.S | re.I)
    dom = re.sub(r"<style\b.*?</style>", "", dom, flags=re.S | re.I)
    return re.sub(r"<[^>]+>", " ", dom)


@pytest.mark.parametrize("page", ["intro.html", "book/notation.html"])
def test_math_is_typeset_offline(page):
    path = HTML / page
    if not path.exists():
        _missing(f"{path} not built")
    dom = _dump_dom(path)
    assert "<mjx-container" in dom, f"{page}: MathJax produced no output (is the local MathJax loaded?)"
    text = _text_outside_scripts(dom)
    for raw in ("$$", "\\[", "\\begin{"):
        assert raw not in text, f"{page}: raw TeX {raw!r} left in the rendered page"
    assert "mathjax/tex-chtml.js" in dom or "mathjax/tex-mml-chtml.js" in dom, f"{page}: not the local MathJax"


class _Links(HTMLParser):
    def __init__(self):
        super().__init__()
        self.links: list[str] = []

    def handle_starttag(self, tag, attrs):
        for key, value in attrs:
            if key in ("href", "src") and value:
                self.links.append(value)


def test_no_page_links_to_a_missing_file():
    if not HTML.exists():
        _missing("no built site")
    broken = []
    pages = [p for p in HTML.rglob("*.html") if "_static" not in p.parts and "_sources" not in p.parts]
    assert pages, "no HTML pages built"
    for page in pages:
        parser = _Links()
        parser.feed(page.read_text(errors="replace"))
        for link in parser.links:
            parts = urlsplit(link)
            if parts.scheme or link.startswith(("#", "//", "data:", "mailto:", "javascript:")):
                continue
            target = (page.parent / unquote(parts.path)).resolve() if parts.path else page
            if not target.exists():
                broken.append(f"{page.relative_to(HTML)} -> {link}")
    assert not broken, "links to missing files:\n" + "\n".join(sorted(set(broken))[:50])


def test_no_progress_bar_blocks_and_no_raw_tex_in_titles():
    # tqdm bars written to stderr render as rows of black blocks in a page; titles and the sidebar are plain
    # text (a browser tab cannot typeset math)
    if not HTML.exists():
        _missing("no built site")
    pages = [p for p in HTML.rglob("*.html") if "_static" not in p.parts and "_sources" not in p.parts]
    blocks, tex = [], []
    for page in pages:
        html = page.read_text(errors="replace")
        body = re.sub(r"<script\b.*?</script>", "", html, flags=re.S | re.I)
        if "\u2588\u2588" in body:
            blocks.append(str(page.relative_to(HTML)))
        title = re.search(r"<title>(.*?)</title>", html, flags=re.S)
        if title and re.search(r"\\\(|\\\[|\$", title.group(1)):
            tex.append(f"{page.relative_to(HTML)}: {title.group(1).strip()}")
        # the left sidebar lists page titles as plain text too
        nav = re.search(r'<nav class="bd-links bd-docs-nav".*?</nav>', html, flags=re.S)
        if nav and re.search(r"\\\(|\\\[|\$", re.sub(r"<[^>]+>", "", nav.group(0))):
            tex.append(f"{page.relative_to(HTML)}: raw TeX in the sidebar")
    assert not blocks, f"progress-bar blocks rendered in: {blocks}"
    assert not tex, "raw TeX in page titles or the sidebar:\n" + "\n".join(tex)


def _pages():
    if not HTML.exists():
        return []
    # search, index and the root redirect (index.html -> intro.html) have no article to measure
    return sorted(str(p.relative_to(HTML)) for p in HTML.rglob("*.html")
                  if not {"_static", "_sources", "_modules"} & set(p.parts)
                  and str(p.relative_to(HTML)) not in ("search.html", "genindex.html", "index.html"))


def test_one_search_box_per_page():
    # the pydata header adds a second search field unless the book's config removes it
    pages = _pages()
    if not pages:
        _missing("no built site")
    doubled = [p for p in pages if (HTML / p).read_text(errors="replace").count('class="btn search-button-field') > 1]
    assert not doubled, f"more than one search box on: {doubled[:10]}"


def test_equations_are_numbered_per_page():
    # the paper's equations carry its numbers (2.1), ...; ours restart on every page so they cannot be mistaken
    page = HTML / "book" / "kernelized_energy.html"
    if not page.exists():
        _missing(f"{page} not built")
    numbers = re.findall(r'<span class="eqno">\((\d+)\)', page.read_text())
    assert numbers and numbers[0] == "1", f"first equation number on the page: {numbers[:3]}"


def test_every_executable_page_offers_its_notebook_and_a_colab_launch():
    import jupytext
    import nbformat
    import yaml

    from _book import REPO, all_notebooks

    if not HTML.exists():
        _missing("no built site")
    config = yaml.safe_load((REPO / "_config.yml").read_text())
    url = config["repository"]["url"].rstrip("/")
    branch = config["sphinx"]["config"]["uhop_colab_branch"]
    for source in all_notebooks():
        page = source.relative_to(REPO).with_suffix("")
        download = HTML / "_sources" / f"{page}.ipynb"
        assert download.exists(), f"no .ipynb download for {page}"
        nb = nbformat.read(download, as_version=4)
        nbformat.validate(nb)
        assert nb.cells[0].metadata.get("tags") == ["setup"] and url in nb.cells[0].source
        assert f'os.chdir("uhop-companion/{page.parent}")' in nb.cells[0].source
        # the rest is the page's own source, cell for cell, without outputs
        own = jupytext.read(source)
        assert [c.source for c in nb.cells[1:]] == [c.source for c in own.cells], page
        assert all(not c.get("outputs") for c in nb.cells if c.cell_type == "code")
        html = (HTML / f"{page}.html").read_text()
        assert f"_sources/{page}.ipynb" in html, f"{page}.html does not link its notebook"
        colab = f"https://colab.research.google.com/github/{url.removeprefix('https://github.com/')}/blob/{branch}/{page}.ipynb"
        assert colab in html, f"{page}.html has no Colab launch for {colab}"


@pytest.mark.parametrize("page", _pages() or ["intro.html"])
def test_tables_fit_the_column_and_figures_are_shown_at_natural_size(page):  # and printed output wraps
    # what broke before: tables cut off at the column's edge, ~1230 px figures shrunk to ~690 px so their
    # 5-6 px text was unreadable. A table may scroll only inside a box a chapter asked for (class uhop-scroll).
    from _site import chromium, measure

    from uhop.experiments import report

    if not (HTML / page).exists():
        _missing(f"{page} not built")
    if chromium() is None:
        _missing("Chromium is not installed (make browser installs it)")
    m = measure(HTML / page)
    wide = [f"{t['text'][:60]!r} sticks out by {t['overflow']:.0f} px" for t in m["tables"] if t["overflow"] > 1]
    assert not wide, f"{page}: tables wider than the column ({m['column']:.0f} px):\n" + "\n".join(wide)
    shrunk = [f"{i['src']}: {i['natural']} px shown at {i['shown']:.0f} px" for i in m["images"]
              if i["visible"] and i["shown"] < 0.97 * i["natural"]]
    shrunk += [f"{i['src']} (in a hidden tab): {i['natural']} px, wider than the {m['output_column']:.0f} px column"
               for i in m["images"] if not i["visible"] and i["natural"] > m["output_column"] + 1]
    assert not shrunk, f"{page}: figures shrunk to fit (their text gets small):\n" + "\n".join(shrunk)
    assert not m["printed"], f"{page}: printed output cut at the column's edge: {m['printed'][:3]}"
    # the book's figure text, shown at natural size, is as large as the body text
    assert report.FONT_PT * report.FIGURE_DPI / 72 >= 0.95 * m["body_px"]
