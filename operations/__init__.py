"""Operations: a user's (or the leader's) request becomes desired state, a job and an event, in one transaction.

Between `models/` (tables and their queries) and the callers that decide to change something (`web/`, the
leader's sweeps and autoscaler in `controller/`): no Flask, no Docker, no scheduler here."""
