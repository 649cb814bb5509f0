"""Several Docker hosts on this one machine, joined in a real Swarm: the test bed of the swarm runtime.

Each host is a `dockerd` of its own in a network namespace of its own, reached from the machine through a veth
pair (a /30 per host: `10.213.<k>.4i+1` on the machine's side, `.4i+2` inside); the manager is one of them,
so the machine's own engine never joins a swarm. The recipe (verified, /work/shared/traps.md):

- `nsenter --net=/var/run/netns/NAME dockerd ...` (`ip netns exec` remounts /sys and dockerd dies with
  "Devices cgroup isn't mounted"), with its own data root, exec root, pid file, socket and `--bip`, the main
  engine's storage driver (read from `docker info`), and `--config-file` naming an empty `{}` (the machine's
  daemon.json sets a data root, and a flag that repeats a file setting is fatal). Each starts its own
  containerd under its exec root.
- The namespaces reach each other through the machine: `net.ipv4.ip_forward` on, and the veths accepted in
  Docker's `DOCKER-USER` chain (the FORWARD policy is DROP). Each namespace routes only the test subnet, no
  default route, so a registry pull fails at once instead of hanging.
- Swarm's ingress mesh needs IPVS, which this kernel lacks: services publish in host mode. A task whose image
  is only local fails its pull and then uses the local image, so the test image is loaded into each engine
  (`docker save | docker load`).

The machine routes the whole test subnet as unreachable, so a partitioned host (its veth down) fails at once with
"No route to host" instead of leaking out through the default route.

Teardown works by pid and by name, and runs even when the build failed half-way: swarm left on every engine,
each dockerd SIGTERMed then SIGKILLed, the containerd shims under its exec root killed, the fuse-overlayfs
mounts under its data root unmounted (`umount -l`), the namespaces and veths deleted (the veth goes with its
namespace), the iptables rules it added removed, its files deleted. An instance slot (`k` above) is taken
with an exclusive lock on a file, so parallel pytest workers each build their own swarm on their own subnet.
"""

from __future__ import annotations

import contextlib
import fcntl
import json
import os
import shutil
import signal
import subprocess
import tempfile
import time
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

PREFIX = "orsw"  # namespaces orsw<k>n<i>, veths orsw<k>h<i> (machine side), links inside named eth0
SLOTS = 8  # instances at once on one machine (subnets 10.213.0-7.0/24)
LOCK_DIR = Path(tempfile.gettempdir()) / "orchestry-swarm-hosts"
START_SECONDS = 30.0  # one dockerd answering on its socket
JOIN_SECONDS = 30.0  # every node Ready in the swarm
NETNS_DIR = Path("/var/run/netns")
_UNREAPED: list[subprocess.Popen[bytes]] = []


class SwarmHostsError(RuntimeError):
    """The hosts could not be built: says which step failed and why."""


@dataclass
class Host:
    name: str  # the namespace's name, also the engine's hostname (its Swarm node's name)
    index: int
    address: str  # inside the namespace: Docker publishes host-mode ports here
    gateway: str  # the machine's side of the veth
    veth: str  # the machine's side (its peer inside is eth0)
    root: Path  # data root, exec root, socket, pid file, logs
    proc: subprocess.Popen[bytes] | None = None
    node_id: str = ""

    @property
    def socket(self) -> Path:
        return self.root / "docker.sock"

    @property
    def url(self) -> str:
        return f"unix://{self.socket}"

    @property
    def exec_root(self) -> Path:
        # A short path: containerd's socket under it must fit a Unix socket address (108 bytes).
        return self.root / "x"

    def docker(self, *args: str, timeout: float = 60, input: bytes | None = None) -> str:
        """Run the docker CLI against this host; raises SwarmHostsError with its output on failure."""
        done = subprocess.run(
            ["docker", "-H", self.url, *args], capture_output=True, input=input, timeout=timeout, check=False
        )
        if done.returncode != 0:
            raise SwarmHostsError(
                f"docker {' '.join(args)} on {self.name} failed: {done.stderr.decode(errors='replace').strip()}"
            )
        return done.stdout.decode(errors="replace")


