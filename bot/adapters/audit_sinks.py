"""The audit stream's sinks: a signed CloudEvents webhook, a JSON-lines file, standard output.

Every sink writes the same thing, the audit event as a CloudEvents 1.0 structured JSON event
(https://github.com/cloudevents/spec/blob/v1.0.2/cloudevents/formats/json-format.md), built and
serialised by the ``cloudevents`` SDK:

- ``id``: the audit event's ID, the same on every delivery, so that a receiver drops duplicates;
- ``source``: ``/k8s-access-bot/<installation>``;
- ``type``: ``com.k8s-access-bot.<action>`` (:func:`bot.domain.stream.event_type`);
- ``time``, ``subject`` (the request ID, when the event is about one), ``datacontenttype``
  ``application/json``, and ``data``: the audit row (:func:`bot.domain.stream.audit_record`).

The webhook POSTs it as ``application/cloudevents+json`` with ``X-K8s-Access-Timestamp`` (Unix
seconds) and ``X-K8s-Access-Signature: v1=<hex HMAC-SHA256 of "<timestamp>.<body>">``. The
secret is never logged, and messages show the URL without its query or user part.
"""

from __future__ import annotations

import base64
import contextlib
import hashlib
import hmac
import http.client
import os
import socket
import sys
import threading
import time
import urllib.error
import urllib.request
from collections.abc import Callable
from email.message import Message
from pathlib import Path
from typing import IO, Any
from urllib.parse import unquote, urljoin, urlsplit, urlunsplit

from cloudevents.core.bindings.http import to_structured_event
from cloudevents.core.v1.event import CloudEvent
from pydantic import SecretStr

from bot.config import AuditSinkConfig, Config, audit_sink_secret
from bot.domain.model import AuditEvent
from bot.domain.stream import AuditSink, SinkUnavailable, audit_record, event_type

SIGNATURE_HEADER = "X-K8s-Access-Signature"
TIMESTAMP_HEADER = "X-K8s-Access-Timestamp"
SIGNATURE_VERSION = "v1"
WEBHOOK_TIMEOUT = 10.0
"""Seconds for one POST, all of it (connecting, sending, the answer); a slow receiver is
retried later rather than waited for."""


class _NoRedirects(urllib.request.HTTPRedirectHandler):
    """A 3xx is the receiver's answer, not a place to go: urllib would follow a 301, 302 or 303
    to a POST with a GET without the event, and count that GET's 200 as delivered."""

    def redirect_request(self, req: urllib.request.Request, fp: IO[bytes], code: int,
                         msg: str, headers: Message, newurl: str) -> None:
        return None


class _Deadline:
    """The whole time one POST may take. The socket's timeout bounds each read and write
    alone, so a receiver answering a byte at a time could hold a POST for ever; when the
    deadline passes, the connection is shut, which ends whatever waits on it."""

    def __init__(self, seconds: float) -> None:
        self.seconds = seconds
        self.passed = False
        self._sockets: list[socket.socket] = []
        self._lock = threading.Lock()
        self._timer = threading.Timer(seconds, self._expire)
        self._timer.daemon = True

    def __enter__(self) -> _Deadline:
        self._timer.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._timer.cancel()

    def opener(self) -> urllib.request.OpenerDirector:
        """An opener whose connections this deadline shuts; it follows no redirect."""
        return urllib.request.build_opener(_NoRedirects, _BoundedHTTP(self), _BoundedHTTPS(self))

    def connection(self, http_class: type[http.client.HTTPConnection]
                   ) -> type[http.client.HTTPConnection]:
        deadline = self

        class Bounded(http_class):  # type: ignore[valid-type,misc]
            def connect(self) -> None:
                super().connect()
                deadline._watch(self.sock)

        return Bounded

    def _watch(self, sock: socket.socket) -> None:
        with self._lock:
            self._sockets.append(sock)
            if self.passed:
                _shut(sock)

    def _expire(self) -> None:
        with self._lock:
            self.passed = True
            for sock in self._sockets:
                _shut(sock)


def _shut(sock: socket.socket) -> None:
    with contextlib.suppress(OSError):
        sock.shutdown(socket.SHUT_RDWR)


class _Bounded(urllib.request.AbstractHTTPHandler):
    """Opens its connections within a :class:`_Deadline`, over HTTP or HTTPS by the handler it
    goes with."""

    def __init__(self, deadline: _Deadline) -> None:
        super().__init__()
        self._deadline = deadline

    def do_open(self, http_class: Any, req: urllib.request.Request,
                **http_conn_args: Any) -> http.client.HTTPResponse:
        return super().do_open(self._deadline.connection(http_class), req, **http_conn_args)


class _BoundedHTTP(_Bounded, urllib.request.HTTPHandler):
    pass


class _BoundedHTTPS(_Bounded, urllib.request.HTTPSHandler):
    pass


def source(installation: str) -> str:
    return f"/k8s-access-bot/{installation}"


def cloud_event(event: AuditEvent, installation: str) -> tuple[dict[str, str], bytes]:
    """The structured-mode HTTP message of ``event``: headers (``Content-Type``) and body."""
    attributes: dict[str, object] = {
        "specversion": "1.0",
        "id": str(event.id),
        "source": source(installation),
        "type": event_type(event.action),
        "time": event.at,
        "datacontenttype": "application/json",
    }
    if event.request_id is not None:
        attributes["subject"] = str(event.request_id)
    message = to_structured_event(CloudEvent(attributes, audit_record(event)))
    return dict(message.headers), message.body


def sign(secret: bytes, timestamp: str, body: bytes) -> str:
    """The signature header's value: ``v1=`` and the hex HMAC-SHA256 of
    ``<timestamp>.<body>``."""
    digest = hmac.new(secret, timestamp.encode() + b"." + body, hashlib.sha256).hexdigest()
    return f"{SIGNATURE_VERSION}={digest}"


