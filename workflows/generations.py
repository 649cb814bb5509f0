"""Routing-table generations (pure): the next one to store, and what a push refused as stale means.

The database is the only source of generations: the controller never adopts one it did not write. nginx
(or its routes file) holding a generation above every one the database wrote means that table came from
elsewhere (an older database beside this data directory, a hand-made PUT, a value from before generations
were bounded): it is replaced by the database's table. A refused push below the database's generation only
means another writer of this node (the route mirror or the leader's sync) pushed a newer table meanwhile.
Generations stay within 2**53 - 1, the largest integer nginx's Lua (doubles) and JSON readers hold
exactly; a stored generation at that bound (from before it was enforced) starts again from 1.
"""

from __future__ import annotations

from typing import Literal

MAX_GENERATION = 2**53 - 1


def next_generation(stored: int, changed: bool) -> tuple[int, bool]:
    """The generation to store for the table now (and True when the stored one had to start over)."""
    if stored >= MAX_GENERATION or stored < 0:
        return 1, True
    if changed or stored == 0:
        return stored + 1, False
    return stored, False


def stale_push(served: int | None, stored_now: int) -> Literal["newer", "replace"]:
    """A push refused as stale: `newer` when what nginx holds is a table of this database that another
    writer pushed meanwhile (nothing to do), `replace` when no table of this database has that generation."""
    if served is not None and 0 <= served <= stored_now:
        return "newer"
    return "replace"
