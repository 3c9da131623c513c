"""Calls fanned out over threads only as far as they wait (bot.services.fanout)."""

from __future__ import annotations

import threading
import time
from types import SimpleNamespace
from typing import Any

import pytest

from bot.services import grants
from bot.services.fanout import fan_out

NEVER = 3600.0
"""A patience no call here outlasts: every call is answered at once."""


class Calls:
    """Records the threads the calls ran on and how many were under way at once."""

    def __init__(self, hold_until: int = 0) -> None:
        self._lock = threading.Lock()
        self.threads: set[str] = set()
        self.under_way = 0
        self.most_at_once = 0
        self._together = threading.Event()
        self._hold_until = hold_until
        if not hold_until:
            self._together.set()

    def __call__(self, item: int) -> int:
        with self._lock:
            self.threads.add(threading.current_thread().name)
            self.under_way += 1
            self.most_at_once = max(self.most_at_once, self.under_way)
            if self.under_way >= self._hold_until:
                self._together.set()
        # Waits (the network, a slow backend) until as many calls are under way together.
        assert self._together.wait(30), "the calls were never made together"
        with self._lock:
            self.under_way -= 1
        return item * 10


def test_calls_answered_at_once_are_made_one_after_another_on_one_thread() -> None:
    calls = Calls()
    assert fan_out(calls, list(range(50)), 8, "fan", patience=NEVER) == \
        [i * 10 for i in range(50)]
    assert calls.most_at_once == 1
    assert len(calls.threads) == 1


def test_calls_that_wait_are_joined_by_more_threads_up_to_the_most_allowed() -> None:
    calls = Calls(hold_until=4)
    assert fan_out(calls, list(range(20)), 4, "fan", patience=0.001) == \
        [i * 10 for i in range(20)]
    assert calls.most_at_once == 4
    assert len(calls.threads) == 4


def test_one_item_or_one_at_a_time_is_called_on_the_callers_thread() -> None:
    calls = Calls()
    assert fan_out(calls, [1], 8, "fan") == [10]
    assert fan_out(calls, [1, 2, 3], 1, "fan") == [10, 20, 30]
    assert calls.threads == {threading.current_thread().name}


@pytest.mark.parametrize(("most", "failing"), [(4, 2), (1, 0)],
                         ids=["fanned out", "one at a time"])
def test_a_call_that_raises_stops_none_of_the_others(most: int, failing: int) -> None:
    called: list[int] = []

    def call(item: int) -> int:
        called.append(item)
        if item == failing:
            raise ValueError("failing")
        return item

    with pytest.raises(ValueError, match="failing"):
        fan_out(call, list(range(6)), most, "fan", patience=NEVER)
    assert (called if most == 1 else sorted(called)) == list(range(6))


class Taking(Calls):
    """Calls that each take ``seconds`` (a backend a little slower than the patience)."""

    def __init__(self, seconds: float) -> None:
        super().__init__()
        self.seconds = seconds

    def __call__(self, item: int) -> int:
        with self._lock:
            self.under_way += 1
            self.most_at_once = max(self.most_at_once, self.under_way)
        time.sleep(self.seconds)
        with self._lock:
            self.under_way -= 1
        return item


def test_calls_a_little_slower_than_the_patience_reach_the_most_allowed() -> None:
    """A worker that has just begun its next call is waiting, when its last call took the
    patience or longer: workers out of step are all waiting together only now and then."""
    calls = Taking(0.013)
    assert fan_out(calls, list(range(80)), 6, "fan", patience=0.01) == list(range(80))
    assert calls.most_at_once == 6


def test_expiry_notices_sent_one_at_a_time_are_all_tried_when_one_fails() -> None:
    told: list[str] = []

    def notify(notice: Any) -> None:
        told.append(notice)
        if notice == "first":
            raise RuntimeError("storing the approval messages failed")

    ctx: Any = SimpleNamespace(
        notify=notify,
        tuning=SimpleNamespace(concurrency=SimpleNamespace(messages=1)))
    with pytest.raises(RuntimeError):
        grants._tell(ctx, ["first", "second", "third"])
    assert told == ["first", "second", "third"]
