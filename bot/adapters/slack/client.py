"""The Slack Web API client, configured once: base URL, retries on 429s and dropped connections,
connections kept alive; and what a Slack error means for a message (:func:`undeliverable`)."""

from __future__ import annotations

import http.client
import io
import ssl
import threading
import time
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any
from urllib.error import HTTPError
from urllib.parse import urlsplit
from urllib.request import Request

from slack_sdk import WebClient
from slack_sdk.errors import SlackApiError
from slack_sdk.http_retry.builtin_handlers import (
    ConnectionErrorRetryHandler,
    RateLimitErrorRetryHandler,
    ServerErrorRetryHandler,
)
from slack_sdk.http_retry.request import HttpRequest
from slack_sdk.http_retry.response import HttpResponse
from slack_sdk.http_retry.state import RetryState
from slack_sdk.web.file_upload_v2_result import FileUploadV2Result

from bot.adapters.waits import asked_wait
from bot.config import ConfigError, Settings
from bot.domain.errors import Undeliverable

DEFAULT_API_URL = "https://slack.com/api/"
ErrorCounter = Callable[[str, str], None]

TEMPORARY_ERRORS = frozenset({
    "ratelimited", "rate_limited", "service_unavailable", "fatal_error", "internal_error",
    "request_timeout", "team_added_to_org", "org_login_required",
    # The token, not the message: retried, so that the next pass works once it is fixed.
    "not_authed", "invalid_auth", "token_revoked", "token_expired", "missing_scope",
})
"""Errors that may pass: sending the same message again later can work."""

INVALID_ERRORS = frozenset({
    "invalid_blocks", "invalid_blocks_format", "msg_too_long", "msg_blocks_too_long",
    "no_text", "too_many_attachments", "invalid_attachments", "invalid_arguments",
    "invalid_arg_name", "invalid_form_data", "invalid_metadata_format", "metadata_too_large",
    "view_too_large",
})
"""Errors about the content: Slack refuses the message itself, so it never goes out unchanged."""
# Everything else (not_in_channel, channel_not_found, is_archived, user_disabled,
# account_inactive, user_not_found, cannot_dm_bot, restricted_action…) is about the recipient.


def undeliverable(error: Exception, recipient: str) -> Undeliverable | None:
    """What a failed call to Slack means for a message to ``recipient``: an
    :class:`Undeliverable` of kind temporary, recipient or invalid; None when ``error`` is not
    Slack's nor the network's (a bug to let through)."""
    if isinstance(error, SlackApiError):
        status = getattr(error.response, "status_code", 200)
        data = error.response.data if isinstance(error.response.data, dict) else {}
        code = str(data.get("error") or f"http_{status}")
        if code in TEMPORARY_ERRORS or status == 429 or status >= 500:
            kind = Undeliverable.TEMPORARY
        elif code in INVALID_ERRORS:
            kind = Undeliverable.INVALID
        else:
            kind = Undeliverable.RECIPIENT
        detail = "; ".join(str(m) for m in data.get("errors") or [])
    elif isinstance(error, OSError):  # connection refused or reset, timeouts, DNS
        code, kind, detail = "unreachable", Undeliverable.TEMPORARY, str(error)
    else:
        return None
    message = f"Slack answered {code} for {recipient}" + (f": {detail}" if detail else "")
    return Undeliverable(message, recipient=recipient, error=code, kind=kind)


