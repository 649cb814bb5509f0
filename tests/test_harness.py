"""The test harness itself: the automatic `live` marker, and missing dependencies failing instead of skipping."""

from __future__ import annotations

import pytest

import conftest

LIVE_FIXTURES = ("pretend_engine",)  # a module's own live fixture, beside conftest's


@pytest.fixture
def pretend_engine() -> str:
    return "engine"


@pytest.fixture
def through_another(pretend_engine: str) -> str:
    return pretend_engine


def test_a_test_without_live_fixtures_is_unit(request: pytest.FixtureRequest) -> None:
    assert request.node.get_closest_marker("live") is None


def test_a_modules_own_live_fixture_marks_the_test_live(request: pytest.FixtureRequest, pretend_engine: str) -> None:
    assert request.node.get_closest_marker("live") is not None


def test_a_live_fixture_used_through_another_marks_the_test_live(
    request: pytest.FixtureRequest, through_another: str
) -> None:
    assert request.node.get_closest_marker("live") is not None


def test_the_conftest_live_fixtures_are_declared() -> None:
    assert {"live", "live_server", "testapp_image", "docker_required", "nginx_required"} <= conftest.live_fixtures_of(
        None
    )
    assert "pretend_engine" in conftest.live_fixtures_of(__import__(__name__))


def test_missing_nginx_fails_the_test_with_what_to_install(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(conftest, "nginx_missing", lambda: ["/usr/sbin/nginx"])
    with pytest.raises(pytest.fail.Exception, match=r"missing: /usr/sbin/nginx\); apt-get install nginx"):
        conftest.require_nginx()
    monkeypatch.setattr(conftest, "nginx_missing", lambda: [])
    conftest.require_nginx()  # positive control: nothing missing, nothing raised


def test_an_engine_that_does_not_answer_fails_the_test(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(conftest, "_docker", None)
    monkeypatch.setenv("DOCKER_HOST", "tcp://127.0.0.1:9")  # the discard port: nothing answers
    with pytest.raises(pytest.fail.Exception, match="needs a Docker engine and none answers"):
        conftest.require_docker()
