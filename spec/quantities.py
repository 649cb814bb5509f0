"""CPU and memory quantities: the strings users write -> integers Docker takes.

CPU is kept as millicores so that "0.5", 0.5 and "500m" are the same value (and hash the same); memory as
bytes. Decimal arithmetic keeps "0.1" exact, and anything finer than a millicore or a byte is refused
rather than rounded, so what runs is what was written.
"""

from __future__ import annotations

import math
import re
from decimal import Decimal

MAX_CPU_MILLICORES = 64_000
MIN_MEMORY_BYTES = 6 * 1024**2  # Docker refuses smaller memory limits
MAX_MEMORY_BYTES = 1024**5
MEMORY_UNITS = {
    "Ki": 1024,
    "Mi": 1024**2,
    "Gi": 1024**3,
    "Ti": 1024**4,
    "K": 1000,
    "M": 1000**2,
    "G": 1000**3,
    "T": 1000**4,
    "": 1,
}
_CPU = re.compile(r"(?P<num>\d+(?:\.\d+)?|\.\d+)(?P<milli>m?)")
_MEMORY = re.compile(r"(?P<num>\d+(?:\.\d+)?)(?P<unit>Ki|Mi|Gi|Ti|K|M|G|T)?")
CPU_HINT = 'must be a CPU quantity such as "250m", "0.5" or 2'
MEMORY_HINT = 'must be a memory quantity such as "512Mi", "1Gi", "500M" or a number of bytes'


class QuantityError(ValueError):
    """The rule a quantity broke, worded for the user."""


def parse_cpu(value: object) -> int:
    """Cores as a number or string ("0.5", "2") or millicores ("250m") -> millicores (1..64000)."""
    if isinstance(value, bool) or not isinstance(value, int | float | str):
        raise QuantityError(CPU_HINT)
    if isinstance(value, float) and not math.isfinite(value):
        raise QuantityError("must be a finite number")
    if isinstance(value, str):
        match = _CPU.fullmatch(value.strip())
        if match is None:
            raise QuantityError(CPU_HINT)
        amount = Decimal(match["num"]) * (1 if match["milli"] else 1000)
    else:
        amount = Decimal(repr(value)) * 1000
    if amount <= 0:
        raise QuantityError("must be > 0")
    if amount > MAX_CPU_MILLICORES:
        raise QuantityError(f"must be at most {MAX_CPU_MILLICORES // 1000} cores")
    if amount != amount.to_integral_value():
        raise QuantityError('must be a whole number of millicores (0.001 cores, "1m")')
    return int(amount)


def parse_memory(value: object) -> int:
    """ "512Mi", "1G", 1048576 or "1048576" -> bytes (6Mi..1Pi)."""
    if isinstance(value, bool) or not isinstance(value, int | str):
        raise QuantityError(MEMORY_HINT)
    if isinstance(value, int):
        amount = Decimal(value)
    else:
        match = _MEMORY.fullmatch(value.strip())
        if match is None or ("." in match["num"] and not match["unit"]):
            raise QuantityError(MEMORY_HINT)
        amount = Decimal(match["num"]) * MEMORY_UNITS[match["unit"] or ""]
    if amount != amount.to_integral_value():
        raise QuantityError("must be a whole number of bytes")
    if amount < MIN_MEMORY_BYTES:
        raise QuantityError("must be at least 6Mi (Docker's minimum)")
    if amount > MAX_MEMORY_BYTES:
        raise QuantityError("must be at most 1Pi")
    return int(amount)


def format_cpu(millicores: int) -> str:
    """The canonical spelling: always millicores, so equal limits compare and hash equal."""
    return f"{millicores}m"
