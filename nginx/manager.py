"""Orchestry's own nginx: start, stop, apply a rendered skeleton, push the routing table.

The effects live here; rendering (render.py) and the table (routes.py) are pure.

- A skeleton is applied as a transaction, the way certbot does it: skip when unchanged, write a temp file,
  `nginx -t` it as the whole configuration, swap it in atomically, reload, and confirm the reload (every
  configuration load has a number that the control endpoint reports; old workers keep the old one). A
  refused test leaves the running config untouched; a failed reload puts the previous file back.
- A routing table is first written to the routes file (so a restarted nginx routes it at once), then PUT
  to the control endpoint, and counts as applied only once nginx reports its generation.
- nginx and the controller authenticate each other with the node's control secret (a 0600 file beside the
  config, made on first use, read by nginx as it loads its configuration): every write carries it, so
  another local process reaching the loopback port cannot change the routes; every answer proves nginx
  knows it (an HMAC of the request's nonce), so a process that took the control port while nginx was down
  cannot feed the controller generations or in-flight counts. If nginx holds another secret (the file was
  replaced), one reload makes it read the file again.
- nginx runs as a daemon, not as our child, so Orchestry can restart without dropping traffic. Its master
  is found by the pid file and checked by its command line before any signal. A master killed with
  SIGKILL leaves its workers serving (they keep the listening sockets): `start` ends those orphans, found
  as the nginx processes that hold our listening sockets.
"""

from __future__ import annotations

import abc
import contextlib
import grp
import hashlib
import hmac
import json
import logging
import os
import pwd
import secrets
import shutil
import signal
import socket
import struct
import subprocess
import threading
import time
import uuid
from collections.abc import Callable
from pathlib import Path
from typing import Any, NamedTuple

from orchestry.nginx import validate
from orchestry.nginx.control_http import ControlTransportError, Reply, Timeouts, exchange
from orchestry.nginx.render import TEMP_DIRS, NginxSettings, render_config
from orchestry.nginx.routes import RouteTable

log = logging.getLogger(__name__)

_CONTROL_TIMEOUT = Timeouts(connect=1.0, read=5.0)
SECRET_HEADER = "X-Orchestry-Control-Secret"
NONCE_HEADER = "X-Orchestry-Control-Nonce"  # nginx answers with PROOF_HEADER: HMAC-SHA1(secret, nonce), hex
PROOF_HEADER = "X-Orchestry-Control-Proof"
SECRET_RELOAD_SECONDS = 30.0  # at most one reload this often when nginx refuses the secret (it may not read it)


class NginxError(Exception):
    """nginx did not do what was asked; the caller may try again later."""


class NginxUnavailable(NginxError):
    """The control endpoint did not answer (nginx is down, starting or overloaded)."""


class ConfigRefused(NginxError):
    """nginx refused a configuration; the running configuration (file and process) is unchanged."""


class ReloadFailed(ConfigRefused):
    """`nginx -t` accepted the file but the running master did not load it (e.g. a port in use)."""


class StaleGeneration(NginxError):
    """A routing table older than the one nginx (or the routes file) already holds."""

    def __init__(self, message: str, served: int | None) -> None:
        super().__init__(message)
        self.served = served


def worker_identity() -> tuple[str | None, str | None]:
    """(user, group) for nginx's workers: `nobody`/`nogroup` when this process is root, else (None, None).

    Workers never run as root. They cannot enter the 0700 data directory either, and need not: the rendered
    config keeps request bodies in memory and never spills responses to temp files; the master (root)
    opens the logs and reads the routes file.
    """
    if os.geteuid() != 0:
        return None, None
    try:
        grp.getgrnam("nogroup")
        group: str | None = "nogroup"
    except KeyError:
        group = None
    return "nobody", group


def process_user() -> str | None:
    """The value for `NginxSettings.user`: this process's user when it is root, else None (not needed).

    As root without a `user` directive nginx runs its workers as `nobody`, which cannot enter a 0700 data
    directory: a request body or response that outgrows its memory buffer then fails with a 500.
    """
    return pwd.getpwuid(os.geteuid()).pw_name if os.geteuid() == 0 else None


