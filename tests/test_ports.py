"""The tests' port allocator (testapp/ports.py): one per process, a slice per xdist worker, no port twice."""

from __future__ import annotations

import random
import socket
from pathlib import Path

import pytest

from orchestry.testapp.ports import (
    HOST,
    LOWEST,
    SLICES,
    PortAllocator,
    ephemeral_range,
    free_port,
    port_slice,
    run_turn,
    worker_index,
)


def test_free_ports_are_below_the_ephemeral_range(tmp_path: Path) -> None:
    """Ports the kernel hands to outgoing connections and Docker's published ports are never picked."""
    low, high = ephemeral_range()
    assert low < high
    ports = {free_port() for _ in range(20)}
    if low - LOWEST >= 1000:
        assert all(LOWEST <= p < low for p in ports)
    assert len(ports) > 1
    weird = tmp_path / "range"
    weird.write_text("garbage\n")
    assert ephemeral_range(weird) == (32768, 60999)


def test_free_port_never_repeats_within_a_process() -> None:
    """The CI failure `control_port: 19398 is the listen port too`: two draws gave one port (nobody had bound it
    yet). Draws that outnumber what a random pick could give without a repeat (birthday bound) stay distinct."""
    ports = [free_port() for _ in range(600)]
    assert len(set(ports)) == len(ports)


@pytest.mark.parametrize(
    ("worker", "index"),
    [("gw0", 0), ("gw7", 7), ("gw15", 15), ("gw16", 16), (None, None), ("", None), ("master", None), ("gwx", None)],
)
def test_worker_index(worker: str | None, index: int | None) -> None:
    assert worker_index(worker) == index


def test_worker_slices_are_disjoint_and_inside_the_range() -> None:
    low, high = 10_000, 32_768
    slices = [port_slice(i, low, high) for i in range(SLICES)]
    seen: set[int] = set()
    for ports in slices:
        assert low <= ports.start and ports.stop <= high and len(ports) == (high - low) // SLICES
        assert seen.isdisjoint(ports)
        seen.update(ports)
    assert port_slice(SLICES + 2, low, high) == slices[2]  # more workers than slices share them, modulo
    assert port_slice(None, low, high) == range(low, high)  # no worker (a bench): the whole range


def test_a_runs_turn_keeps_its_workers_apart_and_moves_them_from_another_runs() -> None:
    low, high = 10_000, 32_768
    turn = run_turn("a1b2c3")
    assert turn == run_turn("a1b2c3") and 0 <= turn < SLICES and run_turn(None) == 0
    mine = [port_slice(i, low, high, turn=turn) for i in range(4)]
    assert len({r.start for r in mine}) == 4  # one run: still disjoint
    assert [port_slice(i, low, high, turn=turn) for i in range(SLICES)] != [
        port_slice(i, low, high) for i in range(SLICES)
    ]
    turns = {run_turn(f"run-{n}") for n in range(50)}
    assert len(turns) > SLICES // 2  # run ids spread over the slices


def test_allocator_walks_its_slice_once_and_skips_taken_ports() -> None:
    with socket.socket() as taken:
        taken.bind((HOST, 0))
        busy = taken.getsockname()[1]
        taken.listen()
        ports = range(busy - 2, busy + 3)
        alloc = PortAllocator(ports, random.Random(0))
        got = []
        with pytest.raises(RuntimeError, match="no free port left"):
            while True:
                got.append(alloc.take())
    assert busy not in got  # the bind check: someone else's port is passed over
    assert len(got) == len(set(got)) <= 4 and set(got) <= set(ports)
    assert len(got) >= 1  # positive control: free ports of the slice are handed out


def test_allocators_of_two_workers_never_meet() -> None:
    low, _ = ephemeral_range()
    top = low if low - LOWEST >= 1000 else 65536
    a = PortAllocator(port_slice(0, LOWEST, top), random.Random(1))
    b = PortAllocator(port_slice(1, LOWEST, top), random.Random(1))
    assert {a.take() for _ in range(100)}.isdisjoint({b.take() for _ in range(100)})
