"""A real Docker registry on loopback for the tests: Debian's `docker-registry` (Distribution 2.x) with htpasswd
authentication, run as a process of our own on 127.0.0.1:<free port>.

Docker treats registries on 127.0.0.0/8 as insecure by itself, so the engine pulls from it over plain HTTP
without any daemon configuration. The htpasswd file needs bcrypt hashes (the only kind Distribution accepts):
Python 3.11's `crypt` module makes them through the system's libxcrypt (`$2b$`), so no package is added.
Everything lives in one temporary directory (config, htpasswd, blobs), removed with the process, by its pid.
"""

from __future__ import annotations

import contextlib
import secrets
import shutil
import subprocess
import tempfile
import time
import urllib.error
import urllib.request
import warnings
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

from orchestry.testapp.ports import free_port

BINARY = "docker-registry"
START_SECONDS = 20.0


class RegistryMissing(RuntimeError):
    """Debian's docker-registry is not installed (apt-get install docker-registry)."""


@dataclass
class LocalRegistry:
    server: str  # 127.0.0.1:<port>, as images name it
    username: str
    password: str
    directory: Path
    proc: subprocess.Popen[bytes]

    def log(self) -> str:
        return (self.directory / "registry.log").read_text(errors="replace")


def bcrypt_hash(password: str) -> str:
    """A bcrypt hash for htpasswd (cost 4: the tests' logins stay fast)."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DeprecationWarning)  # `crypt` leaves the standard library in 3.13
        import crypt

    hashed = crypt.crypt(password, crypt.mksalt(crypt.METHOD_BLOWFISH, rounds=16))
    if not hashed or not hashed.startswith("$2"):
        raise RuntimeError("this system's crypt() cannot make bcrypt hashes")
    return hashed


CONFIG = """\
version: 0.1
log:
  level: warn
  accesslog:
    disabled: true
storage:
  filesystem:
    rootdirectory: {root}/data
  delete:
    enabled: true
http:
  addr: {address}:{port}
  secret: {secret}
auth:
  htpasswd:
    realm: orchestry-test
    path: {root}/htpasswd
"""


@contextlib.contextmanager
def local_registry(address: str = "127.0.0.1", username: str = "orchestry-ci") -> Iterator[LocalRegistry]:
    """Start the registry on `address` (another address than loopback: a swarm's hosts reach it on their
    gateway), wait until it answers (401 on /v2/ without credentials), yield it; stop it by pid and delete its
    directory afterwards, whatever happened."""
    binary = shutil.which(BINARY)
    if binary is None:
        raise RegistryMissing(f"{BINARY} is not installed: apt-get install docker-registry")
    directory = Path(tempfile.mkdtemp(prefix="orchestry-registry-"))
    password = secrets.token_urlsafe(16)
    port = free_port()
    (directory / "htpasswd").write_text(f"{username}:{bcrypt_hash(password)}\n")
    config = directory / "config.yml"
    config.write_text(CONFIG.format(root=directory, address=address, port=port, secret=secrets.token_hex(16)))
    proc: subprocess.Popen[bytes] | None = None
    try:
        with open(directory / "registry.log", "wb") as log:
            proc = subprocess.Popen([binary, "serve", str(config)], stdout=log, stderr=subprocess.STDOUT)
        registry = LocalRegistry(f"{address}:{port}", username, password, directory, proc)
        _wait_ready(registry)
        yield registry
    finally:
        if proc is not None:
            proc.terminate()
            try:
                proc.wait(10)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()
        shutil.rmtree(directory, ignore_errors=True)


def _wait_ready(registry: LocalRegistry) -> None:
    deadline = time.monotonic() + START_SECONDS
    while time.monotonic() < deadline:
        if registry.proc.poll() is not None:
            raise RuntimeError(f"{BINARY} exited with {registry.proc.returncode}:\n{registry.log()}")
        try:
            urllib.request.urlopen(f"http://{registry.server}/v2/", timeout=2)
        except urllib.error.HTTPError as exc:
            if exc.code == 401:  # up, and asking for credentials
                return
        except OSError:
            pass
        time.sleep(0.05)
    raise RuntimeError(f"{BINARY} did not answer within {START_SECONDS:g} s:\n{registry.log()}")
