"""The data directory and what Orchestry writes in it are private: dir 0700, files 0600 (issue 11, "Data")."""

from __future__ import annotations

import stat
from pathlib import Path

from conftest import DB_KIND, hello, post, start_server, stop_server, wait_for


def _mode(path: Path) -> int:
    return stat.S_IMODE(path.stat().st_mode)


def test_serve_makes_the_data_dir_and_its_files_private(tmp_path: Path, db_url: str) -> None:
    data = tmp_path / "data"
    data.mkdir(mode=0o755)  # as an older version left it
    data.chmod(0o755)
    if DB_KIND == "sqlite":
        db_url = f"sqlite:///{data / 'orchestry.db'}"
        legacy = data / "orchestry.db"
        legacy.touch(mode=0o644)
        legacy.chmod(0o644)
    server = start_server(db_url, data)
    try:
        assert post(server, hello("modes")).status_code == 201  # a write: SQLite's WAL and shm exist now
        nginx_logs = data / "nginx" / "logs"
        wait_for(lambda: (nginx_logs / "error.log").exists(), 10)
        assert _mode(data) == 0o700
        written = [p for p in data.rglob("*") if p.is_file() and not p.name.startswith("serve-")]
        if DB_KIND == "sqlite":
            names = {p.name for p in written}
            assert {"orchestry.db", "orchestry.db-wal", "orchestry.db-shm"} <= names
        assert any(p.parent == nginx_logs for p in written)
        loose = {str(p.relative_to(data)): oct(_mode(p)) for p in written if _mode(p) & 0o077}
        assert loose == {}
        dirs = {str(p.relative_to(data)): oct(_mode(p)) for p in data.rglob("*") if p.is_dir() and _mode(p) & 0o077}
        assert dirs == {}
    finally:
        stop_server(server)
