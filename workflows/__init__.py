"""The pure part of Orchestry: decisions as functions of their inputs (no I/O, time passed in)."""
