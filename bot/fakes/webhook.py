"""A local audit-stream receiver: what a SIEM's webhook endpoint does with the bot's events.

It accepts ``POST`` of a CloudEvents 1.0 structured JSON event (``Content-Type:
application/cloudevents+json``), parsed with the ``cloudevents`` SDK, and checks what a careful
receiver checks: ``X-K8s-Access-Timestamp`` within ``tolerance`` seconds of its clock, and
``X-K8s-Access-Signature: v1=<hex HMAC-SHA256 of "<timestamp>.<body>">`` under the shared
secret, compared in constant time. A refused request answers 401 (signature, timestamp), 415
(media type) or 400 (not an event), with ``{"error": …}``, and is kept in :attr:`rejected`.

Like a receiver that drops duplicates, it keeps each event ID once (:attr:`events`) and answers
200 to a repeat, noting it in :attr:`duplicates`. Faults, until :meth:`recover`: ``down`` (the
connection is closed without an answer), ``error`` (an HTTP status, 503 by default),
``slow`` (the answer waits ``delay`` seconds), ``moved`` (a redirect, 301 by default, to
``/moved``, whose ``GET`` answers 200 as a web server's page would) and ``trickle`` (an
answer a byte at a time that never ends, which no socket timeout alone ends).
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

from cloudevents.core.bindings.http import HTTPMessage, from_structured_event

from bot.fakes.server import JsonHandler, Served

CONTENT_TYPE = "application/cloudevents+json"


class WebhookReceiver(Served):
    def __init__(self, secret: str, *, tolerance: float = 300,
                 basic_auth: tuple[str, str] | None = None) -> None:
        self.secret = secret.encode()
        self.tolerance = tolerance
        self.basic_auth = basic_auth
        """A receiver behind HTTP Basic authentication (user, password): 401 without it."""
        self.events: dict[str, dict[str, Any]] = {}
        """Each event taken, by ID, in the order they arrived (the parsed JSON body)."""
        self.duplicates: list[str] = []
        """IDs that arrived again after they were taken."""
        self.rejected: list[tuple[int, str]] = []
        """Refused requests: status and reason."""
        self.faulty_answers = 0
        """Requests met by a fault (down, error, slow)."""
        self._fault: tuple[str, int, float] | None = None
        self._recovered = threading.Event()
        self._lock = threading.Lock()
        self._serve_on(ThreadingHTTPServer(("127.0.0.1", 0), _handler(self)))
        self.url += "/audit"

    def stop(self) -> None:
        self.recover()
        super().stop()

    def outage(self, kind: str, *, status: int = 503, delay: float = 30) -> None:
        """Fail every request from now until :meth:`recover`: ``down``, ``error`` (``status``),
        ``slow`` (answer after ``delay`` seconds, or at :meth:`recover`), ``moved`` (redirect
        with ``status``, 301 unless given) or ``trickle`` (an answer that never ends, a byte
        every ``delay`` seconds)."""
        if kind == "moved" and status == 503:
            status = 301
        if kind not in ("down", "error", "slow", "moved", "trickle"):
            raise ValueError(f"unknown fault {kind!r}")
        with self._lock:
            self._recovered.clear()
            self._fault = (kind, status, delay)

    def recover(self) -> None:
        with self._lock:
            self._fault = None
            self._recovered.set()

    def ids(self) -> list[str]:
        with self._lock:
            return list(self.events)

    # --- the server side ------------------------------------------------------------------

    def _fault_now(self) -> tuple[str, int, float] | None:
        with self._lock:
            if self._fault is not None:
                self.faulty_answers += 1
            return self._fault

    def _check(self, headers: dict[str, str], body: bytes) -> tuple[int, str] | None:
        if self.basic_auth is not None:
            expected_auth = "Basic " + base64.b64encode(
                ":".join(self.basic_auth).encode()).decode()
            if not hmac.compare_digest(headers.get("authorization", ""), expected_auth):
                return 401, "Basic authentication required"
        if headers.get("content-type", "").split(";")[0].strip() != CONTENT_TYPE:
            return 415, f"Content-Type must be {CONTENT_TYPE}"
        timestamp = headers.get("x-k8s-access-timestamp", "")
        if not timestamp.isdigit():
            return 401, "X-K8s-Access-Timestamp missing or not Unix seconds"
        if abs(time.time() - int(timestamp)) > self.tolerance:
            return 401, "X-K8s-Access-Timestamp too old or in the future"
        expected = "v1=" + hmac.new(self.secret, timestamp.encode() + b"." + body,
                                    hashlib.sha256).hexdigest()
        if not hmac.compare_digest(headers.get("x-k8s-access-signature", ""), expected):
            return 401, "X-K8s-Access-Signature does not match"
        return None

    def _take(self, headers: dict[str, str], body: bytes) -> tuple[int, dict[str, Any]]:
        refusal = self._check(headers, body)
        if refusal is None:
            try:
                event = from_structured_event(HTTPMessage(headers=headers, body=body))
            except Exception as error:  # the SDK's validation errors, and JSON ones
                refusal = (400, f"not a CloudEvent: {error}")
        if refusal is not None:
            with self._lock:
                self.rejected.append(refusal)
            return refusal[0], {"error": refusal[1]}
        event_id = event.get_id()
        with self._lock:
            if event_id in self.events:
                self.duplicates.append(event_id)
            else:
                self.events[event_id] = json.loads(body)
        return 200, {"ok": True}


def _handler(receiver: WebhookReceiver) -> type[BaseHTTPRequestHandler]:
    class Handler(JsonHandler):
        def do_POST(self) -> None:
            body = self.read_body()
            fault = receiver._fault_now()
            if fault is not None:
                kind, status, delay = fault
                if kind == "down":
                    self.close_connection = True
                    self.connection.close()
                    return
                if kind == "error":
                    self.send_json(status, {"error": "unavailable"})
                    return
                if kind == "moved":
                    self.send_json(status, {"error": "moved"}, {"Location": "/moved"})
                    return
                if kind == "trickle":
                    self._trickle(delay)
                    return
                receiver._recovered.wait(delay)
            status, answer = receiver._take({k.lower(): v for k, v in self.headers.items()},
                                            body)
            self.send_json(status, answer)

        def _trickle(self, delay: float) -> None:
            """An answer that never ends: a byte of headers every ``delay`` seconds, each
            within any socket timeout longer than that, until :meth:`recover`."""
            self.close_connection = True
            chunks = [b"HTTP/1.1 200 OK\r\n", *(b"X-Slow: %d\r\n" % n for n in range(10**6))]
            try:
                for byte in (bytes([b]) for chunk in chunks for b in chunk):
                    if receiver._recovered.wait(delay):
                        return
                    self.wfile.write(byte)
                    self.wfile.flush()
            except OSError:
                return  # the bot gave up and shut the connection

        def do_GET(self) -> None:
            self.send_json(200, {"page": self.path})

    return Handler
