"""The swarm runtime on a real three-host Swarm built on this machine (testapp/swarm_hosts.py): replicas spread
over the hosts and routed through Orchestry's nginx, scaling 2 -> 6 -> 2 under load, placement constraints,
the per-node cap, and the hosts listing.

The swarm is built once per test worker (three dockerds in network namespaces, the manager among them, the test
image loaded into each) and torn down at the end, whatever happened. It cannot be built (not root, a tool
missing, an engine that does not start): the tests fail, saying why; they never skip.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import subprocess
import time
from collections import Counter
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import docker
import httpx
import pytest

from orchestry.testapp.swarm_hosts import SwarmHosts, SwarmHostsError

from conftest import Databases, LiveServer, hello, post, proxy_load, start_server, stop_server, wait_for

LIVE_FIXTURES = ("swarm", "swarm_server", "on_swarm")
# Building the hosts adds addresses and links on this machine: Chromium (the dashboard's browser tests) fails
# its requests in flight with ERR_NETWORK_CHANGED when it sees that, so the two never run at once (the same
# xdist worker runs every module of the group, one after the other: `--dist loadgroup` in the Makefile).
pytestmark = pytest.mark.xdist_group("host_network")
SETUP_BOUND_SECONDS = 120  # building the three hosts (measured: 5 s on an idle machine, 15 s at a load of 25)
JOB_SECONDS = 120
TOOLS = ("ip", "iptables", "nsenter", "unshare", "dockerd", "docker", "umount")
HEALTH = (
    "healthCheck:\n"
    "  path: /health\n"
    "  periodSeconds: 0.5\n"
    "  timeoutSeconds: 0.5\n"
    "  failureThreshold: 3\n"
    "termination:\n"
    "  drainSeconds: 2\n"
    "  gracePeriodSeconds: 1\n"
    "scaling:\n"
    "  mode: manual\n"
    "  maxReplicas: 8\n"
)


@pytest.fixture(scope="session")
def swarm(testapp_image: str) -> Iterator[SwarmHosts]:
    if os.geteuid() != 0:
        pytest.fail("the swarm tests build network namespaces and Docker engines: run them as root", pytrace=False)
    missing = [tool for tool in TOOLS if shutil.which(tool) is None]
    if missing:
        pytest.fail(f"the swarm tests need {', '.join(missing)} (apt-get install iproute2 iptables util-linux)")
    hosts = SwarmHosts(3, images=(testapp_image,), labels={1: {"zone": "a"}, 2: {"zone": "b"}})
    try:
        hosts.build()
    except SwarmHostsError as exc:
        pytest.fail(f"cannot build the three-host swarm: {exc}", pytrace=False)
    try:
        print(f"three-host swarm built in {hosts.build_seconds:.1f} s (slot {hosts.slot})")
        assert hosts.build_seconds < SETUP_BOUND_SECONDS, f"building the swarm took {hosts.build_seconds:.1f} s"
        yield hosts
    finally:
        hosts.teardown()


@pytest.fixture(scope="session")
def swarm_server(
    swarm: SwarmHosts, databases: Databases, tmp_path_factory: pytest.TempPathFactory, nginx_required: None
) -> Iterator[LiveServer]:
    server = start_server(
        databases.migrated(),
        tmp_path_factory.mktemp("swarm"),
        {"ORCHESTRY_RUNTIME": "swarm", "ORCHESTRY_DOCKER_HOST": swarm.manager_url},
    )
    yield server
    stop_server(server, remove_containers=False)
    remove_services(swarm, server.cluster)


@pytest.fixture
def on_swarm(swarm_server: LiveServer, swarm: SwarmHosts) -> LiveServer:
    """The swarm server with an empty database and no service of its cluster left."""
    remove_services(swarm, swarm_server.cluster)
    swarm_server.reset()
    return swarm_server


def manager(swarm: SwarmHosts) -> Any:
    return docker.DockerClient(base_url=swarm.manager_url, timeout=30)


def remove_services(swarm: SwarmHosts, cluster: str) -> None:
    client = manager(swarm)
    try:
        for service in client.api.services(filters={"label": f"org.orchestry.cluster={cluster}"}):
            client.api.remove_service(service["ID"])
    finally:
        client.close()


def running_tasks(swarm: SwarmHosts, cluster: str, app: str) -> dict[str, int]:
    """Host name -> the app's running tasks there, as the Swarm manager reports them."""
    client = manager(swarm)
    try:
        services = client.api.services(
            filters={"label": [f"org.orchestry.cluster={cluster}", f"org.orchestry.app={app}"]}
        )
        if not services:
            return {}
        tasks = client.api.tasks(filters={"service": [s["ID"] for s in services], "desired-state": "running"})
    finally:
        client.close()
    by_node = {h.node_id: h.name for h in swarm.hosts}
    return dict(Counter(by_node[t["NodeID"]] for t in tasks if t["Status"]["State"] == "running"))