@dataclass
class SwarmHosts:
    """`count` hosts, the first the Swarm manager. Use as a context manager, or call build() and teardown()."""

    count: int = 3
    images: Sequence[str] = ()
    labels: dict[int, dict[str, str]] = field(default_factory=dict)  # host index -> node labels
    hosts: list[Host] = field(default_factory=list)
    slot: int = -1
    build_seconds: float = 0.0
    _lock: Any = None
    _rules: list[list[str]] = field(default_factory=list)
    _route: bool = False
    _workdir: Path | None = None

    @property
    def manager(self) -> Host:
        return self.hosts[0]

    @property
    def manager_url(self) -> str:
        return self.manager.url

    @property
    def subnet(self) -> str:
        return f"10.213.{self.slot}.0/24"

    def __enter__(self) -> SwarmHosts:
        self.build()
        return self

    def __exit__(self, *exc: object) -> None:
        self.teardown()

    # -- build ---------------------------------------------------------------------------------------------

    def build(self) -> None:
        began = time.monotonic()
        try:
            self._take_slot()
            self._workdir = Path(tempfile.mkdtemp(prefix=f"{PREFIX}{self.slot}-", dir="/var/tmp"))
            self._forwarding()
            for i in range(self.count):
                self.hosts.append(self._network(i))
            driver = _storage_driver()
            for host in self.hosts:
                self._start_engine(host, driver)
            for host in self.hosts:
                _wait_socket(host)
            self._load_images()
            self._form_swarm()
        except BaseException:
            self.teardown()
            raise
        self.build_seconds = time.monotonic() - began

    def _take_slot(self) -> None:
        LOCK_DIR.mkdir(parents=True, exist_ok=True)
        for slot in range(SLOTS):
            handle = open(LOCK_DIR / f"slot-{slot}.lock", "w")  # noqa: SIM115 - held until teardown
            try:
                fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except OSError:
                handle.close()
                continue
            self.slot, self._lock = slot, handle
            _clear_leftovers(slot)  # a run that died without its teardown (SIGKILL) left these behind
            return
        raise SwarmHostsError(f"all {SLOTS} swarm host slots are taken (lock files in {LOCK_DIR})")

    def _forwarding(self) -> None:
        Path("/proc/sys/net/ipv4/ip_forward").write_text("1\n")
        # Docker's FORWARD policy is DROP: let the test subnet through, in both directions, first in DOCKER-USER
        # (or FORWARD when the machine's engine made no such chain).
        chain = (
            "DOCKER-USER" if _run(["iptables", "-n", "-L", "DOCKER-USER"], check=False).returncode == 0 else "FORWARD"
        )
        # The whole test subnet is unreachable but for each host's own /30 (more specific, present while its
        # veth is up): a partitioned host's address then fails at once with "No route to host", instead of
        # following the machine's default route out (where something may even accept the connection).
        _run(["ip", "route", "replace", "unreachable", self.subnet])
        self._route = True
        for rule in (["-s", self.subnet], ["-d", self.subnet]):
            spec = [chain, *rule, "-j", "ACCEPT", "-m", "comment", "--comment", f"{PREFIX}{self.slot}"]
            _run(["iptables", "-I", *spec])
            self._rules.append(spec)

    def _network(self, i: int) -> Host:
        name, veth = f"{PREFIX}{self.slot}n{i}", f"{PREFIX}{self.slot}h{i}"
        gateway, address = f"10.213.{self.slot}.{4 * i + 1}", f"10.213.{self.slot}.{4 * i + 2}"
        assert self._workdir is not None
        host = Host(name, i, address, gateway, veth, self._workdir / f"h{i}")
        host.root.mkdir()
        _run(["ip", "netns", "add", name])
        _run(["ip", "link", "add", veth, "type", "veth", "peer", "name", f"{veth}p"])
        _run(["ip", "link", "set", f"{veth}p", "netns", name])
        _run(["ip", "addr", "add", f"{gateway}/30", "dev", veth])
        _run(["ip", "link", "set", veth, "up"])
        inside = ["ip", "-n", name]
        _run([*inside, "link", "set", f"{veth}p", "name", "eth0"])
        _run([*inside, "addr", "add", f"{address}/30", "dev", "eth0"])
        _run([*inside, "link", "set", "eth0", "up"])
        _run([*inside, "link", "set", "lo", "up"])
        _run([*inside, "route", "add", self.subnet, "via", gateway])
        return host

    def _start_engine(self, host: Host, driver: str) -> None:
        config = host.root / "daemon.json"
        config.write_text("{}\n")
        log = open(host.root / "dockerd.log", "wb")  # noqa: SIM115 - the child holds it
        host.exec_root.mkdir()
        # A UTS namespace of its own too, named like the host, so that each Swarm node has its own hostname.
        args = [
            "nsenter",
            f"--net={NETNS_DIR / host.name}",
            "unshare",
            "--uts",
            "sh",
            "-c",
            f'hostname {host.name} && exec "$@"',
            "dockerd",
            "dockerd",
            "--config-file",
            str(config),
            "--data-root",
            str(host.root / "data"),
            "--exec-root",
            str(host.exec_root),
            "--pidfile",
            str(host.root / "docker.pid"),
            "-H",
            host.url,
            "--bip",
            f"10.214.{self.slot * 16 + host.index}.1/24",
            "--storage-driver",
            driver,
            "--default-address-pool",
            f"base=10.215.{self.slot * 16 + host.index}.0/24,size=26",  # docker_gwbridge's subnet
            # A test registry on a host's gateway (tests/test_swarm.py) speaks plain HTTP, as one on loopback does.
            "--insecure-registry",
            "10.213.0.0/16",
        ]
        host.proc = subprocess.Popen(args, stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
        log.close()

    def _load_images(self) -> None:
        for image in self.images:
            data = subprocess.run(["docker", "save", image], capture_output=True, check=True, timeout=120).stdout
            for host in self.hosts:
                host.docker("load", "-q", input=data, timeout=120)

    def _form_swarm(self) -> None:
        manager = self.manager
        manager.docker("swarm", "init", "--advertise-addr", manager.address, "--listen-addr", f"{manager.address}:2377")
        token = manager.docker("swarm", "join-token", "-q", "worker").strip()
        for host in self.hosts[1:]:
            host.docker(
                "swarm",
                "join",
                "--token",
                token,
                "--advertise-addr",
                host.address,
                "--listen-addr",
                f"{host.address}:2377",
                f"{manager.address}:2377",
                timeout=JOIN_SECONDS,
            )
        for host in self.hosts:
            host.node_id = host.docker("info", "--format", "{{.Swarm.NodeID}}").strip()
        deadline = time.monotonic() + JOIN_SECONDS
        while True:
            states = manager.docker("node", "ls", "--format", "{{.ID}} {{.Status}}").split()
            ready = {states[i] for i in range(0, len(states) - 1, 2) if states[i + 1] == "Ready"}
            if {h.node_id for h in self.hosts} <= ready:
                break
            if time.monotonic() > deadline:
                raise SwarmHostsError(f"swarm nodes not Ready within {JOIN_SECONDS} s: {states}")
            time.sleep(0.1)
        for index, labels in self.labels.items():
            self.label(index, labels)

    # -- use ---------------------------------------------------------------------------------------------------

    def label(self, index: int, labels: dict[str, str]) -> None:
        args = [a for key, value in labels.items() for a in ("--label-add", f"{key}={value}")]
        self.manager.docker("node", "update", *args, self.hosts[index].node_id)

    def host_of(self, address: str) -> Host:
        return next(h for h in self.hosts if h.address == address)

    def containers(self) -> dict[str, Host]:
        """Every running container's full id, with the host that runs it."""
        out = {}
        for host in self.hosts:
            for cid in host.docker("ps", "-q", "--no-trunc").split():
                out[cid] = host
        return out

    def partition(self, index: int, up: bool = False) -> None:
        """Cut a host off the network (its veth down), or bring it back."""
        _run(["ip", "link", "set", self.hosts[index].veth, "up" if up else "down"])

    # -- teardown ------------------------------------------------------------------------------------------

    def teardown(self) -> None:
        """Everything this instance made goes, each step on its own (one failing never skips the rest)."""
        for host in self.hosts:
            with contextlib.suppress(Exception):
                _run(["ip", "link", "set", host.veth, "up"], check=False)
        for host in self.hosts:
            if host.proc is not None and host.proc.poll() is None:
                with contextlib.suppress(Exception):
                    for cid in host.docker("ps", "-aq", timeout=10).split():
                        host.docker("rm", "-f", cid, timeout=10)
                with contextlib.suppress(Exception):
                    host.docker("swarm", "leave", "--force", timeout=10)
        for host in self.hosts:
            _stop_engine(host)
        for host in self.hosts:
            _kill_under(str(host.exec_root))  # containerd, its shims and their containers
            _unmount_under(host.root)
            _run(["ip", "link", "del", host.veth], check=False)
            _run(["ip", "netns", "del", host.name], check=False)
        for spec in self._rules:
            _run(["iptables", "-D", *spec], check=False)
        if self._route:
            _run(["ip", "route", "del", "unreachable", self.subnet], check=False)
            self._route = False
        self._rules.clear()
        if self._workdir is not None:
            _unmount_under(self._workdir)
            shutil.rmtree(self._workdir, ignore_errors=True)
        self.hosts = []
        if self._lock is not None:
            self._lock.close()
            self._lock = None


# -- helpers --------------------------------------------------------------------------------------------------


def _run(args: list[str], check: bool = True) -> subprocess.CompletedProcess[str]:
    done = subprocess.run(args, capture_output=True, text=True, timeout=30, check=False)
    if check and done.returncode != 0:
        raise SwarmHostsError(f"{' '.join(args)} failed: {done.stderr.strip() or done.stdout.strip()}")
    return done


def _storage_driver() -> str:
    """The machine's engine's storage driver: the namespaced engines need the same one to work here."""
    out = _run(["docker", "info", "--format", "{{.Driver}}"]).stdout.strip()
    if not out:
        raise SwarmHostsError("`docker info` names no storage driver: is the machine's Docker engine running?")
    return out


def _wait_socket(host: Host) -> None:
    deadline = time.monotonic() + START_SECONDS
    while True:
        if host.proc is not None and host.proc.poll() is not None:
            raise SwarmHostsError(f"dockerd of {host.name} exited with {host.proc.returncode}: {_tail(host)}")
        if host.socket.exists():
            done = subprocess.run(["docker", "-H", host.url, "version"], capture_output=True, timeout=10, check=False)
            if done.returncode == 0:
                return
        if time.monotonic() > deadline:
            raise SwarmHostsError(f"dockerd of {host.name} did not answer within {START_SECONDS} s: {_tail(host)}")
        time.sleep(0.1)


def _tail(host: Host, lines: int = 8) -> str:
    with contextlib.suppress(OSError):
        return " | ".join((host.root / "dockerd.log").read_text(errors="replace").splitlines()[-lines:])
    return "(no log)"


def _stop_engine(host: Host) -> None:
    pid = _pid_of(host)
    if pid is None:
        return
    with contextlib.suppress(ProcessLookupError):
        os.kill(pid, signal.SIGTERM)
    deadline = time.monotonic() + 10
    while _alive(pid) and time.monotonic() < deadline:
        time.sleep(0.05)
    with contextlib.suppress(ProcessLookupError):
        os.kill(pid, signal.SIGKILL)
    if host.proc is not None:
        try:
            host.proc.wait(5)
        except subprocess.TimeoutExpired:
            # Killed but not reaped yet (its mounts still going): keep the handle, or its garbage collection
            # warns that the process still runs (a warning pytest turns into an error at the end of the run).
            _UNREAPED.append(host.proc)


def _pid_of(host: Host) -> int | None:
    if host.proc is not None:
        return host.proc.pid  # nsenter execs dockerd: the same pid
    with contextlib.suppress(OSError, ValueError):
        return int((host.root / "docker.pid").read_text())
    return None


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    with contextlib.suppress(OSError):
        if Path(f"/proc/{pid}/stat").read_text().split(") ", 1)[1].startswith("Z"):
            return False
    return True


def _processes_under(path: str) -> list[int]:
    """Processes whose command line names `path` (dockerd, containerd and its shims of one host)."""
    found = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        with contextlib.suppress(OSError):
            if path.encode() in (entry / "cmdline").read_bytes():
                found.append(int(entry.name))
    return found


def _children(pid: int) -> list[int]:
    out: list[int] = []
    with contextlib.suppress(OSError):
        for task in Path(f"/proc/{pid}/task").iterdir():
            with contextlib.suppress(OSError):
                out += [int(c) for c in (task / "children").read_text().split()]
    return out


def _kill_under(path: str) -> None:
    """SIGKILL the processes naming `path` and every descendant of theirs (a shim's container included)."""
    pids: list[int] = []
    queue = _processes_under(path)
    while queue:
        pid = queue.pop()
        if pid in pids or pid == os.getpid():
            continue
        pids.append(pid)
        queue += _children(pid)
    for pid in pids:
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, signal.SIGKILL)


