"""/api/v1/registries: credentials stored sealed, never returned, operators only, every field checked."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import select
from sqlalchemy.orm import Session

from orchestry.config import load_settings
from orchestry.config.secretbox import SecretBox
from orchestry.models.db import make_engine
from orchestry.models.registries import RegistryCredential
from orchestry.models.tokens import create_token
from orchestry.testapp.ports import free_port
from orchestry.web.app import create_app

from conftest import TEST_SECRET_KEY

PASSWORD = "pA55-w0rd-4e1b7c"
SERVER = "127.0.0.1:5000"


@pytest.fixture
def api(db_url: str, tmp_path: Path) -> Any:
    settings = load_settings(
        {"database_url": db_url, "node_id": "n1", "data_dir": str(tmp_path), "secret_key": TEST_SECRET_KEY}
    )
    return create_app(settings, make_engine(db_url)).test_client()


def _error(resp: Any, status: int) -> dict[str, Any]:
    assert resp.status_code == status, resp.get_data(as_text=True)
    body: dict[str, Any] = resp.get_json()
    assert set(body) == {"error", "detail", "fields"}
    return body


def test_login_list_logout_never_return_the_password(api: Any, db_url: str) -> None:
    created = api.put(f"/api/v1/registries/{SERVER}?check=false", json={"username": "ci", "password": PASSWORD})
    assert created.status_code == 201, created.get_data(as_text=True)
    assert created.headers["Location"] == f"/api/v1/registries/{SERVER}"
    assert created.get_json()["server"] == SERVER and created.get_json()["username"] == "ci"
    replaced = api.put(f"/api/v1/registries/{SERVER}?check=false", json={"username": "ci2", "password": PASSWORD + "x"})
    assert replaced.status_code == 200 and "Location" not in replaced.headers
    listed = api.get("/api/v1/registries").get_json()
    assert [(r["server"], r["username"]) for r in listed["registries"]] == [(SERVER, "ci2")]
    events = api.get("/api/v1/events").get_json()["events"]
    assert {"registry.login"} <= {e["type"] for e in events}
    for text in (created.get_data(as_text=True), replaced.get_data(as_text=True), json.dumps(listed)):
        assert PASSWORD not in text and "password" not in text
    assert PASSWORD not in json.dumps(events)

    engine = make_engine(db_url)
    with Session(engine) as session:  # sealed with the secrets key: the stored text is not the password
        row = session.scalars(select(RegistryCredential)).one()
    engine.dispose()
    assert PASSWORD not in row.password_ciphertext
    assert SecretBox(TEST_SECRET_KEY).open(row.password_ciphertext) == PASSWORD + "x"

    assert api.delete(f"/api/v1/registries/{SERVER}").status_code == 204
    assert api.get("/api/v1/registries").get_json() == {"registries": []}
    _error(api.delete(f"/api/v1/registries/{SERVER}"), 404)
    assert "registry.logout" in {e["type"] for e in api.get("/api/v1/events").get_json()["events"]}


def test_servers_are_normalised(api: Any) -> None:
    assert (
        api.put(
            "/api/v1/registries/Reg.Example.COM:443?check=false", json={"username": "u", "password": "p"}
        ).status_code
        == 201
    )
    assert [r["server"] for r in api.get("/api/v1/registries").get_json()["registries"]] == ["reg.example.com:443"]
    assert api.delete("/api/v1/registries/REG.example.com:443").status_code == 204


@pytest.mark.parametrize(
    ("server", "body", "status", "field", "rule"),
    [
        ("https:", {"username": "u", "password": "p"}, 422, "server", "port"),
        ("bad_host", {"username": "u", "password": "p"}, 422, "server", "host"),
        ("reg.example.com:99999", {"username": "u", "password": "p"}, 422, "server", "65535"),
        ("a" * 255, {"username": "u", "password": "p"}, 422, "server", "host"),
        (SERVER, {"username": "", "password": "p"}, 422, "username", "empty"),
        (SERVER, {"username": "a:b", "password": "p"}, 422, "username", "':'"),
        (SERVER, {"username": "u", "password": ""}, 422, "password", "empty"),
        (SERVER, {"username": "u", "password": "x" * 8193}, 422, "password", "8192"),
        (SERVER, {"username": "u", "password": "p\n"}, 422, "password", "control"),
        (SERVER, {"username": "u", "password": 5}, 422, "password", "string"),
        (SERVER, {"username": "u"}, 422, "password", "required"),
        (SERVER, {"username": "u", "password": "p", "email": "x"}, 422, "email", "unknown"),
    ],
)
def test_bad_input_names_the_field(api: Any, server: str, body: Any, status: int, field: str, rule: str) -> None:
    err = _error(api.put(f"/api/v1/registries/{server}?check=false", json=body), status)
    assert err["fields"] and err["fields"][0]["field"] == field, err
    assert rule in err["fields"][0]["rule"], err
    assert api.get("/api/v1/registries").get_json() == {"registries": []}


def test_a_scheme_or_path_never_reaches_a_stored_row(api: Any) -> None:
    # A path in the server is another URL (404); a scheme's "//" too: neither stores anything.
    for path in ("/api/v1/registries/https://reg.example.com", "/api/v1/registries/reg.example.com/team"):
        assert api.put(path, json={"username": "u", "password": "p"}).status_code in (404, 405)
    assert api.get("/api/v1/registries").get_json() == {"registries": []}


def test_viewers_see_no_registries_and_cannot_log_in(api: Any, db_url: str) -> None:
    engine = make_engine(db_url)
    with Session(engine) as session, session.begin():
        _, viewer = create_token(session, "reader", "viewer")
        _, operator = create_token(session, "deployer", "operator")
    engine.dispose()
    as_viewer = {"Authorization": f"Bearer {viewer}"}
    as_operator = {"Authorization": f"Bearer {operator}"}
    body = {"username": "u", "password": PASSWORD}
    _error(api.put(f"/api/v1/registries/{SERVER}?check=false", json=body), 401)
    _error(api.put(f"/api/v1/registries/{SERVER}?check=false", json=body, headers=as_viewer), 403)
    assert api.put(f"/api/v1/registries/{SERVER}?check=false", json=body, headers=as_operator).status_code == 201
    _error(api.get("/api/v1/registries", headers=as_viewer), 403)
    _error(api.delete(f"/api/v1/registries/{SERVER}", headers=as_viewer), 403)
    listed = api.get("/api/v1/registries", headers=as_operator).get_json()
    assert listed["registries"][0]["updated_by"] == "token:deployer"


def test_a_registry_that_does_not_answer_stores_nothing(api: Any) -> None:
    """The login is checked with the registry first (tests/test_private_registry.py has the real one)."""
    nobody = f"127.0.0.1:{free_port()}"
    err = _error(api.put(f"/api/v1/registries/{nobody}", json={"username": "u", "password": PASSWORD}), 422)
    assert err["error"] == "registry_unreachable" and err["fields"][0]["field"] == "server", err
    assert err["detail"].startswith("server: no registry answered (") and "check=false" in err["detail"]
    assert api.get("/api/v1/registries").get_json() == {"registries": []}
    unchecked = api.put(f"/api/v1/registries/{nobody}?check=false", json={"username": "u", "password": PASSWORD})
    assert unchecked.status_code == 201
