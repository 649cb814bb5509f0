"""Where the next replica slot of an app may go on a Swarm (pure): the constraints Orchestry adds to the slot's
service on top of the user's.

Design note: on the swarm runtime each replica slot is a Swarm service of one task (runtime/swarm_engine.py
says why). Swarm's own spread preference and `MaxReplicas` count the tasks *of one service*, so with one task
per service they would mean nothing. Orchestry therefore turns the app's `placement.spread` and
`placement.maxReplicasPerNode` into constraints on each new slot, computed from where the app's other slots
run: spread picks the label value (e.g. zone) with the fewest of the app's replicas among the nodes that may
take one, and the per-node cap excludes the nodes that hold as many as allowed. Swarm still chooses the node
within those constraints, and reschedules the slot there when its node is drained or lost.
"""

from __future__ import annotations

import re
from collections import Counter
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field

_CONSTRAINT = re.compile(r"^\s*(?P<attr>[A-Za-z0-9_.-]+)\s*(?P<op>==|!=)\s*(?P<value>\S+)\s*$")


@dataclass(frozen=True)
class Node:
    """A Swarm node as placement sees it."""

    id: str
    hostname: str
    role: str = "worker"
    labels: Mapping[str, str] = field(default_factory=dict)
    available: bool = True  # ready and active: Swarm may place a task there


@dataclass(frozen=True)
class Placement:
    constraints: tuple[str, ...] = ()
    spread: str | None = None  # "node.labels.<key>"
    max_per_node: int | None = None


class Unplaceable(ValueError):
    """No node may take the slot: the message says which rule left none."""


def matches(constraint: str, node: Node) -> bool | None:
    """Whether `node` satisfies one Swarm constraint; None when it cannot be told here (engine labels)."""
    found = _CONSTRAINT.match(constraint)
    if found is None:
        return None
    attr, op, value = found["attr"], found["op"], found["value"]
    actual: str | None
    if attr == "node.id":
        actual = node.id
    elif attr == "node.hostname":
        actual = node.hostname
    elif attr == "node.role":
        actual = node.role
    elif attr.startswith("node.labels."):
        actual = node.labels.get(attr.removeprefix("node.labels."))
    else:
        return None
    equal = actual is not None and actual == value
    return equal if op == "==" else not equal


def eligible(placement: Placement, nodes: Sequence[Node]) -> list[Node]:
    """The available nodes that satisfy every user constraint (one that cannot be told here counts as met)."""
    return [n for n in nodes if n.available and all(matches(c, n) is not False for c in placement.constraints)]


def slot_constraints(placement: Placement, nodes: Sequence[Node], placed: Sequence[str]) -> tuple[str, ...]:
    """Every constraint of the next slot's service: the user's, then spread's and the per-node cap's.

    `placed`: the node id of each of the app's other live slots (one entry per slot). Raises Unplaceable when
    the cap or the constraints leave no node."""
    out = list(placement.constraints)
    if placement.spread is None and placement.max_per_node is None:
        return tuple(out)
    candidates = eligible(placement, nodes)
    if not candidates:
        raise Unplaceable("no available node satisfies placement.constraints")
    per_node = Counter(placed)
    if placement.max_per_node is not None:
        full = sorted(n.id for n in candidates if per_node[n.id] >= placement.max_per_node)
        out += [f"node.id!={node_id}" for node_id in full]
        candidates = [n for n in candidates if n.id not in full]
        if not candidates:
            raise Unplaceable(
                f"every node that may run it already holds maxReplicasPerNode ({placement.max_per_node}) replicas"
            )
    if placement.spread is not None and placement.spread.startswith("node.labels."):
        key = placement.spread.removeprefix("node.labels.")
        values = sorted({n.labels[key] for n in candidates if key in n.labels})
        if values:
            by_node = {n.id: n.labels.get(key) for n in nodes}
            per_value = Counter(by_node.get(node_id) for node_id in placed)
            least = min(values, key=lambda v: (per_value[v], v))
            out.append(f"{placement.spread}=={least}")
    return tuple(out)
