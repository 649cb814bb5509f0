"""Health-check I/O: the only part of Orchestry that probes replicas over HTTP or TCP.

`Target` says what to check, `Prober.check_all` checks many at once and answers with the pure
`orchestry.workflows.health.ProbeResult`, which `health_verdict` turns into a replica's health.
"""

from orchestry.probe.prober import Prober, ProberError, SweepStats
from orchestry.probe.target import Target, target_from_spec

__all__ = ["Prober", "ProberError", "SweepStats", "Target", "target_from_spec"]