class WakeWanted(NamedTuple):
    """nginx's answer to the wake long-poll: its sequence number and, per app with requests held, how many
    and how long the oldest has waited (seconds)."""

    seq: int
    apps: dict[str, tuple[int, float]]


class ControlledNginx(abc.ABC):
    """What a node's nginx answers on its control endpoint, whoever runs it: the calls go to its control
    client (`control`), composed into Orchestry's own nginx (NginxManager) and an existing one (ExternalNginx)."""

    def __init__(self, settings: NginxSettings, *, binary: str = "nginx", timeout: float = 10.0) -> None:
        self.settings = settings
        self.binary = binary
        self.timeout = timeout  # for start, stop and reload confirmation; control calls are shorter
        self._converging = threading.Lock()
        self._stopped = False  # by `stop`: a converge still running in another thread must not start it again
        self.control = ControlClient(settings, self._reload_now, timeout=timeout)

    def converge(self) -> bool:
        """The rendered configuration applied and nginx running; True when either changed (nginx then serves
        what its routes file holds: push the current table again). One caller at a time: the leader's
        nginx-render job and the node's route mirror both call it."""
        with self._converging:
            if self._stopped:
                raise NginxError("nginx was stopped: this node is shutting down")
            changed = self.render_and_apply(self.render())
            return self.ensure_running() or changed

    def _reload_now(self) -> None:
        """A reload for the control client (nginx holds another secret): one at a time, as any converge."""
        with self._converging:
            self._reload()

    @abc.abstractmethod
    def render(self) -> str: ...

    @abc.abstractmethod
    def render_and_apply(self, text: str) -> bool: ...

    @abc.abstractmethod
    def ensure_running(self) -> bool: ...

    @abc.abstractmethod
    def stop(self) -> None: ...

    @abc.abstractmethod
    def _reload(self) -> None: ...

    def close(self) -> None:
        self.control.close()

    def push_routes(self, table: RouteTable, *, replace: bool = False) -> int:
        return self.control.push_routes(table, replace=replace)

    def served_generation(self) -> int | None:
        return self.control.served_generation()

    def served_state(self) -> tuple[int | None, dict[str, int]]:
        return self.control.served_state()

    def confirm_routes(self, generation: int) -> bool:
        return self.control.confirm_routes(generation)

    def served_routes(self) -> dict[str, Any]:
        return self.control.served_routes()

    def in_flight(self, address: str) -> int | None:
        return self.control.in_flight(address)

    def traffic_counters(self) -> dict[str, Any]:
        return self.control.traffic_counters()

    def in_flight_all(self) -> dict[str, int]:
        return self.control.in_flight_all()

    def wanted_wakes(self, after: int, wait: float) -> WakeWanted:
        return self.control.wanted_wakes(after, wait)

    def routes_file_generation(self) -> int | None:
        return self.control.routes_file_generation()

    def control_secret(self) -> str:
        return self.control.control_secret()

    def mark_down(self, addresses: list[str], seconds: float) -> None:
        self.control.mark_down(addresses, seconds)

    def push_edge(self, body: str) -> int:
        return self.control.push_edge(body)

    def edge_version(self) -> int | None:
        return self.control.edge_version()


