"""Slack's rate limits, learnt from its 429s: every caller waits out a Retry-After exactly,
then the calls go just under the rate Slack accepted, evenly spaced
(bot.adapters.slack.client)."""

from __future__ import annotations

import threading

from slack_sdk.http_retry.request import HttpRequest
from slack_sdk.http_retry.response import HttpResponse
from slack_sdk.http_retry.state import RetryState

from bot.adapters.slack.client import CountingRateLimitHandler, Pacing, retry_after


class Clock:
    def __init__(self) -> None:
        self.now = 100.0
        self.slept: list[float] = []

    def __call__(self) -> float:
        return self.now

    def sleep(self, seconds: float) -> None:
        self.slept.append(round(seconds, 6))
        self.now += seconds


def pacing(clock: Clock, **options: float) -> Pacing:
    return Pacing(clock=clock, sleep=clock.sleep, **options)  # type: ignore[arg-type]


def answered(pace: Pacing, clock: Clock, count: int, within: float = 0.5) -> None:
    for _ in range(count):
        pace.wait("chat.postMessage")
        pace.answered("chat.postMessage")
        clock.now += within / count


def test_calls_go_free_until_slack_refuses_one() -> None:
    clock = Clock()
    pace = pacing(clock)
    answered(pace, clock, 500)
    assert clock.slept == []


def test_a_429_is_waited_out_exactly_then_calls_go_at_the_accepted_rate() -> None:
    clock = Clock()
    pace = pacing(clock)
    answered(pace, clock, 250)  # 250 accepted within the last second
    pace.limited("chat.postMessage", 2.5)
    assert clock.slept == [2.5]  # the Retry-After, to the millisecond, no random extra
    clock.slept.clear()
    for _ in range(5):
        pace.wait("chat.postMessage")
    # 97% of 250 a second, one after the other: calls that arrive together after a hiccup
    # never make one second hold more than Slack took
    assert clock.slept == [round(1 / 242.5, 6)] * 5
    # another method is not held by this one's limit
    before = len(clock.slept)
    pace.wait("conversations.open")
    assert len(clock.slept) == before


def test_every_caller_waits_for_the_retry_after() -> None:
    clock = Clock()
    pace = pacing(clock)
    answered(pace, clock, 100)
    refused_at = clock.now
    pace.limited("chat.postMessage", 3)
    clock.now = refused_at + 1  # another caller, a second later
    clock.slept.clear()
    pace.wait("chat.postMessage")
    assert clock.now >= refused_at + 3


def test_a_429_after_a_few_calls_holds_only_its_caller() -> None:
    """One conversation's limit (a message a second in a channel), not the method's."""
    clock = Clock()
    pace = pacing(clock)
    answered(pace, clock, 3)
    pace.limited("chat.postMessage", 1)
    assert clock.slept == [1]
    clock.slept.clear()
    answered(pace, clock, 50, within=0.01)
    assert clock.slept == []


def test_each_further_429_slows_the_pace_and_the_pace_ends_after_a_while() -> None:
    clock = Clock()
    pace = pacing(clock, keep=60)
    answered(pace, clock, 200)
    pace.limited("chat.postMessage", 1)
    pace.limited("chat.postMessage", 1)  # paced already: 1% slower
    clock.slept.clear()
    pace.wait("chat.postMessage")
    pace.wait("chat.postMessage")
    assert round(clock.slept[-1], 6) == round(1 / (200 * 0.97) * 1.01, 6)
    clock.now += 61
    clock.slept.clear()
    answered(pace, clock, 100, within=0.01)
    assert clock.slept == []


