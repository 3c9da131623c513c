"""Cron schedules in local time, as people read them: one firing per scheduled local time.

A cron expression names wall-clock times ("Sunday 02:30 in Europe/Berlin"). Twice a year a
zone with daylight saving time breaks the one-to-one link between wall-clock times and
instants, and croniter, asked in local time, follows the instants: on the autumn change it
finds 02:30 twice (02:30+02:00 and 02:30+01:00), so a pass keyed by the instant sent the
weekly messages twice. Here the cron expression is evaluated on the naive wall clock and each
match becomes one :class:`Occurrence`, keyed by its local date and time:

- a wall time the clock shows twice (the repeated hour in autumn) is due at its first
  instant, and only then;
- a wall time the clock skips (the lost hour in spring) is due at the first instant after it,
  the moment the clock jumps (03:00 in Europe/Berlin), and once;
- a zone without daylight saving time (Asia/Kolkata, UTC) is the plain case.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from zoneinfo import ZoneInfo

from croniter import croniter

LOOK_AHEAD = timedelta(hours=3)
"""More than any zone's clock change: a wall time up to this much after ``now``'s own wall
time can already be due (the repeated hour shows earlier wall times again)."""


@dataclass(frozen=True)
class Occurrence:
    """One scheduled local time and the instant it is due."""

    local: datetime
    """The wall-clock time the cron expression matched, naive, in the schedule's zone."""
    at: datetime
    """When it is due, in UTC."""

    @property
    def key(self) -> str:
        """The once-only key of this occurrence: its local date and time, minute precision."""
        return self.local.strftime("%Y-%m-%dT%H:%M")


def due_at(local: datetime, zone: ZoneInfo) -> datetime:
    """The UTC instant at which the naive wall time ``local`` in ``zone`` is due: its first
    instant when the clock shows it twice, the jump that skips it when the clock never shows
    it."""
    first = local.replace(tzinfo=zone, fold=0).astimezone(UTC)
    if first.astimezone(zone).replace(tzinfo=None) == local:
        return first
    # Skipped: fold=1 reads it with the offset in force before the jump, fold=0 with the one
    # after; the jump lies between the two. Find its second.
    low = local.replace(tzinfo=zone, fold=1).astimezone(UTC)
    high = first
    if low > high:
        low, high = high, low
    while high - low > timedelta(seconds=1):
        middle = low + (high - low) / 2
        middle = middle.replace(microsecond=0)
        if middle.astimezone(zone).replace(tzinfo=None) > local:
            high = middle
        else:
            low = middle
    return high


def last_occurrence(cron: str, timezone: str, now: datetime) -> Occurrence:
    """The latest occurrence of ``cron`` in ``timezone`` due at or before ``now`` (aware)."""
    zone = ZoneInfo(timezone)
    wall = now.astimezone(zone).replace(tzinfo=None, second=0, microsecond=0)
    matches = croniter(cron, wall + LOOK_AHEAD + timedelta(minutes=1))
    while True:
        local: datetime = matches.get_prev(datetime)
        at = due_at(local, zone)
        if at <= now:
            return Occurrence(local=local, at=at)
