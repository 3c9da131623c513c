"""The periodic passes with a controllable clock, and several runners racing over the same
work on one database: every expiry, reminder and nudge happens exactly once."""

from __future__ import annotations

import dataclasses
import threading
from collections import Counter
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import Engine, text

from bot.app import build_context
from bot.config import Config, Settings, parse_config
from bot.domain.errors import Undeliverable
from bot.domain.model import AccessRequest, MessageRef, Operation, OperationKind, State
from bot.domain.ports import NoticeKind
from bot.domain.reviews import AccessReview
from bot.jobs import WAKE_FLOOR, Job, Scheduler, default_jobs
from bot.services import access, grants, operations, reminders
from bot.services.context import Context, RetryPolicy
from bot.services.schedule import last_occurrence
from tests.conftest import ALICE, BOB, CAROL, DAVE
from tests.fakes.ports import (
    FakeClock,
    InMemoryGranter,
    RecordingNotifier,
    StaticDirectory,
    temporary,
)

MONDAY_8 = datetime(2026, 11, 30, 8, 0, tzinfo=UTC)
H, M, D = timedelta(hours=1), timedelta(minutes=1), timedelta(days=1)
S = timedelta(seconds=1)


@pytest.fixture
def jobs_config() -> Config:
    return parse_config({
        "schedules": {"reminders": "0 9 * * MON", "timezone": "UTC", "nudge_before": "1h",
                      "renotify_after": "4h"},
        "clusters": {"staging": {
            "backend": "rbac",
            "kubernetes": {"server": "https://staging.example", "kubeconfig": "/dev/null"},
            "approvers": [BOB, CAROL],
            "approvers_channel": "C0APPROVE",
            "roles": {"edit": {"cluster_role": "edit", "max_duration": "2w",
                               "auto_approve_up_to": "2w", "require_reason": False}},
        }, "prod": {
            "backend": "rbac",
            "kubernetes": {"server": "https://prod.example", "kubeconfig": "/dev/null"},
            "approvers": [BOB],
            "roles": {"view": {"cluster_role": "view", "require_reason": False}},
        }},
    }, Path("jobs.yaml"))


def make_context(engine: Engine, config: Config, granter: InMemoryGranter,
                 notifier: RecordingNotifier, directory: StaticDirectory, clock: FakeClock,
                 worker: str = "one") -> Context:
    ctx = build_context(Settings(), config, engine=engine,
                        granters={"staging": granter, "prod": granter}, notifier=notifier,
                        directory=directory, clock=clock)
    return dataclasses.replace(ctx, worker_id=worker, retry=RetryPolicy(jitter=0))


@pytest.fixture
def jctx(engine: Engine, jobs_config: Config, granter: InMemoryGranter,
         notifier: RecordingNotifier, directory: StaticDirectory, clock: FakeClock) -> Context:
    clock.now = MONDAY_8
    return make_context(engine, jobs_config, granter, notifier, directory, clock)


def active_grant(ctx: Context, user: str, duration: timedelta) -> int:
    request = access.file_request(ctx, user, "staging", "edit", duration=duration)
    assert request.state is State.ACTIVE and request.id is not None
    return request.id


