"""Private registries, the pure part: an image's registry as Docker finds it, server names, pull errors."""

from __future__ import annotations

import pytest

from orchestry.workflows.registry import (
    NOT_FOUND,
    OTHER,
    UNAUTHORIZED,
    Challenge,
    InvalidServer,
    check_password,
    check_server,
    check_username,
    parse_challenge,
    pull_failure,
    pull_summary,
    registry_of,
    registry_urls,
    token_request,
)


@pytest.mark.parametrize(
    ("image", "registry"),
    [
        ("nginx", "docker.io"),
        ("nginx:1.25", "docker.io"),
        ("library/nginx:1.25", "docker.io"),
        ("team/app:1", "docker.io"),  # no '.', ':' or localhost in the first component: a Hub namespace
        ("docker.io/team/app:1", "docker.io"),
        ("index.docker.io/team/app", "docker.io"),
        ("registry.example.com/team/app:1", "registry.example.com"),
        ("Registry.Example.com/app", "registry.example.com"),
        ("127.0.0.1:5000/app:1", "127.0.0.1:5000"),
        ("localhost/app", "localhost"),
        ("localhost:5000/a/b/c:2", "localhost:5000"),
        ("reg:5000/app@sha256:" + "a" * 64, "reg:5000"),
        ("[::1]:5000/app", "[::1]:5000"),
        ("sha256:" + "b" * 64, "docker.io"),
    ],
)
def test_registry_of_follows_dockers_rule(image: str, registry: str) -> None:
    assert registry_of(image) == registry


@pytest.mark.parametrize(
    ("server", "normal"),
    [
        ("registry.example.com", "registry.example.com"),
        ("Registry.Example.COM:443", "registry.example.com:443"),
        ("127.0.0.1:5000", "127.0.0.1:5000"),
        ("localhost", "localhost"),
        ("[::1]:5000", "[::1]:5000"),
        ("[fe80::1]", "[fe80::1]"),
        ("index.docker.io", "docker.io"),
        ("a" * 63 + "." + "b" * 60, "a" * 63 + "." + "b" * 60),
    ],
)
def test_valid_servers(server: str, normal: str) -> None:
    assert check_server(server) == normal


@pytest.mark.parametrize(
    ("server", "rule"),
    [
        ("", "empty"),
        ("https://registry.example.com", "scheme"),
        ("registry.example.com/team", "path"),
        ("registry.example.com:", "port"),
        ("registry.example.com:0", "port"),
        ("registry.example.com:65536", "port"),
        ("registry.example.com:http", "port"),
        ("-bad.example.com", "host"),
        ("bad-.example.com", "host"),
        ("under_score.example.com", "host"),
        ("a..b", "host"),
        ("spa ce", "host"),
        ("[::1", "IPv6"),
        ("[nope]:5000", "IPv6"),
        ("[::1]5000", "IPv6"),
        ("a" * 64 + ".com", "host"),
        ("a." * 130 + "com", "at most 255"),
    ],
)
def test_invalid_servers_name_the_rule(server: str, rule: str) -> None:
    with pytest.raises(InvalidServer, match=rule):
        check_server(server)


@pytest.mark.parametrize(
    ("username", "refused"),
    [("ci-bot", None), ("", "empty"), ("a:b", "':'"), ("a\nb", "control"), ("x" * 256, "at most 255")],
)
def test_usernames(username: str, refused: str | None) -> None:
    why = check_username(username)
    assert (why is None) if refused is None else (why is not None and refused in why)


@pytest.mark.parametrize(
    ("password", "refused"),
    [("pä:ss word", None), ("", "empty"), ("secret\n", "control"), ("x" * 8193, "at most 8192")],
)
def test_passwords(password: str, refused: str | None) -> None:
    why = check_password(password)
    assert (why is None) if refused is None else (why is not None and refused in why)


IMG = "127.0.0.1:5000/team/app:1"


