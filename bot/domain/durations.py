"""Durations as people type them: ``90m``, ``4h``, ``2d``, ``1w``, ``1h30m``."""

from __future__ import annotations

import re
from datetime import timedelta

from bot.domain.errors import InvalidInput

_MINUTES = {"w": 7 * 24 * 60, "d": 24 * 60, "h": 60, "m": 1}
_DURATION = re.compile(r"(?:(\d+)w)?(?:(\d+)d)?(?:(\d+)h)?(?:(\d+)m)?", re.ASCII)
_HOW = "write it like 90m, 4h, 2d, 1w or 1h30m"
LONGEST = timedelta(days=3650)
"""No access lasts longer than this, whatever a role allows: a longer duration is a typo."""
_LONGEST_MINUTES = int(LONGEST.total_seconds()) // 60
_MOST_DIGITS = len(str(_LONGEST_MINUTES))


def parse_duration(text: str) -> timedelta:
    """Parse a duration; anything else raises :class:`InvalidInput` that says how to write it.

    Each number is range-checked as text before any arithmetic, so that no number a person
    can type (``99999999999999999999h``) overflows: past :data:`LONGEST` the answer is the same
    as for ``4000d``."""
    shown = text if len(text) <= 40 else text[:39] + "…"
    cleaned = text.strip().lower()
    match = _DURATION.fullmatch(cleaned)
    if not cleaned or match is None:
        raise InvalidInput(f"'{shown}' is not a duration: {_HOW}.")
    too_long = InvalidInput(f"'{shown}' is longer than any access should last: {_HOW}.")
    minutes = 0
    for number, unit in zip(match.groups(), "wdhm", strict=True):
        if number is None:
            continue
        digits = number.lstrip("0")
        if len(digits) > _MOST_DIGITS:
            raise too_long
        minutes += int(digits or "0") * _MINUTES[unit]
    if minutes <= 0:
        raise InvalidInput(f"'{shown}' is no time at all: {_HOW}.")
    if minutes > _LONGEST_MINUTES:
        raise too_long
    return timedelta(minutes=minutes)


def format_duration(value: timedelta) -> str:
    """The shortest exact spelling of ``value`` in the syntax :func:`parse_duration` reads."""
    minutes = int(value.total_seconds() // 60)
    if minutes <= 0:
        return "0m"
    parts = []
    for unit, size in (("w", 7 * 24 * 60), ("d", 24 * 60), ("h", 60), ("m", 1)):
        count, minutes = divmod(minutes, size)
        if count:
            parts.append(f"{count}{unit}")
    return "".join(parts)