def test_expiry_nudges_and_weekly_reminders(jctx: Context, notifier: RecordingNotifier,
                                            granter: InMemoryGranter, clock: FakeClock) -> None:
    now_ending = active_grant(jctx, ALICE, H)
    in_59m = active_grant(jctx, BOB, H + 59 * M)
    in_6d = active_grant(jctx, CAROL, 6 * D + H)
    in_8d = active_grant(jctx, DAVE, 8 * D + H)
    waiting = access.file_request(jctx, ALICE, "prod", "view", duration=H)
    clock.advance(H)  # Monday 09:00 UTC: the weekly moment

    assert grants.expire_due(jctx) == 1
    assert grants.get(jctx, now_ending).state is State.EXPIRED
    assert reminders.nudge_expiring(jctx) == 1
    assert [n.request.id for n in notifier.notices if n.kind is NoticeKind.EXPIRING] == [in_59m]
    assert reminders.weekly(jctx) == 3  # two owners, one approvers channel
    assert sorted(notifier.reminders) == sorted([(BOB, [in_59m]), (CAROL, [in_6d])])
    assert notifier.reviews == [("C0APPROVE", [in_8d, in_6d, in_59m])]
    assert reminders.remind(jctx) == 0  # everything already sent
    assert waiting.id is not None
    clock.advance(3 * H)
    assert reminders.renotify_pending(jctx) == 1
    assert reminders.renotify_pending(jctx) == 0
    assert [n.request.id for n in notifier.notices
            if n.kind is NoticeKind.STILL_PENDING] == [waiting.id]
    assert granter.calls["revoked"] == 1


def test_weekly_reminders_wait_for_their_moment(jctx: Context, notifier: RecordingNotifier,
                                                clock: FakeClock) -> None:
    active_grant(jctx, ALICE, 2 * D)
    assert reminders.weekly(jctx) == 0  # Monday 08:00: not yet
    clock.advance(H)
    assert reminders.weekly(jctx) == 2
    clock.advance(13 * H)  # too late to catch up Monday's: wait for next week
    assert reminders.weekly(jctx) == 0
    clock.advance(6 * D)
    assert reminders.weekly(jctx) == 0  # Sunday night: no new weekly moment yet
    clock.advance(11 * H)  # the next Monday 09:00, the grant long expired
    grants.expire_due(jctx)
    assert reminders.weekly(jctx) == 0
    assert len(notifier.reminders) == 1 and len(notifier.reviews) == 1


def claimed_keys(engine: Engine) -> list[str]:
    with engine.connect() as connection:
        return sorted(connection.execute(text("SELECT key FROM claimed_keys")).scalars())


def test_spent_keys_are_forgotten_and_no_message_goes_twice(
        jctx: Context, notifier: RecordingNotifier, clock: FakeClock, engine: Engine) -> None:
    active_grant(jctx, ALICE, 2 * D)
    waiting = access.file_request(jctx, BOB, "prod", "view", duration=H)
    clock.advance(H)  # Monday 09:00
    assert reminders.remind(jctx) == 2  # Alice's DM and the channel's review
    clock.advance(4 * H)
    assert reminders.remind(jctx) == 1  # the approvers, of Bob's waiting request
    # Weekly messages hold keys; the waiting request counts its reminders on its own row.
    assert [key.split(":")[0] for key in claimed_keys(engine)] == ["remind", "review"]
    assert grants.get(jctx, waiting.id or 0).renotified == 1
    # The longest window is the 24 h pending timeout: keys stay for it and a day, 48 h.
    clock.advance(D + 18 * H)  # Wednesday 07:00, the weekly keys 46 h old
    assert reminders.remind(jctx) == 0
    assert len(claimed_keys(engine)) == 2
    clock.advance(3 * H)  # 49 h: the weekly keys are spent, the waiting request's count is not
    assert reminders.remind(jctx) == 0
    assert grants.get(jctx, waiting.id or 0).state is State.PENDING
    assert claimed_keys(engine) == []
    assert grants.get(jctx, waiting.id or 0).renotified == 1
    assert len(notifier.reminders) == 1 and len(notifier.reviews) == 1
    assert len([n for n in notifier.notices if n.kind is NoticeKind.STILL_PENDING]) == 1


def test_a_failed_send_is_tried_again(jctx: Context, notifier: RecordingNotifier,
                                      clock: FakeClock) -> None:
    active_grant(jctx, ALICE, 2 * D)
    clock.advance(H)
    calls = {"n": 0}
    original = notifier.remind

    def flaky(user_id: str, grants_: Any, admins: Any = ()) -> None:
        calls["n"] += 1
        if calls["n"] == 1:
            raise ConnectionError("Slack unreachable")
        original(user_id, grants_, admins)

    notifier.remind = flaky  # type: ignore[method-assign]
    assert reminders.weekly(jctx) == 1  # the review went out, the DM did not
    assert reminders.weekly(jctx) == 1  # the DM, on the next pass
    assert notifier.reminders == [(ALICE, [1])]


