"""Execute every notebook of the book through papermill at its default parameters.

Theory chapters (book/*.md notebooks) and experiment notebooks (notebooks/*.py) are read with
jupytext and executed in a fresh python3 kernel, with the notebook's folder as working directory.
Executed copies go to _build/papermill/, never beside their sources. A cell that raises fails the
test and papermill reports the cell and its traceback.
"""

from __future__ import annotations

import json
import time

import jupytext
import papermill as pm
import pytest

from _book import BUILD, REPO, all_notebooks

OUT = BUILD / "papermill"


@pytest.mark.notebook
@pytest.mark.parametrize("path", all_notebooks(), ids=lambda p: str(p.relative_to(REPO)))
def test_notebook_executes(path):
    OUT.mkdir(parents=True, exist_ok=True)
    out = OUT / f"{path.parent.name}__{path.stem}.ipynb"
    nb = jupytext.read(path)
    start = time.perf_counter()
    pm.execute_notebook(
        nb,
        str(out),
        cwd=str(path.parent),
        kernel_name="python3",
        progress_bar=False,
        log_output=False,
    )
    elapsed = time.perf_counter() - start
    # Record the wall time so the smoke size can be watched (reported by `make test`'s durations).
    timings = OUT / "timings.jsonl"
    with timings.open("a") as fh:
        fh.write(json.dumps({"notebook": str(path.relative_to(REPO)), "seconds": round(elapsed, 2)}) + "\n")
