"""How long a service that answered 429 asks the bot to wait, read alike by every adapter."""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping
from datetime import UTC, datetime
from email.utils import parsedate_to_datetime


def asked_wait(headers: Mapping[str, str],
               names: Iterable[str] = ("Retry-After",)) -> float | None:
    """Seconds the first of the ``names`` headers present asks for: a number of seconds or an
    HTTP date, never below zero; None when none of them says anything usable (``inf`` and
    ``nan`` are not a wait)."""
    for name in names:
        value = (headers.get(name) or "").strip()
        if not value:
            continue
        try:
            seconds = float(value)
        except ValueError:
            pass
        else:
            if math.isfinite(seconds):
                return max(seconds, 0.0)
            continue
        try:
            when = parsedate_to_datetime(value)
        except (TypeError, ValueError, IndexError):
            continue
        if when.tzinfo is None:
            when = when.replace(tzinfo=UTC)
        return max((when - datetime.now(UTC)).total_seconds(), 0.0)
    return None