def shown_url(url: str) -> str:
    """``url`` without user, password or query (which may carry a token), for messages."""
    parts = urlsplit(url)
    host = parts.hostname or ""
    port = f":{parts.port}" if parts.port else ""
    return f"{parts.scheme}://{host}{port}{parts.path}"


def _credentials_apart(url: str) -> tuple[str, SecretStr | None]:
    """``url`` without its user part, and that part as an HTTP Basic ``Authorization`` value
    (as curl sends it); None when the URL has none."""
    parts = urlsplit(url)
    if parts.username is None:
        return url, None
    host = parts.netloc.rpartition("@")[2]
    pair = f"{unquote(parts.username)}:{unquote(parts.password or '')}"
    return (urlunsplit(parts._replace(netloc=host)),
            SecretStr("Basic " + base64.b64encode(pair.encode()).decode()))


class WebhookSink:
    """POSTs each event, signed; any answer but 2xx, or none in time, is a failure."""

    def __init__(self, name: str, url: str, secret: SecretStr, installation: str, *,
                 timeout: float = WEBHOOK_TIMEOUT,
                 clock: Callable[[], float] = time.time) -> None:
        self._name = name
        self._url, self._authorization = _credentials_apart(url)
        self._secret = secret
        self._installation = installation
        self._timeout = timeout
        self._clock = clock

    @property
    def name(self) -> str:
        return self._name

    def __repr__(self) -> str:
        return f"WebhookSink({self._name!r}, {shown_url(self._url)!r})"

    def send(self, event: AuditEvent) -> None:
        headers, body = cloud_event(event, self._installation)
        timestamp = str(int(self._clock()))
        headers[TIMESTAMP_HEADER] = timestamp
        headers[SIGNATURE_HEADER] = sign(self._secret.get_secret_value().encode(), timestamp,
                                         body)
        if self._authorization is not None:
            headers["Authorization"] = self._authorization.get_secret_value()
        request = urllib.request.Request(self._url, data=body, headers=headers, method="POST")
        where = f"webhook {shown_url(self._url)}"
        with _Deadline(self._timeout) as deadline:
            try:
                with deadline.opener().open(request, timeout=self._timeout) as answer:
                    answer.read()
            except urllib.error.HTTPError as error:
                moved = error.headers.get("Location") if 300 <= error.code < 400 else None
                hint = "" if not moved else (" (redirects are not followed: set url to "
                                             f"{shown_url(urljoin(self._url, moved))})")
                raise SinkUnavailable(f"{where} answered HTTP {error.code} {error.reason}"
                                      f"{hint}") from None
            except (urllib.error.URLError, http.client.HTTPException, OSError) as error:
                reason = getattr(error, "reason", None) or error
                if deadline.passed or isinstance(reason, TimeoutError):
                    raise SinkUnavailable(f"{where} gave no answer within "
                                          f"{self._timeout:g}s") from None
                raise SinkUnavailable(f"{where} could not be reached: {reason}") from None

    def flush(self) -> None:
        pass  # each POST that answered 2xx is the receiver's


class FileSink:
    """Appends one event a line; :meth:`flush` writes them through to the disk (one ``fsync``
    a batch), so that what is marked delivered survives a crash of the machine."""

    def __init__(self, name: str, path: Path, installation: str) -> None:
        self._name = name
        self._path = path
        self._installation = installation
        self._pending: list[bytes] = []

    @property
    def name(self) -> str:
        return self._name

    def send(self, event: AuditEvent) -> None:
        self._pending.append(cloud_event(event, self._installation)[1] + b"\n")

    def flush(self) -> None:
        lines, self._pending = self._pending, []
        if not lines:
            return
        try:
            with self._path.open("ab") as file:
                file.write(b"".join(lines))
                file.flush()
                os.fsync(file.fileno())
        except OSError as error:
            raise SinkUnavailable(f"file {self._path}: {error.strerror or error}") from None


class StdoutSink:
    """Writes one event a line to standard output, for a log shipper reading the container's
    output."""

    _lock = threading.Lock()

    def __init__(self, name: str, installation: str, stream: IO[str] | None = None) -> None:
        self._name = name
        self._installation = installation
        self._stream = stream

    @property
    def name(self) -> str:
        return self._name

    def send(self, event: AuditEvent) -> None:
        line = cloud_event(event, self._installation)[1].decode() + "\n"
        stream = self._stream or sys.stdout
        try:
            with self._lock:  # whole lines, however many threads write
                stream.write(line)
        except (OSError, ValueError) as error:
            raise SinkUnavailable(f"standard output: {error}") from None

    def flush(self) -> None:
        try:
            (self._stream or sys.stdout).flush()
        except (OSError, ValueError) as error:
            raise SinkUnavailable(f"standard output: {error}") from None


def build_sink(sink: AuditSinkConfig, installation: str) -> AuditSink:
    """The sink ``sink`` configures. The file has passed :func:`bot.config.check`, so a webhook
    has its secret (``ValueError`` otherwise)."""
    if sink.type == "webhook":
        assert sink.url is not None
        secret = audit_sink_secret(sink)
        if secret is None:
            raise ValueError(f"{sink.secret_env} is not set")
        return WebhookSink(sink.sink_name, sink.url, secret, installation)
    if sink.type == "file":
        assert sink.path is not None
        return FileSink(sink.sink_name, Path(sink.path).expanduser(), installation)
    return StdoutSink(sink.sink_name, installation)


def build_sinks(config: Config) -> list[AuditSink]:
    return [build_sink(sink, config.file.installation) for sink in config.file.audit_sinks]
