"""Conventions of the book and the notebooks, enforced so a newcomer cannot break them silently.

- every page listed in _toc.yml exists, and every page source in book/ and notebooks/ is listed;
- every notebook carries a jupytext header with the `python3` kernelspec;
- every experiment notebook has a papermill `parameters` cell whose parameters are all annotated
  and commented (papermill --help-notebook shows types and help), including
  `device: str = "cpu"` and `seed: int`;
- no .ipynb file is tracked by git or lies beside the sources (papermill outputs go to _build/).
"""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import jupytext
import papermill as pm
import pytest
import yaml

from _book import (
    REPO,
    all_notebooks,
    book_sources,
    experiment_notebooks,
    resolve_page,
    toc_files,
)


def test_every_toc_entry_exists():
    missing = [entry for entry in toc_files() if resolve_page(entry) is None]
    assert not missing, f"pages listed in _toc.yml without a source file: {missing}"


def test_every_page_is_in_the_toc():
    listed = set(toc_files())
    unlisted = [
        str(path.relative_to(REPO))
        for path in book_sources()
        if str(path.relative_to(REPO).with_suffix("")) not in listed
    ]
    assert not unlisted, f"page sources missing from _toc.yml (add them or delete them): {unlisted}"


def test_toc_has_the_three_parts():
    toc = yaml.safe_load((REPO / "_toc.yml").read_text())
    captions = [part["caption"] for part in toc["parts"]]
    assert captions == ["Theory", "Experiments", "Reference"], captions


#: the longest code cell a chapter may have (non-blank lines): chapters import the package and read as prose
MAX_CELL_LINES = 20


@pytest.mark.parametrize("path", [p for p in book_sources() if p.suffix == ".md"], ids=lambda p: p.name)
def test_chapter_code_cells_are_short(path):
    nb = jupytext.read(path)
    long = [(i, n) for i, cell in enumerate(nb.cells) if cell.cell_type == "code"
            and (n := sum(1 for line in cell.source.splitlines() if line.strip())) > MAX_CELL_LINES]
    assert not long, (f"{path.name}: code cells (index, non-blank lines) over {MAX_CELL_LINES} lines: {long}; "
                      "split them at their seams with a sentence between, or move a reusable helper into the package")


@pytest.mark.parametrize("path", all_notebooks(), ids=lambda p: str(p.relative_to(REPO)))
def test_notebook_has_jupytext_header_with_python3_kernel(path):
    nb = jupytext.read(path)
    kernelspec = nb.metadata.get("kernelspec", {})
    assert kernelspec.get("name") == "python3", f"{path}: kernelspec {kernelspec!r}"
    text = path.read_text()
    assert "jupytext:" in text.split("\n\n", 1)[0] or text.startswith("---"), f"{path}: no jupytext header"


@pytest.mark.parametrize("path", experiment_notebooks(), ids=lambda p: p.name)
def test_experiment_notebook_parameters_are_annotated(path, tmp_path):
    nb = jupytext.read(path)
    tagged = [c for c in nb.cells if "parameters" in c.metadata.get("tags", [])]
    assert len(tagged) == 1, f"{path.name}: expected exactly one cell tagged 'parameters', found {len(tagged)}"
    ipynb = tmp_path / f"{path.stem}.ipynb"
    jupytext.write(nb, ipynb)
    params = pm.inspect_notebook(str(ipynb))
    assert params, f"{path.name}: the parameters cell defines no parameters"
    for name, info in params.items():
        assert info["inferred_type_name"] not in ("None", ""), f"{path.name}: parameter {name} has no type annotation"
        assert info["help"].strip(), f"{path.name}: parameter {name} has no comment explaining it"
    # papermill silently drops assignment lines it cannot parse; every assignment must be seen.
    assigned = {
        line.split(":", 1)[0].split("=", 1)[0].strip()
        for line in tagged[0].source.splitlines()
        if line.strip() and not line.lstrip().startswith("#") and not line[0].isspace()
    }
    invisible = sorted(assigned - set(params))
    assert not invisible, f"{path.name}: papermill cannot parse the parameters {invisible} (check their comments)"
    assert "device" in params, f"{path.name}: every experiment notebook takes a `device` parameter"
    assert params["device"]["inferred_type_name"] == "str" and params["device"]["default"] == '"cpu"', params["device"]
    assert "seed" in params and params["seed"]["inferred_type_name"] == "int", f"{path.name}: needs `seed: int`"


@pytest.mark.parametrize("path", experiment_notebooks(), ids=lambda p: p.name)
def test_experiment_notebook_checks_its_parameters_first(path):
    # papermill only warns about an unknown parameter and runs the defaults: each notebook stops instead
    nb = jupytext.read(path)
    index = next(i for i, c in enumerate(nb.cells) if "parameters" in c.metadata.get("tags", []))
    nxt = next(c for c in nb.cells[index + 1:] if c.cell_type == "code")
    assert "check_parameters(globals())" in nxt.source, f"{path.name}: the cell after the parameters must check them"


