"""From an app's normalised spec to the request that starts one replica (pure)."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from orchestry.runtime.types import ReplicaRequest, volume_name

REPLICA_HOST = "127.0.0.1"  # replicas publish their port on loopback; nginx reaches them there


def _millicores(cpu: str | None) -> int | None:
    if not cpu:
        return None
    return int(cpu[:-1]) if cpu.endswith("m") else int(float(cpu) * 1000)


def _sdk_value(key: str, app: str, container_port: int | None, replicas: int) -> str:
    return {
        "instance.ip": REPLICA_HOST,
        "instance.port": "" if container_port is None else str(container_port),
        "app.name": app,
        "app.replicas": str(replicas),
    }[key]


def secret_refs(spec: dict[str, Any]) -> dict[str, str]:
    """Env variable -> the secret it reads (`valueFrom: {secret: NAME}`)."""
    return {
        var["name"]: var["valueFrom"]["secret"]
        for var in spec.get("spec", {}).get("environment") or []
        if isinstance(var.get("valueFrom"), dict) and "secret" in var["valueFrom"]
    }


def first_http_port(spec: dict[str, Any]) -> int | None:
    ports = spec.get("spec", {}).get("ports") or []
    http = [p["containerPort"] for p in ports if p.get("protocol", "HTTP") == "HTTP"]
    return http[0] if http else (ports[0]["containerPort"] if ports else None)


def replica_request(
    *,
    cluster: str,
    spec: dict[str, Any],
    slot: int,
    revision: int,
    spec_hash: str,
    replicas: int,
    secrets: Mapping[str, str] | None = None,
) -> ReplicaRequest:
    """`secrets` holds the decrypted value of every secret the spec reads (secret_refs); the caller checked
    that each exists."""
    app = spec["metadata"]["name"]
    body = spec["spec"]
    port = first_http_port(spec)
    env = {}
    for var in body.get("environment") or []:
        if var.get("source") == "sdk":
            env[var["name"]] = _sdk_value(var["key"], app, port, replicas)
        elif "valueFrom" in var:
            env[var["name"]] = (secrets or {})[var["valueFrom"]["secret"]]
        else:
            env[var["name"]] = var.get("value", "")
    resources = body.get("resources") or {}
    millicores = _millicores(resources.get("cpu"))
    placement = spec.get("placement") or {}
    return ReplicaRequest(
        cluster=cluster,
        app=app,
        slot=slot,
        revision=revision,
        spec_hash=spec_hash,
        image=body["image"],
        container_port=port,
        env=env,
        command=tuple(body["command"]) if body.get("command") else None,
        args=tuple(body["args"]) if body.get("args") else None,
        working_dir=body.get("workingDir"),
        volumes=tuple((volume_name(cluster, app, v["name"]), v["mountPath"]) for v in body.get("volumes") or []),
        nano_cpus=millicores * 1_000_000 if millicores else None,
        memory_bytes=resources.get("memory"),
        labels=dict(spec.get("metadata", {}).get("labels") or {}),
        extra_ports=tuple(p["containerPort"] for p in body.get("ports") or [] if p["containerPort"] != port),
        constraints=tuple(placement.get("constraints") or ()),
        spread=placement.get("spread"),
        max_per_node=placement.get("maxReplicasPerNode"),
        stop_grace_seconds=(spec.get("termination") or {}).get("gracePeriodSeconds"),
        init=body.get("init") is True,
    )
