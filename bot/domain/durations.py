"""Durations as people type them: ``90m``, ``4h``, ``2d``, ``1w``, ``1h30m``."""

from __future__ import annotations

import re
from datetime import timedelta

from bot.domain.errors import InvalidInput

_UNITS = {"w": timedelta(weeks=1), "d": timedelta(days=1), "h": timedelta(hours=1),
          "m": timedelta(minutes=1)}
_DURATION = re.compile(r"(?:(\d+)w)?(?:(\d+)d)?(?:(\d+)h)?(?:(\d+)m)?")
_HOW = "write it like 90m, 4h, 2d, 1w or 1h30m"


def parse_duration(text: str) -> timedelta:
    """Parse a duration; anything else raises :class:`InvalidInput` that says how to write it."""
    cleaned = text.strip().lower()
    match = _DURATION.fullmatch(cleaned)
    if not cleaned or match is None:
        raise InvalidInput(f"'{text}' is not a duration: {_HOW}.")
    total = timedelta()
    for number, unit in zip(match.groups(), "wdhm", strict=True):
        if number is not None:
            total += int(number) * _UNITS[unit]
    if total <= timedelta():
        raise InvalidInput(f"'{text}' is no time at all: {_HOW}.")
    if total > timedelta(days=3650):
        raise InvalidInput(f"'{text}' is longer than any access should last: {_HOW}.")
    return total


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
