"""Scheduled windows: access asked for ahead of time, from a start to a start plus duration.

``WHEN`` is read as people write it after ``--at``: ``2026-12-02T22:00``, ``22:00`` (its next
occurrence) or ``tomorrow 22:00``, in the requester's time zone unless it ends in ``Z`` or an
offset (``+01:00``). The window is ``[start, start + duration]``. Approval happens ahead; the
grant starts at the start; an approval after the start activates at once and still ends at the
window's end; a window that ends undecided times out.
"""

from __future__ import annotations

import re
from datetime import UTC, datetime, timedelta, timezone, tzinfo
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from bot.domain.durations import format_duration
from bot.domain.errors import InvalidInput, InvalidTransition, PolicyViolation
from bot.domain.model import AccessRequest, Actor, State
from bot.domain.policy import RolePolicy

_HOW = ("write it like 2026-12-02T22:00, 22:00 (the next one) or tomorrow 22:00, "
        "optionally ending in Z or an offset like +01:00")
_OFFSET = r"(?P<zone>Z|[+-]\d{2}:?\d{2})?"
_CLOCK = r"(?P<hour>\d{1,2}):(?P<minute>\d{2})"
_FLAGS = re.ASCII | re.IGNORECASE
_FULL = re.compile(r"(?P<date>\d{4}-\d{2}-\d{2})[T ]" + _CLOCK + _OFFSET, _FLAGS)
_TIME = re.compile(r"(?P<tomorrow>tomorrow\s+)?" + _CLOCK + _OFFSET, _FLAGS)


def zone(name: str | None) -> tzinfo:
    """The IANA time zone ``name`` (``Europe/Berlin``); UTC when None or empty. Raises
    :class:`InvalidInput` for a name that is not one."""
    if not name:
        return UTC
    try:
        return ZoneInfo(name)
    except (ZoneInfoNotFoundError, ValueError):
        raise InvalidInput(f"'{name}' is not a time zone, like UTC or Europe/Berlin.") from None


def parse_when(text: str, *, now: datetime, tz: str | None) -> datetime:
    """The moment ``text`` names, as an aware UTC datetime.

    ``tz`` is the IANA zone the person's clock shows (Slack's profile ``tz``), used unless the
    text ends in ``Z`` or an offset. ``HH:MM`` is its next occurrence after ``now`` (today, or
    tomorrow once passed); ``tomorrow HH:MM`` the day after ``now``'s local date. A local time
    that the clocks skip (spring forward) is refused; one they repeat is its first occurrence.
    Raises :class:`InvalidInput` saying how to write it."""
    shown = text if len(text) <= 40 else text[:39] + "…"
    cleaned = " ".join(text.strip().split())
    full = _FULL.fullmatch(cleaned)
    short = None if full else _TIME.fullmatch(cleaned)
    match = full or short
    if match is None:
        raise InvalidInput(f"'{shown}' is not a time: {_HOW}.")
    hour, minute = int(match["hour"]), int(match["minute"])
    if hour > 23 or minute > 59:
        raise InvalidInput(f"'{shown}' is not a time of day: {_HOW}.")
    where = _offset(match["zone"].upper()) if match["zone"] else _clock_zone(tz, shown)
    local_now = now.astimezone(where)
    if full is not None:
        try:
            day = datetime.strptime(full["date"], "%Y-%m-%d").date()
        except ValueError:
            raise InvalidInput(f"'{shown}' is not a date: {_HOW}.") from None
    elif match["tomorrow"]:
        day = local_now.date() + timedelta(days=1)
    else:
        # Past today's clock: tomorrow's, before asking whether today's exists (a time the
        # clocks skipped this morning still comes tomorrow).
        passed = (hour, minute) <= (local_now.hour, local_now.minute)
        day = local_now.date() + timedelta(days=1 if passed else 0)
    at = _local(day.year, day.month, day.day, hour, minute, where, shown)
    if full is None and not match["tomorrow"] and at <= now:
        tomorrow = day + timedelta(days=1)
        at = _local(tomorrow.year, tomorrow.month, tomorrow.day, hour, minute, where, shown)
    return at


def _clock_zone(tz: str | None, shown: str) -> tzinfo:
    """The zone of the person's clock (Slack's profile ``tz``, not typed by them): one this
    machine does not know asks for the time in UTC or with an offset instead."""
    try:
        return zone(tz)
    except InvalidInput:
        raise InvalidInput(
            f"Your Slack time zone '{tz}' is not a time zone the bot knows, so '{shown}' cannot "
            "be read in it: end the time in Z (UTC) or an offset, like 22:00Z or 22:00+01:00."
        ) from None


MAX_OFFSET_MINUTES = 14 * 60
"""The widest offset from UTC any place keeps (UTC+14:00, Kiribati; UTC-12:00 the other way)."""


def _offset(text: str) -> tzinfo:
    if text == "Z":
        return UTC
    digits = text[1:].replace(":", "")
    hours, minutes = int(digits[:2]), int(digits[2:])
    if hours * 60 + minutes > MAX_OFFSET_MINUTES or minutes > 59:
        raise InvalidInput(f"'{text}' is not an offset: {_HOW}.")
    sign = -1 if text[0] == "-" else 1
    return timezone(sign * timedelta(hours=hours, minutes=minutes))


