"""The built wheel installs everything under `orchestry`, with one console script."""

from __future__ import annotations

import shutil
import subprocess
import sys
import zipfile
from pathlib import Path

from conftest import ROOT


def test_wheel_has_only_the_orchestry_namespace(tmp_path: Path) -> None:
    # Build from a copy: an in-tree build leaves build/ behind, where linters and parallel tests trip on it.
    source = tmp_path / "src"
    shutil.copytree(
        ROOT, source, ignore=shutil.ignore_patterns(".venv", ".git", "build", "*.egg-info", "__pycache__", ".*_cache")
    )
    out = subprocess.run(
        [sys.executable, "-m", "build", "--wheel", "--no-isolation", "--outdir", str(tmp_path), str(source)],
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert out.returncode == 0, out.stdout[-3000:] + out.stderr[-3000:]
    (wheel,) = tmp_path.glob("orchestry-*.whl")
    names = zipfile.ZipFile(wheel).namelist()
    top = {n.split("/")[0] for n in names}
    assert top == {"orchestry", next(t for t in top if t.endswith(".dist-info"))}
    for package in (
        "models",
        "web",
        "jobs",
        "workflows",
        "migrations",
        "nginx",
        "spec",
        "cli",
        "config",
        "runtime",
        "controller",
    ):
        assert f"orchestry/{package}/__init__.py" in names
    assert "orchestry/migrations/env.py" in names
    assert "orchestry/migrations/script.py.mako" in names
    assert "orchestry/nginx/templates/nginx.conf.j2" in names
    assert any(n.startswith("orchestry/nginx/lua/") and n.endswith(".lua") for n in names)
    assert any(n.startswith("orchestry/migrations/versions/0001") for n in names)
    assert not any("/tests/" in n or n.startswith("orchestry/tests") or "/bench/" in n for n in names)
    entry_points = next(n for n in names if n.endswith("entry_points.txt"))
    text = zipfile.ZipFile(wheel).read(entry_points).decode()
    assert "orchestry = orchestry.cli.main:main" in text
