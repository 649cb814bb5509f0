"""The import arrows point one way: pure code stays pure, only the runtime touches Docker, the API never runs
jobs. An equivalent of an import-linter contract, read from the source with `ast`."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

from conftest import ROOT

FORBIDDEN = {
    # package: modules it must not import (prefix match)
    "workflows": (
        "docker",
        "httpx",
        "sqlalchemy",
        "flask",
        "apscheduler",
        "waitress",
        "psycopg2",
        "orchestry.models",
        "orchestry.web",
        "orchestry.jobs",
        "orchestry.controller",
        "orchestry.runtime",
    ),
    "spec": (
        "docker",
        "httpx",
        "sqlalchemy",
        "flask",
        "apscheduler",
        "orchestry.models",
        "orchestry.web",
        "orchestry.jobs",
        "orchestry.controller",
        "orchestry.runtime",
    ),
    "models": (
        "docker",
        "httpx",
        "flask",
        "apscheduler",
        "orchestry.web",
        "orchestry.jobs",
        "orchestry.controller",
        "orchestry.runtime.docker_engine",
        "orchestry.runtime.swarm_engine",
    ),
    "web": (
        "docker",
        "apscheduler",
        "orchestry.jobs",
        "orchestry.controller",
        "orchestry.runtime.docker_engine",
        "orchestry.runtime.swarm_engine",
    ),
    "jobs": (
        "docker",
        "flask",
        "apscheduler",
        "orchestry.web",
        "orchestry.controller",
        "orchestry.runtime.docker_engine",
        "orchestry.runtime.swarm_engine",
    ),
    "runtime": ("sqlalchemy", "flask", "orchestry.models", "orchestry.web", "orchestry.jobs", "orchestry.controller"),
    "controller": (
        "docker",
        "flask",
        "orchestry.web",
        "orchestry.runtime.docker_engine",
        "orchestry.runtime.swarm_engine",
    ),
    "probe": (
        "docker",
        "sqlalchemy",
        "flask",
        "apscheduler",
        "orchestry.models",
        "orchestry.web",
        "orchestry.jobs",
        "orchestry.controller",
        "orchestry.runtime",
        "orchestry.nginx",
    ),
    "nginx": (
        "docker",
        "sqlalchemy",
        "flask",
        "apscheduler",
        "orchestry.models",
        "orchestry.web",
        "orchestry.jobs",
        "orchestry.controller",
        "orchestry.runtime",
        "orchestry.probe",
    ),
}


def imports(path: Path) -> set[str]:
    found: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            found.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            found.add(node.module)
    return found


@pytest.mark.parametrize("package", sorted(FORBIDDEN))
def test_package_imports(package: str) -> None:
    bad = []
    for path in sorted((ROOT / package).rglob("*.py")):
        for name in imports(path):
            if any(name == f or name.startswith(f + ".") for f in FORBIDDEN[package]):
                bad.append(f"{path.relative_to(ROOT)} imports {name}")
    assert bad == []


def test_only_the_engines_import_docker() -> None:
    users = sorted(
        str(p.relative_to(ROOT))
        for p in ROOT.rglob("*.py")
        if not {".venv", "tests", "testapp", "bench", "build"} & set(p.relative_to(ROOT).parts)
        and any(n == "docker" or n.startswith("docker.") for n in imports(p))
    )
    assert users == ["runtime/docker_engine.py", "runtime/swarm_engine.py"]
