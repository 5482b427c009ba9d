"""Helpers shared by the convention, notebook and book tests: what the book consists of."""

from __future__ import annotations

from pathlib import Path

import yaml

REPO = Path(__file__).resolve().parents[1]
BUILD = REPO / "_build"
NOTEBOOK_SUFFIXES = (".md", ".py", ".ipynb")


def toc_files(toc_path: Path = REPO / "_toc.yml") -> list[str]:
    """Every `file:` entry of the table of contents (root included), without suffix."""
    toc = yaml.safe_load(toc_path.read_text())
    found = [toc["root"]]

    def walk(node):
        if isinstance(node, dict):
            if "file" in node:
                found.append(node["file"])
            for value in node.values():
                walk(value)
        elif isinstance(node, list):
            for item in node:
                walk(item)

    walk(toc.get("parts", []))
    walk(toc.get("chapters", []))
    return found


def resolve_page(entry: str) -> Path | None:
    """The source file of a TOC entry, or None if no such file exists."""
    for suffix in NOTEBOOK_SUFFIXES:
        path = REPO / f"{entry}{suffix}"
        if path.exists():
            return path
    return None


def is_notebook(path: Path) -> bool:
    """A MyST .md file is a notebook when its front matter has a kernelspec; .py files always are."""
    if path.suffix == ".py":
        return True
    text = path.read_text()
    return text.startswith("---") and "kernelspec:" in text.split("---", 2)[1]


def book_sources() -> list[Path]:
    """All page sources that must be listed in the TOC: book/*.md and notebooks/*.py."""
    return sorted((REPO / "book").glob("*.md")) + sorted((REPO / "notebooks").glob("*.py"))


def theory_notebooks() -> list[Path]:
    return [p for p in sorted((REPO / "book").glob("*.md")) if is_notebook(p)]


def experiment_notebooks() -> list[Path]:
    return sorted((REPO / "notebooks").glob("*.py"))


def all_notebooks() -> list[Path]:
    return theory_notebooks() + experiment_notebooks()