@pytest.mark.parametrize(
    ("error", "authenticated", "kind", "says"),
    [
        # The engine's words for Distribution's answers (docker 20.10 relaying registry 2.8).
        (
            'Head "http://127.0.0.1:5000/v2/team/app/manifests/1": no basic auth credentials',
            False,
            UNAUTHORIZED,
            "unauthorized: 127.0.0.1:5000 needs credentials (pulling 127.0.0.1:5000/team/app:1); "
            "`orchestry registry login 127.0.0.1:5000`",
        ),
        (
            'Head "http://127.0.0.1:5000/v2/team/app/manifests/1": unauthorized: authentication required',
            True,
            UNAUTHORIZED,
            "unauthorized: wrong credentials for 127.0.0.1:5000 (pulling 127.0.0.1:5000/team/app:1)",
        ),
        ("get-token: denied: access forbidden", True, UNAUTHORIZED, "wrong credentials for 127.0.0.1:5000"),
        (
            "manifest for 127.0.0.1:5000/team/app:1 not found: manifest unknown: manifest unknown",
            True,
            NOT_FOUND,
            "image not found: 127.0.0.1:5000/team/app:1 (127.0.0.1:5000 has no such repository or tag)",
        ),
        ("repository name not known to registry: name unknown", True, NOT_FOUND, "image not found"),
        (
            "pull access denied for team/app, repository does not exist or may require 'docker login'",
            False,
            NOT_FOUND,
            "or 127.0.0.1:5000 needs credentials",
        ),
        (
            'Get "https://127.0.0.1:5000/v2/": dial tcp 127.0.0.1:5000: connect: connection refused',
            True,
            OTHER,
            "is not available locally and could not be pulled: Get",
        ),
    ],
)
def test_pull_failures_say_what_to_do(error: str, authenticated: bool, kind: str, says: str) -> None:
    failure = pull_failure(IMG, error, authenticated=authenticated)
    assert failure.kind == kind
    assert says in failure.message


@pytest.mark.parametrize(
    ("args", "line"),
    [
        ((3, 2, 1_234_567, 0.84), "3 layers (2 downloaded, 1.2 MB) in 0.8 s"),
        ((1, 1, 900, 0.05), "1 layer (1 downloaded, 900 B) in 0.1 s"),
        ((2, 0, 0, 0.2), "2 layers (none downloaded) in 0.2 s"),
        ((0, 0, 0, 0.31), "nothing to download (its layers were on the host) in 0.3 s"),
    ],
)
def test_pull_summary(args: tuple[int, int, int, float], line: str) -> None:
    assert pull_summary(*args) == line


@pytest.mark.parametrize(
    ("server", "urls"),
    [
        ("registry.example.com:5000", ("https://registry.example.com:5000/v2/",)),
        ("docker.io", ("https://registry-1.docker.io/v2/",)),  # Docker Hub's API lives there
        ("127.0.0.1:5000", ("https://127.0.0.1:5000/v2/", "http://127.0.0.1:5000/v2/")),  # loopback: insecure too
        ("localhost:5000", ("https://localhost:5000/v2/", "http://localhost:5000/v2/")),
        ("[::1]:5000", ("https://[::1]:5000/v2/", "http://[::1]:5000/v2/")),
        ("10.0.0.5:5000", ("https://10.0.0.5:5000/v2/",)),  # only the engine knows it is insecure: --no-check
    ],
)
def test_registry_urls(server: str, urls: tuple[str, ...]) -> None:
    assert registry_urls(server) == urls


@pytest.mark.parametrize(
    ("header", "challenge"),
    [
        ('Basic realm="orchestry-test"', Challenge("basic", {"realm": "orchestry-test"})),
        (
            'Bearer realm="https://auth.docker.io/token",service="registry.docker.io"',
            Challenge("bearer", {"realm": "https://auth.docker.io/token", "service": "registry.docker.io"}),
        ),
        (
            'bearer Realm="https://a/t", service=reg, scope="x"',
            Challenge("bearer", {"realm": "https://a/t", "service": "reg", "scope": "x"}),
        ),
        ('Bearer realm="a \\"quoted\\" realm"', Challenge("bearer", {"realm": 'a "quoted" realm'})),
        ("Negotiate abc", None),
        ("", None),
        (None, None),
    ],
)
def test_parse_challenge(header: str | None, challenge: Challenge | None) -> None:
    assert parse_challenge(header) == challenge


def test_token_request() -> None:
    bearer = Challenge("bearer", {"realm": "https://auth.example.com/token", "service": "reg"})
    assert token_request(bearer, "ci") == (
        "https://auth.example.com/token",
        {"account": "ci", "client_id": "orchestry", "service": "reg"},
    )
    assert token_request(Challenge("bearer", {"realm": "ftp://x/token"}), "ci") is None
    assert token_request(Challenge("bearer", {}), "ci") is None
