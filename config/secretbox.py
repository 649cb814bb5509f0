"""Encryption of secrets at rest: Fernet (AES-128-CBC + HMAC-SHA256) with the installation's key.

The key comes from the `secret_key` setting, or, when it is empty and the database is SQLite, from
<data_dir>/secret.key (generated on first use, mode 0600). A PostgreSQL cluster's nodes share one database,
so they must share the key too: there `secret_key` must be set, the same on every node.
"""

from __future__ import annotations

import os
import threading
from pathlib import Path

from cryptography.fernet import Fernet, InvalidToken
from sqlalchemy.engine import make_url

from orchestry.config.settings import Settings

KEY_FILE = "secret.key"
_lock = threading.Lock()


class SecretKeyError(RuntimeError):
    """No usable key: not configured (PostgreSQL), malformed, or not the key the secrets were sealed with."""


class SecretBox:
    def __init__(self, key: bytes | str) -> None:
        try:
            self._fernet = Fernet(key)
        except (ValueError, TypeError):
            raise SecretKeyError(
                "secret_key is not a Fernet key (32 url-safe base64-encoded bytes; `orchestry secret keygen`)"
            ) from None

    def seal(self, value: str) -> str:
        return self._fernet.encrypt(value.encode("utf-8")).decode("ascii")

    def open(self, token: str) -> str:
        try:
            return self._fernet.decrypt(token.encode("ascii")).decode("utf-8")
        except InvalidToken:
            raise SecretKeyError(
                "a secret could not be decrypted: secret_key is not the key it was stored with"
            ) from None


def new_key() -> str:
    return Fernet.generate_key().decode("ascii")


def load_box(settings: Settings) -> SecretBox:
    """The box for this installation's key; raises SecretKeyError when there is none to use."""
    if settings.secret_key:
        return SecretBox(settings.secret_key)
    path = Path(settings.data_dir) / KEY_FILE
    if make_url(settings.database_url).get_backend_name() != "sqlite" and not path.exists():
        raise SecretKeyError(
            "secret_key is not set: with PostgreSQL every node needs the same key "
            "(`orchestry secret keygen`, then ORCHESTRY_SECRET_KEY or secret_key in the config file on each node)"
        )
    with _lock:
        if not path.exists():
            path.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
            try:
                fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
            except FileExistsError:  # another process made it first: use theirs
                pass
            else:
                with os.fdopen(fd, "w") as out:
                    out.write(new_key() + "\n")
        return SecretBox(path.read_text().strip())
