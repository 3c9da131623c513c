"""The on-call services together: each asked for its part of a role's targets, the answers
combined by the domain's rule and remembered for a minute.

A definite answer (on call, not on call, at a level that does not count) is cached for
:data:`CACHE_SECONDS` per email and targets, so that a burst of requests asks each service
once. An answer of doubt is not cached: the next request asks again.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable, Iterator, Mapping
from typing import Protocol

from bot.adapters import waits
from bot.domain.oncall import OnCallAnswer, OnCallStatus, OnCallTargets, combine

log = logging.getLogger(__name__)

CACHE_SECONDS = 60.0
DEFAULT_TIMEOUT = 3.0
"""Seconds each call to an on-call service may take: a request waits for it."""


class OnCallServiceError(Exception):
    """A call to an on-call service failed. ``reason`` is said to people (no token in it);
    ``status`` is the HTTP status when the service answered."""

    def __init__(self, service: str, reason: str, status: int | None = None) -> None:
        super().__init__(f"{service}: {reason}")
        self.service = service
        self.reason = reason
        self.status = status


def _chain(error: BaseException) -> Iterator[BaseException]:
    seen: list[BaseException] = []
    current: BaseException | None = error
    while current is not None and not any(current is s for s in seen):
        seen.append(current)
        yield current
        current = current.__cause__ or current.__context__


def network_reason(error: BaseException, timeout: float) -> str:
    """Why a call got no answer, in words: a timeout, a refused connection, an unknown host;
    else the error's type (never its text, which may carry a URL with a query)."""
    for found in _chain(error):
        name = type(found).__name__
        if isinstance(found, TimeoutError) or "Timeout" in name:
            return f"no answer within {timeout:g}s"
        if isinstance(found, ConnectionRefusedError):
            return "connection refused"
        if "NameResolution" in name or "gaierror" in name:
            return "host name not found"
    for found in _chain(error):
        if type(found).__name__ in ("ConnectError", "ConnectionError"):
            return "cannot connect"
    return f"the call failed ({type(error).__name__})"


ENDS_THE_CHECK = (401, 429)
"""Failures every other call of one check would meet too (a refused credential, a rate
limit): the check ends at the first, as doubt."""
RATE_LIMIT_WAIT = 1.0
"""The longest wait a 429 may ask for and still be retried while a request waits; a longer
one is doubt at once."""


def asked_wait(headers: Mapping[str, str]) -> float | None:
    """How many seconds a 429 asks the bot to wait: ``Retry-After`` (seconds, or an HTTP
    date), else PagerDuty's ``ratelimit-reset`` (seconds); None when it says nothing."""
    return waits.asked_wait(headers, ("Retry-After", "ratelimit-reset"))


def rate_limited_reason(message: str, wait: float | None) -> str:
    """A 429 that was not retried, with the wait the service asked for."""
    asked = f"; it asks to wait {wait:.0f}s" if wait is not None else ""
    return http_reason(429, message) + asked


def http_reason(status: int, message: str) -> str:
    """An HTTP error of an on-call service, with what it means for the bot."""
    said = f"{status} {message}".strip()
    if status == 401:
        return f"the service refused the bot's credentials ({said})"
    if status == 403:
        return f"the bot's credentials may not read this ({said})"
    if status == 404:
        return f"not found ({said})"
    if status == 429:
        return f"the service is rate-limiting the bot ({said})"
    if status >= 500:
        return f"the service failed ({said})"
    return f"the service refused the call ({said})"


class ServiceOnCall(Protocol):
    """One service's part: answers for its own section of the targets (which is set)."""

    service: str

    def check(self, email: str, targets: OnCallTargets) -> OnCallAnswer: ...


class OnCallServices:
    """The :class:`bot.domain.oncall.OnCall` port: PagerDuty and Opsgenie, each when its
    credentials are configured (None otherwise: its sections answer unknown, with the
    variable to set)."""

    def __init__(self, pagerduty: ServiceOnCall | None, opsgenie: ServiceOnCall | None, *,
                 cache_seconds: float = CACHE_SECONDS,
                 clock: Callable[[], float] = time.monotonic) -> None:
        self.pagerduty = pagerduty
        self.opsgenie = opsgenie
        self._cache_seconds = cache_seconds
        self._clock = clock
        self._lock = threading.Lock()
        self._cache: dict[tuple[str, OnCallTargets], tuple[float, OnCallAnswer]] = {}

    def check(self, email: str, targets: OnCallTargets) -> OnCallAnswer:
        key = (email.strip().lower(), targets)
        now = self._clock()
        with self._lock:
            cached = self._cache.get(key)
            if cached is not None and now - cached[0] < self._cache_seconds:
                return cached[1]
        answer = self._ask(key[0], targets)
        if answer.status is not OnCallStatus.UNKNOWN:
            with self._lock:
                self._cache = {k: v for k, v in self._cache.items()
                               if now - v[0] < self._cache_seconds}
                self._cache[key] = (now, answer)
        return answer

    def _ask(self, email: str, targets: OnCallTargets) -> OnCallAnswer:
        answers: list[OnCallAnswer] = []
        parts = ((targets.pagerduty, self.pagerduty, "PagerDuty", "PAGERDUTY_TOKEN"),
                 (targets.opsgenie, self.opsgenie, "Opsgenie", "OPSGENIE_API_KEY"))
        for section, adapter, service, variable in parts:
            if section is None:
                continue
            if adapter is None:
                answers.append(OnCallAnswer.unknown(service, f"{variable} is not set"))
                continue
            try:
                answer = adapter.check(email, targets)
            except Exception as error:  # an adapter's own bug is still only doubt
                log.exception("asking %s who is on call failed", service)
                answer = OnCallAnswer.unknown(service, f"the check failed "
                                                       f"({type(error).__name__})")
            if answer.is_on_call:
                return answer
            answers.append(answer)
        return combine(answers)