def test_last_occurrence_follows_the_time_zone() -> None:
    now = datetime(2026, 11, 30, 8, 30, tzinfo=UTC)
    berlin = last_occurrence("0 9 * * MON", "Europe/Berlin", now)
    assert berlin.at == datetime(2026, 11, 30, 8, 0, tzinfo=UTC)
    assert berlin.key == "2026-11-30T09:00"
    utc = last_occurrence("0 9 * * MON", "UTC", now)
    assert utc.at == datetime(2026, 11, 23, 9, 0, tzinfo=UTC)


@pytest.mark.parametrize(("timezone", "cron", "start", "due"), [
    # the repeated hour of an autumn change, in both hemispheres and at midnight: the first
    # 02:30 (CEST, AEDT, -03) is the week's
    ("Europe/Berlin", "30 2 * * SUN", datetime(2026, 10, 24, 20, 0, tzinfo=UTC),
     datetime(2026, 10, 25, 0, 30, tzinfo=UTC)),
    ("Australia/Sydney", "30 2 * * SUN", datetime(2026, 4, 4, 10, 0, tzinfo=UTC),
     datetime(2026, 4, 4, 15, 30, tzinfo=UTC)),
    ("America/Santiago", "30 23 * * SAT", datetime(2026, 4, 4, 20, 0, tzinfo=UTC),
     datetime(2026, 4, 5, 2, 30, tzinfo=UTC)),
    ("America/New_York", "59 1 * * *", datetime(2026, 10, 31, 22, 0, tzinfo=UTC),
     datetime(2026, 11, 1, 5, 59, tzinfo=UTC)),
    # the skipped hour of a spring change: once, when the clock jumps over it (03:00 CEST)
    ("Europe/Berlin", "30 2 * * SUN", datetime(2026, 3, 28, 20, 0, tzinfo=UTC),
     datetime(2026, 3, 29, 1, 0, tzinfo=UTC)),
])
def test_weekly_messages_go_once_across_a_clock_change(
        engine: Engine, jobs_config: Config, granter: InMemoryGranter,
        notifier: RecordingNotifier, directory: StaticDirectory, clock: FakeClock,
        timezone: str, cron: str, start: datetime, due: datetime) -> None:
    schedules = jobs_config.file.schedules.model_copy(
        update={"timezone": timezone, "reminders": cron})
    config = dataclasses.replace(
        jobs_config, file=jobs_config.file.model_copy(update={"schedules": schedules}))
    ctx = make_context(engine, config, granter, notifier, directory, clock)
    clock.now = start
    active_grant(ctx, ALICE, 2 * D)
    sent_at: list[datetime] = []
    while clock.now < start + 16 * H:  # every ten minutes through the night of the change
        if reminders.weekly(ctx):
            sent_at.append(clock.now)
        clock.advance(10 * M)
    assert len(notifier.reminders) == 1 and len(notifier.reviews) == 1
    assert len(sent_at) == 1
    assert due <= sent_at[0] < due + 10 * M  # at the first pass after it was due


