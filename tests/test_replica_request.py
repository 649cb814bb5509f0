"""From a normalised spec to the request that starts one replica (pure)."""

from __future__ import annotations

from orchestry.jobs.replica_request import first_http_port, replica_request
from orchestry.spec import load_specs


def normalized(path: str) -> dict:  # type: ignore[type-arg]
    from conftest import EXAMPLES

    return load_specs((EXAMPLES / path).read_bytes(), "application/yaml").specs[0].normalized


def test_every_field_of_the_full_example_reaches_the_request() -> None:
    spec = normalized("full.yaml")
    req = replica_request(cluster="prod", spec=spec, slot=3, revision=7, spec_hash="sha256:x", replicas=4)
    assert req.name == "prod-shop-api-3"
    assert (req.app, req.slot, req.revision, req.spec_hash) == ("shop-api", 3, 7, "sha256:x")
    assert req.image == spec["spec"]["image"]
    assert req.container_port == 8080  # the first HTTP port, the one nginx routes to
    assert req.command == ("/bin/shop-api",) and req.args == ("--port", "8080", "--metrics-port", "9090")
    assert req.working_dir == "/srv/shop"
    assert req.volumes == (("prod_shop-api_shop-data", "/data"), ("prod_shop-api_shop-cache", "/var/cache/shop"))
    assert req.nano_cpus == 1_500_000_000 and req.memory_bytes == 1024**3
    assert req.env["LOG_LEVEL"] == "info" and req.env["EMPTY"] == ""
    assert req.env["INSTANCE_IP"] == "127.0.0.1" and req.env["INSTANCE_PORT"] == "8080"
    assert req.env["APP_NAME"] == "shop-api" and req.env["APP_REPLICAS"] == "4"
    assert req.labels["tier"] == "backend"


def test_volume_names_do_not_collide_across_apps() -> None:
    """App `va` volume `b-data` and app `va-b` volume `data` once shared `<cluster>-va-b-data`."""
    base = normalized("hello.yaml")

    def volumes(app: str, volume: str) -> tuple[tuple[str, str], ...]:
        spec = {**base, "metadata": {**base["metadata"], "name": app}}
        spec["spec"] = {**base["spec"], "volumes": [{"name": volume, "mountPath": "/data"}]}
        return replica_request(cluster="c", spec=spec, slot=1, revision=1, spec_hash="h", replicas=1).volumes

    assert volumes("va", "b-data") != volumes("va-b", "data")
    assert volumes("va", "b-data") == (("c_va_b-data", "/data"),)


def test_a_worker_publishes_no_port() -> None:
    spec = normalized("worker.yaml")
    req = replica_request(cluster="c", spec=spec, slot=1, revision=1, spec_hash="h", replicas=1)
    assert req.container_port is None and first_http_port(spec) is None


def test_cpu_forms() -> None:
    base = normalized("hello.yaml")
    for cpu, nano in (("250m", 250_000_000), ("2000m", 2_000_000_000), (None, None)):
        spec = {**base, "spec": {**base["spec"], "resources": {"cpu": cpu} if cpu else {}}}
        assert replica_request(cluster="c", spec=spec, slot=1, revision=1, spec_hash="h", replicas=1).nano_cpus == nano
