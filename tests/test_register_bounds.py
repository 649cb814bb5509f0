"""Registration bounds: each app stores its own document, the work of one request is bounded, and image
references Docker would read as an ID prefix never get past validation (issue 11, "Data")."""

from __future__ import annotations

import json
import time

import pytest

from orchestry.spec import SpecTooLarge, load_specs
from orchestry.spec.parse import MAX_DOCUMENTS, MAX_NODES, parse_documents_with_text

from conftest import LiveServer, assert_error, hello, post, snapshot


def test_each_app_of_a_multi_document_body_stores_its_own_text(live: LiveServer) -> None:
    first, second = hello("multi-a"), "---\n# the second one\n" + hello("multi-b")
    resp = post(live, first + second)
    assert resp.status_code == 201, resp.text
    raw_a = live.http.get("/api/v1/apps/multi-a/spec", params={"raw": "true"}).text
    raw_b = live.http.get("/api/v1/apps/multi-b/spec", params={"raw": "true"}).text
    assert raw_a == first
    assert raw_b == second
    assert "multi-b" not in raw_a and "multi-a" not in raw_b


def test_json_list_items_store_their_own_text(live: LiveServer) -> None:
    docs = [json.loads(json.dumps(_doc(name))) for name in ("jl-a", "jl-b")]
    resp = post(live, json.dumps(docs), "application/json")
    assert resp.status_code == 201, resp.text
    raw = live.http.get("/api/v1/apps/jl-b/spec", params={"raw": "true"})
    assert json.loads(raw.text) == docs[1]


def test_too_many_documents_are_refused_and_nothing_is_stored(live: LiveServer) -> None:
    before = snapshot(live)
    body = "".join("---\n" + hello(f"many-{i}") for i in range(MAX_DOCUMENTS + 1))
    out = assert_error(post(live, body), 413, "payload_too_large")
    assert f"at most {MAX_DOCUMENTS}" in out["detail"] or f"more than {MAX_DOCUMENTS}" in out["detail"]
    out = assert_error(
        post(live, json.dumps([_doc(f"j{i}") for i in range(MAX_DOCUMENTS + 1)]), "application/json"), 413
    )
    assert f"at most {MAX_DOCUMENTS}" in out["detail"]
    assert snapshot(live) == before


def test_a_huge_yaml_list_is_refused_early(live: LiveServer) -> None:
    before = snapshot(live)
    out = assert_error(post(live, "- 1\n" * 100_001), 413, "payload_too_large")
    assert f"more than {MAX_NODES} nodes" in out["detail"]
    assert snapshot(live) == before


def test_the_cpu_spent_before_refusing_a_huge_list_is_bounded() -> None:
    """Measured: 3.6 s of CPU before the node budget moved into the composer, about 0.5 s after."""
    started = time.process_time()
    with pytest.raises(SpecTooLarge, match=f"more than {MAX_NODES} nodes"):
        parse_documents_with_text("- 1\n" * 100_001, "application/yaml")
    assert time.process_time() - started < 2.0  # 0.5 s measured idle; a loaded machine inflates it


def test_a_hundred_documents_are_accepted() -> None:
    body = "".join("---\n" + hello(f"ok-{i}") for i in range(MAX_DOCUMENTS))
    result = load_specs(body, "application/yaml")
    assert result.ok and len(result.specs) == MAX_DOCUMENTS
    assert result.specs[7].raw == "---\n" + hello("ok-7")


@pytest.mark.parametrize("image", ["0", "deadbeef", "sha256:0", "a" * 64])
def test_an_image_by_short_id_is_refused_at_registration(live: LiveServer, image: str) -> None:
    before = snapshot(live)
    out = assert_error(post(live, hello("shortid", image=json.dumps(image))), 422, "invalid_spec")
    assert [f["field"] for f in out["fields"]] == ["spec.image"]
    assert "repository name" in out["fields"][0]["rule"]
    assert snapshot(live) == before


def _doc(name: str) -> dict[str, object]:
    return {
        "apiVersion": "v1",
        "kind": "App",
        "metadata": {"name": name},
        "spec": {"image": "orchestry-testapp:latest", "ports": [{"containerPort": 8080}]},
    }
