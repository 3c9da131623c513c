"""Schedules in local time fire once per scheduled local time, across both clock changes.

A year of each zone is walked the way the reminder pass walks it: every hour, and every ten
minutes on the days the clock changes. Whatever is due and not yet sent is sent under its key.
The expected firings are worked out here from the calendar alone, not from the code under test.
"""

from __future__ import annotations

from collections import Counter
from datetime import UTC, date, datetime, time, timedelta
from zoneinfo import ZoneInfo

import pytest

from bot.services.reminders import CATCH_UP
from bot.services.schedule import Occurrence, due_at, last_occurrence

YEAR_START = datetime(2026, 1, 1, tzinfo=UTC)
YEAR_END = datetime(2027, 1, 1, tzinfo=UTC)
ZONES = ["Europe/Berlin", "America/New_York", "Australia/Sydney", "Asia/Kolkata",
         "America/Santiago"]
SCHEDULES = {  # cron → (weekdays, Monday = 0, or None for every day; local time)
    "0 9 * * MON": ({0}, time(9, 0)),
    "30 2 * * SUN": ({6}, time(2, 30)),
    "0 3 * * SUN": ({6}, time(3, 0)),
    "59 1 * * *": (None, time(1, 59)),
    # America/Santiago changes its clock at midnight: Sunday 00:30 is skipped in September,
    # Saturday 23:30 repeated in April.
    "30 0 * * SUN": ({6}, time(0, 30)),
    "30 23 * * SAT": ({5}, time(23, 30)),
}


def transitions(zone: ZoneInfo) -> list[datetime]:
    """The instants in the year at which the zone's UTC offset changes (found by hour)."""
    found = []
    moment = YEAR_START
    while moment < YEAR_END:
        following = moment + timedelta(hours=1)
        if moment.astimezone(zone).utcoffset() != following.astimezone(zone).utcoffset():
            found.append(following)
        moment = following
    return found


def walk(zone: ZoneInfo) -> list[datetime]:
    """Every hour of the year, and every ten minutes on the days around a clock change."""
    moments = set()
    moment = YEAR_START
    while moment < YEAR_END:
        moments.add(moment)
        moment += timedelta(hours=1)
    for change in transitions(zone):
        moment = change - timedelta(hours=30)
        while moment < change + timedelta(hours=30):
            moments.add(moment)
            moment += timedelta(minutes=10)
    return sorted(moments)


def expected_instant(day: date, at: time, zone: ZoneInfo) -> datetime:
    """When a wall time is due, worked out minute by minute over the day: the first instant
    whose wall clock shows it or anything later."""
    wanted = datetime.combine(day, at)
    moment = datetime.combine(day, at, tzinfo=zone).astimezone(UTC) - timedelta(hours=3)
    for step in (timedelta(minutes=15), timedelta(minutes=1)):
        while moment.astimezone(zone).replace(tzinfo=None) < wanted:
            moment += step
        moment -= step
    return moment + timedelta(minutes=1)


def expected(cron: str, zone: ZoneInfo, first: datetime, last: datetime) -> dict[str, datetime]:
    weekdays, at = SCHEDULES[cron]
    wanted = {}
    day = first.astimezone(zone).date()
    while day <= last.astimezone(zone).date():
        if weekdays is None or day.weekday() in weekdays:
            moment = expected_instant(day, at, zone)
            if first <= moment <= last:
                wanted[datetime.combine(day, at).strftime("%Y-%m-%dT%H:%M")] = moment
        day += timedelta(days=1)
    return wanted


@pytest.mark.parametrize("zone_name", ZONES)
@pytest.mark.parametrize("cron", list(SCHEDULES))
def test_a_year_fires_once_per_scheduled_local_time(zone_name: str, cron: str) -> None:
    zone = ZoneInfo(zone_name)
    moments = walk(zone)
    fired: Counter[str] = Counter()
    due: dict[str, Occurrence] = {}
    late: list[tuple[str, datetime]] = []
    for now in moments:
        occurrence = last_occurrence(cron, zone_name, now)
        assert occurrence.at <= now
        if now - occurrence.at > CATCH_UP or occurrence.key in fired:
            continue
        fired[occurrence.key] += 1
        due[occurrence.key] = occurrence
        if now - occurrence.at > timedelta(hours=1) and occurrence.at >= moments[0]:
            late.append((occurrence.key, now))

    # The first walked moment may still see last year's occurrence: leave it out.
    wanted = expected(cron, zone, moments[0], moments[-1])
    fired_this_year = {key for key in fired if key in wanted or due[key].at >= moments[0]}
    assert fired_this_year == set(wanted), sorted(set(wanted) ^ fired_this_year)
    assert set(fired.values()) == {1}
    for key, moment in wanted.items():
        assert due[key].at == moment, key
        assert due[key].local.strftime("%Y-%m-%dT%H:%M") == key
    assert late == []  # each went out at the first walked moment after it was due


@pytest.mark.parametrize(("zone_name", "wall", "instant"), [
    # Europe/Berlin: 02:00 CET → 03:00 CEST on 29 March; 03:00 CEST → 02:00 CET on 25 October
    ("Europe/Berlin", datetime(2026, 3, 29, 2, 30), datetime(2026, 3, 29, 1, 0, tzinfo=UTC)),
    ("Europe/Berlin", datetime(2026, 3, 29, 3, 0), datetime(2026, 3, 29, 1, 0, tzinfo=UTC)),
    ("Europe/Berlin", datetime(2026, 10, 25, 2, 30), datetime(2026, 10, 25, 0, 30, tzinfo=UTC)),
    ("Europe/Berlin", datetime(2026, 10, 25, 3, 0), datetime(2026, 10, 25, 2, 0, tzinfo=UTC)),
    # America/New_York: 02:00 EST → 03:00 EDT on 8 March; 02:00 EDT → 01:00 EST on 1 November
    ("America/New_York", datetime(2026, 3, 8, 2, 15), datetime(2026, 3, 8, 7, 0, tzinfo=UTC)),
    ("America/New_York", datetime(2026, 11, 1, 1, 59), datetime(2026, 11, 1, 5, 59,
                                                                 tzinfo=UTC)),
    # Australia/Sydney, southern hemisphere: 03:00 AEDT → 02:00 AEST on 5 April,
    # 02:00 AEST → 03:00 AEDT on 4 October
    ("Australia/Sydney", datetime(2026, 4, 5, 2, 30), datetime(2026, 4, 4, 15, 30, tzinfo=UTC)),
    ("Australia/Sydney", datetime(2026, 10, 4, 2, 30), datetime(2026, 10, 3, 16, 0, tzinfo=UTC)),
    ("Asia/Kolkata", datetime(2026, 6, 1, 9, 0), datetime(2026, 6, 1, 3, 30, tzinfo=UTC)),
])
def test_a_wall_time_is_due_at_its_first_instant_or_at_the_jump_over_it(
        zone_name: str, wall: datetime, instant: datetime) -> None:
    assert due_at(wall, ZoneInfo(zone_name)) == instant


def test_the_repeated_hour_is_one_occurrence() -> None:
    first = datetime(2026, 10, 25, 0, 40, tzinfo=UTC)  # 02:40 CEST
    again = datetime(2026, 10, 25, 1, 40, tzinfo=UTC)  # 02:40 CET, an hour later
    seen = {last_occurrence("30 2 * * SUN", "Europe/Berlin", now) for now in (first, again)}
    assert seen == {Occurrence(local=datetime(2026, 10, 25, 2, 30),
                               at=datetime(2026, 10, 25, 0, 30, tzinfo=UTC))}