def test_the_whole_reminder_pass_sends_each_message_once_across_the_autumn_change(
        engine: Engine, jobs_config: Config, granter: InMemoryGranter,
        notifier: RecordingNotifier, directory: StaticDirectory, clock: FakeClock) -> None:
    """Weekly messages at 02:30 Berlin time, a grant whose nudge falls in the repeated hour:
    one weekly DM, one review, one nudge, one expiry."""
    schedules = jobs_config.file.schedules.model_copy(
        update={"timezone": "Europe/Berlin", "reminders": "30 2 * * SUN"})
    config = dataclasses.replace(
        jobs_config, file=jobs_config.file.model_copy(update={"schedules": schedules}))
    ctx = make_context(engine, config, granter, notifier, directory, clock)
    clock.now = datetime(2026, 10, 24, 20, 0, tzinfo=UTC)
    grant = active_grant(ctx, ALICE, 6 * H + 45 * M)  # ends 03:45 CET, nudged at 02:45 CET
    while clock.now < datetime(2026, 10, 25, 8, 0, tzinfo=UTC):
        grants.expire_due(ctx)
        reminders.remind(ctx)
        clock.advance(10 * M)
    assert len(notifier.reminders) == 1 and len(notifier.reviews) == 1
    assert notifier.kinds(grant).count(NoticeKind.EXPIRING) == 1
    assert notifier.kinds(grant).count(NoticeKind.EXPIRED) == 1


def test_three_runners_race_over_the_same_work(engine: Engine, jobs_config: Config,
                                               granter: InMemoryGranter,
                                               notifier: RecordingNotifier,
                                               directory: StaticDirectory,
                                               clock: FakeClock) -> None:
    clock.now = MONDAY_8
    runners = [make_context(engine, jobs_config, granter, notifier, directory, clock,
                            worker=f"replica-{n}") for n in range(3)]
    users = [f"U0RACE{n:04d}" for n in range(12)]
    for user in users:
        directory.emails[user] = f"{user.lower()}@example.com"
    expiring = [active_grant(runners[0], user, H) for user in users[:6]]
    staying = [active_grant(runners[0], user, 3 * D) for user in users[6:]]
    clock.advance(H)
    barrier = threading.Barrier(3)

    def run(ctx: Context) -> None:
        barrier.wait()
        for job in (grants.expire_due, reminders.remind, operations.run_due):
            job(ctx)

    with ThreadPoolExecutor(max_workers=3) as pool:
        list(pool.map(run, runners))

    assert granter.calls["revoke"] == len(expiring)
    assert granter.calls["revoked"] == len(expiring)
    assert all(grants.get(runners[0], i).state is State.EXPIRED for i in expiring)
    assert all(grants.get(runners[0], i).state is State.ACTIVE for i in staying)
    sent = Counter(user for user, _ in notifier.reminders)
    assert sent == Counter(users[6:])  # every reminder once, none skipped
    assert len(notifier.reviews) == 1
    expired = Counter(n.request.id for n in notifier.notices if n.kind is NoticeKind.EXPIRED)
    assert expired == Counter(expiring)


class FlakyReminders(RecordingNotifier):
    """Slack is down for the first reminder of each of ``flaky`` people (it may pass)."""

    def __init__(self, flaky: set[str]) -> None:
        super().__init__()
        self.flaky = set(flaky)

    def remind(self, user_id: str, grants: Sequence[AccessRequest],
               admins: Sequence[str] = ()) -> None:
        with self.lock:
            if user_id in self.flaky:
                self.flaky.discard(user_id)
                raise Undeliverable("Slack answered service_unavailable", recipient=user_id,
                                    error="service_unavailable",
                                    kind=Undeliverable.TEMPORARY)
        super().remind(user_id, grants, admins)


def test_racing_weekly_runs_over_many_people_remind_each_once(
        engine: Engine, jobs_config: Config, granter: InMemoryGranter,
        directory: StaticDirectory, clock: FakeClock) -> None:
    """More people than one claim of keys holds: each is reminded once by one of three racing
    runners; one whose message could not go out now is reminded by the next pass."""
    clock.now = MONDAY_8
    users = [f"U0MANY{n:04d}" for n in range(3 * 8 * reminders.CLAIM_CHUNK + 5)]
    notifier = FlakyReminders(set(users[::10]))
    runners = [make_context(engine, jobs_config, granter, notifier, directory, clock,
                            worker=f"replica-{n}") for n in range(3)]
    for user in users:
        directory.emails[user] = f"{user.lower()}@example.com"
        active_grant(runners[0], user, 3 * D)
    clock.advance(H)
    barrier = threading.Barrier(3)

    def run(ctx: Context) -> int:
        barrier.wait()
        return reminders.weekly(ctx)

    with ThreadPoolExecutor(max_workers=3) as pool:
        sent = sum(pool.map(run, runners))
    assert max(Counter(u for u, _ in notifier.reminders).values()) == 1
    assert notifier.flaky == set()  # each failed once, and gave its key back
    # what a failure gave back after the other runners had passed it goes in the next pass
    sent += reminders.weekly(runners[1])
    assert sent == len(users) + 1  # and the review
    assert Counter(u for u, _ in notifier.reminders) == Counter(users)
    assert reminders.weekly(runners[2]) == 0