def test_notebook_paths_resolve_against_the_notebooks_folder(tmp_path, monkeypatch):
    from uhop.experiments.notebook import NOTEBOOKS, check_parameters, notebook_path

    monkeypatch.chdir(tmp_path)  # as papermill started from anywhere
    assert notebook_path("../_build/x.csv") == (REPO / "_build" / "x.csv").resolve()
    assert NOTEBOOKS == REPO / "notebooks"
    assert notebook_path(tmp_path / "abs.csv") == tmp_path / "abs.csv"
    ns = {"__annotations__": {"seed": int, "device": str}, "seed": 1, "device": "cpu", "In": [], "_i1": "",
          "pd": pytest}
    assert check_parameters(ns) == ["seed", "device"]
    ns["n_memorys"] = 10
    with pytest.raises(ValueError, match=r"unknown notebook parameter\(s\) \['n_memorys'\].*'device', 'seed'"):
        check_parameters(ns)


@pytest.mark.notebook
def test_misspelt_papermill_parameter_fails_the_run(tmp_path):
    nb = jupytext.read(REPO / "notebooks" / "retrieval_quickstart.py")
    with pytest.raises(pm.PapermillExecutionError, match="n_memorys"):
        pm.execute_notebook(nb, str(tmp_path / "out.ipynb"), parameters={"n_memorys": 10}, kernel_name="python3",
                            cwd=str(tmp_path), progress_bar=False)


def test_no_ipynb_tracked_by_git():
    try:
        out = subprocess.run(
            ["git", "ls-files", "*.ipynb"], cwd=REPO, capture_output=True, text=True, check=True
        ).stdout
    except (OSError, subprocess.CalledProcessError):
        pytest.skip("not a git checkout")
    assert out.strip() == "", f".ipynb files must not be committed: {out.split()}"


def test_no_ipynb_beside_sources():
    stray = [str(p.relative_to(REPO)) for d in ("book", "notebooks", ".") for p in (REPO / d).glob("*.ipynb")]
    assert not stray, f"notebook outputs must go under _build/, found {stray}"


def test_full_size_runs_refer_to_real_notebooks_and_parameters(tmp_path):
    spec = yaml.safe_load((REPO / "notebooks" / "full_size.yml").read_text()) or {}
    runs = spec.get("runs") or []
    names = [run["name"] for run in runs]
    assert len(names) == len(set(names)), f"duplicate run names in full_size.yml: {names}"
    for run in runs:
        path = REPO / "notebooks" / f"{run['notebook']}.py"
        assert path.exists(), f"full_size.yml run {run['name']}: no notebook {path.name}"
        ipynb = tmp_path / f"{path.stem}.ipynb"
        jupytext.write(jupytext.read(path), ipynb)
        known = set(pm.inspect_notebook(str(ipynb)))
        unknown = set(run.get("parameters", {})) - known
        assert not unknown, f"full_size.yml run {run['name']}: unknown parameters {sorted(unknown)}"


def test_every_module_with_a_main_answers_help():
    # a user's first try with a command line: `python -m <module> --help` prints usage and exits 0
    import subprocess
    import sys

    root = REPO
    modules = []
    for path in sorted((root / "uhop").rglob("*.py")):
        text = path.read_text()
        rel = path.relative_to(root).with_suffix("")
        if path.name == "__main__.py":
            modules.append(".".join(rel.parts[:-1]))
        elif 'if __name__ == "__main__"' in text:
            modules.append(".".join(rel.parts))
    assert {"uhop.data", "uhop.reproduce", "uhop.experiments.forecasting", "uhop.experiments.classification"} <= set(modules)
    for module in modules:
        out = subprocess.run([sys.executable, "-m", module, "--help"], capture_output=True, text=True, timeout=120)
        assert out.returncode == 0 and "usage:" in out.stdout, (module, out.stderr[-500:])


def test_publish_workflow_validates_against_the_github_workflow_schema():
    # the GitHub Actions workflow that builds and publishes the book, checked with check-jsonschema's bundled
    # (offline) schema for workflow files
    import shutil
    import subprocess

    workflows = sorted((REPO / ".github" / "workflows").glob("*.yml"))
    assert workflows, "no workflow under .github/workflows"
    exe = shutil.which("check-jsonschema") or str(Path(sys.executable).with_name("check-jsonschema"))
    out = subprocess.run([exe, "--builtin-schema", "vendor.github-workflows", *map(str, workflows)],
                         capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stdout + out.stderr
    text = workflows[0].read_text()
    assert "make book" in text and "deploy-pages" in text