class NginxManager(ControlledNginx):
    """Orchestry's own nginx: the process (start, stop, restart) and its configuration transaction."""

    def __init__(self, settings: NginxSettings, *, binary: str = "nginx", timeout: float = 10.0) -> None:
        super().__init__(settings, binary=binary, timeout=timeout)
        self._started_once = False  # by ensure_running: a later start means nginx died or was stopped

    def render(self) -> str:
        """The configuration this manager applies, rendered from its settings."""
        return render_config(self.settings)

    # --- configuration ---------------------------------------------------------------------------------

    def render_and_apply(self, text: str) -> bool:
        """Apply a rendered configuration; False when it is already the one in place.

        Raises ConfigRefused (nginx's message included) when `nginx -t` refuses it, ReloadFailed when the
        running nginx does not load it (NginxUnavailable when it does not answer); in every case the previous
        file is back in place and nginx serves on with it. When nginx is not running, the file is only
        installed: `start` writes its own rendering of `self.settings`, so render from those.
        """
        conf = self.settings.conf_file
        if conf.exists() and conf.read_text() == text:
            return False
        self._make_dirs()
        previous = conf.read_text() if conf.exists() else None
        self._install(text)
        if not self.running():
            return True
        try:
            self._reload()
        except NginxError:
            # The file must say what runs: otherwise the next call would skip this text as already applied.
            if previous is not None:
                write_atomic(conf, previous)
            raise
        return True

    def test_config(self, path: Path) -> None:
        """`nginx -t` on a whole configuration file; raises ConfigRefused with nginx's own message."""
        result = self._run("-t", "-q", "-c", str(path))
        if result.returncode != 0:
            message = (result.stderr or result.stdout).strip()
            raise ConfigRefused(f"nginx refused the configuration: {message}")

    def _install(self, text: str) -> None:
        """Test `text` as a temp file beside the running config, then swap it in atomically."""
        conf = self.settings.conf_file
        temp = conf.with_name(f".{conf.name}.{uuid.uuid4().hex}.tmp")
        temp.write_text(text)
        try:
            self.test_config(temp)
            if conf.exists():
                shutil.copyfile(conf, conf.with_name(conf.name + ".previous"))  # for a person to compare
            os.replace(temp, conf)
        finally:
            temp.unlink(missing_ok=True)

    def _reload(self) -> None:
        """HUP the master and wait for the outcome: the load number moves, or the master gives up.

        The master reports failures only in its error log. A `bind()` that finds the port in use is retried
        for 2.5 s and may still succeed, so it is final only with "still could not bind()"; any other
        `[emerg]` is final once the load number has stayed put for a moment (it would move right after).
        """
        pid = self._master_pid()
        if pid is None:
            raise NginxUnavailable("nginx is not running")
        before = self.control._status()["load"]
        error_log = self.settings.error_log
        offset = error_log.stat().st_size if error_log.exists() else 0
        os.kill(pid, signal.SIGHUP)
        deadline = time.monotonic() + self.timeout
        failed_at: float | None = None
        errors: list[str] = []
        while time.monotonic() < deadline:
            with contextlib.suppress(NginxError):
                if self.control._status()["load"] != before:
                    log.info("nginx reloaded", extra={"nginx_pid": pid})
                    return
            errors = [line for line in _read_from(error_log, offset).splitlines() if "[emerg]" in line]
            final = [e for e in errors if "bind()" not in e or "still could not bind()" in e]
            if final and failed_at is None:
                failed_at = time.monotonic()
            if failed_at is not None and time.monotonic() - failed_at > 0.3:
                raise ReloadFailed("nginx did not load the configuration: " + " | ".join(errors))
            time.sleep(0.01)
        detail = (": " + " | ".join(errors)) if errors else ""
        raise ReloadFailed(f"nginx did not confirm the reload within {self.timeout:g} s{detail}")

    # --- process ---------------------------------------------------------------------------------------

    def start(self) -> None:
        """Start our nginx (a no-op when it runs) and wait until its control endpoint answers.

        The configuration is rendered from the settings, tested and written first; the routes file, if any,
        is loaded by nginx itself as it starts.
        """
        if self.running():
            return
        if os.geteuid() == 0 and self.settings.user is None:
            log.warning("nginx starts as root without `user`: its workers run as nobody (see worker_identity)")
        self._end_orphans()
        self._make_dirs()
        self._install(self.render())
        result = self._run("-c", str(self.settings.conf_file))
        if result.returncode != 0:
            raise NginxError(f"nginx did not start: {(result.stderr or result.stdout).strip()}")
        deadline = time.monotonic() + self.timeout
        while time.monotonic() < deadline:
            with contextlib.suppress(NginxError):
                self.control._status()
                log.info("nginx started", extra={"nginx_pid": self._master_pid()})
                return
            time.sleep(0.02)
        raise NginxError(f"nginx started but its control endpoint did not answer within {self.timeout:g} s")

    def stop(self) -> None:
        """Stop our nginx: graceful (SIGQUIT) first, then SIGTERM, then SIGKILL; never another nginx. Waits
        for a converge running in another thread, and refuses later ones (they would start it again)."""
        with self._converging:
            self._stopped = True
        pid = self._master_pid()
        if pid is not None:
            for sig, wait in ((signal.SIGQUIT, self.timeout), (signal.SIGTERM, 2.0), (signal.SIGKILL, 2.0)):
                with contextlib.suppress(ProcessLookupError):
                    os.kill(pid, sig)
                if _wait_gone([pid], wait):
                    break
        self._end_orphans()

    def running(self) -> bool:
        return self._master_pid() is not None

    def ensure_running(self) -> bool:
        """Start nginx if it is not running; True when it was started. It then loads the routes file."""
        if self.running():
            return False
        if self._started_once:  # it ran here before and is gone: worth a warning; the first start is not
            log.warning("nginx is not running; starting it")
        else:
            log.info("starting nginx")
        self._started_once = True
        self.start()
        return True

    def master_pid(self) -> int | None:
        return self._master_pid()

    def _master_pid(self) -> int | None:
        """The pid in our pid file, if that process is alive and is the master of this configuration."""
        try:
            pid = int(self.settings.pid_file.read_text().strip())
        except (OSError, ValueError):
            return None
        cmdline = _cmdline(pid)
        if not _alive(pid) or "master process" not in cmdline or str(self.settings.conf_file) not in cmdline:
            return None
        return pid

    def _end_orphans(self) -> None:
        """End nginx processes that still hold our listening sockets although our master is gone."""
        s = self.settings
        conf = str(s.conf_file)
        pids = {
            pid
            for pid in _listeners(
                {(s.bind_address, s.listen_port), ("127.0.0.1", s.control_port)}
                | ({(s.bind_address, s.tls_port)} if s.tls_port is not None else set())
            )
            # Another nginx's master, or a worker of a live master, is not ours: leave it (start then fails).
            if conf in _cmdline(pid) or "nginx: master process" not in _cmdline(_parent(pid)) + _cmdline(pid)
        }
        if not pids:
            return
        log.warning("ending orphaned nginx workers", extra={"pids": sorted(pids)})
        for sig, wait in ((signal.SIGQUIT, 2.0), (signal.SIGKILL, 2.0)):
            for pid in pids:
                with contextlib.suppress(ProcessLookupError):
                    os.kill(pid, sig)
            if _wait_gone(pids, wait):
                return

    def _make_dirs(self) -> None:
        s = self.settings
        for directory in (s.conf_file.parent, s.pid_file.parent, s.error_log.parent, s.routes_path.parent):
            directory.mkdir(parents=True, exist_ok=True)
        self.control_secret()  # before nginx loads the configuration that reads it
        if s.tls_port is not None:
            ensure_fallback_certificate(s.fallback_cert, s.fallback_key)
        for name in TEMP_DIRS:
            (s.temp_dir / name).mkdir(parents=True, exist_ok=True)

    def _run(self, *args: str) -> subprocess.CompletedProcess[str]:
        binary = shutil.which(self.binary)
        if binary is None:
            raise NginxError(f"the nginx binary {self.binary!r} was not found")
        prefix = str(self.settings.prefix) + "/"
        return subprocess.run(
            [binary, "-p", prefix, *args],
            cwd=self.settings.prefix,
            stdin=subprocess.DEVNULL,
            capture_output=True,
            text=True,
            timeout=self.timeout + 5,  # a start retries bind() for 2.5 s before giving up
            check=False,
        )