def run(server: LiveServer, app: str, action: str, **body: Any) -> dict[str, Any]:
    resp = server.http.post(f"/api/v1/apps/{app}/{action}", json=body or None)
    assert resp.status_code == 202, resp.text
    job = server.wait_job(resp.json()["job"]["id"], timeout=JOB_SECONDS)
    assert job["status"] == "succeeded", job
    return job


def register(server: LiveServer, app: str, extra: str = "") -> None:
    resp = post(server, hello(app, extra=extra + HEALTH))
    assert resp.status_code == 201, resp.text


def healthy(server: LiveServer, app: str, count: int) -> bool:
    replicas = server.http.get(f"/api/v1/apps/{app}/health").json()["replicas"]
    return len(replicas) == count and all(r["in_rotation"] for r in replicas)


def test_replicas_spread_over_the_hosts_and_are_routed_through_nginx(on_swarm: LiveServer, swarm: SwarmHosts) -> None:
    register(on_swarm, "spread")
    began = time.monotonic()
    run(on_swarm, "spread", "up", replicas=5)
    wait_for(lambda: healthy(on_swarm, "spread", 5), 30, 0.2)
    print(f"5 replicas on the swarm healthy and routed in {time.monotonic() - began:.1f} s")
    placed = running_tasks(swarm, on_swarm.cluster, "spread")
    assert sum(placed.values()) == 5 and len(placed) == 3, placed  # an empty swarm: 2/2/1
    addresses = {r["address"] for r in on_swarm.http.get("/api/v1/apps/spread").json()["replicas"]}
    assert {a.split(":")[0] for a in addresses} == {h.address for h in swarm.hosts}, addresses
    # Through Orchestry's nginx: every request answered, by replicas on several hosts.
    containers = swarm.containers()
    served: Counter[str] = Counter()
    url = f"http://127.0.0.1:{on_swarm.env['ORCHESTRY_PROXY_PORT']}/"
    with httpx.Client(headers={"Host": "spread.localhost"}, timeout=10) as client:
        for _ in range(30):
            resp = client.get(url)
            assert resp.status_code == 200, resp.text
            short = resp.headers["X-Served-By"]
            served[next(host.name for cid, host in containers.items() if cid.startswith(short))] += 1
    assert len(served) >= 2, served
    # The hosts listing counts the same replicas on the same hosts.
    hosts = on_swarm.http.get("/api/v1/hosts").json()["hosts"]
    assert {h["name"]: h["replicas"] for h in hosts if h["replicas"]} == placed
    assert {h["name"]: h["labels"] for h in hosts} == {
        swarm.hosts[0].name: {},
        swarm.hosts[1].name: {"zone": "a"},
        swarm.hosts[2].name: {"zone": "b"},
    }
    assert all(h["state"] == "ready" and h["availability"] == "active" for h in hosts)
    cli = on_swarm.cli("hosts")
    assert cli.returncode == 0 and swarm.hosts[2].name in cli.stdout and "zone=b" in cli.stdout, cli