class KeptAlive:
    """HTTP/1.1 connections kept open between calls, one per thread and host.

    The SDK opens a new connection (and, to Slack, a new TLS session) for every call; a click
    that shares a kubeconfig makes seven. Here each thread reuses its own connection to a host
    for as long as the server keeps it; one the server closed while it was idle is opened
    again and the request sent once more (it never reached the server). Answers of 4xx and 5xx
    are raised as :class:`HTTPError`, as ``urlopen`` raises them, so that the SDK's handling of
    errors and retries stays the same.
    """

    def __init__(self, timeout: float, context: ssl.SSLContext | None) -> None:
        self._timeout = timeout
        self._context = context
        self._local = threading.local()

    def send(self, request: Request) -> tuple[int, http.client.HTTPMessage, bytes]:
        """Status, headers and body of ``request``'s answer."""
        address = urlsplit(request.full_url)
        target = address.path + (f"?{address.query}" if address.query else "")
        headers = {name: str(value) for name, value in request.header_items()}
        key = (address.scheme, address.netloc)
        connections: dict[tuple[str, str], http.client.HTTPConnection] = \
            self._local.__dict__.setdefault("connections", {})
        for fresh in (False, True):
            connection = connections.get(key)
            reused = connection is not None and not fresh
            if connection is None or fresh:
                if connection is not None:
                    connection.close()
                connection = connections[key] = self._connect(address.scheme, address.netloc)
            try:
                connection.request(request.get_method(), target, body=request.data,
                                   headers=headers)
                response = connection.getresponse()
                body = response.read()
            except (http.client.RemoteDisconnected, BrokenPipeError, ConnectionResetError):
                connection.close()
                del connections[key]
                if reused:
                    continue  # closed by the server while idle: the request never arrived
                raise
            except BaseException:
                connection.close()
                del connections[key]
                raise
            if response.will_close:
                connection.close()
                del connections[key]
            if response.status >= 400:
                raise HTTPError(request.full_url, response.status, response.reason,
                                response.headers, io.BytesIO(body))
            return response.status, response.headers, body
        raise AssertionError("unreachable")  # pragma: no cover

    def _connect(self, scheme: str, netloc: str) -> http.client.HTTPConnection:
        if scheme == "https":
            return http.client.HTTPSConnection(netloc, timeout=self._timeout,
                                               context=self._context)
        return http.client.HTTPConnection(netloc, timeout=self._timeout)


@dataclass
class _Pace:
    resume_at: float = 0.0
    """No call before this moment: the end of a Retry-After every caller waits out."""
    interval: float = 0.0
    """Seconds between two calls since a limit was met; 0 while none was."""
    next_at: float = 0.0
    """The next call's slot."""
    learnt_at: float = float("-inf")
    """When the limit was met while the calls went free."""
    accepted: int = 0
    """The calls Slack accepted in the ``window`` before then, and those on their way then
    that it accepted after: how many it takes in a window."""
    slowed: float = 1.0
    """How much slower than ``accepted`` the pace goes: each 429 met at the pace adds to it."""
    limited_at: float = float("-inf")
    """When the pace was last set: a 429 to a call let go before then is to calls the pace
    already answers."""
    answered: deque[float] = field(default_factory=deque)
    """When the calls of the last window were answered."""