class SlowReview(RecordingNotifier):
    """A review that takes until every reminder has gone (or ``patience`` has passed)."""

    def __init__(self, expected: int, patience: float = 10) -> None:
        super().__init__()
        self.expected = expected
        self.patience = patience
        self.reminded_before_review = -1
        self.all_reminded = threading.Event()
        self.reminded_meanwhile = False

    def remind(self, user_id: str, grants: Sequence[AccessRequest],
               admins: Sequence[str] = ()) -> None:
        super().remind(user_id, grants, admins)
        with self.lock:
            if len(self.reminders) == self.expected:
                self.all_reminded.set()

    def review(self, review: AccessReview, admins: Sequence[str] = ()) -> MessageRef | None:
        with self.lock:
            self.reminded_before_review = len(self.reminders)
        self.reminded_meanwhile = self.all_reminded.wait(self.patience)
        return super().review(review, admins)


def test_the_review_goes_first_and_holds_up_no_reminder(
        engine: Engine, jobs_config: Config, granter: InMemoryGranter,
        directory: StaticDirectory, clock: FakeClock) -> None:
    """The review (the message with the most to store, and a file) does not wait behind the
    weekly DMs, and every DM goes while it is still on its way: more chunks of keys than two
    are claimed meanwhile."""
    clock.now = MONDAY_8
    users = [f"U0MANY{n:04d}" for n in range(3 * 8 * reminders.CLAIM_CHUNK + 5)]
    notifier = SlowReview(expected=len(users))
    ctx = make_context(engine, jobs_config, granter, notifier, directory, clock)
    for user in users:
        directory.emails[user] = f"{user.lower()}@example.com"
        active_grant(ctx, user, 3 * D)
    clock.advance(H)
    assert reminders.weekly(ctx) == len(users) + 1
    assert 0 <= notifier.reminded_before_review < len(users)  # not behind them
    assert notifier.reminded_meanwhile
    assert [audience for audience, _ in notifier.reviews] == ["C0APPROVE"]
    assert Counter(u for u, _ in notifier.reminders) == Counter(users)
    assert reminders.weekly(ctx) == 0


def test_scheduler_runs_the_passes(jctx: Context, clock: FakeClock) -> None:
    request_id = active_grant(jctx, ALICE, H)
    clock.advance(H)
    ran = threading.Event()

    def expire(ctx: Context) -> int:
        handled = grants.expire_due(ctx)
        ran.set()
        return handled

    failing: Callable[[Context], int] = lambda ctx: 1 // 0  # noqa: E731
    scheduler = Scheduler(jctx, [Job("boom", failing, timedelta(milliseconds=10)),
                                 Job("expire", expire, timedelta(milliseconds=10))])
    scheduler.start()
    try:
        assert ran.wait(5)
    finally:
        scheduler.stop()
    assert grants.get(jctx, request_id).state is State.EXPIRED


def test_each_job_does_only_what_it_names(jctx: Context) -> None:
    from bot.jobs import JOBS, default_jobs

    assert JOBS["expire"] is grants.expire_due
    assert JOBS["reconcile"] is grants.reconcile_and_fix
    every = {job.name: job.every for job in default_jobs(jctx)}
    assert set(every) == set(JOBS)
    assert every["reconcile"] == 10 * every["expire"]