def test_scale_2_6_2_under_load_fails_no_request(on_swarm: LiveServer, swarm: SwarmHosts) -> None:
    register(on_swarm, "elastic")
    run(on_swarm, "elastic", "up", replicas=2)
    wait_for(lambda: healthy(on_swarm, "elastic", 2), 30, 0.2)
    with proxy_load(on_swarm, "elastic", rps=40, posts=True) as counts:
        began = time.monotonic()
        run(on_swarm, "elastic", "scale", replicas=6)
        wait_for(lambda: healthy(on_swarm, "elastic", 6), 30, 0.2)
        out = time.monotonic() - began
        placed = running_tasks(swarm, on_swarm.cluster, "elastic")
        assert sum(placed.values()) == 6 and len(placed) == 3, placed
        began = time.monotonic()
        run(on_swarm, "elastic", "scale", replicas=2)
        back = time.monotonic() - began
        time.sleep(1)  # requests keep flowing to the two left
    print(f"2 -> 6 serving in {out:.1f} s, 6 -> 2 in {back:.1f} s; requests ok {counts[0]}, failed {counts[1]}")
    assert counts[1] == 0 and counts[0] > 20, counts
    assert sum(running_tasks(swarm, on_swarm.cluster, "elastic").values()) == 2
    client = manager(swarm)
    try:
        left = client.api.services(filters={"label": "org.orchestry.app=elastic"})
    finally:
        client.close()
    assert len(left) == 2, [s["Spec"]["Name"] for s in left]


def test_a_constraint_pins_every_replica_to_the_labelled_host(on_swarm: LiveServer, swarm: SwarmHosts) -> None:
    register(on_swarm, "pinned", "placement:\n  constraints: ['node.labels.zone==b']\n")
    run(on_swarm, "pinned", "up", replicas=3)
    assert running_tasks(swarm, on_swarm.cluster, "pinned") == {swarm.hosts[2].name: 3}
    client = manager(swarm)
    try:
        service = client.api.inspect_service(f"{on_swarm.cluster}-pinned-1")
    finally:
        client.close()
    assert service["Spec"]["TaskTemplate"]["Placement"]["Constraints"] == ["node.labels.zone==b"]
    assert service["Spec"]["Labels"]["org.orchestry.slot"] == "1"
    assert service["Spec"]["TaskTemplate"]["RestartPolicy"]["Condition"] == "none"


def test_the_per_host_cap_and_spread_put_one_replica_on_each_host(on_swarm: LiveServer, swarm: SwarmHosts) -> None:
    register(on_swarm, "capped", "placement:\n  spread: node.labels.zone\n  maxReplicasPerNode: 1\n")
    run(on_swarm, "capped", "up", replicas=3)
    assert running_tasks(swarm, on_swarm.cluster, "capped") == {h.name: 1 for h in swarm.hosts}


def test_resources_become_limits_and_reservations(on_swarm: LiveServer, swarm: SwarmHosts) -> None:
    extra = "  resources: {cpu: 250m, memory: 64Mi}\n"
    resp = post(on_swarm, hello("sized", extra=extra + HEALTH))
    assert resp.status_code == 201, resp.text
    run(on_swarm, "sized", "up", replicas=1)
    client = manager(swarm)
    try:
        resources = client.api.inspect_service(f"{on_swarm.cluster}-sized-1")["Spec"]["TaskTemplate"]["Resources"]
    finally:
        client.close()
    expected = {"NanoCPUs": 250_000_000, "MemoryBytes": 64 * 2**20}
    assert resources == {"Limits": expected, "Reservations": expected}


