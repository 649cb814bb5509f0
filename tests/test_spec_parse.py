"""orchestry.spec parsing: YAML 1.2 and JSON bodies, multi-document requests, hostile input."""

from __future__ import annotations

import json

import pytest

from orchestry.spec import SpecParseError, UnsupportedMediaType, load_specs, parse_documents

APP = (
    "apiVersion: v1\nkind: App\nmetadata: {name: %s}\n"
    "spec: {image: orchestry-testapp:latest, ports: [{containerPort: 8080}]}\n"
)


DNS_RULE = "must be a DNS label: lowercase letters, digits and '-', starting and ending with a letter or digit"


def billion_laughs(levels: int = 9) -> str:
    lines = ['a0: &a0 ["lol", "lol", "lol", "lol", "lol", "lol", "lol", "lol", "lol"]']
    for i in range(1, levels):
        refs = ", ".join([f"*a{i - 1}"] * 9)
        lines.append(f"a{i}: &a{i} [{refs}]")
    return "\n".join(lines) + "\n"


@pytest.mark.parametrize(
    ("body", "content_type", "fragment"),
    [
        ("a: [1, 2\n", None, "line 2"),
        ("a: b: c\n", "application/yaml", "line 1, column 5"),
        ("a:\n\tb: 1\n", None, "line 2, column 1"),
        ("a: 1\na: 2\n", None, 'line 2, column 1: found duplicate key "a"'),
        ("a: b\x07\n", None, "special characters"),
        ("a: " + "1" * 5000 + "\n", None, "digits"),
        ("? - b: 1\n", None, "used as a key"),
        ("{", "application/json", "line 1, column 2"),
        ('{"a": 1,\n "b": }', "application/json", "line 2, column 7"),
        ('{"a": 1, "a": 2}', "application/json", 'line 1, column 1: duplicate key "a"'),
        ('{"a": {"b": 1,\n "b": 2}}', "application/json", 'line 1, column 7: duplicate key "b"'),
        ('{"a": NaN}', "application/json", "NaN"),
        ('{"a": Infinity}', "application/json", "Infinity"),
        (b"a: \xff\xfe\n", None, "UTF-8"),
        ("", None, "no document"),
        ("   \n", None, "no document"),
        ("# only a comment\n", None, "no document"),
        ("---\n---\n", None, "no document"),
        ("", "application/json", "no document"),
        ("[]", "application/json", "no document"),
        ("null", "application/json", "no document"),
        (billion_laughs(), None, "more than 10000 nodes"),
        ("a: &a [*a]\n", None, "nested deeper"),
        ("[" * 100 + "]" * 100, None, "nested deeper"),
        ("[" * 1000 + "]" * 1000, None, "nested deeper"),
        ("[" * 5000 + "]" * 5000, "application/json", "nested deeper"),
    ],
    ids=[
        "yaml unclosed",
        "yaml mapping in scalar",
        "yaml tab",
        "yaml duplicate key",
        "yaml control character",
        "yaml huge integer",
        "yaml list of mappings as a key",
        "json unclosed",
        "json missing value",
        "json duplicate key",
        "json nested duplicate key",
        "json NaN",
        "json Infinity",
        "not utf-8",
        "empty",
        "blank",
        "comment only",
        "empty documents",
        "json empty",
        "json empty array",
        "json null",
        "alias bomb",
        "recursive alias",
        "deep nesting",
        "very deep yaml",
        "very deep json",
    ],
)
def test_malformed_bodies(body: str | bytes, content_type: str | None, fragment: str) -> None:
    with pytest.raises(SpecParseError) as info:
        parse_documents(body, content_type)
    assert fragment in str(info.value)
    assert isinstance(info.value, ValueError)


@pytest.mark.parametrize("content_type", ["text/html", "application/xml", "multipart/form-data", "application/toml"])
def test_unsupported_content_type(content_type: str) -> None:
    with pytest.raises(UnsupportedMediaType) as info:
        load_specs(APP % "web", content_type)
    assert "application/json" in str(info.value) and "application/yaml" in str(info.value)
    assert isinstance(info.value, ValueError)


@pytest.mark.parametrize(
    "content_type",
    [
        None,
        "",
        "application/yaml",
        "application/x-yaml",
        "text/yaml",
        "text/x-yaml",
        "text/plain",
        "Application/YAML; charset=utf-8",
    ],
)
def test_yaml_content_types(content_type: str | None) -> None:
    assert load_specs(APP % "web", content_type).ok


