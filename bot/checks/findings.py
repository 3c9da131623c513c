"""What a connection check found, and why a call failed, in words an operator can act on."""

from __future__ import annotations

import socket
import ssl
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Protocol

from bot.domain.errors import DomainError


@dataclass(frozen=True)
class Finding:
    """One check against one target: the bot token, a channel, a right, a group.

    ``target`` names what was reached (``Slack``, ``cluster prod``), ``url`` where; ``check``
    what was checked; ``detail`` what was found or, when not ``ok``, the cause; ``fix`` what to
    do about it.
    """

    target: str
    url: str
    check: str
    ok: bool
    detail: str
    fix: str = ""


class Reporter(Protocol):
    """Hears of each target as it is reached and of each finding as it is made."""

    def target(self, name: str, url: str, what: str) -> None: ...

    def finding(self, finding: Finding) -> None: ...


class Findings:
    """The findings of one target, passed on to the reporter as they are made."""

    def __init__(self, reporter: Reporter, target: str, url: str) -> None:
        self.reporter = reporter
        self.target = target
        self.url = url
        self.made: list[Finding] = []

    def ok(self, check: str, detail: str) -> Finding:
        return self._add(Finding(self.target, self.url, check, True, detail))

    def failed(self, check: str, detail: str, fix: str = "") -> Finding:
        return self._add(Finding(self.target, self.url, check, False, detail, fix))

    def _add(self, finding: Finding) -> Finding:
        self.made.append(finding)
        self.reporter.finding(finding)
        return finding


def _chain(error: BaseException) -> Iterator[BaseException]:
    """The error and every error behind it: causes, contexts (kept even by ``raise … from
    None``), urllib3's ``reason`` and exceptions passed as arguments."""
    seen: list[BaseException] = []
    pending: list[BaseException | None] = [error]
    while pending:
        current = pending.pop(0)
        if current is None or any(current is s for s in seen):
            continue
        seen.append(current)
        yield current
        reason = getattr(current, "reason", None)
        pending += [current.__cause__, current.__context__,
                    reason if isinstance(reason, BaseException) else None]
        pending += [a for a in current.args if isinstance(a, BaseException)]


def cause(error: BaseException, timeout: float) -> str:
    """Why a call failed, as the network saw it: ``connection refused``, ``no answer within
    5s (timeout)``, ``TLS error: …``, ``host name not found``; else the error's own message."""
    chain = list(_chain(error))
    for found in chain:
        if isinstance(found, ssl.SSLCertVerificationError):
            return f"TLS error: {found.verify_message or found.reason} (the server's " \
                   "certificate is not signed by the CA the bot trusts)"
    for found in chain:
        if isinstance(found, TimeoutError):
            return f"no answer within {timeout:g}s (timeout)"
        if type(found).__name__ in ("ReadTimeoutError", "ConnectTimeoutError", "ReadTimeout",
                                    "ConnectTimeout", "Timeout"):
            return f"no answer within {timeout:g}s (timeout)"
    for found in chain:
        if isinstance(found, ConnectionRefusedError):
            return "connection refused (nothing listens at that address and port)"
        if isinstance(found, socket.gaierror):
            return f"host name not found ({found.strerror or found})"
        if isinstance(found, ConnectionResetError):
            return "the server closed the connection"
        if isinstance(found, ssl.SSLError):
            return f"TLS error: {found.reason or found}"
    if isinstance(error, DomainError):
        return error.message
    first = str(error).splitlines()[0] if str(error) else ""
    return f"{type(error).__name__}: {first}" if first else type(error).__name__