def test_the_harness_leaves_nothing_behind(testapp_image: str) -> None:
    """A second swarm built and torn down: its namespaces, veths, rules, mounts and processes are gone."""
    if os.geteuid() != 0:
        pytest.fail("needs root", pytrace=False)
    hosts = SwarmHosts(2, images=())
    try:
        hosts.build()
    except SwarmHostsError as exc:
        pytest.fail(f"cannot build a two-host swarm: {exc}", pytrace=False)
    names, veths, slot = [h.name for h in hosts.hosts], [h.veth for h in hosts.hosts], hosts.slot
    root = str(hosts.hosts[0].root.parent)
    hosts.teardown()
    assert not [name for name in names if Path("/var/run/netns", name).exists()]
    assert not [veth for veth in veths if Path("/sys/class/net", veth).exists()]
    assert root not in Path("/proc/mounts").read_text()
    assert not Path(root).exists()
    assert not [pid for pid in Path("/proc").iterdir() if pid.name.isdigit() and root.encode() in _cmdline(pid)]
    rules = subprocess.run(["iptables", "-S", "DOCKER-USER"], capture_output=True, text=True, check=False).stdout
    assert f"orsw{slot}" not in rules
    routes = subprocess.run(["ip", "route"], capture_output=True, text=True, check=False).stdout
    assert f"10.213.{slot}.0/24" not in routes


def _cmdline(pid: Path) -> bytes:
    try:
        return (pid / "cmdline").read_bytes()
    except OSError:
        return b""


def test_a_partitioned_host_loses_its_replicas_to_the_others(on_swarm: LiveServer, swarm: SwarmHosts) -> None:
    """A host cut off the network: Orchestry's probes take its replicas out of rotation at once (GETs keep
    succeeding), its slots are replaced on the hosts that answer, and when it returns nothing is routed to
    the tasks it still ran."""
    register(on_swarm, "survivor")
    run(on_swarm, "survivor", "up", replicas=6)
    wait_for(lambda: healthy(on_swarm, "survivor", 6), 30, 0.2)
    lost = swarm.hosts[2]
    assert running_tasks(swarm, on_swarm.cluster, "survivor").get(lost.name) == 2
    try:
        with proxy_load(on_swarm, "survivor", rps=40) as counts:
            began = time.monotonic()
            swarm.partition(2)
            try:
                took = wait_for(lambda: serving_elsewhere(on_swarm, "survivor", lost.address, 6), 60, 0.2)
                print(f"partition: 6 replicas serving on the other hosts {took:.1f} s after it")
                drained = wait_for(lambda: availability(on_swarm, lost.name) == "drain", 30, 0.2)
                print(f"the lost host drained in Swarm {time.monotonic() - began:.1f} s after the partition")
            finally:
                swarm.partition(2, up=True)
            time.sleep(1)
        print(f"requests ok {counts[0]}, failed {counts[1]} ({time.monotonic() - began:.1f} s)")
        assert counts[1] == 0 and counts[0] > 20, counts
        assert took <= 30 and drained <= 30
        events = on_swarm.http.get("/api/v1/events", params={"type": "host.drained"}).json()["events"]
        assert [e["details"]["address"] for e in events] == [lost.address], events
        # Back on the network: Orchestry activates the host again (a job, once Swarm and its own probe reach it),
        # and until then nothing is routed to the tasks it kept: only the other hosts serve.
        routed_there: list[str] = []

        def activated() -> bool:
            routed_there.extend(a for a in in_rotation(on_swarm, "survivor") if a.startswith(lost.address + ":"))
            return availability(on_swarm, lost.name) == "active"

        back = wait_for(activated, 30, 0.2)
        print(f"the returned host activated again {back:.1f} s after it came back")
        assert routed_there == [], routed_there
        jobs = on_swarm.http.get("/api/v1/jobs", params={"kind": "host-activate"}).json()["jobs"]
        assert [j["status"] for j in jobs] == ["succeeded"] and jobs[0]["args"]["host"] == lost.name, jobs
        events = on_swarm.http.get("/api/v1/events", params={"type": "host.active"}).json()["events"]
        assert [e["details"]["host"] for e in events] == [lost.name], events
        # Its stale tasks are gone from the host itself (the manager stopped them), never routed meanwhile.
        wait_for(lambda: not app_containers(swarm, lost, "survivor"), 15, 0.2)
        replicas = on_swarm.http.get("/api/v1/apps/survivor").json()["replicas"]
        assert len(replicas) == 6 and not [r for r in replicas if r["address"].startswith(lost.address + ":")]
        # It takes replicas again: a scale-out places new ones there, routed once they pass their checks.
        run(on_swarm, "survivor", "scale", replicas=8)
        wait_for(lambda: healthy(on_swarm, "survivor", 8), 30, 0.2)
        assert running_tasks(swarm, on_swarm.cluster, "survivor").get(lost.name, 0) >= 1
        assert [a for a in in_rotation(on_swarm, "survivor") if a.startswith(lost.address + ":")]
        gauges = on_swarm.http.get("/metrics").text
        assert f'orchestry_host_up{{host="{lost.name}"}} 1.0' in gauges
        assert f'orchestry_host_available{{host="{lost.name}"}} 1.0' in gauges
    finally:
        swarm.partition(2, up=True)
        restore_host(swarm, lost)


