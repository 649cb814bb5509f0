"""An existing nginx, driven through configured paths (`nginx: external`).

The nginx belongs to its administrator: Orchestry never starts, stops or signals it. It owns one file,
`include`, which that nginx's configuration includes inside `http { }` (Debian's includes
`/etc/nginx/conf.d/*.conf`), and it needs that nginx to load the Lua module (Debian's
`libnginx-mod-http-lua` does, through `modules-enabled`).

Applying a rendering is the same transaction as for Orchestry's own nginx, shaped by what can be tested:
the included file cannot be tested alone, so the new text is put in place, the whole configuration is
tested (`nginx -t -c <conf>`), and a refusal puts the previous text back before anything reloads. The
reload is the configured command (by default `nginx -c <conf> -s reload`), confirmed like any other: the
load number reported on the control endpoint moves. A reload that does not take puts the previous file back.
Routing tables are pushed to the control endpoint exactly as for Orchestry's own nginx.
"""

from __future__ import annotations

import contextlib
import logging
import shlex
import subprocess
import time
from dataclasses import dataclass
from pathlib import Path

from orchestry.nginx import validate
from orchestry.nginx.manager import (
    ConfigRefused,
    ControlledNginx,
    NginxError,
    NginxUnavailable,
    ReloadFailed,
    ensure_fallback_certificate,
    write_atomic,
)
from orchestry.nginx.render import NginxSettings, render_include

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class ExternalPaths:
    """Where the existing nginx is: its binary, its main configuration, the file Orchestry owns in it."""

    conf: Path
    include: Path
    binary: str = "nginx"
    reload_command: str = ""  # split like a shell would, run without one; "" = `<binary> -c <conf> -s reload`

    def __post_init__(self) -> None:
        object.__setattr__(self, "conf", Path(validate.path(self.conf, "nginx_conf")))
        object.__setattr__(self, "include", Path(validate.path(self.include, "nginx_include")))
        if self.include == self.conf:
            raise ValueError("nginx_include: must not be the main configuration file itself")
        try:
            command = shlex.split(self.reload_command)
        except ValueError as exc:
            raise ValueError(f"nginx_reload_command: {exc}") from None
        if command and not command[0]:
            raise ValueError("nginx_reload_command: the program name is empty")

    def reload_argv(self) -> list[str]:
        if self.reload_command.strip():
            return shlex.split(self.reload_command)
        return [self.binary, "-c", str(self.conf), "-s", "reload"]


class ExternalNginx(ControlledNginx):
    """An administrator's nginx: Orchestry applies its include and talks to its control endpoint; it never
    starts, stops or signals the process (no process manager here)."""

    def __init__(self, settings: NginxSettings, paths: ExternalPaths, *, timeout: float = 10.0) -> None:
        super().__init__(settings, binary=paths.binary, timeout=timeout)
        self.paths = paths

    def render(self) -> str:
        return render_include(self.settings)

    def render_and_apply(self, text: str) -> bool:
        """Install `text` as the include, test the whole configuration, reload; False when unchanged.

        When nginx does not answer on the control port (stopped, or not yet including our file) the tested
        file stays, and the reload is still asked for: a running nginx that did not include it yet loads it
        now; a stopped one loads it when its administrator starts it.
        """
        include = self.paths.include
        previous = include.read_text() if include.exists() else None
        if previous == text:
            return False
        self._make_dirs()
        include.parent.mkdir(parents=True, exist_ok=True)
        write_atomic(include, text)
        try:
            self.test_config(self.paths.conf)
            self._reload()
        except (ConfigRefused, ReloadFailed):
            self._restore(previous)
            raise
        return True

    def _restore(self, previous: str | None) -> None:
        if previous is None:
            self.paths.include.unlink(missing_ok=True)
        else:
            write_atomic(self.paths.include, previous)

    def _reload(self) -> None:
        before = self._load()
        result = self._run_command(self.paths.reload_argv())
        if result.returncode != 0:
            message = (result.stderr or result.stdout).strip()
            raise NginxUnavailable(f"the reload command failed (is nginx running?): {message}")
        deadline = time.monotonic() + self.timeout
        while time.monotonic() < deadline:
            load = self._load()
            if load is not None and load != before:
                log.info("external nginx reloaded")
                return
            time.sleep(0.02)
        raise ReloadFailed(
            f"nginx did not confirm the reload within {self.timeout:g} s (see its error log): "
            "the previous configuration stays"
        )

    def _load(self) -> int | None:
        with contextlib.suppress(NginxError, KeyError, TypeError, ValueError):
            return int(self.control._status()["load"])
        return None

    def test_config(self, path: Path) -> None:
        result = self._run_command([self.binary, "-t", "-q", "-c", str(path)])
        if result.returncode != 0:
            message = (result.stderr or result.stdout).strip()
            raise ConfigRefused(f"nginx refused the configuration: {message}")

    def _run_command(self, argv: list[str]) -> subprocess.CompletedProcess[str]:
        try:
            return subprocess.run(
                argv,
                stdin=subprocess.DEVNULL,
                capture_output=True,
                text=True,
                timeout=self.timeout + 5,
                check=False,
            )
        except FileNotFoundError:
            raise NginxError(f"{argv[0]!r} was not found") from None
        except subprocess.TimeoutExpired:
            raise NginxError(f"{argv[0]!r} did not finish within {self.timeout + 5:g} s") from None

    # --- the process is not ours: make sure it answers, never start or stop it -------------------------

    def start(self) -> None:
        """Make sure the configuration is in and nginx answers; it is never started from here."""
        self.render_and_apply(self.render())
        if not self.running():
            raise NginxUnavailable(
                f"the existing nginx does not answer on 127.0.0.1:{self.settings.control_port}: is it running, "
                f"and does {self.paths.conf} include {self.paths.include} inside http {{ }}?"
            )

    def stop(self) -> None:
        """Nothing to stop: the administrator's nginx keeps serving when Orchestry stops (no converge either)."""
        with self._converging:
            self._stopped = True

    def running(self) -> bool:
        return self._load() is not None

    def ensure_running(self) -> bool:
        """Raises NginxUnavailable when nginx does not answer; a restart by its administrator shows as a
        new load of the routes file, so nothing else is needed here. Always False (never started here)."""
        if not self.running():
            raise NginxUnavailable(f"the existing nginx does not answer on 127.0.0.1:{self.settings.control_port}")
        return False

    def _make_dirs(self) -> None:
        """Only Orchestry's own files: the routes file and, when it is a file, the access log."""
        s = self.settings
        self.settings.routes_path.parent.mkdir(parents=True, exist_ok=True)
        self.control_secret()  # before nginx loads the include that reads it
        if s.tls_port is not None:
            ensure_fallback_certificate(s.fallback_cert, s.fallback_key)
        if s.access_log is not None and s.access_log.startswith("/"):
            Path(s.access_log).parent.mkdir(parents=True, exist_ok=True)
