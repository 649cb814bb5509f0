"""Correctness of the API (issue 11): Idempotency-Key scope, duplicate keys, header values, labels."""

from __future__ import annotations

from typing import Any

import httpx
import pytest

from orchestry.web import idempotency as idem

from conftest import LiveServer, assert_error, hello, post


def _post(live: LiveServer, path: str, body: Any = None, key: str | bytes | None = None) -> httpx.Response:
    headers = {} if key is None else {"Idempotency-Key": key}
    return live.http.post(f"/api/v1/apps/{path}", json=body, headers=headers)


def test_an_idempotency_key_is_scoped_to_the_app_and_operation(live: LiveServer) -> None:
    for name in ("idem-a", "idem-b"):
        assert post(live, hello(name)).status_code == 201
    first = _post(live, "idem-a/down", key="k-1")
    assert first.status_code == 202 and first.json()["created"] is True
    other_app = _post(live, "idem-b/down", key="k-1")
    assert other_app.status_code == 202, other_app.text
    assert other_app.json()["created"] is True and other_app.json()["job"]["app"] == "idem-b"
    other_op = _post(live, "idem-a/scale", {"replicas": 0}, key="k-1")
    assert other_op.status_code == 202, other_op.text
    assert other_op.json()["job"]["kind"] == "scale"
    assert len({r.json()["job"]["id"] for r in (first, other_app, other_op)}) == 3


def test_the_same_key_with_another_request_is_refused(live: LiveServer) -> None:
    assert post(live, hello("idem-c")).status_code == 201
    first = _post(live, "idem-c/scale", {"replicas": 0}, key="k-2")
    assert first.status_code == 202
    err = assert_error(_post(live, "idem-c/scale", {"replicas": 1}, key="k-2"), 422)
    assert err["fields"][0]["field"] == "Idempotency-Key" and "different request" in err["fields"][0]["rule"]
    again = _post(live, "idem-c/scale", {"replicas": 0}, key="k-2")
    assert again.status_code == 202 and again.json()["created"] is False
    assert again.json()["job"]["id"] == first.json()["job"]["id"]
    assert again.headers["Location"] == first.headers["Location"]
    # Nothing was changed by the refused request.
    assert live.http.get("/api/v1/apps/idem-c").json()["desired_replicas"] == 0


@pytest.mark.parametrize("key", ["", "x" * 129, "caf\u00e9".encode("latin-1"), "tab\there"])
def test_malformed_idempotency_keys_are_400(live: LiveServer, key: str | bytes) -> None:
    assert post(live, hello("idem-d")).status_code == 201
    err = assert_error(_post(live, "idem-d/down", key=key), 400)
    assert err["fields"][0]["field"] == "Idempotency-Key"
    assert err["fields"][0]["rule"] == "must be 1-128 printable ASCII characters"


@pytest.mark.parametrize(
    ("key", "problem"),
    [
        ("a", None),
        ("x" * 128, None),
        ("order-42 retry #1 ~", None),
        ("", idem.RULE),
        ("x" * 129, idem.RULE),
        ("caf\u00e9", idem.RULE),
        ("new\nline", idem.RULE),
        ("\x7f", idem.RULE),
    ],
)
def test_key_problem(key: str, problem: str | None) -> None:
    assert idem.key_problem(key) == problem


def test_scope_and_fingerprint_are_functions_of_every_part() -> None:
    base = idem.scoped_key("POST", "/api/v1/apps/a/up", "alice", "k")
    assert base == idem.scoped_key("post", "/api/v1/apps/a/up", "alice", "k")
    for other in (
        idem.scoped_key("POST", "/api/v1/apps/b/up", "alice", "k"),
        idem.scoped_key("POST", "/api/v1/apps/a/down", "alice", "k"),
        idem.scoped_key("POST", "/api/v1/apps/a/up", "bob", "k"),
        idem.scoped_key("DELETE", "/api/v1/apps/a/up", "alice", "k"),
    ):
        assert other != base
    assert len(base) <= 128
    fp = idem.fingerprint("DELETE", "/a", [("force", "true"), ("x", "1")], b"")
    assert fp == idem.fingerprint("DELETE", "/a", [("x", "1"), ("force", "true")], b"")
    assert fp != idem.fingerprint("DELETE", "/a", [], b"")
    assert idem.fingerprint("POST", "/a", [], b'{"replicas":1}') != idem.fingerprint(
        "POST", "/a", [], b'{"replicas":2}'
    )