def test_json_body_one_object_or_an_array() -> None:
    one = {
        "apiVersion": "v1",
        "kind": "App",
        "metadata": {"name": "a"},
        "spec": {"image": "x", "type": "worker"},
    }
    two = [one, {**one, "metadata": {"name": "b"}}]
    assert len(parse_documents(json.dumps(one), "application/json; charset=utf-8")) == 1
    result = load_specs(json.dumps(two).encode(), "application/json")
    assert result.ok and [s.spec.metadata.name for s in result.specs] == ["a", "b"]


def test_json_bodies_are_json_only() -> None:
    with pytest.raises(SpecParseError):
        parse_documents(APP % "web", "application/json")


def test_byte_order_mark_is_ignored() -> None:
    assert load_specs(b"\xef\xbb\xbf" + (APP % "web").encode(), None).ok


def test_yaml_1_2_keeps_strings_as_written() -> None:
    (doc,) = parse_documents("a: no\nb: 22:22\nc: on\nd: yes\ne: 0o17\nf: 1.10\n", None)
    assert doc == {"a": "no", "b": "22:22", "c": "on", "d": "yes", "e": 15, "f": 1.1}
    body = (APP % "web").replace("spec: {", "spec: {environment: [{name: A, value: no}, {name: B, value: 22:22}], ")
    (loaded,) = load_specs(body, None).specs
    assert [e.value for e in loaded.spec.spec.environment] == ["no", "22:22"]


def test_unquoted_version_label_is_refused_with_a_hint() -> None:
    body = APP.replace("metadata: {name: %s}", "metadata: {name: web, labels: {version: 1.10}}")
    result = load_specs(body, None)
    assert [e.message for e in result.errors] == [
        "metadata.labels.version: must be a string; quote numbers and booleans"
    ]


def test_non_finite_numbers_are_field_errors() -> None:
    body = APP % "web" + "scaling: {windowSeconds: .inf, targetRPSPerReplica: .nan}\nresources: 1\n"
    body += "termination: {drainSeconds: -.inf}\n"
    result = load_specs(body, None)
    assert {e.message for e in result.errors} == {
        "scaling.windowSeconds: must be a finite number",
        "scaling.targetRPSPerReplica: must be a finite number",
        "termination.drainSeconds: must be a finite number",
    }
    assert [w.path for w in result.warnings] == ["resources"]
    huge = load_specs(json.dumps({"x": 1}).replace("1", "1e400"), "application/json")
    assert [e.path for e in huge.errors][:1] == ["apiVersion"]


def test_yaml_specific_values_are_type_errors() -> None:
    body = (APP % "web") + "scaling: {minReplicas: yes, maxReplicas: 2024-01-01}\n"
    body = body.replace("spec: {", "spec: {command: [!!binary aGk=], ")
    result = load_specs(body, None)
    assert {e.message for e in result.errors} == {
        "scaling.minReplicas: must be an integer",
        "scaling.maxReplicas: must be an integer",
        "spec.command[0]: must be a string",
    }


def test_multi_document_with_empty_documents() -> None:
    body = "---\n" + APP % "a" + "---\n# nothing\n---\n" + APP % "b" + "...\n"
    result = load_specs(body, "application/x-yaml")
    assert result.ok and [s.spec.metadata.name for s in result.specs] == ["a", "b"]


def test_multi_document_duplicate_names() -> None:
    body = APP % "a" + "---\n" + APP % "b" + "---\n" + APP % "a"
    result = load_specs(body, None)
    assert not result.ok
    assert [(e.document, e.message) for e in result.errors] == [(2, "metadata.name: duplicate name in this request")]
    assert [s.spec.metadata.name for s in result.specs] == ["a", "b"]


def test_errors_of_every_document_are_reported() -> None:
    body = (APP % "Bad") + "---\n" + APP % "good" + "---\n- not a mapping\n---\n" + (APP % "x") + "extra: 1\n"
    result = load_specs(body, None)
    assert [(e.document, e.message) for e in result.errors] == [
        (0, "metadata.name: " + DNS_RULE),
        (2, "<document>: must be a mapping"),
    ]
    assert [(w.document, w.message) for w in result.warnings] == [(3, "extra: unknown field, ignored")]
    assert [s.spec.metadata.name for s in result.specs] == ["good", "x"]
    assert result.specs[1].warnings == result.warnings


@pytest.mark.parametrize(
    ("text", "path"),
    [('"a\\u0000b"', "spec.image"), ('"\\ud800"', "spec.image")],
    ids=["NUL", "lone surrogate"],
)
def test_unstorable_strings_are_refused(text: str, path: str) -> None:
    body = '{"apiVersion": "v1", "kind": "App", "metadata": {"name": "a"}, '
    body += '"spec": {"type": "worker", "image": %s}}'
    result = load_specs(body % text, "application/json")
    assert [e.path for e in result.errors] == [path]