class ControlClient:
    """nginx's control endpoint on 127.0.0.1:`control_port` (routes, generations, in-flight counts, traffic),
    authenticated both ways with the node's control secret. `reload` makes nginx read its secret again (a
    confirmed reload, by whoever runs that nginx)."""

    def __init__(self, settings: NginxSettings, reload: Callable[[], None], *, timeout: float = 10.0) -> None:
        self.settings = settings
        self.timeout = timeout  # for waiting on the proof after a reload
        self._reload_nginx = reload
        self._secret: str | None = None
        self._secret_reloaded_at = -SECRET_RELOAD_SECONDS

    def close(self) -> None:
        """Nothing held: every call has its own connection (nginx/control_http.py)."""

    # --- routing table ---------------------------------------------------------------------------------

    def push_routes(self, table: RouteTable, *, replace: bool = False) -> int:
        """Make nginx serve `table`; returns the generation nginx then reports.

        The routes file is written first, so a restart between the two steps still routes this table.
        Pushing the same generation again is harmless; an older one raises StaleGeneration, unless `replace`:
        then it takes the place of whatever nginx and the routes file hold (a table this controller did not
        write: see controller/routing.py).
        """
        on_file = self.routes_file_generation()
        if not replace and on_file is not None and on_file > table.generation:
            raise StaleGeneration(f"routes file holds generation {on_file} > {table.generation}", on_file)
        body = table.to_json()
        write_atomic(self.settings.routes_path, body)
        params = {"replace": "1"} if replace else None
        response = self._request("PUT", "/_orchestry/routes", content=body, params=params)
        if response.status_code == 409:
            current = response.json().get("generation")
            raise StaleGeneration(f"nginx serves generation {current} > {table.generation}", current)
        if response.status_code != 200:
            raise NginxError(f"nginx refused the routing table: {response.status_code} {response.text.strip()}")
        served = self.served_generation()
        if served is None or served != table.generation:
            raise NginxError(f"nginx reports generation {served} after pushing {table.generation}")
        log.info("routes pushed", extra={"generation": served, "apps": len(table.apps)})
        return served

    def push_edge(self, body: str) -> int:
        """Make nginx serve an edge (host routes, certificates, ACME answers: controller/edge.py builds the
        body); returns the version nginx then reports. Never written to a file: it holds private keys."""
        response = self._request("PUT", "/_orchestry/edge", content=body)
        if response.status_code != 200:
            raise NginxError(f"nginx refused the edge: {response.status_code} {response.text.strip()[:300]}")
        version = _generation(response.json().get("version"))
        if version is None:
            raise NginxError("nginx did not report the edge's version")
        return version

    def edge_version(self) -> int | None:
        """The edge version nginx serves; None when it holds none (it started since) or does not answer."""
        try:
            response = self._request("GET", "/_orchestry/edge")
        except NginxUnavailable:
            return None
        return _generation(response.json().get("version")) if response.status_code == 200 else None

    def served_generation(self) -> int | None:
        """The generation nginx serves; None when it serves no table or does not answer."""
        try:
            response = self._request("GET", "/_orchestry/generation")
        except NginxUnavailable:
            return None
        generation = response.json().get("generation") if response.status_code == 200 else None
        return _generation(generation)

    def served_state(self) -> tuple[int | None, dict[str, int]]:
        """The generation nginx serves (None: no table) and every replica address it has requests open to,
        read in one call at one moment (see `in_flight_all`). Raises NginxError when nginx does not answer."""
        response = self._request("GET", "/_orchestry/generation", params={"inflight": "1"})
        if response.status_code != 200:
            raise NginxError(f"nginx generation: {response.status_code}")
        body = response.json()
        inflight = body.get("inflight")
        if not isinstance(inflight, dict):  # an nginx still running an older router (not reloaded since)
            return _generation(body.get("generation")), self.in_flight_all()
        counts = {str(k): int(v) for k, v in inflight.items() if isinstance(v, int) and v > 0}
        return _generation(body.get("generation")), counts

    def confirm_routes(self, generation: int) -> bool:
        """Tell nginx its table is the stored one, as of now (its `/_orchestry/ready` answers 200 for
        `stale_after` seconds). False when nginx serves another generation meanwhile."""
        body = json.dumps({"generation": validate.generation(generation)})
        response = self._request("PUT", "/_orchestry/confirmed", content=body)
        if response.status_code == 409:
            return False
        if response.status_code != 200:
            raise NginxError(f"nginx refused the confirmation: {response.status_code} {response.text.strip()}")
        return True

    def served_routes(self) -> dict[str, Any]:
        """The table as nginx holds it (`GET /_orchestry/routes`)."""
        response = self._request("GET", "/_orchestry/routes")
        result: dict[str, Any] = response.json()
        return result

    def mark_down(self, addresses: list[str], seconds: float) -> None:
        """Have nginx skip these replicas for `seconds` (1..60), at once: a dead replica's requests go to the
        others before the routing table without it is computed and pushed. Raises NginxError."""
        body = json.dumps({"addresses": [validate.address(a) for a in addresses], "seconds": seconds})
        response = self._request("PUT", "/_orchestry/down", content=body)
        if response.status_code != 200:
            raise NginxError(f"nginx refused the down marks: {response.status_code} {response.text.strip()}")

    def in_flight(self, address: str) -> int | None:
        """Requests nginx has open to `address` (IPv4:port), for draining; None when nginx does not answer.

        Counted from the balancer's choice to the end of the request, so it never undercounts a request that
        is still being answered.
        """
        validate.address(address)
        try:
            response = self._request("GET", "/_orchestry/inflight", params={"address": address})
        except NginxUnavailable:
            return None
        count = response.json().get(address) if response.status_code == 200 else None
        return int(count) if isinstance(count, int) else None

    def traffic_counters(self) -> dict[str, Any]:
        """nginx's per-app traffic counters (`GET /_orchestry/stats`, see nginx/traffic.py)."""
        response = self._request("GET", "/_orchestry/stats")
        if response.status_code != 200:
            raise NginxError(f"nginx stats: {response.status_code}")
        result: dict[str, Any] = response.json()
        return result

    def in_flight_all(self) -> dict[str, int]:
        """Every replica address nginx has requests open to, with their counts (none: {})."""
        response = self._request("GET", "/_orchestry/inflight")
        if response.status_code != 200:
            raise NginxError(f"nginx in-flight counts: {response.status_code}")
        body = response.json()
        return {str(k): int(v) for k, v in body.items() if isinstance(v, int) and v > 0}

    def wanted_wakes(self, after: int, wait: float) -> WakeWanted:
        """The wakes nginx wants now (apps with requests held: workflows/wake.py), answered as soon as one is
        recorded after sequence number `after`, or after `wait` seconds (a long-poll)."""
        params = {"after": str(after), "wait": f"{wait:g}"}
        response = self._request("GET", "/_orchestry/wakes", params=params, timeout=Timeouts(5.0, read=wait + 5.0))
        if response.status_code != 200:
            raise NginxError(f"nginx wakes: {response.status_code}")
        body = response.json()
        apps = body.get("apps") if isinstance(body.get("apps"), dict) else {}
        wanted = {}
        for name, entry in apps.items():
            if isinstance(entry, dict) and _valid_app(name):
                held, age = entry.get("held"), entry.get("age")
                wanted[str(name)] = (
                    int(held) if isinstance(held, int | float) and held > 0 else 0,
                    float(age) if isinstance(age, int | float) and age > 0 else 0.0,
                )
        seq = body.get("seq")
        return WakeWanted(int(seq) if isinstance(seq, int) else after, wanted)

    def routes_file_generation(self) -> int | None:
        try:
            generation = json.loads(self.settings.routes_path.read_text()).get("generation")
        except (OSError, ValueError, AttributeError):
            return None
        return _generation(generation)

    def control_secret(self) -> str:
        """This node's control secret, made on first use (256 random bits in a 0600 file)."""
        if self._secret is None:
            self._secret = ensure_secret(self.settings.control_secret_path)
        return self._secret

    def _status(self) -> dict[str, Any]:
        """The load number and pid, read without the secret's proof: a reload is confirmed by it even while
        nginx still holds another secret (or, just upgraded, none)."""
        response = self._request("GET", "/_orchestry/status", verify=False)
        if response.status_code != 200:
            raise NginxUnavailable(f"nginx status: {response.status_code}")
        result: dict[str, Any] = response.json()
        return result

    def _request(
        self,
        method: str,
        path: str,
        content: str | None = None,
        params: dict[str, str] | None = None,
        *,
        verify: bool = True,
        timeout: Timeouts | None = None,
    ) -> Reply:
        """One control call. `verify`: the answer must prove that nginx knows this node's secret (else
        NginxUnavailable); only the load number that confirms a reload is read without that proof."""
        response, proven = self._send(method, path, content, params, timeout)
        if not verify or proven:
            return response
        if time.monotonic() - self._secret_reloaded_at >= SECRET_RELOAD_SECONDS:
            # nginx read another secret (or none) when it loaded its configuration: a reload reads it again.
            # (If whatever answers is not our nginx, the reload finds no master of ours and says so.)
            log.warning("nginx did not prove the control secret; reloading it", extra={"status": response.status_code})
            self._secret = None
            self._secret_reloaded_at = time.monotonic()
            self._reload_nginx()
            # Old workers keep the old secret until they exit, a few milliseconds after the reload.
            deadline = time.monotonic() + self.timeout
            response, proven = self._send(method, path, content, params)
            while not proven and time.monotonic() < deadline:
                time.sleep(0.02)
                response, proven = self._send(method, path, content, params)
        if not proven:
            raise NginxUnavailable(
                f"127.0.0.1:{self.settings.control_port} answered {response.status_code} without proof of this "
                "node's control secret: it is not this node's nginx, or that nginx read another secret"
            )
        return response

    def _send(
        self,
        method: str,
        path: str,
        content: str | None,
        params: dict[str, str] | None,
        timeout: Timeouts | None = None,
    ) -> tuple[Reply, bool]:
        """The answer, and whether it proves that nginx knows the secret (HMAC of a fresh nonce)."""
        secret = self.control_secret()
        nonce = secrets.token_hex(16)
        headers = {NONCE_HEADER: nonce}
        if content is not None:
            headers["Content-Type"] = "application/json"
        if method != "GET":
            headers[SECRET_HEADER] = secret
        try:
            response = exchange(
                self.settings.control_port,
                method,
                path,
                headers=headers,
                body=content,
                params=params,
                timeouts=timeout if timeout is not None else _CONTROL_TIMEOUT,
            )
        except ControlTransportError as exc:
            raise NginxUnavailable(f"nginx control endpoint: {exc!r}") from exc
        expected = hmac.new(secret.encode(), nonce.encode(), hashlib.sha1).hexdigest()
        return response, hmac.compare_digest(response.headers.get(PROOF_HEADER, ""), expected)


