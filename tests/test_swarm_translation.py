"""The swarm runtime's translation (no Docker): a replica request to a slot's ServiceSpec, a service and its
task to what jobs observe."""

from __future__ import annotations

from typing import Any

from orchestry.runtime.swarm_engine import _current, _observed, _service_args
from orchestry.runtime.types import ReplicaRequest

REQ = ReplicaRequest(
    cluster="c",
    app="web",
    slot=2,
    revision=3,
    spec_hash="sha256:x",
    image="img:1",
    container_port=8080,
    env={"A": "1"},
    nano_cpus=250_000_000,
    memory_bytes=64 << 20,
    labels={"team": "x", "org.orchestry.app": "forged"},
    extra_ports=(9090,),
    constraints=("node.labels.zone==a",),
    stop_grace_seconds=2,
)


def test_a_slot_is_one_task_with_host_mode_ports_limits_reservations_and_our_labels() -> None:
    args = _service_args(REQ, ["node.labels.zone==a", "node.id!=n1"], "inst")
    assert args["name"] == "c-web-2"
    assert args["mode"] == {"Replicated": {"Replicas": 1}}
    labels = args["labels"]
    assert labels["org.orchestry.app"] == "web"  # the app's own labels cannot pose as ours
    assert (labels["org.orchestry.slot"], labels["org.orchestry.installation"], labels["team"]) == ("2", "inst", "x")
    assert labels["org.orchestry.port"] == "8080"
    template = args["task_template"]
    assert template["ContainerSpec"]["Labels"] == labels
    assert template["ContainerSpec"]["Env"] == ["A=1"]
    assert template["ContainerSpec"]["StopGracePeriod"] == 2_000_000_000
    assert template["RestartPolicy"] == {"Condition": "none"}
    assert template["Placement"] == {"Constraints": ["node.labels.zone==a", "node.id!=n1"]}
    limits = {"NanoCPUs": 250_000_000, "MemoryBytes": 64 << 20}
    assert template["Resources"] == {"Limits": limits, "Reservations": limits}
    assert args["endpoint_spec"] == {
        "Mode": "dnsrr",
        "Ports": [
            {"Protocol": "tcp", "TargetPort": 8080, "PublishMode": "host"},
            {"Protocol": "tcp", "TargetPort": 9090, "PublishMode": "host"},
        ],
    }


def service(labels: dict[str, str]) -> dict[str, Any]:
    return {"ID": "svc1", "Spec": {"Name": "c-web-2", "Labels": labels}}


def task(state: str, index: int, desired: str = "running", **status: Any) -> dict[str, Any]:
    return {
        "ID": f"t{index}",
        "NodeID": "n2",
        "DesiredState": desired,
        "Version": {"Index": index},
        "Status": {"State": state, "Timestamp": "2026-12-07T06:55:38.256522193Z", **status},
    }


NODES = {"n2": {"ID": "n2", "Status": {"Addr": "10.0.0.6"}, "Description": {"Hostname": "worker-2"}}}
LABELS = {
    "org.orchestry.app": "web",
    "org.orchestry.slot": "2",
    "org.orchestry.revision": "3",
    "org.orchestry.spec-hash": "sha256:x",
    "org.orchestry.port": "8080",
}
PORTS: dict[str, Any] = {"PortStatus": {"Ports": [{"Protocol": "tcp", "TargetPort": 8080, "PublishedPort": 30001}] * 2}}


def test_a_running_task_is_reached_at_its_hosts_address_and_published_port() -> None:
    observed = _observed(service(LABELS), task("running", 5, **PORTS), NODES)
    assert (observed.id, observed.name, observed.app, observed.slot, observed.revision) == (
        "t5",
        "c-web-2",
        "web",
        2,
        3,
    )
    assert (observed.state, observed.host, observed.port, observed.node) == ("running", "10.0.0.6", 30001, "n2")
    assert observed.node_name == "worker-2"  # the replica's host, by the name users know it by
    assert observed.ports == ((8080, 30001),)
    assert observed.started_at is not None and observed.started_at.year == 2026


def test_task_states_read_as_container_states() -> None:
    assert _observed(service(LABELS), None, NODES).state == "created"  # not scheduled yet
    assert _observed(service(LABELS), task("assigned", 1), NODES).state == "created"
    failed = _observed(service(LABELS), task("failed", 1, ContainerStatus={"ExitCode": 3}), NODES)
    assert (failed.state, failed.exit_code, failed.host, failed.port) == ("exited", 3, None, None)


def test_the_task_that_counts_is_the_newest_wanted_running() -> None:
    old, new = task("running", 3, desired="shutdown"), task("starting", 7)
    assert _current([old, new]) is new
    newest = _current([task("failed", 2, desired="shutdown"), task("shutdown", 9, desired="shutdown")])
    assert newest is not None and newest["ID"] == "t9"
    assert _current([]) is None


def test_every_wrapper_of_the_swarm_runtime_still_lists_and_changes_hosts() -> None:
    """The controller wraps the runtime (EventAwareRuntime) and jobs wrap it again (FencedRuntime): each must
    pass on every host method, or a job sees "one host" (a lost host's drain failed so once)."""
    import time

    from orchestry.controller.observed import EventAwareRuntime
    from orchestry.jobs.base import Fence
    from orchestry.jobs.fenced import FencedRuntime
    from orchestry.runtime.swarm_engine import SwarmEngine
    from orchestry.runtime.types import HostLister

    engine = SwarmEngine(base_url="unix:///nonexistent.sock")
    wrapped = EventAwareRuntime(engine)
    fenced = FencedRuntime(wrapped, Fence("n", 1, lambda: time.monotonic() + 60), 1)
    for runtime in (engine, wrapped, fenced):
        assert isinstance(runtime, HostLister), type(runtime).__name__
    assert isinstance(fenced.inner, HostLister)
