"""Sphinx extension for the companion's pages: an ``.ipynb`` of every executable page, and a Colab button.

Every page with a kernel (the MyST chapters in ``book/`` and the py:percent notebooks in ``notebooks/``)
gets a download of itself as a notebook, converted from its jupytext source when the book is built and
written to ``_sources/<page>.ipynb`` beside the other downloads. The notebook opens with one setup cell
that does nothing inside a checkout of the repository; anywhere else (Colab, a downloaded file) it
clones the repository, installs ``uhop`` with the book extras and moves into the page's folder, so that
the relative paths the page uses (``../results/...``) resolve as they do in the book.

Colab can open a notebook only from a GitHub branch, so the publishing workflow
(``.github/workflows/book.yml``) pushes these generated notebooks to the branch named by
``uhop_colab_branch``, and the Colab button points there. The repository URL is read from the book's
``repository.url`` (``_config.yml``), the one place it is set.
"""

from __future__ import annotations

from pathlib import Path

import jupytext
import nbformat

SETUP = '''\
# Setup outside a checkout of the repository (Colab, a downloaded notebook); a no-op inside one.
import importlib, importlib.util, os

if importlib.util.find_spec("uhop") is None:
    !git clone --quiet --depth 1 {url} uhop-companion
    %pip install --quiet "./uhop-companion[book,data]"
    importlib.invalidate_caches()
    os.chdir("uhop-companion/{folder}")'''


def notebook_for(source: Path, repository_url: str, folder: str) -> nbformat.NotebookNode:
    """The page's jupytext source as a notebook without outputs, led by the setup cell."""
    nb = jupytext.read(source)
    setup = nbformat.v4.new_code_cell(SETUP.format(url=repository_url, folder=folder))
    setup.metadata["tags"] = ["setup"]
    nb.cells.insert(0, setup)
    # a fresh kernel name every Jupyter front end has
    nb.metadata["kernelspec"] = {"name": "python3", "display_name": "Python 3", "language": "python"}
    nb.metadata.pop("jupytext", None)
    return nb


def _is_executable(app, pagename: str) -> bool:
    return "kernelspec" in app.env.metadata.get(pagename, {})


def _announce_download(app, pagename, templatename, context, doctree):
    # runs before sphinx-book-theme builds its header buttons (priority 501), which offer an
    # ".ipynb" download whenever the context names one
    if _is_executable(app, pagename):
        context["ipynb_source"] = pagename + ".ipynb"


def _write_notebook_and_colab(app, pagename, templatename, context, doctree):
    # runs after sphinx-book-theme, which copies the *executed* notebook of .md pages to the same path:
    # the download is the runnable source notebook instead, the same for every kind of page
    if not _is_executable(app, pagename):
        return
    options = app.config.html_theme_options
    url = options.get("repository_url", "").rstrip("/")
    source = Path(app.env.doc2path(pagename))
    folder = str(Path(pagename).parent)
    target = Path(app.outdir) / "_sources" / (pagename + ".ipynb")
    target.parent.mkdir(parents=True, exist_ok=True)
    nbformat.write(notebook_for(source, url, folder), target)

    branch = app.config.uhop_colab_branch
    if not (branch and url.startswith("https://github.com/")):
        return
    org_repo = url[len("https://github.com/"):]
    colab = {
        "type": "link",
        "text": "Colab",
        "tooltip": "Open this page as a notebook in Colab",
        "icon": "_static/images/logo_colab.png",
        "url": f"https://colab.research.google.com/github/{org_repo}/blob/{branch}/{pagename}.ipynb",
    }
    buttons = context.setdefault("header_buttons", [])
    group = next((b for b in buttons if b.get("label") == "launch-buttons"), None)
    if group is None:
        buttons.insert(0, {"type": "group", "tooltip": "Launch interactive content", "icon": "fas fa-rocket",
                           "buttons": [colab], "label": "launch-buttons"})
    else:
        group["buttons"].append(colab)


def setup(app):
    app.add_config_value("uhop_colab_branch", "notebooks", "html")
    app.connect("html-page-context", _announce_download, priority=500)
    app.connect("html-page-context", _write_notebook_and_colab, priority=600)
    return {"parallel_read_safe": True, "parallel_write_safe": True}
