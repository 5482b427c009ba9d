"""The lock file (constraints.txt) and environment.yml pin the same versions, and the pins cover
every dependency declared in pyproject.toml."""

from __future__ import annotations

import re
import tomllib

import yaml

from _book import REPO


def _pins(lines):
    pins = {}
    for line in lines:
        line = line.strip()
        if not line or line.startswith(("#", "-")):
            continue
        name, _, version = line.partition("==")
        assert version, f"not an exact pin: {line!r}"
        pins[re.sub(r"[-_.]+", "-", name).lower()] = version
    return pins


def constraints():
    return _pins((REPO / "constraints.txt").read_text().splitlines())


def environment_pins():
    env = yaml.safe_load((REPO / "environment.yml").read_text())
    pip_section = next(d["pip"] for d in env["dependencies"] if isinstance(d, dict) and "pip" in d)
    return _pins(pip_section)


def test_environment_yml_agrees_with_constraints():
    lock, env = constraints(), environment_pins()
    assert lock == env, {
        "only in constraints.txt": sorted(set(lock) - set(env)),
        "only in environment.yml": sorted(set(env) - set(lock)),
        "different versions": {k: (lock[k], env[k]) for k in set(lock) & set(env) if lock[k] != env[k]},
    }


def test_environment_yml_uses_python_311():
    env = yaml.safe_load((REPO / "environment.yml").read_text())
    assert "python=3.11" in env["dependencies"]


def test_torch_pins_are_the_locally_available_wheels():
    lock = constraints()
    assert lock["torch"] == "2.14.1" and lock["torchvision"] == "0.29.1"
    assert lock["jupyter-book"].startswith("1."), "jupyter-book 2.x cannot build offline"


def test_every_declared_dependency_is_pinned():
    project = tomllib.loads((REPO / "pyproject.toml").read_text())["project"]
    declared = list(project["dependencies"])
    for extra in project["optional-dependencies"].values():
        declared += extra
    lock = constraints()
    missing = []
    for requirement in declared:
        name = re.split(r"[<>=!~\[ ;]", requirement, maxsplit=1)[0]
        if re.sub(r"[-_.]+", "-", name).lower() not in lock:
            missing.append(name)
    assert not missing, f"declared in pyproject.toml but not pinned in constraints.txt: {missing}"
