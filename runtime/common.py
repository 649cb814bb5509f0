"""What the docker and swarm runtimes share and that needs no Docker SDK: the labels Orchestry stamps on what it
creates, which of those things are this installation's, and an `Observed` read back from the labels."""

from __future__ import annotations

from datetime import datetime

from orchestry.runtime.types import (
    LABEL_APP,
    LABEL_CLUSTER,
    LABEL_INSTALLATION,
    LABEL_PORT,
    LABEL_REVISION,
    LABEL_SLOT,
    LABEL_SPEC_HASH,
    Observed,
    ReplicaRequest,
)


def replica_labels(req: ReplicaRequest, installation: str | None) -> dict[str, str]:
    """The labels of a replica's container (and of its Swarm service): the app's own, then Orchestry's."""
    labels = {
        **req.labels,  # ours last: an app's labels cannot pose as Orchestry's
        LABEL_CLUSTER: req.cluster,
        LABEL_APP: req.app,
        LABEL_SLOT: str(req.slot),
        LABEL_REVISION: str(req.revision),
        LABEL_SPEC_HASH: req.spec_hash,
    }
    if installation is not None:
        labels[LABEL_INSTALLATION] = installation
    if req.container_port is not None:
        labels[LABEL_PORT] = str(req.container_port)
    return labels


def owned(labels: dict[str, str], installation: str | None) -> bool:
    """A container (service, volume) of our cluster is ours unless another installation stamped it."""
    stamp = labels.get(LABEL_INSTALLATION)
    return installation is None or stamp is None or stamp == installation


def label_int(value: object, default: int) -> int:
    try:
        return int(str(value))
    except ValueError:
        return default


def replica_from_labels(
    labels: dict[str, str],
    *,
    replica_id: str,
    name: str,
    state: str,
    host: str | None,
    port: int | None,
    started_at: datetime | None,
    exit_code: int | None,
    ports: tuple[tuple[int, int], ...] = (),
    node: str | None = None,
    node_name: str | None = None,
) -> Observed:
    """Malformed labels still give an Observed (slot -1, revision -1) so that reconcile can remove it. `host` is
    given only with a `port`."""
    return Observed(
        id=replica_id,
        name=name,
        app=labels.get(LABEL_APP, ""),
        slot=label_int(labels.get(LABEL_SLOT), -1),
        revision=label_int(labels.get(LABEL_REVISION), -1),
        spec_hash=labels.get(LABEL_SPEC_HASH, ""),
        state=state,
        host=host if port is not None else None,
        port=port,
        started_at=started_at,
        exit_code=exit_code,
        ports=ports,
        node=node,
        node_name=node_name,
    )