class Pacing:
    """Slack's rate limits per Web API method, learnt from its 429s.

    Calls go as fast as they come until Slack answers one with 429. Then every caller of that
    method waits until the ``Retry-After`` it gave has passed, exactly, and the calls go on
    evenly spaced at ``margin`` times the rate Slack accepted in the last ``window`` (the calls
    it answered, and those on their way then that it answered after): a bulk run settles just
    under the limit instead of bursting into it again and again. The margin leaves room for
    the calls in flight that a hiccup on the way (a pause of Slack's, or of this process)
    makes arrive together: eight callers at 300 a second need 3%. Each 429 to a call let go at
    the pace slows it by ``slower``; one to a call that was on its way when the pace was set
    (the other callers' calls sent with the one that met the limit) is waited out without
    slowing it again: each caller knows when its own call went. The learnt pace holds for
    ``keep`` after the last 429, then calls go free again. A 429 after only a few calls
    (fewer than ``learn_from`` in the window: one conversation's own limit, not the method's)
    is waited out by its caller alone.
    """

    def __init__(self, *, window: float = 1.0, margin: float = 0.97, slower: float = 1.01,
                 learn_from: int = 20, keep: float = 600.0,
                 clock: Callable[[], float] = time.monotonic,
                 sleep: Callable[[float], None] = time.sleep) -> None:
        self._window = window
        self._margin = margin
        self._slower = slower
        self._learn_from = learn_from
        self._keep = keep
        self._clock = clock
        self._sleep = sleep
        self._lock = threading.Lock()
        self._paces: dict[str, _Pace] = {}
        self._let_go = threading.local()
        """When this thread's last call was let go."""

    def wait(self, method: str) -> None:
        """Before a call of ``method``: wait for its turn (a turn a 429 put off while this
        caller waited for it is taken anew)."""
        while True:
            now = self._clock()
            with self._lock:
                pace = self._paces.get(method)
                if pace is None:
                    self._let_go.at = now
                    return
                if pace.interval and now - pace.limited_at > self._keep:
                    pace.interval = 0.0
                at = max(now, pace.resume_at, pace.next_at)
                if pace.interval:
                    pace.next_at = at + pace.interval
            self._let_go.at = at
            if at <= now:
                return
            self._sleep(at - now)
            with self._lock:
                if pace.resume_at <= at:
                    return

    def answered(self, method: str) -> None:
        """A call of ``method`` was answered (not with a 429)."""
        now = self._clock()
        let_go: float = getattr(self._let_go, "at", now)
        with self._lock:
            pace = self._paces.setdefault(method, _Pace())
            pace.answered.append(now)
            while pace.answered and now - pace.answered[0] > self._window:
                pace.answered.popleft()
            if pace.interval and let_go < pace.learnt_at:  # on its way when it was learnt
                pace.accepted += 1
                self._set_interval(pace)

    def limited(self, method: str, retry_after: float) -> None:
        """Slack answered a call of ``method`` with 429 and ``Retry-After``: wait it out, and
        pace the method's calls from now on."""
        now = self._clock()
        let_go: float = getattr(self._let_go, "at", now)
        with self._lock:
            pace = self._paces.setdefault(method, _Pace())
            while pace.answered and now - pace.answered[0] > self._window:
                pace.answered.popleft()
            accepted = len(pace.answered)
            if accepted >= self._learn_from or pace.interval:
                pace.resume_at = max(pace.resume_at, now + retry_after)
                if not pace.interval:  # learnt from the calls that went free
                    pace.accepted, pace.slowed = accepted, 1.0
                    pace.learnt_at = pace.limited_at = now
                    self._set_interval(pace)
                elif let_go > pace.limited_at:  # let go at the pace, and still too fast
                    pace.slowed *= self._slower
                    pace.limited_at = now
                    self._set_interval(pace)
                accepted = self._learn_from
        if accepted < self._learn_from:
            self._sleep(retry_after)
        else:
            self.wait(method)

    def _set_interval(self, pace: _Pace) -> None:
        pace.interval = self._window / (pace.accepted * self._margin) * pace.slowed


