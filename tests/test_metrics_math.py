"""The pure part of metrics: percentages from two readings, cgroup file parsing, finding a container's cgroup."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

from orchestry.runtime.stats import (
    CgroupDirs,
    CgroupLocator,
    ContainerFacts,
    CounterFiles,
    UsageReader,
    own_cgroup_paths,
    parse_cpu_max,
    parse_keyed,
    parse_memory_limit,
    parse_v1_quota,
    read_dirs,
)
from orchestry.runtime.types import ContainerFailed
from orchestry.workflows.metrics import FIGURES, Usage, cpu_percent, mean, memory_percent, period_means

GiB = 1 << 30
MiB = 1 << 20


def u(at: float, usec: int, *, cpu_limit: float | None = None, mem: int = 0, mem_limit: int | None = None) -> Usage:
    return Usage(at=at, cpu_usec=usec, memory_bytes=mem, memory_limit=mem_limit, cpu_limit=cpu_limit)


CPU_CASES = [
    # (previous, current, expected %)
    pytest.param(None, u(2.0, 1_000_000), None, id="first reading: no figure yet"),
    pytest.param(u(0.0, 0), u(2.0, 2_000_000), 100.0, id="one core busy, no limit"),
    pytest.param(u(0.0, 0), u(2.0, 1_000_000), 50.0, id="half a core, no limit"),
    pytest.param(u(0.0, 0), u(2.0, 4_000_000), 200.0, id="two cores, no limit: over 100"),
    pytest.param(u(0.0, 0), u(2.0, 200_000, cpu_limit=0.1), 100.0, id="100m limit saturated"),
    pytest.param(u(0.0, 0), u(2.0, 100_000, cpu_limit=0.1), 50.0, id="100m limit half used"),
    pytest.param(u(0.0, 0), u(1.0, 1_000_000, cpu_limit=2.0), 50.0, id="2-core limit, one core busy"),
    pytest.param(u(10.0, 5_000), u(12.0, 5_000, cpu_limit=0.5), 0.0, id="idle is a real zero"),
    pytest.param(u(0.0, 0), u(2.0, 1_000_000, cpu_limit=0.0), 50.0, id="a zero limit counts as none"),
    pytest.param(u(5.0, 100), u(5.0, 200), None, id="no time elapsed"),
    pytest.param(u(5.0, 100), u(4.0, 200), None, id="clock went backwards"),
    pytest.param(u(0.0, 9_000_000), u(2.0, 1_000), None, id="counter restarted"),
]


@pytest.mark.parametrize(("prev", "cur", "expected"), CPU_CASES)
def test_cpu_percent(prev: Usage | None, cur: Usage, expected: float | None) -> None:
    got = cpu_percent(prev, cur)
    assert got == (pytest.approx(expected) if expected is not None else None)


MEMORY_CASES = [
    # (usage, host bytes, expected %)
    pytest.param(u(0, 0, mem=64 * MiB, mem_limit=128 * MiB), 16 * GiB, 50.0, id="half of its limit"),
    pytest.param(u(0, 0, mem=128 * MiB, mem_limit=128 * MiB), 16 * GiB, 100.0, id="at its limit"),
    pytest.param(u(0, 0, mem=1 * GiB), 16 * GiB, 6.25, id="no limit: of the host"),
    pytest.param(u(0, 0, mem=1 * GiB, mem_limit=(1 << 63) - 4096), 16 * GiB, 6.25, id="v1 unlimited: of the host"),
    pytest.param(u(0, 0, mem=0, mem_limit=128 * MiB), 16 * GiB, 0.0, id="nothing in use"),
    pytest.param(u(0, 0, mem=1 * GiB), None, None, id="no limit, host unknown"),
    pytest.param(u(0, 0, mem=-1, mem_limit=128 * MiB), 16 * GiB, None, id="negative usage is no figure"),
]


@pytest.mark.parametrize(("usage", "host", "expected"), MEMORY_CASES)
def test_memory_percent(usage: Usage, host: int | None, expected: float | None) -> None:
    got = memory_percent(usage, host)
    assert got == (pytest.approx(expected) if expected is not None else None)


@pytest.mark.parametrize(
    ("values", "expected"),
    [([], None), ([None, None], None), ([10.0, None, 30.0], 20.0), ([0.0], 0.0), ([50.0, 100.0], 75.0)],
)
def test_mean_ignores_missing_values(values: list[float | None], expected: float | None) -> None:
    assert mean(values) == expected


@pytest.mark.parametrize(
    ("text", "cores"),
    [("max 100000", None), ("10000 100000", 0.1), ("150000 100000", 1.5), ("200000 100000\n", 2.0), ("", None)],
)
def test_parse_cpu_max(text: str, cores: float | None) -> None:
    assert parse_cpu_max(text) == cores


@pytest.mark.parametrize(
    ("quota", "period", "cores"), [("-1", "100000", None), ("10000\n", "100000\n", 0.1), ("50000", "100000", 0.5)]
)
def test_parse_v1_quota(quota: str, period: str, cores: float | None) -> None:
    assert parse_v1_quota(quota, period) == cores


@pytest.mark.parametrize(
    ("text", "limit"),
    [("max\n", None), ("134217728\n", 128 * MiB), ("9223372036854771712\n", None), ("0", None)],
)
def test_parse_memory_limit(text: str, limit: int | None) -> None:
    assert parse_memory_limit(text) == limit


def test_parse_keyed_and_proc_cgroup() -> None:
    assert parse_keyed("usage_usec 123\nuser_usec 100\nbogus line x\n") == {"usage_usec": 123, "user_usec": 100}
    v1 = "12:cpu,cpuacct:/docker/abc\n4:memory:/docker/abc\n1:name=systemd:/docker/abc\n0::/docker/abc\n"
    assert own_cgroup_paths(v1) == {
        "cpu": "/docker/abc",
        "cpuacct": "/docker/abc",
        "memory": "/docker/abc",
        "name=systemd": "/docker/abc",
        "": "/docker/abc",
    }


# -- finding and reading a container's cgroup in fake trees -----------------------------------------------------

CID = "f" * 64


def write(directory: Path, files: dict[str, str]) -> Path:
    directory.mkdir(parents=True, exist_ok=True)
    for name, text in files.items():
        (directory / name).write_text(text)
    return directory


V2_FILES = {
    "cpu.stat": "usage_usec 2500000\nuser_usec 2000000\nsystem_usec 500000\n",
    "memory.current": str(80 * MiB),
    "memory.stat": f"anon {40 * MiB}\nfile {40 * MiB}\ninactive_file {16 * MiB}\n",
    "memory.max": str(128 * MiB),
    "cpu.max": "10000 100000",
}


def v2_root(tmp_path: Path) -> Path:
    root = tmp_path / "cgroup"
    write(root, {"cgroup.controllers": "cpu memory io\n"})
    return root


@pytest.mark.parametrize(
    "place",
    [f"system.slice/docker-{CID}.scope", f"docker/{CID}", f"docker.slice/docker-{CID}.scope"],
    ids=["systemd", "cgroupfs", "docker.slice"],
)
def test_v2_by_id(tmp_path: Path, place: str) -> None:
    root = v2_root(tmp_path)
    write(root / place, V2_FILES)
    dirs = CgroupLocator(root=root, proc=tmp_path / "proc").locate(CID)
    assert dirs is not None and dirs.version == 2 and dirs.cpu == root / place
    usage = read_dirs(dirs, now=7.0)
    assert usage == Usage(at=7.0, cpu_usec=2_500_000, memory_bytes=64 * MiB, memory_limit=128 * MiB, cpu_limit=0.1)


def test_v2_unlimited(tmp_path: Path) -> None:
    root = v2_root(tmp_path)
    write(root / "docker" / CID, {**V2_FILES, "memory.max": "max\n", "cpu.max": "max 100000\n"})
    dirs = CgroupLocator(root=root).locate(CID)
    assert dirs is not None
    usage = read_dirs(dirs, now=0.0)
    assert (usage.memory_limit, usage.cpu_limit) == (None, None)


def test_v2_through_the_init_process(tmp_path: Path) -> None:
    """A nested host: the container sits under a slice the usual places do not name; /proc/<pid>/cgroup does."""
    root = v2_root(tmp_path)
    write(root / "machine.slice" / "inner" / "ctr-1", V2_FILES)
    write(tmp_path / "proc" / "4242", {"cgroup": "0::/machine.slice/inner/ctr-1\n"})
    locator = CgroupLocator(root=root, proc=tmp_path / "proc")
    assert locator.locate("other-id") is None
    dirs = locator.locate("other-id", pid=4242)
    assert dirs is not None and dirs.cpu == root / "machine.slice" / "inner" / "ctr-1"


def test_v2_search_finds_a_nested_directory(tmp_path: Path) -> None:
    root = v2_root(tmp_path)
    write(root / "outer.slice" / "docker" / CID, V2_FILES)
    dirs = CgroupLocator(root=root, proc=tmp_path / "proc").locate(CID)
    assert dirs is not None and dirs.cpu == root / "outer.slice" / "docker" / CID


def test_v1_per_controller(tmp_path: Path) -> None:
    root = tmp_path / "cgroup"
    write(root / "cpuacct" / "docker" / CID, {"cpuacct.usage": "3000000000\n"})
    write(root / "cpu" / "docker" / CID, {"cpu.cfs_quota_us": "50000\n", "cpu.cfs_period_us": "100000\n"})
    write(
        root / "memory" / "docker" / CID,
        {
            "memory.usage_in_bytes": str(100 * MiB),
            "memory.stat": f"cache {50 * MiB}\ntotal_inactive_file {36 * MiB}\n",
            "memory.limit_in_bytes": "9223372036854771712\n",
        },
    )
    dirs = CgroupLocator(root=root).locate(CID)
    assert dirs is not None and dirs.version == 1
    usage = read_dirs(dirs, now=1.0)
    assert usage == Usage(at=1.0, cpu_usec=3_000_000, memory_bytes=64 * MiB, memory_limit=None, cpu_limit=0.5)


def test_v1_without_the_cpu_controller_has_no_visible_limit(tmp_path: Path) -> None:
    root = tmp_path / "cgroup"
    write(root / "cpuacct" / "docker" / CID, {"cpuacct.usage": "1000\n"})
    write(
        root / "memory" / "docker" / CID,
        {"memory.usage_in_bytes": "10", "memory.stat": "", "memory.limit_in_bytes": str(MiB)},
    )
    dirs = CgroupLocator(root=root).locate(CID)
    assert dirs is not None and dirs.quota is None
    assert read_dirs(dirs, now=0.0) == Usage(at=0.0, cpu_usec=1, memory_bytes=10, memory_limit=MiB, cpu_limit=None)


def test_a_container_nowhere_is_none(tmp_path: Path) -> None:
    assert CgroupLocator(root=v2_root(tmp_path), proc=tmp_path / "proc").locate(CID, pid=1) is None
    assert CgroupLocator(root=tmp_path / "v1", proc=tmp_path / "proc").locate(CID) is None


class FakeEngine:
    """The engine side of the reader: inspect facts and stats readings, counting the calls."""

    def __init__(self, facts: dict[str, ContainerFacts], usage: dict[str, Usage]) -> None:
        self.facts, self.usage = facts, usage
        self.calls: list[tuple[str, str]] = []

    def container_facts(self, container_id: str) -> ContainerFacts:
        self.calls.append(("facts", container_id))
        if container_id not in self.facts:
            raise ContainerFailed("gone")
        return self.facts[container_id]

    def container_usage(self, container_id: str) -> Usage:
        self.calls.append(("usage", container_id))
        if container_id not in self.usage:
            raise ContainerFailed("gone")
        return self.usage[container_id]


def test_reader_uses_the_init_pid_from_the_engine_then_the_files(tmp_path: Path) -> None:
    root = v2_root(tmp_path)
    write(root / "elsewhere" / "ctr", V2_FILES)
    write(tmp_path / "proc" / "77", {"cgroup": "0::/elsewhere/ctr\n"})
    engine = FakeEngine({CID: ContainerFacts(pid=77, cpu_limit=0.1, memory_limit=None)}, {})
    reader = UsageReader(engine, locator=CgroupLocator(root=root, proc=tmp_path / "proc"), clock=lambda: 3.0)
    for _ in range(2):
        result = reader.read([CID])
        assert (result.from_cgroup, result.from_engine, result.failed) == (1, 0, 0)
        assert result.usage[CID].cpu_usec == 2_500_000
    assert engine.calls == [("facts", CID)]  # one inspect, then the files alone


def test_reader_falls_back_to_the_engine_with_the_inspected_limits(tmp_path: Path) -> None:
    other = "e" * 64
    engine = FakeEngine(
        {CID: ContainerFacts(pid=None, cpu_limit=0.25, memory_limit=None)},
        {CID: Usage(at=1.0, cpu_usec=5, memory_bytes=10, memory_limit=16 * GiB)},
    )
    reader = UsageReader(engine, locator=CgroupLocator(root=v2_root(tmp_path), proc=tmp_path / "proc"))
    result = reader.read([CID, other])
    assert (result.from_cgroup, result.from_engine, result.failed) == (0, 1, 1)
    # the CPU limit from the inspect; no memory limit of its own: the engine's figure (the host's memory)
    assert result.usage[CID] == Usage(at=1.0, cpu_usec=5, memory_bytes=10, memory_limit=16 * GiB, cpu_limit=0.25)
    engine.calls.clear()
    reader.read([CID])
    assert engine.calls == [("usage", CID)]  # the facts are cached, and the files are not searched again


def test_limits_are_read_once_a_minute_not_at_every_reading(tmp_path: Path) -> None:
    root = tmp_path / "cgroup"
    write(root / "cpuacct" / "docker" / CID, {"cpuacct.usage": "1000\n"})
    memory = root / "memory" / "docker" / CID
    write(memory, {"memory.usage_in_bytes": "10", "memory.stat": "", "memory.limit_in_bytes": str(MiB)})
    clock = [0.0]
    reader = UsageReader(None, locator=CgroupLocator(root=root, proc=tmp_path / "proc"), clock=lambda: clock[0])
    assert reader.read([CID]).usage[CID].memory_limit == MiB
    (memory / "memory.limit_in_bytes").write_text(str(2 * MiB))  # `docker update --memory`
    clock[0] = 59.0
    assert reader.read([CID]).usage[CID].memory_limit == MiB  # kept: not read again within the minute
    clock[0] = 60.0
    assert reader.read([CID]).usage[CID].memory_limit == 2 * MiB


T = datetime(2026, 12, 7, 12, 0, tzinfo=UTC)
F = (1.0, 2.0, 3.0, 4.0, 5.0, 0.0, 2)  # one sample's figures, in FIGURES' order


@pytest.mark.parametrize(
    ("rows", "expected"),
    [
        ([], []),
        ([(7, F)], [{"app_id": 7, "samples": 1, **dict(zip(FIGURES, F, strict=True))}]),
        (  # means per figure, per app, apps in order
            [(9, F), (7, (3.0, 4.0, 5.0, 6.0, 7.0, 0.5, 4)), (7, F)],
            [
                {"app_id": 7, "samples": 2, **dict(zip(FIGURES, (2.0, 3.0, 4.0, 5.0, 6.0, 0.25, 3), strict=True))},
                {"app_id": 9, "samples": 1, **dict(zip(FIGURES, F, strict=True))},
            ],
        ),
        (  # a figure some samples lack: the mean of those that have it; none has it: None, never 0
            [(7, (None, 2.0, None, None, 1.0, None, None)), (7, (4.0, 4.0, None, None, 3.0, None, None))],
            [{"app_id": 7, "samples": 2, **dict(zip(FIGURES, (4.0, 3.0, None, None, 2.0, None, None), strict=True))}],
        ),
        (  # ready replicas stay whole
            [(7, (*F[:6], 2)), (7, (*F[:6], 3)), (7, (*F[:6], 3))],
            [{"app_id": 7, "samples": 3, **dict(zip(FIGURES, (*F[:6], 3), strict=True))}],
        ),
    ],
)
def test_a_periods_samples_become_one_row_of_means_per_app(
    rows: list[tuple[int, tuple[float | None, ...]]], expected: list[dict[str, object]]
) -> None:
    got = period_means(rows, T, 60)
    assert got == [{**row, "replica_name": None, "taken_at": T + timedelta(seconds=30)} for row in expected]
    assert all(isinstance(row["ready_replicas"], int) for row in got if row["ready_replicas"] is not None)


def test_counter_files_are_kept_open_and_read_afresh(tmp_path: Path) -> None:
    a, b, c = (tmp_path / name for name in ("a", "b", "c"))
    for path, text in ((a, "1\n"), (b, "2\n"), (c, "3\n")):
        path.write_text(text)
    files = CounterFiles(limit=2)
    assert [files.read("one", str(p)) for p in (a, b, c)] == ["1\n", "2\n", "3\n"]
    assert len(files) == 2  # the third was opened and closed: the limit holds
    a.write_text("10\n")
    assert files.read("one", str(a)) == "10\n"  # read from the start, as it is now
    files.forget("one")
    assert len(files) == 0
    files.read("one", str(a))
    with pytest.raises(OSError):
        files.read("two", str(tmp_path))  # a directory: open works, the read fails, and the file is not kept
    assert len(files) == 1
    files.close()
    assert len(files) == 0


def test_a_reading_goes_through_the_given_reader(tmp_path: Path) -> None:
    seen: list[str] = []
    texts = {"cpuacct.usage": "5000\n", "memory.usage_in_bytes": "100\n", "memory.stat": "total_inactive_file 40\n"}

    def read(path: str) -> str:
        seen.append(path)
        return texts[path.rsplit("/", 1)[1]]

    usage = read_dirs(CgroupDirs(1, tmp_path / "cpu", tmp_path / "mem"), 1.0, (None, None), read)
    assert (usage.cpu_usec, usage.memory_bytes) == (5, 60)
    assert seen == [
        f"{tmp_path}/cpu/cpuacct.usage",
        f"{tmp_path}/mem/memory.usage_in_bytes",
        f"{tmp_path}/mem/memory.stat",
    ]
