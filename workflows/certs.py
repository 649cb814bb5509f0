"""When a `tls: auto` host needs a certificate job (pure): the cert-sweep's rule (controller/acme.py)."""

from __future__ import annotations

import datetime as dt

RENEW_BEFORE = dt.timedelta(days=30)  # renew this long before expiry, as Let's Encrypt recommends
BACKOFF_SECONDS = (60, 300, 1800, 3600)  # after 1, 2, 3, 4+ failures in a row (CAs rate-limit failures)
MAX_REASON = 500  # characters of a CA's reason kept


def failures_in(last_error: str | None) -> int:
    """The failures in a row that `last_error` records (one line each, see with_failure)."""
    return last_error.count("\n") + 1 if last_error else 0


def with_failure(last_error: str | None, reason: str, in_a_row: bool) -> str:
    """`last_error` with `reason` added: the last BACKOFF_SECONDS' worth of lines when the failures are
    `in_a_row` (the certificate failed before), else this reason alone."""
    previous = last_error.split("\n") if last_error and in_a_row else []
    return "\n".join([*previous[-(len(BACKOFF_SECONDS) - 1) :], reason[:MAX_REASON]])


def cert_due(
    state: str | None, not_after: dt.datetime | None, updated_at: dt.datetime | None, now: dt.datetime, failures: int
) -> bool:
    """`state` None: no certificate row yet. `pending`: a job is on it. `failed`: retried after a backoff
    that grows with the failures in a row. `valid`: renewed within RENEW_BEFORE of its expiry, and after the
    same backoff when renewals failed (the old certificate is still served; the CA's limits still count)."""
    if state is None:
        return True
    if state == "pending":
        return False
    if state == "valid" and not (not_after is None or not_after - now <= RENEW_BEFORE):
        return False
    if state == "failed" or failures > 0:
        wait = BACKOFF_SECONDS[min(max(failures, 1), len(BACKOFF_SECONDS)) - 1]
        return updated_at is None or (now - updated_at).total_seconds() >= wait
    return True
