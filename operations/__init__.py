"""Operations: a user's (or the leader's) request becomes desired state, a job and an event, in one transaction.

Between `models/` (tables and their queries) and the callers that decide to change something (`web/`, the
leader's sweeps and autoscaler in `controller/`): no Flask, no Docker, no scheduler here."""

# Installs the hook that enqueues webhook deliveries with the events they carry (operations/webhooks.py): every
# process that records events imports this package (the API, the controller, its jobs).
from orchestry.operations import webhooks as _webhooks  # noqa: F401
