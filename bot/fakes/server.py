"""The one way the fakes serve: a threading HTTP(S) server on 127.0.0.1, in the background."""

from __future__ import annotations

import json
import ssl
import threading
import time
from collections.abc import Callable
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any, Generic, TypeVar
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

    class Handler(BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"

        def log_message(self, format: str, *args: Any) -> None:
            pass

        def do_GET(self) -> None:
            url = urlparse(self.path)
            seconds = delay()
            if seconds:
                time.sleep(seconds)
            status, payload, headers = answer(url.path, parse_qs(url.query),
                                              self.headers.get("Authorization", ""))
            data = json.dumps(payload).encode()
            try:
                self.send_response(status)
                self.send_header("Content-Type", "application/json; charset=utf-8")
                self.send_header("Content-Length", str(len(data)))
                for name, value in headers.items():
                    self.send_header(name, value)
                self.end_headers()
                self.wfile.write(data)
            except (BrokenPipeError, ConnectionResetError, ssl.SSLError):
                pass  # the client gave up waiting (a slow answer)

    return Handler