class CountingWebClient(WebClient):
    """A WebClient that reports each failed call (after its retries) to ``on_error``, and keeps
    its connections alive (:class:`KeptAlive`) unless it goes through a proxy."""

    def __init__(self, *args: Any, on_error: ErrorCounter | None = None,
                 pacing: Pacing | None = None, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self._on_error = on_error
        self._kept_alive = KeptAlive(self.timeout, self.ssl)
        self.pacing = pacing or Pacing()

    def _perform_urllib_http_request_internal(self, url: str, req: Request) -> dict[str, Any]:
        if self.proxy is not None or not url.lower().startswith("http"):
            return super()._perform_urllib_http_request_internal(url, req)
        status, headers, body = self._kept_alive.send(req)
        charset = headers.get_content_charset() or "utf-8"
        return {"status": status, "headers": headers,
                "body": body if headers.get_content_type() == "application/gzip"
                else body.decode(charset)}

    def _upload_file(self, *, url: str, data: bytes, logger: Any, timeout: int,
                     proxy: str | None, ssl: ssl.SSLContext | None) -> FileUploadV2Result:
        if proxy is not None:
            return super()._upload_file(url=url, data=data, logger=logger, timeout=timeout,
                                        proxy=proxy, ssl=ssl)
        status, headers, body = self._kept_alive.send(
            Request(url, data=data, method="POST"))
        return FileUploadV2Result(status=status,
                                  body=body.decode(headers.get_content_charset() or "utf-8"))

    def api_call(self, api_method: str, *args: Any, **kwargs: Any) -> Any:
        self.pacing.wait(api_method)
        try:
            answer = super().api_call(api_method, *args, **kwargs)
        except SlackApiError as error:
            if getattr(error.response, "status_code", 200) != 429:
                self.pacing.answered(api_method)
            if self._on_error is not None:
                self._on_error(api_method, str(error.response.get("error", "unknown")))
            raise
        self.pacing.answered(api_method)
        return answer


class CountingRateLimitHandler(RateLimitErrorRetryHandler):
    """Waits out exactly the ``Retry-After`` of each 429 (the SDK's handler rounds it down and
    adds up to a second at random), with every other caller of the method when it is the
    method's limit (:class:`Pacing`); counts each 429."""

    def __init__(self, max_retry_count: int, on_error: ErrorCounter | None,
                 pacing: Pacing | None = None) -> None:
        super().__init__(max_retry_count=max_retry_count)
        self._on_error = on_error
        self._pacing = pacing or Pacing()

    def prepare_for_next_attempt(self, *, state: RetryState, request: HttpRequest,
                                 response: HttpResponse | None = None,
                                 error: Exception | None = None) -> None:
        if response is None:
            raise error or RuntimeError("a 429 without an answer")
        state.next_attempt_requested = True
        self._pacing.limited(request.url.rsplit("/", 1)[-1], retry_after(response))
        state.increment_current_attempt()

    def _can_retry(self, *, state: RetryState, request: HttpRequest,
                   response: HttpResponse | None = None,
                   error: Exception | None = None) -> bool:
        limited: bool = super()._can_retry(state=state, request=request, response=response,
                                           error=error)
        if limited and self._on_error is not None:
            self._on_error(request.url.rsplit("/", 1)[-1], "ratelimited")
        return limited


def retry_after(response: HttpResponse) -> float:
    """The seconds a 429's ``Retry-After`` asks for, read as every adapter reads it
    (:func:`bot.adapters.waits.asked_wait`); one when it gives none usable."""
    headers = {name.lower(): str(values[0] if isinstance(values, list) and values else values)
               for name, values in response.headers.items()}
    wait = asked_wait(headers, ("retry-after",))
    return 1.0 if wait is None else wait


def make_client(settings: Settings, *, on_error: ErrorCounter | None = None) -> WebClient:
    """A client that waits out ``Retry-After`` on 429s (SLACK_RATE_LIMIT_RETRIES times), paces
    each method at the rate Slack accepted once it answered 429 (:class:`Pacing`), and retries
    connection and 5xx errors."""
    if settings.slack_bot_token is None:
        raise ConfigError(
            "SLACK_BOT_TOKEN is not set: copy the Bot User OAuth Token (xoxb-…) from your Slack "
            "app's OAuth & Permissions page (create the app from app-manifest.yaml)."
        )
    base_url = settings.slack_api_url or DEFAULT_API_URL
    pacing = Pacing()
    return CountingWebClient(
        token=settings.slack_bot_token.get_secret_value(),
        base_url=base_url if base_url.endswith("/") else base_url + "/",
        timeout=15,
        on_error=on_error,
        pacing=pacing,
        retry_handlers=[
            CountingRateLimitHandler(settings.tuning.slack.rate_limit_retries, on_error,
                                     pacing),
            ConnectionErrorRetryHandler(max_retry_count=3),
            ServerErrorRetryHandler(max_retry_count=2),
        ],
    )