def _unmount_under(root: Path) -> None:
    prefix = str(root)
    with contextlib.suppress(OSError):
        targets = [line.split()[1] for line in Path("/proc/mounts").read_text().splitlines()]
        for target in sorted((t for t in targets if t.startswith(prefix)), key=len, reverse=True):
            _run(["umount", "-l", target], check=False)


def _clear_leftovers(slot: int) -> None:
    """What a killed run of this slot left: its engines' processes, mounts, namespaces, veths, rules."""
    for stale in Path("/var/tmp").glob(f"{PREFIX}{slot}-*"):
        _kill_under(str(stale))
        _unmount_under(stale)
        shutil.rmtree(stale, ignore_errors=True)
    if NETNS_DIR.is_dir():
        for ns in NETNS_DIR.glob(f"{PREFIX}{slot}n*"):
            _run(["ip", "netns", "del", ns.name], check=False)
    links = _run(["ip", "-o", "link", "show"], check=False).stdout
    for line in links.splitlines():
        name = line.split(":")[1].strip().split("@")[0] if ":" in line else ""
        if name.startswith(f"{PREFIX}{slot}h"):
            _run(["ip", "link", "del", name], check=False)
    _run(["ip", "route", "del", "unreachable", f"10.213.{slot}.0/24"], check=False)
    for chain in ("DOCKER-USER", "FORWARD"):
        rules = _run(["iptables", "-S", chain], check=False).stdout.splitlines()
        for rule in rules:
            if f'"{PREFIX}{slot}"' in rule or f" {PREFIX}{slot} " in rule or rule.endswith(f" {PREFIX}{slot}"):
                _run(["iptables", "-D", *rule.split()[1:]], check=False)


@contextlib.contextmanager
def swarm_hosts(
    count: int = 3, images: Sequence[str] = (), labels: dict[int, dict[str, str]] | None = None
) -> Iterator[SwarmHosts]:
    hosts = SwarmHosts(count, images, labels or {})
    with hosts:
        yield hosts


def main() -> None:
    """Build a swarm of three hosts, print what it is and how long it took, and tear it down."""
    began = time.monotonic()
    with swarm_hosts(3, images=("orchestry-testapp:latest",)) as hosts:
        print(
            json.dumps(
                {
                    "slot": hosts.slot,
                    "build_seconds": round(hosts.build_seconds, 2),
                    "hosts": [
                        {"name": h.name, "address": h.address, "node": h.node_id, "socket": str(h.socket)}
                        for h in hosts.hosts
                    ],
                },
                indent=2,
            )
        )
        print(hosts.manager.docker("node", "ls"))
        t = time.monotonic()
    print(f"teardown {time.monotonic() - t:.2f} s, total {time.monotonic() - began:.2f} s")


if __name__ == "__main__":
    main()
