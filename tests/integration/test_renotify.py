"""Re-notification of waiting requests: with back-off until the timeout, each step once, and a
step that reached nobody leaves the next one to try again."""

from __future__ import annotations

from datetime import timedelta

import pytest

from bot.domain.model import Reach, Undelivered
from bot.domain.ports import Notice, NoticeKind, Posted
from bot.services import access, reminders
from bot.services.context import Context
from tests.conftest import ALICE
from tests.fakes.ports import FakeClock, RecordingNotifier

H, M = timedelta(hours=1), timedelta(minutes=1)


@pytest.mark.parametrize(("waited", "step"), [
    (4 * H, 1), (12 * H - M, 1), (12 * H, 2), (28 * H - M, 2), (28 * H, 3), (60 * H, 4)])
def test_each_interval_twice_the_one_before(waited: timedelta, step: int) -> None:
    assert reminders.renotify_step(waited, 4 * H) == step


def still_pending(notifier: RecordingNotifier) -> int:
    return len([n for n in notifier.notices if n.kind is NoticeKind.STILL_PENDING])


def test_renotification_backs_off_until_the_timeout(ctx: Context, notifier: RecordingNotifier,
                                                    clock: FakeClock) -> None:
    access.file_request(ctx, ALICE, "prod", "view", duration=H, reason="x")
    sent = []
    for _ in range(26):  # a pass every hour, past the 24 h timeout
        clock.advance(H)
        sent.append(reminders.renotify_pending(ctx))
    hours = [hour + 1 for hour, n in enumerate(sent) if n]
    assert hours == [4, 12]  # then 28 h: past the timeout, the timeout pass closes it
    assert still_pending(notifier) == 2


def test_a_step_that_reached_nobody_leaves_the_next_to_try(
        ctx: Context, notifier: RecordingNotifier, clock: FakeClock) -> None:
    access.file_request(ctx, ALICE, "prod", "view", duration=H, reason="x")
    nobody = Reach(undelivered=(Undelivered("U0BOB0002", "user_disabled"),))
    original = notifier.notify

    def unreachable(notice: Notice) -> Posted | None:
        original(notice)
        return Posted(nobody) if notice.kind is NoticeKind.STILL_PENDING else None

    notifier.notify = unreachable  # type: ignore[assignment]
    clock.advance(4 * H)
    assert reminders.renotify_pending(ctx) == 0  # reached nobody
    clock.advance(M)
    assert reminders.renotify_pending(ctx) == 0  # not tried again every minute
    assert still_pending(notifier) == 1
    notifier.notify = original  # type: ignore[method-assign]
    clock.advance(8 * H)
    assert reminders.renotify_pending(ctx) == 1  # the next step
    assert still_pending(notifier) == 2