def _valid_app(value: object) -> bool:
    try:
        validate.app_name(value)
    except ValueError:
        return False
    return True


def _generation(value: object) -> int | None:
    """A generation as nginx or the routes file gives it; None for anything but a safe integer."""
    try:
        return validate.generation(value)
    except ValueError:
        return None


def ensure_secret(path: Path) -> str:
    """The secret in `path`, made first when missing or unusable: 64 hex digits, file mode 0600 (a looser
    mode is tightened). nginx reads it as it loads its configuration. A new secret is written in full to a
    temp file, then linked into place (which fails if another process got there first), so no reader ever
    sees a half-written one."""
    path.parent.mkdir(parents=True, exist_ok=True)
    for _ in range(3):
        try:
            if os.stat(path).st_mode & 0o077:
                log.warning("tightening the control secret's mode to 0600", extra={"path": str(path)})
                os.chmod(path, 0o600)
            text = path.read_text().strip()
            if len(text) >= 32:
                return text
            path.unlink(missing_ok=True)  # empty or truncated (by hand, or a full disk): make a new one
        except FileNotFoundError:
            pass
        temp = path.with_name(f".{path.name}.{uuid.uuid4().hex}.tmp")
        fd = os.open(temp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        try:
            with os.fdopen(fd, "w") as file:
                file.write(secrets.token_hex(32) + "\n")
                file.flush()
                os.fsync(file.fileno())
            with contextlib.suppress(FileExistsError):  # another process made one: read that
                os.link(temp, path)
        finally:
            temp.unlink(missing_ok=True)
    raise NginxError(f"cannot make the control secret {path}")


def ensure_fallback_certificate(cert: Path, key: Path) -> None:
    """A self-signed certificate for the TLS server's names without one (nginx needs a static one), made
    once: a fresh key, one day short of ten years, no name a client would trust."""
    if cert.exists() and key.exists():
        return
    from orchestry.nginx.pem import self_signed  # cryptography: loaded only where TLS is on

    cert.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
    cert_pem, key_pem = self_signed("orchestry-no-certificate", 3649)
    fd = os.open(key.with_suffix(".tmp"), os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w") as out:
        out.write(key_pem)
    os.replace(key.with_suffix(".tmp"), key)
    write_atomic(cert, cert_pem)


# --- small helpers on files and /proc --------------------------------------------------------------------


def write_atomic(path: Path, text: str) -> None:
    temp = path.with_name(f".{path.name}.{uuid.uuid4().hex}.tmp")
    try:
        with open(temp, "w") as file:
            file.write(text)
            file.flush()
            os.fsync(file.fileno())
        os.replace(temp, path)
    finally:
        temp.unlink(missing_ok=True)


def _read_from(path: Path, offset: int) -> str:
    try:
        with open(path, "rb") as file:
            file.seek(offset)
            return file.read().decode(errors="replace")
    except OSError:
        return ""


def _cmdline(pid: int) -> str:
    try:
        return Path(f"/proc/{pid}/cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace")
    except OSError:
        return ""


def _alive(pid: int) -> bool:
    """Alive and not a zombie (a killed daemon stays a zombie until its parent, often pid 1, reaps it)."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return False
    return stat.rpartition(")")[2].split()[0] not in ("Z", "X")


def _parent(pid: int) -> int:
    try:
        return int(Path(f"/proc/{pid}/stat").read_text().rpartition(")")[2].split()[1])
    except (OSError, ValueError, IndexError):
        return 0


def _wait_gone(pids: set[int] | list[int], timeout: float) -> bool:
    deadline = time.monotonic() + timeout
    while any(_alive(pid) for pid in pids):
        if time.monotonic() >= deadline:
            return False
        time.sleep(0.01)
    return True


def _proc_hex(host: str, port: int) -> str:
    """An IPv4 socket address as /proc/net/tcp prints it (the address in host byte order)."""
    return "%08X:%04X" % (struct.unpack("=I", socket.inet_aton(host))[0], port)  # noqa: UP031


def _listeners(addresses: set[tuple[str, int]]) -> set[int]:
    """Pids of nginx processes holding a listening TCP socket on one of `addresses`."""
    wanted = {_proc_hex(host, port) for host, port in addresses}
    inodes: set[str] = set()
    with contextlib.suppress(OSError):
        for line in Path("/proc/net/tcp").read_text().splitlines()[1:]:
            fields = line.split()
            if fields[1] in wanted and fields[3] == "0A":  # 0A: LISTEN
                inodes.add(f"socket:[{fields[9]}]")
    pids: set[int] = set()
    if not inodes:
        return pids
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            if (entry / "comm").read_text().strip() != "nginx":
                continue
            fds = list((entry / "fd").iterdir())
        except OSError:
            continue
        for fd in fds:
            with contextlib.suppress(OSError):
                if os.readlink(fd) in inodes:
                    pids.add(int(entry.name))
                    break
    return pids
