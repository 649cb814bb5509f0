"""A real Docker registry on loopback for the tests: Debian's `docker-registry` (Distribution 2.x) with htpasswd
authentication, run as a process of our own on 127.0.0.1:<free port>.

Docker treats registries on 127.0.0.0/8 as insecure by itself, so the engine pulls from it over plain HTTP
without any daemon configuration. The htpasswd file needs bcrypt hashes (the only kind Distribution accepts):
PyPI's `bcrypt` (a dev dependency) makes them; the standard library's `crypt` leaves Python in 3.13, and
apache2-utils' `htpasswd` would be a system package more.
Everything lives in one temporary directory (config, htpasswd, blobs), removed with the process, by its pid.
"""

from __future__ import annotations

import contextlib
import secrets
import shutil
import socket
import subprocess
import tempfile
import threading
import time
import urllib.error
import urllib.request
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
    import bcrypt  # a dev dependency: only the tests run a registry

    return bcrypt.hashpw(password.encode(), bcrypt.gensalt(rounds=4)).decode()


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


@dataclass
class SlowProxy:
    """A TCP proxy in front of a registry that sends its answers at `rate` bytes/s per connection: a pull
    through it takes seconds, like one from a registry across a network, so progress can be seen."""

    server: str  # 127.0.0.1:<port>: images named with it are pulled through the proxy
    rate: float


@contextlib.contextmanager
def slow_proxy(target: str, rate: float) -> Iterator[SlowProxy]:
    """Listen on a free loopback port, forward every connection to `target` (host:port), pace the answers;
    close the listener and every connection on exit."""
    host, port = target.rsplit(":", 1)
    listener = socket.create_server(("127.0.0.1", free_port()))
    listener.settimeout(0.2)
    stopping = threading.Event()
    sockets: list[socket.socket] = [listener]
    lock = threading.Lock()

    def pump(src: socket.socket, dst: socket.socket, paced: bool) -> None:
        chunk = 16 * 1024
        with contextlib.suppress(OSError):
            while not stopping.is_set():
                data = src.recv(chunk)
                if not data:
                    break
                dst.sendall(data)
                if paced:
                    time.sleep(len(data) / rate)
        for s in (src, dst):
            with contextlib.suppress(OSError):
                s.shutdown(socket.SHUT_RDWR)

    def accept() -> None:
        while not stopping.is_set():
            try:
                client, _ = listener.accept()
            except TimeoutError:
                continue
            except OSError:
                return
            upstream = socket.create_connection((host, int(port)), timeout=10)
            upstream.settimeout(None)
            client.settimeout(None)
            with lock:
                sockets.extend((client, upstream))
            threading.Thread(target=pump, args=(client, upstream, False), daemon=True).start()
            threading.Thread(target=pump, args=(upstream, client, True), daemon=True).start()

    thread = threading.Thread(target=accept, name="slow-proxy", daemon=True)
    thread.start()
    try:
        yield SlowProxy(f"127.0.0.1:{listener.getsockname()[1]}", rate)
    finally:
        stopping.set()
        thread.join(2)
        with lock:
            for s in sockets:
                with contextlib.suppress(OSError):
                    s.close()
