"""The Slack Web API client, configured once: base URL, retries on 429s and dropped connections,
connections kept alive; and what a Slack error means for a message (:func:`undeliverable`)."""

from __future__ import annotations

import http.client
import io
import ssl
import threading
from collections.abc import Callable
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


class CountingWebClient(WebClient):
    """A WebClient that reports each failed call (after its retries) to ``on_error``, and keeps
    its connections alive (:class:`KeptAlive`) unless it goes through a proxy."""

    def __init__(self, *args: Any, on_error: ErrorCounter | None = None, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self._on_error = on_error
        self._kept_alive = KeptAlive(self.timeout, self.ssl)

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
        try:
            return super().api_call(api_method, *args, **kwargs)
        except SlackApiError as error:
            if self._on_error is not None:
                self._on_error(api_method, str(error.response.get("error", "unknown")))
            raise


class CountingRateLimitHandler(RateLimitErrorRetryHandler):
    """Waits out ``Retry-After`` like the SDK's handler, and counts each 429."""

    def __init__(self, max_retry_count: int, on_error: ErrorCounter | None) -> None:
        super().__init__(max_retry_count=max_retry_count)
        self._on_error = on_error

    def _can_retry(self, *, state: RetryState, request: HttpRequest,
                   response: HttpResponse | None = None,
                   error: Exception | None = None) -> bool:
        limited: bool = super()._can_retry(state=state, request=request, response=response,
                                           error=error)
        if limited and self._on_error is not None:
            self._on_error(request.url.rsplit("/", 1)[-1], "ratelimited")
        return limited


def make_client(settings: Settings, *, on_error: ErrorCounter | None = None) -> WebClient:
    """A client that waits out ``Retry-After`` on 429s (SLACK_RATE_LIMIT_RETRIES times) and
    retries connection and 5xx errors."""
    if settings.slack_bot_token is None:
        raise ConfigError(
            "SLACK_BOT_TOKEN is not set: copy the Bot User OAuth Token (xoxb-…) from your Slack "
            "app's OAuth & Permissions page (create the app from app-manifest.yaml)."
        )
    base_url = settings.slack_api_url or DEFAULT_API_URL
    return CountingWebClient(
        token=settings.slack_bot_token.get_secret_value(),
        base_url=base_url if base_url.endswith("/") else base_url + "/",
        timeout=15,
        on_error=on_error,
        retry_handlers=[
            CountingRateLimitHandler(settings.tuning.slack.rate_limit_retries, on_error),
            ConnectionErrorRetryHandler(max_retry_count=3),
            ServerErrorRetryHandler(max_retry_count=2),
        ],
    )
