"""`orchestry scaling NAME`: the policy in force and the decisions that changed the replica count;
`--set key=value` changes the policy (the API validates it and names any field it refuses)."""

from __future__ import annotations

import argparse
import json
from typing import Any

from orchestry.cli.apps import _client
from orchestry.cli.client import CliError
from orchestry.cli.output import ago, print_json, table
from orchestry.config import Settings
from orchestry.workflows.scaling import policy_from_spec, scales_to_zero


def _value(text: str) -> Any:
    """`8` -> 8, `0.5` -> 0.5, `auto` -> "auto": JSON where it parses, the text otherwise."""
    try:
        return json.loads(text)
    except ValueError:
        return text


def _assignments(pairs: list[str]) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for pair in pairs:
        key, sep, value = pair.partition("=")
        if not sep or not key.strip():
            raise CliError(f"--set {pair!r}: expected KEY=VALUE, e.g. --set maxReplicas=8", code=2)
        out[key.strip()] = _value(value.strip())
    return out


def scaling(args: argparse.Namespace, settings: Settings) -> int:
    client = _client(settings)
    path = f"/api/v1/apps/{args.name}/scaling"
    if args.set:
        current = client.get(path)
        policy = {**current["policy"], **_assignments(args.set)}
        policy_out = client.request("PUT", path, json=policy).json()
    else:
        policy_out = client.get(path)
    history = client.get(f"{path}/history", params={"limit": args.limit, "all": str(args.all).lower()})
    if args.json:
        print_json({"policy": policy_out, "history": history["decisions"]})
        return 0
    p = policy_out["policy"]
    print(
        f"{policy_out['app']}: {p.get('mode', 'auto')} mode, {p.get('minReplicas')}..{p.get('maxReplicas')} replicas "
        f"(desired {policy_out['desired_replicas']}), policy from the {policy_out['source']}"
    )
    targets = ", ".join(
        f"{label} {p[key]}"
        for label, key in (
            ("rps/replica", "targetRPSPerReplica"),
            ("p95 ms", "maxP95LatencyMs"),
            ("cpu %", "maxCPUPercent"),
            ("memory %", "maxMemoryPercent"),
            ("connections/replica", "maxConnPerReplica"),
        )
        if key in p
    )
    print(f"targets: {targets}")
    print(
        f"out above {p.get('scaleOutThresholdPct')}%, in below {p.get('scaleInThresholdPct')}% of target; "
        f"window {p.get('windowSeconds')}s, cooldown {p.get('cooldownSeconds')}s, "
        f"stabilization {p.get('stabilizationWindowSeconds')}s"
    )
    if scales_to_zero(policy_from_spec(p)):
        print(f"scales to zero after {p.get('idleSeconds', 300)}s without a request; woken by the next one")
    rows = [
        (ago(d["at"]), f"{d['current']} → {d['target']}", d["direction"], "burst" if d["burst"] else "", d["reason"])
        for d in history["decisions"]
    ]
    print()
    print(table(rows, ("WHEN", "REPLICAS", "DIRECTION", "", "REASON")) if rows else "no scaling decision yet")
    return 0
