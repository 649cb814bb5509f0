"""Files Orchestry writes are private to the user it runs as: data dir 0700, files 0600.

The data directory holds the SQLite database (env values, token hashes, the secret key) and nginx's logs;
a umask of 077 makes everything created later private too (SQLite's -wal/-shm, nginx's logs and temp
directories, the routes file). Files left by an older version with looser modes are tightened at start.
"""

from __future__ import annotations

import os
import stat
from pathlib import Path

UMASK = 0o077
DIR_MODE = 0o700
FILE_MODE = 0o600
DB_FILES = ("orchestry.db", "orchestry.db-wal", "orchestry.db-shm", "secret.key")


def private_umask() -> None:
    os.umask(UMASK)


def secure_data_dir(data_dir: str | Path) -> None:
    """Create the data directory 0700 (or tighten it, when this user owns it) and its database files 0600."""
    private_umask()
    path = Path(data_dir)
    path.mkdir(mode=DIR_MODE, parents=True, exist_ok=True)
    _tighten(path, DIR_MODE)
    for name in DB_FILES:
        _tighten(path / name, FILE_MODE)


def _tighten(path: Path, mode: int) -> None:
    try:
        info = path.stat()
    except FileNotFoundError:
        return
    if info.st_uid == os.geteuid() and stat.S_IMODE(info.st_mode) & ~mode:
        path.chmod(mode)
