"""Slack's rate limits, learnt from its 429s: every caller waits out a Retry-After exactly,
then the calls go at the rate Slack accepted, evenly spaced (bot.adapters.slack.client)."""

from __future__ import annotations

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
    assert clock.slept == [0.004] * 5  # 250 a second, one after the other
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
    assert round(clock.slept[-1], 6) == round(1 / 200 * 1.01, 6)
    clock.now += 61
    clock.slept.clear()
    answered(pace, clock, 100, within=0.01)
    assert clock.slept == []


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