def test_a_slow_job_never_holds_back_another(jctx: Context) -> None:
    """The audit stream waiting on a slow receiver must not delay the expiry of grants."""
    release, expired = threading.Event(), threading.Event()

    def slow_stream(ctx: Context) -> int:
        release.wait(10)
        return 0

    def expire(ctx: Context) -> int:
        expired.set()
        return 0

    scheduler = Scheduler(jctx, [Job("stream", slow_stream, timedelta(milliseconds=10)),
                                 Job("expire", expire, timedelta(milliseconds=10))])
    scheduler.start()
    try:
        assert expired.wait(5)
        assert not release.is_set()  # the stream's pass was still under way
    finally:
        release.set()
        scheduler.stop()


def expiry_job(ctx: Context) -> Job:
    return next(job for job in default_jobs(ctx) if job.name == "expire")


def test_the_expiry_job_waits_until_the_next_grant_is_due_floored_and_capped(
        jctx: Context, clock: FakeClock, granter: InMemoryGranter) -> None:
    scheduler, expire = Scheduler(jctx, []), expiry_job(jctx)
    assert expire.every == M and WAKE_FLOOR == S
    assert scheduler.wait_after(expire) == M  # nothing active: the sweep
    first = active_grant(jctx, ALICE, H)  # ends at 09:00:00
    second = active_grant(jctx, BOB, H + 40 * S)  # ends at 09:00:40
    assert scheduler.wait_after(expire) == M  # an hour away: at most the sweep
    clock.advance(H - 25 * S)
    assert scheduler.wait_after(expire) == 25 * S  # until the first is due
    assert scheduler.wait_after(expire, failed=True) == M  # a failed pass waits the sweep
    clock.advance(24.5 * S)
    assert scheduler.wait_after(expire) == WAKE_FLOOR  # half a second away: the floor
    clock.advance(S)
    assert scheduler.wait_after(expire) == WAKE_FLOOR  # due and not ended yet

    granter.fail_next.append(temporary("the API server is restarting"))
    assert grants.expire_due(jctx) == 1
    assert grants.get(jctx, first).state is State.ACTIVE  # owed: the retry pass's now
    # The failed revocation does not make the job wake every second: the next grant counts.
    assert scheduler.wait_after(expire) == 39.5 * S
    clock.advance(39.5 * S)
    assert grants.expire_due(jctx) == 1
    assert grants.get(jctx, second).state is State.EXPIRED
    assert grants.get(jctx, first).state is State.ACTIVE
    assert scheduler.wait_after(expire) == M  # none left that this pass would end


class FakeWaits:
    """The scheduler's waits on a fake clock: ``during(turn)`` runs in each (it may move the
    clock part of the way), then the clock is at the wait's end; the ``turns``-th wait stops
    the scheduler."""

    def __init__(self, clock: FakeClock, turns: int,
                 during: Callable[[int], None] = lambda turn: None) -> None:
        self.clock, self.turns, self.during = clock, turns, during
        self.waits: list[timedelta] = []
        self.done = threading.Event()

    def __call__(self, seconds: float) -> bool:
        started = self.clock()
        self.waits.append(timedelta(seconds=seconds))
        self.during(len(self.waits))
        self.clock.advance(started + timedelta(seconds=seconds) - self.clock())
        if len(self.waits) >= self.turns:
            self.done.set()
            return True
        return False


def run_until_done(ctx: Context, job: Job, waits: FakeWaits) -> None:
    scheduler = Scheduler(ctx, [job], wait=waits)
    scheduler.start()
    try:
        assert waits.done.wait(20)
    finally:
        scheduler.stop()