def in_rotation(server: LiveServer, app: str) -> list[str]:
    """The addresses nginx routes the app to: its routing table, read from its control port."""
    url = f"http://127.0.0.1:{server.env['ORCHESTRY_NGINX_CONTROL_PORT']}/_orchestry/routes"
    table: list[str] = httpx.get(url, timeout=5).json()["apps"].get(app, [])
    return table


def app_containers(swarm: SwarmHosts, host: Any, app: str) -> list[str]:
    """The app's containers still running on one host, as its own engine lists them."""
    return host.docker("ps", "-q", "--filter", f"label=org.orchestry.app={app}").split()


def restore_host(swarm: SwarmHosts, host: Any) -> None:
    """The host active and without Orchestry's drain label, whatever the test left."""
    swarm.manager.docker("node", "update", "--availability", "active", host.node_id)
    with contextlib.suppress(SwarmHostsError):  # no such label: nothing to remove
        swarm.manager.docker("node", "update", "--label-rm", "org.orchestry.drained", host.node_id)


def availability(server: LiveServer, host: str) -> str:
    return next(h["availability"] for h in server.http.get("/api/v1/hosts").json()["hosts"] if h["name"] == host)


def serving_elsewhere(server: LiveServer, app: str, lost: str, count: int) -> bool:
    replicas = server.http.get(f"/api/v1/apps/{app}").json()["replicas"]
    serving = [r for r in replicas if r["state"] == "running" and r["health"] == "healthy"]
    return len(serving) == count and not [r for r in serving if (r["address"] or "").startswith(lost + ":")]


def test_a_private_registry_image_runs_on_every_host_with_the_stored_credentials(
    on_swarm: LiveServer, swarm: SwarmHosts, testapp_image: str
) -> None:
    """The registry listens on the manager's gateway (each host reaches it through the machine); the image is
    pushed there from the manager and removed from it, so every host pulls it with the credentials Orchestry
    stored, handed on by Swarm (`X-Registry-Auth` on the service). Without them the job fails at once."""
    from orchestry.testapp.registry import local_registry

    with local_registry(address=swarm.manager.gateway) as registry:
        repository = f"{registry.server}/orchestry-ci/swarm-{os.getpid()}"
        client = manager(swarm)
        try:
            client.images.get(testapp_image).tag(repository, "1")
            auth = {"username": registry.username, "password": registry.password}
            for event in client.api.push(repository, tag="1", auth_config=auth, stream=True, decode=True):
                assert "error" not in event, event
            client.images.remove(f"{repository}:1")
        finally:
            client.close()
        image = f"{repository}:1"
        assert post(on_swarm, hello("privsw", image=image, extra=HEALTH)).status_code == 201
        began = time.monotonic()
        resp = on_swarm.http.post("/api/v1/apps/privsw/up", json={"replicas": 3})
        failed = on_swarm.wait_job(resp.json()["job"]["id"], timeout=JOB_SECONDS)
        seconds = time.monotonic() - began
        assert failed["status"] == "failed" and failed["error"].startswith(
            f"unauthorized: {registry.server} needs credentials"
        ), failed
        assert seconds < 20 and running_tasks(swarm, on_swarm.cluster, "privsw") == {}, seconds

        login = {"username": registry.username, "password": registry.password}
        # check=false: the registry serves plain HTTP off loopback, which only the engines are told is fine
        stored = on_swarm.http.put(f"/api/v1/registries/{registry.server}", json=login, params={"check": "false"})
        assert stored.status_code == 201, stored.text
        run(on_swarm, "privsw", "up", replicas=3)
        wait_for(lambda: healthy(on_swarm, "privsw", 3), 30, 0.2)
        placed = running_tasks(swarm, on_swarm.cluster, "privsw")
        assert sum(placed.values()) == 3 and len(placed) >= 2, placed  # the workers pulled it too
        print(f"unauthorized on the swarm failed in {seconds:.2f} s; 3 replicas pulled on 3 hosts")
        run(on_swarm, "privsw", "down")


