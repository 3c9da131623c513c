"""The HTTP face of ``serve``: Slack's events endpoint and the probes, as one WSGI app
served by waitress. Slack's endpoint is a WSGI app of the Slack adapter's, given by the
composition root (:func:`bot.app.slack_http`)."""

from __future__ import annotations

import json
import logging
from collections.abc import Callable, Iterable
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from wsgiref.types import StartResponse, WSGIApplication, WSGIEnvironment

log = logging.getLogger(__name__)
SLACK_PATH = "/slack/events"
ReadinessCheck = Callable[[], dict[str, str]]
"""Returns the failed checks by name; empty when ready."""


class WebApp:
    def __init__(self, slack: WSGIApplication | None, ready: ReadinessCheck,
                 metrics: Callable[[], tuple[bytes, str]] | None = None,
                 warnings: ReadinessCheck | None = None) -> None:
        """``slack``: what answers ``POST`` on :data:`SLACK_PATH` (None: nothing does);
        ``warnings``: problems to name in ``/readyz`` that do not make the bot unready
        (an approvers channel it cannot post to)."""
        self._slack = slack
        self._ready = ready
        self._metrics = metrics
        self._warnings = warnings

    def __call__(self, environ: WSGIEnvironment,
                 start_response: StartResponse) -> Iterable[bytes]:
        path, method = environ.get("PATH_INFO", ""), environ.get("REQUEST_METHOD", "GET")
        if path == SLACK_PATH and method == "POST" and self._slack is not None:
            return self._slack(environ, start_response)
        if path == "/healthz":
            return _json(start_response, "200 OK", {"status": "ok"})
        if path == "/readyz":
            try:
                failed = self._ready()
            except Exception as error:  # a probe must answer, whatever broke
                failed = {"check": f"{type(error).__name__}: {error}"}
            status = "503 Service Unavailable" if failed else "200 OK"
            answer: dict[str, Any] = {"status": "not ready" if failed else "ready",
                                      "failed": failed}
            warnings = self._warnings() if self._warnings is not None else {}
            if warnings:
                answer["warnings"] = warnings
            return _json(start_response, status, answer)
        if path == "/metrics" and self._metrics is not None:
            body, content_type = self._metrics()
            start_response("200 OK", [("Content-Type", content_type),
                                      ("Content-Length", str(len(body)))])
            return [body]
        return _json(start_response, "404 Not Found", {"error": "not found"})


def _json(start_response: Any, status: str, payload: dict[str, Any]) -> list[bytes]:
    body = json.dumps(payload).encode()
    start_response(status, [("Content-Type", "application/json"),
                            ("Content-Length", str(len(body)))])
    return [body]