def test_the_expiry_loop_ends_a_grant_approved_meanwhile_when_it_is_due(
        jctx: Context, clock: FakeClock) -> None:
    granted: list[int] = []

    def approve_twenty_seconds_in(turn: int) -> None:
        if turn == 1:
            clock.advance(20 * S)
            granted.append(active_grant(jctx, ALICE, 10 * M))  # ends at 08:10:20

    waits = FakeWaits(clock, 12, approve_twenty_seconds_in)
    run_until_done(jctx, expiry_job(jctx), waits)
    # Passes at 08:00 … 08:10 a sweep apart, then one when the grant is due, then nothing due.
    assert waits.waits == [M] * 10 + [20 * S, M]
    ended = grants.get(jctx, granted[0])
    assert ended.state is State.EXPIRED
    assert ended.ended_at == ended.ends_at == MONDAY_8 + 10 * M + 20 * S


def test_a_grant_approved_while_the_loop_waits_ends_at_the_next_wake_at_the_latest(
        jctx: Context, clock: FakeClock) -> None:
    """The sweep is the longest wait: a grant approved during one, whatever its end, is seen
    at the next wake."""
    granted: list[int] = []

    def approve(turn: int) -> None:
        if turn == 1:
            granted.append(active_grant(jctx, ALICE, H))

    waits = FakeWaits(clock, 2, approve)
    job = dataclasses.replace(expiry_job(jctx), every=2 * H)
    run_until_done(jctx, job, waits)
    assert waits.waits == [2 * H, 2 * H]  # nothing active at either pass
    ended = grants.get(jctx, granted[0])
    assert ended.state is State.EXPIRED and ended.ended_at == MONDAY_8 + 2 * H


def test_stopping_the_scheduler_ends_a_long_wait_at_once(jctx: Context) -> None:
    ran = threading.Event()

    def expire(ctx: Context) -> int:
        ran.set()
        return 0

    scheduler = Scheduler(jctx, [Job("expire", expire, H, grants.next_expiry)])
    scheduler.start()
    assert ran.wait(5)
    scheduler.stop(timeout=5)
    assert not [thread for thread in threading.enumerate() if thread.name == "job-expire"]


def test_a_scheduled_window_starts_at_its_start_and_ends_on_time_in_serve(
        jctx: Context, clock: FakeClock) -> None:
    """The retry loop wakes when a window's grant comes due, as the expiry loop wakes when it
    ends: the window is [start, start + duration], not cut short by the loops' phase."""
    clock.advance(30 * S)  # serve started at 08:00:30: its sweeps come at hh:mm:30
    request = access.file_request(jctx, ALICE, "staging", "edit", duration=H,
                                  at="2026-11-30T08:10Z")  # approved by policy; it waits
    assert request.state is State.APPROVED and request.id is not None
    retry = next(job for job in default_jobs(jctx) if job.name == "retry")
    waits = FakeWaits(clock, 12)
    run_until_done(jctx, retry, waits)
    started = grants.get(jctx, request.id)
    assert started.state is State.ACTIVE
    assert started.activated_at == MONDAY_8 + 10 * M
    assert started.ends_at == MONDAY_8 + 10 * M + H
    assert waits.waits[:10] == [M] * 9 + [30 * S]  # a sweep at most, then to the start


def test_the_retry_loop_wakes_for_an_owed_operation_no_live_lease_holds(
        jctx: Context, clock: FakeClock) -> None:
    retry = next(job for job in default_jobs(jctx) if job.name == "retry")
    scheduler = Scheduler(jctx, [retry])
    assert scheduler.wait_after(retry) == M  # nothing owed: the sweep
    first, second = active_grant(jctx, ALICE, 2 * H), active_grant(jctx, BOB, 2 * H)
    with jctx.transaction() as uow:  # one held by a live worker, one backing off 25 s
        uow.operations.enqueue(Operation(first, OperationKind.REVOKE, clock() - S,
                                         lease_owner="other", lease_until=clock() + 5 * M))
        uow.operations.enqueue(Operation(second, OperationKind.REVOKE, clock() + 25 * S))
    assert scheduler.wait_after(retry) == 25 * S
    clock.advance(6 * M)  # the other worker died: its lease lapsed
    assert scheduler.wait_after(retry) == WAKE_FLOOR