def test_an_operator_drains_a_host_with_no_failed_request_and_activates_it(
    on_swarm: LiveServer, swarm: SwarmHosts
) -> None:
    """`orchestry host drain NAME --wait`: the host is paused, each replica on it replaced on another host (ready
    and routed before the one there drains), then drained in Swarm; under GET and POST load nothing fails.
    `orchestry host activate NAME --wait` lets Swarm place replicas there again. Bad requests: JSON errors."""
    register(on_swarm, "mover")
    run(on_swarm, "mover", "up", replicas=3)
    wait_for(lambda: healthy(on_swarm, "mover", 3), 30, 0.2)
    target = swarm.hosts[1]
    assert running_tasks(swarm, on_swarm.cluster, "mover").get(target.name) == 1  # an empty swarm: 1/1/1
    try:
        with proxy_load(on_swarm, "mover", rps=40, posts=True) as counts:
            began = time.monotonic()
            drained = on_swarm.cli("host", "drain", target.name, "--wait", "--timeout", "90")
            took = time.monotonic() - began
            wait_for(lambda: healthy(on_swarm, "mover", 3), 30, 0.2)
            time.sleep(1)
        print(f"host drained in {took:.1f} s; requests ok {counts[0]}, failed {counts[1]}")
        assert drained.returncode == 0, drained.stdout + drained.stderr
        assert f"pause host {target.name}" in drained.stdout and f"drain host {target.name}" in drained.stdout
        assert "moving replicas off host" in drained.stdout, drained.stdout  # progress while it waits
        assert counts[1] == 0 and counts[0] > 20, counts
        placed = running_tasks(swarm, on_swarm.cluster, "mover")
        assert target.name not in placed and sum(placed.values()) == 3, placed
        assert availability(on_swarm, target.name) == "drain"
        assert not [a for a in in_rotation(on_swarm, "mover") if a.startswith(target.address + ":")]
        events = on_swarm.http.get("/api/v1/events", params={"type": "host.drained"}).json()["events"]
        assert [(e["details"]["host"], e["details"]["why"]) for e in events] == [(target.name, "requested")]
        gauges = on_swarm.http.get("/metrics").text
        assert f'orchestry_host_available{{host="{target.name}"}} 0.0' in gauges
        assert f'orchestry_host_replicas{{host="{target.name}"}} 0.0' in gauges
        # The same again changes nothing; activating brings the host back.
        again = on_swarm.http.post(f"/api/v1/hosts/{target.name}/drain")
        assert again.status_code == 202 and on_swarm.wait_job(again.json()["job"]["id"])["status"] == "succeeded"
        activated = on_swarm.cli("host", "activate", target.name, "--wait")
        assert activated.returncode == 0 and f"activate host {target.name}" in activated.stdout, activated.stdout
        assert availability(on_swarm, target.name) == "active"
        hosts = {h["name"]: h for h in on_swarm.http.get("/api/v1/hosts").json()["hosts"]}
        assert "org.orchestry.drained" not in hosts[target.name]["labels"]
        # Bad requests: JSON errors naming the field, a CLI line and exit != 0.
        missing = on_swarm.http.post("/api/v1/hosts/no-such-host/drain")
        assert missing.status_code == 404 and missing.json()["error"] == "not_found", missing.text
        assert missing.json()["fields"][0]["field"] == "name"
        bad = on_swarm.http.post("/api/v1/hosts/-x/activate")
        assert bad.status_code == 422 and bad.json()["fields"][0]["field"] == "name", bad.text
        cli = on_swarm.cli("host", "drain", "no-such-host")
        assert cli.returncode != 0 and "host 'no-such-host' does not exist" in cli.stderr.splitlines()[0], cli.stderr
    finally:
        restore_host(swarm, target)


