"""Day-two decisions on revisions: which revision a rollback restores, what a change would do, and the
hash that tells a replica to be replaced.

A rollback never rewrites history: it adds a new revision carrying the spec of the one it restores
(`restored_from`), so `orchestry revisions` reads as what happened. The rollout itself is the usual
health-gated one (workflows/converge.py): the new revision's hash differs from the running replicas'.

A restart is a rollout of the same revision: the app's restart count is folded into the hash its replicas
carry (`desired_hash`), so every running replica looks out of date and is replaced one at a time, each new
one healthy before an old one drains. With no restart yet the hash is the revision's content hash, as before.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Literal

OnFailure = Literal["halt", "rollback"]
DEFAULT_ON_FAILURE: OnFailure = "halt"
ABSENT: Any = None  # a field missing on one side of a diff


def desired_hash(content_hash: str, restarts: int) -> str:
    """The hash a replica of this revision carries after `restarts` restarts of the app ("" without a revision)."""
    return content_hash if restarts <= 0 or not content_hash else f"{content_hash}+r{restarts}"


def on_failure(spec: Mapping[str, Any] | None) -> OnFailure:
    """What a rollout of this spec does when its new replicas do not become healthy."""
    value = ((spec or {}).get("rollout") or {}).get("onFailure", DEFAULT_ON_FAILURE)
    return "rollback" if value == "rollback" else "halt"


@dataclass(frozen=True)
class RevisionRef:
    number: int
    content_hash: str
    restored_from: int | None = None


@dataclass(frozen=True)
class RollbackChoice:
    """The revision to restore, or why there is none (`problem`, for a 4xx naming `to`)."""

    restore: int | None
    problem: str | None = None


def rollback_choice(revisions: Sequence[RevisionRef], current: int, to: int | None) -> RollbackChoice:
    """`to` given: that revision, if it exists and differs from the current one. Otherwise the previous
    revision: the newest before the current one whose spec differs from it (a rollback to a revision that
    is itself a restore of the current spec would change nothing)."""
    by_number = {r.number: r for r in revisions}
    now = by_number.get(current)
    if to is not None:
        if to not in by_number:
            known = ", ".join(str(n) for n in sorted(by_number)) or "none"
            return RollbackChoice(None, f"revision {to} does not exist (revisions: {known})")
        if to == current or (now is not None and by_number[to].content_hash == now.content_hash):
            return RollbackChoice(
                None, f"revision {to} is the spec in force (revision {current}); nothing to roll back"
            )
        return RollbackChoice(to)
    earlier = sorted((r for r in revisions if r.number < current), key=lambda r: r.number, reverse=True)
    for r in earlier:
        if now is None or r.content_hash != now.content_hash:
            return RollbackChoice(r.number)
    return RollbackChoice(None, f"no earlier revision with another spec than revision {current}")


def restore_after_failure(old_revisions: Sequence[int], current: int) -> int | None:
    """The revision an automatic rollback restores: the one most of the still-running old replicas carry
    (ties: the newest); None when no old replica runs (nothing to go back to)."""
    counts: dict[int, int] = {}
    for number in old_revisions:
        if number != current and number > 0:
            counts[number] = counts.get(number, 0) + 1
    if not counts:
        return None
    return max(counts, key=lambda n: (counts[n], n))


@dataclass(frozen=True)
class Change:
    path: str
    before: Any
    after: Any

    @property
    def kind(self) -> str:
        if self.before is ABSENT:
            return "added"
        if self.after is ABSENT:
            return "removed"
        return "changed"


def diff_specs(before: Mapping[str, Any] | None, after: Mapping[str, Any] | None) -> tuple[Change, ...]:
    """Field by field differences of two normalised specs, by path (`spec.ports[0].containerPort`).
    Lists of different lengths differ item by item, then by the items one side lacks."""
    out: list[Change] = []
    _diff("", before or {}, after or {}, out)
    return tuple(out)


def _diff(path: str, a: Any, b: Any, out: list[Change]) -> None:
    if isinstance(a, Mapping) and isinstance(b, Mapping):
        for key in sorted(set(a) | set(b), key=str):
            sub = f"{path}.{key}" if path else str(key)
            if key not in a:
                out.append(Change(sub, ABSENT, b[key]))
            elif key not in b:
                out.append(Change(sub, a[key], ABSENT))
            else:
                _diff(sub, a[key], b[key], out)
        return
    if isinstance(a, list) and isinstance(b, list):
        for i in range(max(len(a), len(b))):
            sub = f"{path}[{i}]"
            if i >= len(a):
                out.append(Change(sub, ABSENT, b[i]))
            elif i >= len(b):
                out.append(Change(sub, a[i], ABSENT))
            else:
                _diff(sub, a[i], b[i], out)
        return
    if a != b or type(a) is not type(b):
        out.append(Change(path, a, b))


@dataclass(frozen=True)
class ReplicaRef:
    name: str
    spec_hash: str


@dataclass(frozen=True)
class ChangePlan:
    """What registering (or rolling back to) a spec would do to a running app."""

    replace: tuple[str, ...]  # replicas the rollout would replace, one at a time
    keep: tuple[str, ...]  # replicas already of the new spec

    @property
    def summary(self) -> str:
        if not self.replace:
            return "no replica to replace"
        return f"{len(self.replace)} replica(s) to replace one at a time: {', '.join(self.replace)}"


def change_plan(new_hash: str, replicas: Sequence[ReplicaRef], *, running: bool) -> ChangePlan:
    """A running app replaces every replica whose hash is not the new one; a stopped app replaces none
    (its next `up` starts the new spec)."""
    if not running:
        return ChangePlan((), ())
    ordered = sorted(replicas, key=lambda r: r.name)
    return ChangePlan(
        tuple(r.name for r in ordered if r.spec_hash != new_hash),
        tuple(r.name for r in ordered if r.spec_hash == new_hash),
    )
