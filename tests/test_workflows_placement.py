"""Placement of one more replica slot on a Swarm (pure), as a table of cases."""

from __future__ import annotations

import pytest

from orchestry.workflows.placement import Node, Placement, Unplaceable, matches, slot_constraints

A1 = Node("a1", "h-a1", "manager", {"zone": "a"})
A2 = Node("a2", "h-a2", "worker", {"zone": "a"})
B1 = Node("b1", "h-b1", "worker", {"zone": "b"})
PLAIN = Node("p1", "h-p1", "worker", {})
DOWN = Node("b2", "h-b2", "worker", {"zone": "b"}, available=False)
NODES = (A1, A2, B1, DOWN)


@pytest.mark.parametrize(
    ("constraint", "node", "expected"),
    [
        ("node.labels.zone==a", A1, True),
        ("node.labels.zone == a", B1, False),
        ("node.labels.zone!=a", B1, True),
        ("node.labels.zone!=a", PLAIN, True),  # no such label: not equal
        ("node.labels.zone==a", PLAIN, False),
        ("node.role==manager", A1, True),
        ("node.role==manager", A2, False),
        ("node.hostname==h-b1", B1, True),
        ("node.id!=a1", A1, False),
        ("engine.labels.disk==ssd", A1, None),  # engine labels are not known here
    ],
)
def test_matches(constraint: str, node: Node, expected: bool | None) -> None:
    assert matches(constraint, node) is expected


@pytest.mark.parametrize(
    ("placement", "placed", "expected"),
    [
        (Placement(), [], ()),
        (Placement(("node.labels.zone==a",)), ["a1"], ("node.labels.zone==a",)),
        # spread: the zone with the fewest of the app's replicas, ties to the first by name
        (Placement(spread="node.labels.zone"), [], ("node.labels.zone==a",)),
        (Placement(spread="node.labels.zone"), ["a1"], ("node.labels.zone==b",)),
        (Placement(spread="node.labels.zone"), ["a1", "b1", "a2"], ("node.labels.zone==b",)),
        (Placement(spread="node.labels.zone"), ["a1", "b1"], ("node.labels.zone==a",)),
        # a zone whose only node is down is not a choice
        (Placement(spread="node.labels.zone"), ["a1", "a2", "b1"], ("node.labels.zone==b",)),
        # the user's constraints narrow the zones spread chooses from
        (
            Placement(("node.labels.zone!=b",), spread="node.labels.zone"),
            ["a1"],
            ("node.labels.zone!=b", "node.labels.zone==a"),
        ),
        # the cap per node excludes the full nodes
        (Placement(max_per_node=1), ["a1"], ("node.id!=a1",)),
        (Placement(max_per_node=2), ["a1", "a1", "b1"], ("node.id!=a1",)),
        (Placement(max_per_node=2), ["a1", "b1"], ()),
        (
            Placement(spread="node.labels.zone", max_per_node=1),
            ["a1", "b1"],
            ("node.id!=a1", "node.id!=b1", "node.labels.zone==a"),
        ),
    ],
)
def test_slot_constraints(placement: Placement, placed: list[str], expected: tuple[str, ...]) -> None:
    assert slot_constraints(placement, NODES, placed) == expected


@pytest.mark.parametrize(
    ("placement", "placed", "message"),
    [
        (Placement(max_per_node=1), ["a1", "a2", "b1"], "maxReplicasPerNode (1)"),
        (Placement(("node.labels.zone==c",), max_per_node=1), [], "no available node"),
    ],
)
def test_unplaceable(placement: Placement, placed: list[str], message: str) -> None:
    with pytest.raises(Unplaceable, match=message.replace("(", r"\(").replace(")", r"\)")):
        slot_constraints(placement, NODES, placed)