def test_a_rollout_under_load_fails_no_request(on_swarm: LiveServer, swarm: SwarmHosts) -> None:
    """A new revision rolls out over the hosts one extra replica at a time, each healthy and routed before an old
    one drains: GET and POST load sees no failure."""
    register(on_swarm, "rolling")
    run(on_swarm, "rolling", "up", replicas=3)
    wait_for(lambda: healthy(on_swarm, "rolling", 3), 30, 0.2)
    with proxy_load(on_swarm, "rolling", rps=40, posts=True) as counts:
        began = time.monotonic()
        resp = post(on_swarm, hello("rolling", extra="  environment: [{name: COLOR, value: green}]\n" + HEALTH))
        assert resp.status_code in (200, 201), resp.text
        body = resp.json()
        job_id = body["results"][0]["job"] if "results" in body else body["job"]["id"]
        job = on_swarm.wait_job(job_id, timeout=JOB_SECONDS)
        took = time.monotonic() - began
        time.sleep(1)
    print(f"rollout of 3 replicas in {took:.1f} s; requests ok {counts[0]}, failed {counts[1]}")
    assert job["status"] == "succeeded", job
    assert counts[1] == 0 and counts[0] > 20, counts
    replicas = on_swarm.http.get("/api/v1/apps/rolling").json()["replicas"]
    assert len(replicas) == 3 and {r["revision"] for r in replicas} == {2}, replicas
    assert sum(running_tasks(swarm, on_swarm.cluster, "rolling").values()) == 3


def test_the_autoscaler_scales_a_swarm_app_out_on_load(on_swarm: LiveServer, swarm: SwarmHosts) -> None:
    """Traffic through nginx above the per-replica target: the autoscaler scales out, and the new replicas, on
    other hosts, join the routing table."""
    policy = (
        "scaling:\n  mode: auto\n  minReplicas: 1\n  maxReplicas: 3\n  targetRPSPerReplica: 10\n"
        "  windowSeconds: 10\n  cooldownSeconds: 5\n  maxScaleOutStep: 2\n"
    )
    health = HEALTH.split("scaling:")[0]
    assert post(on_swarm, hello("surging", extra=health + policy)).status_code == 201
    run(on_swarm, "surging", "up", replicas=1)
    wait_for(lambda: healthy(on_swarm, "surging", 1), 30, 0.2)
    with proxy_load(on_swarm, "surging", rps=40) as counts:
        began = time.monotonic()
        wait_for(lambda: len(in_rotation(on_swarm, "surging")) == 3, 45, 0.2)
        took = time.monotonic() - began
    print(f"autoscaled 1 -> 3 serving in {took:.1f} s; requests ok {counts[0]}, failed {counts[1]}")
    assert counts[1] == 0, counts
    decisions = on_swarm.http.get("/api/v1/apps/surging/scaling/history").json()["decisions"]
    assert decisions and decisions[-1]["direction"] == "out" and "rps" in decisions[-1]["reason"], decisions
    assert len(running_tasks(swarm, on_swarm.cluster, "surging")) >= 2  # on more than one host


