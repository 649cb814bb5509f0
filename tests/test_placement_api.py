"""`placement` in a spec: validated field by field, and refused on the docker runtime (one host: nothing to
place), accepted on the swarm runtime. `/api/v1/hosts` is the swarm runtime's; the docker runtime says so."""

from __future__ import annotations

from typing import Any

import pytest

from orchestry.config import load_settings
from orchestry.models.db import make_engine
from orchestry.web.app import create_app

SPEC = """\
apiVersion: v1
kind: App
metadata: {{name: pinned}}
spec:
  image: orchestry-testapp:latest
  ports: [{{containerPort: 8080}}]
placement: {placement}
"""


def client(db_url: str, runtime: str) -> Any:
    app = create_app(load_settings({"database_url": db_url, "node_id": "n1", "runtime": runtime}), make_engine(db_url))
    return app.test_client()


def register(api: Any, placement: str) -> Any:
    return api.post("/api/v1/apps", data=SPEC.format(placement=placement), content_type="application/yaml")


def test_placement_is_refused_on_the_docker_runtime_naming_the_field(db_url: str) -> None:
    resp = register(client(db_url, "docker"), "{constraints: ['node.labels.zone==a']}")
    body = resp.get_json()
    assert resp.status_code == 422, body
    assert [f["field"] for f in body["fields"]] == ["placement"]
    assert "swarm runtime" in body["fields"][0]["rule"]
    assert "placement: needs the swarm runtime" in body["detail"]


def test_a_spec_without_placement_registers_on_the_docker_runtime(db_url: str) -> None:
    api = client(db_url, "docker")
    resp = api.post("/api/v1/apps", data=SPEC.split("placement")[0].format(), content_type="application/yaml")
    assert resp.status_code == 201, resp.get_json()
    assert "placement" not in api.get("/api/v1/apps/pinned/spec").get_json()["spec"]


def test_placement_is_stored_on_the_swarm_runtime(db_url: str) -> None:
    api = client(db_url, "swarm")
    placement = (
        "{constraints: ['node.labels.zone==a', 'node.role != manager'], spread: node.labels.zone, "
        "maxReplicasPerNode: 2}"
    )
    resp = register(api, placement)
    assert resp.status_code == 201, resp.get_json()
    assert api.get("/api/v1/apps/pinned/spec").get_json()["spec"]["placement"] == {
        "constraints": ["node.labels.zone==a", "node.role != manager"],
        "spread": "node.labels.zone",
        "maxReplicasPerNode": 2,
    }


@pytest.mark.parametrize(
    ("placement", "field", "rule"),
    [
        ("{constraints: ['zone=a']}", "placement.constraints[0]", "must be a Swarm constraint"),
        ("{constraints: ['node.labels.zone==']}", "placement.constraints[0]", "must be a Swarm constraint"),
        ("{constraints: ['node.colour==red']}", "placement.constraints[0]", "must be a Swarm constraint"),
        ("{constraints: 'node.role==worker'}", "placement.constraints", "list"),
        ("{spread: zone}", "placement.spread", "node.labels.<key>"),
        ("{spread: node.hostname}", "placement.spread", "node.labels.<key>"),
        ("{maxReplicasPerNode: 0}", "placement.maxReplicasPerNode", ">= 1"),
        ("{maxReplicasPerNode: true}", "placement.maxReplicasPerNode", "integer"),
    ],
)
def test_bad_placement_names_the_field_and_the_rule(db_url: str, placement: str, field: str, rule: str) -> None:
    resp = register(client(db_url, "swarm"), placement)
    body = resp.get_json()
    assert resp.status_code == 422, body
    assert [f["field"] for f in body["fields"]] == [field]
    assert rule in body["fields"][0]["rule"]


def test_hosts_are_the_swarm_runtimes(db_url: str) -> None:
    resp = client(db_url, "docker").get("/api/v1/hosts")
    assert resp.status_code == 409
    assert resp.get_json()["error"] == "not_swarm"
