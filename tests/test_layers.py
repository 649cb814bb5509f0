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
        "orchestry.operations",
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
    "operations": (
        "docker",
        "httpx",
        "flask",
        "apscheduler",
        "orchestry.web",
        "orchestry.jobs",
        "orchestry.controller",
        "orchestry.runtime",
        "orchestry.nginx",
        "orchestry.probe",
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


def test_operations_are_requested_in_one_place() -> None:
    """Desired state, job and event are written together by `operations.request.request_operation`: nothing
    else in the package enqueues a job itself."""
    callers = sorted(
        str(p.relative_to(ROOT))
        for p in ROOT.rglob("*.py")
        if not {".venv", "tests", "testapp", "bench", "build"} & set(p.relative_to(ROOT).parts)
        and any(
            isinstance(node, ast.Call)
            and (getattr(node.func, "attr", None) == "enqueue" or getattr(node.func, "id", None) == "enqueue")
            for node in ast.walk(ast.parse(p.read_text()))
        )
    )
    assert callers == ["operations/request.py"]


# What jobs/ and controller/ may take from SQLAlchemy: sessions, the engine's types and its errors. Statements
# (select, update, text, ...) are written in models/ (or operations/), where the tables are.
SQLALCHEMY_ALLOWED = {
    "sqlalchemy.orm": {"Session", "sessionmaker"},
    "sqlalchemy.engine": {"Engine", "URL"},
    "sqlalchemy.exc": None,  # any error
}


def sqlalchemy_statements(path: Path) -> list[str]:
    found = []
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            found += [f"import {a.name}" for a in node.names if a.name.split(".")[0] == "sqlalchemy"]
        elif isinstance(node, ast.ImportFrom) and node.module and node.module.split(".")[0] == "sqlalchemy":
            allowed = SQLALCHEMY_ALLOWED.get(node.module, set())
            found += [f"{node.module}.{a.name}" for a in node.names if allowed is not None and a.name not in allowed]
    return found


@pytest.mark.parametrize("package", ["jobs", "controller"])
def test_jobs_and_controller_issue_no_sql(package: str) -> None:
    bad = [
        f"{path.relative_to(ROOT)} imports {name}"
        for path in sorted((ROOT / package).rglob("*.py"))
        for name in sqlalchemy_statements(path)
    ]
    assert bad == []


def test_the_sql_contract_sees_a_query(tmp_path: Path) -> None:
    """Positive control: the check above finds each way of importing a statement construct."""
    module = tmp_path / "m.py"
    module.write_text(
        "import sqlalchemy\nfrom sqlalchemy import select\nfrom sqlalchemy.orm import Session, aliased\n"
        "from sqlalchemy.exc import SQLAlchemyError\nfrom sqlalchemy.sql import text\n"
    )
    assert sqlalchemy_statements(module) == [
        "import sqlalchemy",
        "sqlalchemy.select",
        "sqlalchemy.orm.aliased",
        "sqlalchemy.sql.text",
    ]
