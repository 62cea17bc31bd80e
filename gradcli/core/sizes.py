"""Sizes in bytes, read and written as people do (``512MiB``, ``1.5 GiB``)."""

from __future__ import annotations

import re

from .errors import UsageError

_SIZE_RE = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*(b|kb|kib|mb|mib|gb|gib|tb|tib)?\s*$", re.IGNORECASE)
_UNITS = {None: 1, "b": 1, "kb": 10**3, "kib": 2**10, "mb": 10**6, "mib": 2**20, "gb": 10**9, "gib": 2**30,
          "tb": 10**12, "tib": 2**40}


def parse_size(text: str, option: str = "--max-memory") -> int:
    match = _SIZE_RE.match(text)
    if not match:
        raise UsageError(f"{option}: cannot read {text!r} as a size; write e.g. 512MiB or 4GiB")
    return int(float(match[1]) * _UNITS[match[2].lower() if match[2] else None])


def format_bytes(n: float) -> str:
    for unit in ("B", "KiB", "MiB", "GiB", "TiB"):
        if n < 1024 or unit == "TiB":
            return f"{n:.0f} {unit}" if unit == "B" else f"{n:.1f} {unit}"
        n /= 1024
    raise AssertionError


def size_option(n: int) -> str:
    """A ``--max-memory`` value that holds ``n`` bytes, as a person writes it: the
    next power of two, in KiB below a MiB, else in MiB (``256MiB``, ``32KiB``)."""
    power = 1 << max(10, (max(int(n), 1) - 1).bit_length())
    return f"{power >> 20}MiB" if power >= 2**20 else f"{power >> 10}KiB"