def test_a_deposed_leaders_swarm_calls_are_refused(swarm: SwarmHosts, db_url: str) -> None:
    """A job whose fence ran out (its node lost the lease) acts on nothing of the swarm: no service is created,
    no host's availability changes; the same jobs with a valid fence do act."""
    from orchestry.config import load_settings
    from orchestry.jobs.base import Fence, JobContext, NotLeader, Wait
    from orchestry.jobs.converge import converge
    from orchestry.jobs.fenced import FencedRuntime
    from orchestry.jobs.host_activate import host_activate
    from orchestry.jobs.host_drain import host_drain
    from orchestry.models.apps import get_app
    from orchestry.models.db import make_engine, make_sessionmaker
    from orchestry.operations.registration import Submission, register
    from orchestry.runtime.swarm_engine import SwarmEngine
    from orchestry.spec import load_specs

    engine = make_engine(db_url)
    sessions = make_sessionmaker(engine)
    cluster = f"fence{os.getpid()}"
    settings = load_settings({"database_url": db_url, "cluster_name": cluster, "runtime": "swarm"})
    loaded = load_specs(hello("fenced"), "application/yaml").specs[0]
    with sessions.begin() as s:
        register(
            s, Submission("fenced", loaded.normalized, loaded.content_hash, ()), raw="", raw_format="yaml", actor="t"
        )
    with sessions.begin() as s:
        app = get_app(s, "fenced")
        assert app is not None
        app.desired_replicas, app.status = 2, "running"
    swarm_engine = SwarmEngine(base_url=swarm.manager_url)
    target = swarm.hosts[2]

    def context(kind: str, args: dict[str, Any], valid: bool) -> JobContext:
        """The job as its handler sees it. Deposed: the job's own checks pass (it was claimed in its term), but
        the lease ran out since, so the runtime's check right before each Swarm call refuses it."""
        fence = Fence("leader", 1, lambda: time.monotonic() + 60)
        runtime_fence = fence if valid else Fence("leader", 1, lambda: 0.0)
        job = JobContext(
            job_id=0,
            kind=kind,
            app_name="fenced" if kind == "scale" else None,
            args=args,
            attempt=1,
            sessions=sessions,
            runtime=FencedRuntime(swarm_engine, runtime_fence, 0),
            settings=settings,
            fence=fence,
        )
        job.step = lambda name, status="ok", **kw: None  # type: ignore[method-assign]  # no job row here
        return job

    def availability_of(host: str) -> str:
        return next(n.availability for n in swarm_engine.nodes() if n.name == host)

    try:
        for kind, handler, args in (
            ("scale", converge, {}),
            ("host-drain", host_drain, {"host": target.name}),
            ("host-drain", host_drain, {"address": target.address}),
        ):
            with pytest.raises(NotLeader):
                handler(context(kind, args, valid=False))
        assert swarm_engine.list_replicas(cluster) == []
        assert availability_of(target.name) == "active"
        # A valid fence: the same calls act (positive control); then a deposed activate changes nothing.
        host_drain(context("host-drain", {"address": target.address}, valid=True))
        assert availability_of(target.name) == "drain"
        with pytest.raises(NotLeader):
            host_activate(context("host-activate", {"host": target.name}, valid=False))
        assert availability_of(target.name) == "drain"
        host_activate(context("host-activate", {"host": target.name}, valid=True))
        assert availability_of(target.name) == "active"
        with pytest.raises(Wait):  # started, then waits for them to serve (no prober here): the call went through
            converge(context("scale", {}, valid=True))
        assert len(swarm_engine.list_replicas(cluster)) == 2
    finally:
        restore_host(swarm, target)
        for service in swarm_engine._services(cluster):
            swarm_engine._remove(service["ID"])
        swarm_engine.close()
        engine.dispose()