def _local(year: int, month: int, day: int, hour: int, minute: int, where: tzinfo,
           shown: str) -> datetime:
    try:
        at = datetime(year, month, day, hour, minute, tzinfo=where)
        utc = at.astimezone(UTC)
    except (OverflowError, ValueError):  # before year 1 or after 9999 once in UTC
        raise InvalidInput(f"'{shown}' is too far from now to be a start: {_HOW}.") from None
    if utc.astimezone(where).replace(tzinfo=None) != at.replace(tzinfo=None):
        raise InvalidInput(
            f"'{shown}' does not exist in {where}: the clocks skip it that day. "
            "Pick a time an hour later."
        )
    return utc


def check_start(start: datetime, *, now: datetime, max_ahead: timedelta,
                tz: str | None = None) -> None:
    """Refuse with :class:`PolicyViolation` a start in the past or more than ``max_ahead``
    after ``now`` (the role's ``max_schedule_ahead``)."""
    if start < now:
        raise PolicyViolation(
            f"{render_time(start, tz)} is in the past: give a time ahead, like "
            "--at 22:00 or --at tomorrow 09:00, or leave --at out to start once approved."
        )
    if start - now > max_ahead:
        raise PolicyViolation(
            f"{render_time(start, tz)} is more than {format_duration(max_ahead)} ahead: "
            f"pick a start by {render_time(now + max_ahead, tz)}, and ask again later "
            "for a later one."
        )


def schedule(text: str, *, now: datetime, tz: str | None, max_ahead: timedelta) -> datetime:
    """Parse ``WHEN`` and check it: the start of a new window, aware UTC."""
    start = parse_when(text, now=now, tz=tz)
    check_start(start, now=now, max_ahead=max_ahead, tz=tz)
    return start


def render_time(at: datetime, tz: str | None = None) -> str:
    """``at`` in UTC and, when ``tz`` is another zone, in local time:
    ``2026-12-02 21:00 UTC (22:00 CET)``; the local date is named when it differs."""
    utc = at.astimezone(UTC)
    text = f"{utc:%Y-%m-%d %H:%M} UTC"
    if not tz or tz == "UTC":
        return text
    try:
        local = at.astimezone(zone(tz))
    except (OverflowError, InvalidInput):  # the last or first hours a datetime holds, or a
        return text                        # zone this machine does not know: UTC says it
    if local.utcoffset() == timedelta() and local.tzname() in ("UTC", "GMT"):
        return text
    shown = f"{local:%H:%M}" if local.date() == utc.date() else f"{local:%Y-%m-%d %H:%M}"
    return f"{text} ({shown} {local.tzname() or tz})"


def activation_at(request: AccessRequest) -> datetime | None:
    """When the owed grant of an approved request should run: its window's start, or None
    for at once (an unscheduled request, or a window already started)."""
    return request.window_start


def activation_due(request: AccessRequest, now: datetime) -> bool:
    """Whether an approved request's grant should be made at ``now``: at once when
    unscheduled, from the start of its window until its end."""
    if request.state is not State.APPROVED:
        return False
    if request.window_start is None:
        return True
    end = request.window_end
    assert end is not None
    return request.window_start <= now < end


def planned_end(request: AccessRequest, started: datetime) -> datetime:
    """When a grant that starts at ``started`` ends: at its window's end when scheduled (so a
    late approval still ends on time), else after the duration granted."""
    return request.window_end or started + request.granted_duration


def window_ended(request: AccessRequest, now: datetime) -> bool:
    end = request.window_end
    return end is not None and now >= end


def approved_ahead(request: AccessRequest) -> bool:
    """Whether ``request`` was approved before its window's start (so that the grant waits
    for it); False for an unscheduled request or one approved once its window had begun."""
    start = request.window_start
    return start is not None and request.decided_at is not None and request.decided_at < start


def check_not_started(request: AccessRequest, now: datetime) -> None:
    """Refuse with :class:`InvalidTransition` to withdraw an approved request unless it is a
    scheduled window that has not started at ``now``: once access is being granted, it is
    revoked instead."""
    if request.window_start is not None and now < request.window_start:
        return
    what = ("its window started" if request.window_start is not None
            else "its access is being granted")
    raise InvalidTransition(
        f"Request {request.label} is approved and {what}: it cannot be cancelled now. "
        f"Revoke it once it is active (`revoke {request.id}`)."
    )


def check_at_start(request: AccessRequest, policy: RolePolicy, grantee: Actor, subject: str,
                   now: datetime, *, deactivated: bool = False,
                   account_problem: str | None = None) -> None:
    """What is checked again when a scheduled window starts, before access is granted
    (the contract's "eligibility and identity are checked again at the start"). Raises
    :class:`PolicyViolation` saying why the request cannot start: its window ended before
    it could (the bot was down all along), the grantee's account was deactivated or is not a
    full member's (``account_problem``, :func:`bot.domain.eligibility.account_problem`), they may
    no longer ask for the role (``requesters`` changed), or the identity they would be
    granted (``subject``, resolved afresh) is not the one the approvers saw."""
    end = request.window_end
    if end is not None and now >= end:
        raise PolicyViolation(
            f"its window ended at {render_time(end)} before the access could start")
    if deactivated:
        raise PolicyViolation("the account it was asked for is deactivated")
    if account_problem is not None:  # a bot, a guest, someone from another organisation
        raise PolicyViolation(account_problem)
    if not policy.may_request(grantee):
        raise PolicyViolation(
            f"the person it was asked for may no longer ask for {policy.cluster}/{policy.role}")
    if subject != request.subject:
        raise PolicyViolation(
            f"the identity to grant changed from {request.subject} to {subject} since the "
            "approvers saw it; ask again so that they approve the new one")