def test_calls_on_their_way_with_the_one_that_met_the_limit_do_not_slow_the_pace() -> None:
    """Eight callers sent at once; Slack refuses all eight: one limit, learnt once. Each of
    them waits the Retry-After, and the pace is the accepted rate, not 1% slower for each."""
    clock = Clock()
    pace = pacing(clock, margin=1.0)
    answered(pace, clock, 200)
    callers, let_go, one_at_a_time = 8, threading.Barrier(8), threading.Lock()
    refused_at = clock.now + 0.001

    def caller() -> None:
        pace.wait("chat.postMessage")  # let go together, free
        let_go.wait()
        with one_at_a_time:
            clock.now = max(clock.now, refused_at)
            pace.limited("chat.postMessage", 1)

    threads = [threading.Thread(target=caller) for _ in range(callers)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert clock.now >= refused_at + 1
    clock.slept.clear()
    for _ in range(3):
        pace.wait("chat.postMessage")
    assert clock.slept[-1] == round(1 / 200, 6)
    # a call let go at the pace and still refused slows it
    pace.limited("chat.postMessage", 1)
    clock.slept.clear()
    pace.wait("chat.postMessage")
    pace.wait("chat.postMessage")
    assert clock.slept[-1] == round(1 / 200 * 1.01, 6)


def test_calls_on_their_way_that_slack_accepted_after_the_429_count_in_its_rate() -> None:
    """Slack took the calls that were on their way when it refused one: its limit is those
    and the ones answered before."""
    clock = Clock()
    pace = pacing(clock, margin=1.0)
    on_their_way, refused, one_at_a_time = threading.Barrier(5), threading.Event(), \
        threading.Lock()

    def caller() -> None:
        pace.wait("chat.postMessage")  # let go before the 429…
        on_their_way.wait()
        refused.wait()
        with one_at_a_time:
            pace.answered("chat.postMessage")  # …and answered after it

    threads = [threading.Thread(target=caller) for _ in range(4)]
    for thread in threads:
        thread.start()
    on_their_way.wait()
    clock.now += 0.001
    answered(pace, clock, 196)
    pace.limited("chat.postMessage", 1)

    def spacing() -> float:
        clock.slept.clear()
        pace.wait("chat.postMessage")
        pace.wait("chat.postMessage")
        return clock.slept[-1]

    assert spacing() == round(1 / 196, 6)
    refused.set()
    for thread in threads:
        thread.join()
    assert spacing() == round(1 / 200, 6)
    pace.answered("chat.postMessage")  # let go at the pace: no news of the limit
    assert spacing() == round(1 / 200, 6)


def test_a_turn_a_429_put_off_while_its_caller_waited_is_taken_anew() -> None:
    """A caller asleep until its turn when another caller met a 429 does not go at that
    turn: it waits the Retry-After out too."""
    clock = Clock()
    pace = pacing(clock, margin=1.0)
    answered(pace, clock, 100)
    pace.limited("chat.postMessage", 1)  # paced: a call every 10 ms from then on
    caller = threading.current_thread()
    refused_at: list[float] = []

    def sleep(seconds: float) -> None:
        if threading.current_thread() is not caller:
            return  # the other caller's own wait: not this test's
        if not refused_at:  # while this caller sleeps to its turn, another one is refused
            refused_at.append(clock.now + 0.005)
            clock.now = refused_at[0]
            other = threading.Thread(target=lambda: pace.limited("chat.postMessage", 2))
            other.start()
            other.join()
        clock.now += seconds

    pace._sleep = sleep  # type: ignore[method-assign]
    pace.wait("chat.postMessage")
    assert clock.now >= refused_at[0] + 2


def test_the_retry_handler_waits_the_exact_retry_after_of_the_answer() -> None:
    clock = Clock()
    handler = CountingRateLimitHandler(3, None, pacing(clock))
    state = RetryState()
    request = HttpRequest(method="POST", url="https://slack.com/api/chat.postMessage",
                          headers={}, body_params={})
    response = HttpResponse(status_code=429, headers={"Retry-After": ["7"]}, data=b"")
    assert handler.can_retry(state=state, request=request, response=response)
    handler.prepare_for_next_attempt(state=state, request=request, response=response)
    assert clock.slept == [7]
    assert state.next_attempt_requested and state.current_attempt == 1


def test_retry_after_reads_the_header_however_written() -> None:
    def answer(headers: dict[str, object]) -> HttpResponse:
        return HttpResponse(status_code=429, headers=headers, data=b"")  # type: ignore[arg-type]

    assert retry_after(answer({"retry-after": ["2"]})) == 2
    assert retry_after(answer({"Retry-After": "0.5"})) == 0.5
    assert retry_after(answer({})) == 1
    assert retry_after(answer({"Retry-After": ["soon"]})) == 1
    assert retry_after(answer({"Retry-After": ["inf"]})) == 1  # no wait forever
    assert retry_after(answer({"Retry-After": ["nan"]})) == 1
    assert retry_after(answer({"Retry-After": ["-5"]})) == 0
    assert retry_after(answer({"Retry-After": ["Wed, 21 Oct 2099 07:28:00 GMT"]})) > 0
