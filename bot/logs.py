"""Logging for the whole process: JSON or console lines, the request ID on each, secrets never.

:func:`configure` installs one handler on the root logger with a redacting filter: Slack and
GitLab tokens, PagerDuty and Opsgenie keys and Basic credentials in an ``Authorization``
header, a password in a URL (an audit webhook's), the configured secrets
(:meth:`bot.config.Settings.secret_values`) and any PEM private key are replaced before a line
is written, whoever logged it (the bot or a library).
"""

from __future__ import annotations

import json
import logging
import re
import sys
from collections.abc import Iterable
from datetime import UTC, datetime
from typing import Any

from bot.logcontext import current_request

REDACTED = "[redacted]"
_PATTERNS = [
    re.compile(r"-----BEGIN [A-Z ]*PRIVATE KEY-----.*?-----END [A-Z ]*PRIVATE KEY-----", re.S),
    re.compile(r"\bxox[abposre]-[A-Za-z0-9-]+"),
    re.compile(r"\bxapp-[A-Za-z0-9-]+"),
    re.compile(r"\bglpat-[A-Za-z0-9_-]+"),
    re.compile(r"(?i)(client-key-data|private[_-]token|authorization)(['\"]?\s*[:=]\s*['\"]?)"
               r"(Bearer\s+|Token\s+token=|GenieKey\s+|Basic\s+)?[A-Za-z0-9+/=._-]{8,}"),
    re.compile(r"(?i)\b(https?://[^\s/:@]+)(:)[^\s/@]+(?=@)"),  # a URL's password (webhook)
]


class RedactingFilter(logging.Filter):
    """Rewrites each record's message so that no secret survives."""

    def __init__(self, secrets: Iterable[str] = ()) -> None:
        super().__init__()
        self.secrets = [s for s in secrets if s and len(s) >= 6]

    def redact(self, text: str) -> str:
        for secret in self.secrets:
            text = text.replace(secret, REDACTED)
        for pattern in _PATTERNS:
            text = pattern.sub(lambda m: (m.group(1) + m.group(2) + REDACTED)
                               if m.lastindex and m.lastindex >= 2 else REDACTED, text)
        return text

    def filter(self, record: logging.LogRecord) -> bool:
        message = record.getMessage()
        if record.exc_info:
            message += "\n" + logging.Formatter().formatException(record.exc_info)
            record.exc_info = None
            record.exc_text = None
        record.msg, record.args = self.redact(message), None
        return True


class JsonFormatter(logging.Formatter):
    def format(self, record: logging.LogRecord) -> str:
        line: dict[str, Any] = {
            "time": datetime.fromtimestamp(record.created, UTC).isoformat(),
            "level": record.levelname.lower(),
            "logger": record.name,
            "message": record.getMessage(),
        }
        request_id = getattr(record, "request_id", None)
        if request_id is not None:
            line["request_id"] = request_id
        return json.dumps(line)


class ConsoleFormatter(logging.Formatter):
    def __init__(self) -> None:
        super().__init__("%(asctime)s %(levelname)-7s %(name)s%(request)s: %(message)s")

    def format(self, record: logging.LogRecord) -> str:
        request_id = getattr(record, "request_id", None)
        record.request = f" [request #{request_id}]" if request_id is not None else ""
        return super().format(record)


class _RequestIdFilter(logging.Filter):
    def filter(self, record: logging.LogRecord) -> bool:
        if getattr(record, "request_id", None) is None:
            record.request_id = current_request.get()
        return True


def configure(level: str = "INFO", fmt: str = "console", secrets: Iterable[str] = (),
              stream: Any = None) -> logging.Handler:
    """Send every log line through the redactor to ``stream`` (stderr by default)."""
    handler = logging.StreamHandler(stream or sys.stderr)
    handler.addFilter(_RequestIdFilter())
    handler.addFilter(RedactingFilter(secrets))
    handler.setFormatter(JsonFormatter() if fmt == "json" else ConsoleFormatter())
    root = logging.getLogger()
    for existing in list(root.handlers):
        if getattr(existing, "k8s_access_bot", False):  # ours from an earlier call only
            root.removeHandler(existing)
    handler.k8s_access_bot = True  # type: ignore[attr-defined]
    root.addHandler(handler)
    root.setLevel(level.upper())
    # The Slack SDK logs request bodies at DEBUG; keep them out even then.
    for noisy in ("slack_sdk", "slack_bolt", "urllib3", "kubernetes", "pagerduty"):
        logging.getLogger(noisy).setLevel(max(logging.INFO, root.level))
    # httpx under the PagerDuty client logs every request's URL at INFO (the client itself at
    # DEBUG), and on-call questions carry the requester's email (GET /users?query=…).
    for chatty in ("httpx", "httpx2", "httpcore", "httpcore2"):
        logging.getLogger(chatty).setLevel(max(logging.WARNING, root.level))
    return handler
