"""The one way the fakes serve: a threading HTTP(S) server on 127.0.0.1, in the background."""

from __future__ import annotations

import json
import ssl
import threading
import time
from collections.abc import Callable, Mapping
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any, Generic, Self, TypeVar
from urllib.parse import parse_qs, urlparse


class BackgroundServer:
    def __init__(self, server: ThreadingHTTPServer, scheme: str = "http") -> None:
        self.server = server
        self.server.daemon_threads = True
        self.url = f"{scheme}://127.0.0.1:{server.server_address[1]}"
        self._thread = threading.Thread(target=server.serve_forever, args=(0.05,), daemon=True)

    def start(self) -> None:
        self._thread.start()

    def stop(self) -> None:
        self.server.shutdown()
        self.server.server_close()


class Served:
    """A fake API served in the background: :meth:`_serve_on` while it is set up, then
    :meth:`start` and :meth:`stop`."""

    _server: BackgroundServer
    url: str

    def _serve_on(self, server: ThreadingHTTPServer, scheme: str = "http") -> None:
        self._server = BackgroundServer(server, scheme)
        self.url = self._server.url

    def start(self) -> Self:
        self._server.start()
        return self

    def stop(self) -> None:
        self._server.stop()


class JsonHandler(BaseHTTPRequestHandler):
    """What the fakes' handlers share: HTTP/1.1 with connections kept alive, no request log,
    the body read whole, and JSON answers to a client that may have given up waiting."""

    protocol_version = "HTTP/1.1"
    content_type = "application/json"

    def log_message(self, format: str, *args: Any) -> None:
        pass

    def read_body(self) -> bytes:
        return self.rfile.read(int(self.headers.get("Content-Length") or 0))

    def send_json(self, status: int, payload: Any,
                  headers: Mapping[str, str] | None = None) -> None:
        """Answer ``payload`` as JSON (None: no body)."""
        data = b"" if payload is None else json.dumps(payload).encode()
        try:
            self.send_response(status)
            self.send_header("Content-Type", self.content_type)
            self.send_header("Content-Length", str(len(data)))
            for name, value in (headers or {}).items():
                self.send_header(name, value)
            self.end_headers()
            self.wfile.write(data)
        except (TimeoutError, BrokenPipeError, ConnectionResetError, ssl.SSLError):
            pass  # the client gave up waiting (a slow answer)


class HeldAnswers:
    """Switches of a fake with a lock: the next ``hang_next`` answers are held
    ``hang_seconds`` (a hung API), and ``before_list`` runs once before the next list is
    answered (a change made meanwhile)."""

    lock: threading.RLock
    hang_next: int
    hang_seconds: float
    before_list: Callable[[], None] | None

    def hang_if_due(self) -> None:
        with self.lock:
            hang = self.hang_next > 0
            if hang:
                self.hang_next -= 1
        if hang:
            time.sleep(self.hang_seconds)

    def run_before_list(self) -> None:
        with self.lock:
            hook, self.before_list = self.before_list, None
        if hook is not None:
            hook()


class TLSServer(ThreadingHTTPServer):
    daemon_threads = True

    def __init__(self, address: tuple[str, int], handler: type[BaseHTTPRequestHandler],
                 context: ssl.SSLContext) -> None:
        super().__init__(address, handler)
        self.context = context

    def finish_request(self, request: Any, client_address: Any) -> None:
        """The TLS handshake happens in the request's own thread, so a bad client blocks
        nobody."""
        try:
            tls = self.context.wrap_socket(request, server_side=True)
        except (ssl.SSLError, OSError):
            return
        super().finish_request(tls, client_address)


JsonAnswer = tuple[int, dict[str, Any], dict[str, str]]
"""Status, JSON body and extra headers."""

FaultT = TypeVar("FaultT")


class FaultSwitches(Generic[FaultT]):
    """The fault switches every fake API shares: answers held back (:meth:`slow`, served by
    :meth:`delay` to :func:`json_get_handler`), the fake's own faults (``faults``: each fake
    says what one is and adds them), and :meth:`heal` for all of them. Call
    :meth:`_init_switches` before serving."""

    lock: threading.Lock
    faults: list[FaultT]

    def _init_switches(self) -> None:
        self.lock = threading.Lock()
        self.faults = []
        self._slow: list[float] = []

    def slow(self, seconds: float, *, times: int = 1) -> None:
        """Hold each of the next ``times`` answers for ``seconds`` (a slow or hung API)."""
        with self.lock:
            self._slow += [seconds] * times

    def heal(self) -> None:
        """No more faults, and no answer held back."""
        with self.lock:
            self.faults.clear()
            self._slow.clear()

    def delay(self) -> float:
        """How long to hold the answer being served."""
        with self.lock:
            return self._slow.pop(0) if self._slow else 0.0


def json_get_handler(answer: Callable[[str, dict[str, list[str]], str], JsonAnswer],
                     delay: Callable[[], float]) -> type[BaseHTTPRequestHandler]:
    """A handler answering GET requests with JSON: ``answer(path, query, authorization)``,
    after holding the answer for ``delay()`` seconds (a slow service)."""

    class Handler(JsonHandler):
        content_type = "application/json; charset=utf-8"

        def do_GET(self) -> None:
            url = urlparse(self.path)
            seconds = delay()
            if seconds:
                time.sleep(seconds)
            status, payload, headers = answer(url.path, parse_qs(url.query),
                                              self.headers.get("Authorization", ""))
            self.send_json(status, payload, headers)

    return Handler
