"""Scheduled windows, table-driven: reading WHEN, refusing what cannot be, the activation rule."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest

from bot.domain import escalation, lifecycle, windows
from bot.domain.errors import InvalidInput, InvalidTransition, PolicyViolation
from bot.domain.model import Actor, State
from bot.domain.policy import RolePolicy

# Monday 30 November 2026, 09:00 UTC = 10:00 in Berlin (CET, UTC+1).
NOW = datetime(2026, 11, 30, 9, 0, tzinfo=UTC)
BERLIN = "Europe/Berlin"
H = timedelta(hours=1)
ALICE, BOB, CAROL = Actor("U0ALICE"), Actor("U0BOB"), Actor("U0CAROL")
POLICY = RolePolicy(cluster="prod", role="edit", approvers=frozenset({"U0BOB", "U0CAROL"}),
                    cluster_approvers=frozenset(), max_duration=8 * H, default_duration=H)


def utc(day: int, hour: int, minute: int = 0, month: int = 12) -> datetime:
    return datetime(2026, month, day, hour, minute, tzinfo=UTC)


@pytest.mark.parametrize(("text", "tz", "expected"), [
    ("2026-12-02T22:00", BERLIN, utc(2, 21)),               # local time in the given zone
    ("2026-12-02T22:00", None, utc(2, 22)),                 # no zone: UTC
    ("2026-12-02T22:00Z", BERLIN, utc(2, 22)),              # Z wins over the zone
    ("2026-12-02t22:00z", BERLIN, utc(2, 22)),
    ("2026-12-02T22:00+05:30", BERLIN, utc(2, 16, 30)),     # an offset wins too
    ("2026-12-02T22:00-0100", BERLIN, utc(2, 23)),
    ("2026-12-02 22:00", BERLIN, utc(2, 21)),
    ("22:00", BERLIN, utc(30, 21, month=11)),               # later today
    ("09:30", BERLIN, utc(1, 8, 30)),                       # passed today (10:00 local): tomorrow
    ("10:00", BERLIN, utc(1, 9)),                           # this very minute: tomorrow
    ("9:30", None, utc(30, 9, 30, month=11)),
    ("tomorrow 22:00", BERLIN, utc(1, 21)),
    ("Tomorrow  07:15", "America/New_York", utc(1, 12, 15)),
    ("23:30", "Pacific/Auckland", utc(30, 10, 30, month=11)),  # 22:00 local already, UTC+13
    ("08:00Z", BERLIN, utc(1, 8)),
])
def test_when_is_read_as_people_write_it(text: str, tz: str | None, expected: datetime) -> None:
    assert windows.parse_when(text, now=NOW, tz=tz) == expected


@pytest.mark.parametrize(("text", "says"), [
    ("next friday", "is not a time: write it like 2026-12-02T22:00"),
    ("25:00", "is not a time of day"),
    ("12:61", "is not a time of day"),
    ("2026-02-30T10:00", "is not a date"),
    ("2026-12-02T22:00+25:00", "is not an offset"),
    ("", "is not a time"),
])
def test_what_is_not_a_time_is_refused_with_how_to_write_it(text: str, says: str) -> None:
    with pytest.raises(InvalidInput, match=says):
        windows.parse_when(text, now=NOW, tz=BERLIN)


def test_a_slack_zone_unknown_here_asks_for_utc_or_an_offset_and_renders_utc() -> None:
    with pytest.raises(InvalidInput) as refused:
        windows.parse_when("22:00", now=NOW, tz="Mars/Olympus")
    assert "Your Slack time zone 'Mars/Olympus' is not a time zone the bot knows" in (
        refused.value.message)
    assert "like 22:00Z or 22:00+01:00" in refused.value.message
    assert windows.parse_when("22:00Z", now=NOW, tz="Mars/Olympus") == utc(30, 22, month=11)
    assert windows.render_time(utc(2, 21), "Mars/Olympus") == "2026-12-02 21:00 UTC"


def test_an_unknown_zone_and_a_skipped_local_time_are_refused() -> None:
    with pytest.raises(InvalidInput, match="'Mars/Olympus' is not a time zone"):
        windows.parse_when("22:00", now=NOW, tz="Mars/Olympus")
    spring = datetime(2027, 3, 27, 12, tzinfo=UTC)  # Berlin skips 02:00-03:00 on 28 March
    with pytest.raises(InvalidInput, match="the clocks skip it"):
        windows.parse_when("tomorrow 02:30", now=spring, tz=BERLIN)
    later = datetime(2027, 3, 28, 9, tzinfo=UTC)  # 11:00 that day: the next 02:30 exists
    assert windows.parse_when("02:30", now=later, tz=BERLIN) == datetime(
        2027, 3, 29, 0, 30, tzinfo=UTC)
    before = datetime(2027, 3, 27, 23, 30, tzinfo=UTC)  # 00:30 that day: today's is skipped
    with pytest.raises(InvalidInput, match="the clocks skip it"):
        windows.parse_when("02:30", now=before, tz=BERLIN)
    autumn = datetime(2027, 10, 30, 12, tzinfo=UTC)  # 02:30 happens twice: the first one
    assert windows.parse_when("tomorrow 02:30", now=autumn, tz=BERLIN) == datetime(
        2027, 10, 31, 0, 30, tzinfo=UTC)


@pytest.mark.parametrize(("text", "ahead", "says"), [
    ("2026-11-30T09:00", timedelta(days=14), None),            # now is not the past
    ("2026-12-14T09:00", timedelta(days=14), None),            # exactly at the limit
    ("2026-11-30T08:59", timedelta(days=14), "is in the past: give a time ahead"),
    ("2026-12-14T09:01", timedelta(days=14), "more than 2w ahead: pick a start by 2026-12-14"),
    ("tomorrow 10:00", timedelta(hours=12), "more than 12h ahead"),
])
def test_a_start_in_the_past_or_too_far_ahead_is_refused(text: str, ahead: timedelta,
                                                         says: str | None) -> None:
    if says is None:
        assert windows.schedule(text, now=NOW, tz="UTC", max_ahead=ahead) >= NOW
        return
    with pytest.raises(PolicyViolation, match=says):
        windows.schedule(text, now=NOW, tz="UTC", max_ahead=ahead)


@pytest.mark.parametrize(("at", "tz", "shown"), [
    (utc(2, 21), BERLIN, "2026-12-02 21:00 UTC (22:00 CET)"),
    (utc(2, 23, 30), BERLIN, "2026-12-02 23:30 UTC (2026-12-03 00:30 CET)"),
    (utc(2, 21), None, "2026-12-02 21:00 UTC"),
    (utc(2, 21), "UTC", "2026-12-02 21:00 UTC"),
    (utc(2, 21), "Europe/London", "2026-12-02 21:00 UTC"),
])
def test_times_are_shown_in_utc_and_local_time(at: datetime, tz: str | None, shown: str) -> None:
    assert windows.render_time(at, tz) == shown


def scheduled(start: datetime, duration: timedelta = 2 * H, *, policy: RolePolicy = POLICY):
    return lifecycle.file_request(policy=policy, requester=ALICE, subject="s", duration=duration,
                                  reason="x", now=NOW, window_start=start)


def test_filing_refuses_a_window_out_of_bounds_and_break_glass_later() -> None:
    with pytest.raises(PolicyViolation, match="in the past"):
        scheduled(NOW - H)
    with pytest.raises(PolicyViolation, match="more than 2w ahead"):
        scheduled(NOW + timedelta(days=15))
    glass = RolePolicy(**{**POLICY.__dict__, "break_glass": True})
    with pytest.raises(PolicyViolation, match="Break-glass starts now"):
        lifecycle.file_request(policy=glass, requester=ALICE, subject="s", duration=H,
                               reason="x", now=NOW, window_start=NOW + H, break_glass=True)


@pytest.mark.parametrize(("approved_at", "activation_due", "ends_at"), [
    (NOW + H, False, NOW + 5 * H),          # ahead: waits for the start
    (NOW + 3 * H, True, NOW + 5 * H),       # at the start
    (NOW + 4 * H, True, NOW + 5 * H),       # after the start: at once, until the window's end
])
def test_the_window_decides_when_access_starts_and_ends(approved_at: datetime,
                                                         activation_due: bool,
                                                         ends_at: datetime) -> None:
    request = scheduled(NOW + 3 * H)
    assert lifecycle.approve(request, BOB, POLICY, approved_at)
    assert windows.activation_at(request) == NOW + 3 * H
    assert windows.activation_due(request, approved_at) is activation_due
    assert windows.activation_due(request, NOW + 3 * H)
    assert not windows.activation_due(request, NOW + 5 * H)
    lifecycle.activate(request, max(approved_at, NOW + 3 * H))
    assert request.ends_at == ends_at


def test_an_unscheduled_request_activates_at_once_for_its_duration() -> None:
    request = lifecycle.file_request(policy=POLICY, requester=ALICE, subject="s", duration=2 * H,
                                     reason="x", now=NOW)
    assert not windows.activation_due(request, NOW)  # pending
    lifecycle.approve(request, BOB, POLICY, NOW)
    assert windows.activation_at(request) is None and windows.activation_due(request, NOW)
    lifecycle.activate(request, NOW + H)
    assert request.ends_at == NOW + 3 * H


@pytest.mark.parametrize(("now", "refused"), [
    (NOW + 4 * H, None),
    (NOW + 5 * H - timedelta(minutes=11), None),
    (NOW + 5 * H - timedelta(minutes=9), "too soon to grant"),
    (NOW + 5 * H, "ended at 2026-11-30 14:00 UTC"),
])
def test_a_window_that_ended_cannot_be_approved(now: datetime, refused: str | None) -> None:
    request = scheduled(NOW + 3 * H)
    if refused is None:
        lifecycle.approve(request, BOB, POLICY, now)
        return
    with pytest.raises(InvalidTransition, match=refused):
        lifecycle.approve(request, BOB, POLICY, now)
    assert request.approvals == []


def test_a_window_that_ended_undecided_times_out_not_before() -> None:
    request = scheduled(NOW + timedelta(days=3))  # further ahead than the 24 h timeout
    assert escalation.pending_deadline(request, POLICY) == NOW + timedelta(days=3) + 2 * H
    with pytest.raises(InvalidTransition, match="not waited long enough"):
        lifecycle.time_out(request, POLICY, NOW + timedelta(days=2))
    lifecycle.time_out(request, POLICY, NOW + timedelta(days=3, hours=2))
    assert request.state is State.TIMED_OUT
    assert request.end_reason == "its window ended without a decision"


ELIGIBLE = RolePolicy(**{**POLICY.__dict__, "requesters": frozenset({"U0ALICE", "S0DEVS"})})


@pytest.mark.parametrize(("case", "at", "grantee", "subject", "deactivated", "says"), [
    ("all as approved", NOW + 3 * H, ALICE, "s", False, None),
    ("eligible by a user group", NOW + 3 * H, Actor("U0ALICE", frozenset({"S0DEVS"})), "s",
     False, None),
    ("late, still inside the window", NOW + 4 * H, ALICE, "s", False, None),
    ("the window ended meanwhile", NOW + 5 * H, ALICE, "s", False,
     "its window ended at 2026-11-30 14:00 UTC before the access could start"),
    ("deactivated", NOW + 3 * H, ALICE, "s", True, "deactivated"),
    ("no longer among the requesters", NOW + 3 * H, CAROL, "s", False,
     "may no longer ask for prod/edit"),
    ("another identity", NOW + 3 * H, ALICE, "alice@new.example", False,
     "changed from s to alice@new.example"),
])
def test_what_is_checked_again_at_the_start(case: str, at: datetime, grantee: Actor,
                                            subject: str, deactivated: bool,
                                            says: str | None) -> None:
    request = scheduled(NOW + 3 * H, policy=ELIGIBLE)
    lifecycle.approve(request, BOB, ELIGIBLE, NOW + H)
    if says is None:
        windows.check_at_start(request, ELIGIBLE, grantee, subject, at, deactivated=deactivated)
        return
    with pytest.raises(PolicyViolation, match=says):
        windows.check_at_start(request, ELIGIBLE, grantee, subject, at, deactivated=deactivated)


@pytest.mark.parametrize(("start", "approved_at", "ahead"), [
    (None, NOW, False),
    (NOW + 3 * H, NOW + H, True),
    (NOW + 3 * H, NOW + 3 * H, False),
    (NOW + 3 * H, NOW + 4 * H, False),
])
def test_approved_ahead_is_an_approval_before_the_start(start: datetime | None,
                                                       approved_at: datetime,
                                                       ahead: bool) -> None:
    request = scheduled(start) if start is not None else lifecycle.file_request(
        policy=POLICY, requester=ALICE, subject="s", duration=2 * H, reason="x", now=NOW)
    assert not windows.approved_ahead(request)  # pending
    lifecycle.approve(request, BOB, POLICY, approved_at)
    assert windows.approved_ahead(request) is ahead


@pytest.mark.parametrize(("at", "tz", "error", "says"), [
    ("9999-12-31T23:59", "Europe/Berlin", PolicyViolation, "9999-12-31 22:59 UTC (23:59 CET) "
                                                           "is more than 2w ahead"),
    ("9999-12-31T23:59Z", "Europe/Berlin", PolicyViolation, "9999-12-31 23:59 UTC is more"),
    ("9999-12-31T23:59Z", "Pacific/Kiritimati", PolicyViolation, "is more than 2w ahead"),
    ("9999-12-31T23:59+14:00", "Europe/Berlin", PolicyViolation, "is more than 2w ahead"),
    ("0001-01-01T00:00", "Europe/Berlin", InvalidInput, "is too far from now to be a start"),
    ("0001-01-01T00:00", None, PolicyViolation, "is in the past"),
    ("0001-01-01T00:00-12:00", "Europe/Berlin", PolicyViolation, "is in the past"),
    ("0000-01-01T10:00", None, InvalidInput, "is not a date"),
    ("99999-01-01T10:00", None, InvalidInput, "is not a time"),
    ("2026-02-30T10:00", "Europe/Berlin", InvalidInput, "is not a date"),
    ("2026-13-01T10:00", None, InvalidInput, "is not a date"),
    ("25:00", "Europe/Berlin", InvalidInput, "is not a time of day"),
    ("24:00", None, InvalidInput, "is not a time of day"),
    ("tomorrow 23:60", None, InvalidInput, "is not a time of day"),
    ("2026-12-02T10:00+23:59", None, InvalidInput, "'+23:59' is not an offset"),
    ("2026-12-02T10:00-14:01", None, InvalidInput, "'-14:01' is not an offset"),
    ("2025-01-01T00:00", "Europe/Berlin", PolicyViolation, "is in the past"),
    ("2030-01-01T00:00", "Europe/Berlin", PolicyViolation, "is more than 2w ahead"),
    ("99999999999999999999:00", None, InvalidInput, "is not a time"),
    ("2026-12-02T10:00+14:00", None, None, "2026-12-01 20:00"),
    ("2026-12-02T10:00-12:00", "Europe/Berlin", None, "2026-12-02 22:00"),
])
def test_far_off_and_impossible_starts_say_how(at: str, tz: str | None,
                                               error: type[Exception] | None,
                                               says: str) -> None:
    now = datetime(2026, 12, 1, 10, 0, tzinfo=UTC)
    if error is None:
        start = windows.schedule(at, now=now, tz=tz, max_ahead=timedelta(days=14))
        assert f"{start:%Y-%m-%d %H:%M}" == says
        return
    with pytest.raises(error) as refused:
        windows.schedule(at, now=now, tz=tz, max_ahead=timedelta(days=14))
    assert says in str(refused.value)


def test_a_time_at_the_end_of_what_a_datetime_holds_is_shown_in_utc() -> None:
    last = datetime(9999, 12, 31, 23, 59, tzinfo=UTC)
    assert windows.render_time(last, "Pacific/Kiritimati") == "9999-12-31 23:59 UTC"
