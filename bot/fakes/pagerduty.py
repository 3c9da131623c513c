"""A local HTTP server speaking the part of PagerDuty's REST API v2 the bot uses, with state.

Users (``GET /users`` with ``query`` matching name or email), escalation policies and
schedules (``GET /escalation_policies/{id}``, ``GET /schedules/{id}``) and on-calls
(``GET /oncalls`` filtered by ``user_ids[]``, ``escalation_policy_ids[]``, ``schedule_ids[]``,
with ``earliest``). Lists page like PagerDuty's classic pagination: ``limit`` (default 25, at
most 100) and ``offset``, answering ``limit``, ``offset``, ``more`` and ``total`` (null unless
``total=true``); ``offset + limit`` past 10,000 is refused. Tokens are sent as
``Authorization: Token token=…``.

Errors are PagerDuty's ``{"error": {"message", "code", "errors"?}}``: 401 ``Authentication
failed`` (2006) for a missing or unknown token, 404 ``Not Found`` (2100), 400 ``Invalid Input
Provided`` (2001), 429 ``Rate Limit Exceeded`` (2020) with ``ratelimit-*`` headers. Faults on
demand: ``fake.fail("/oncalls", 503, times=2)`` answers a status; ``fake.slow(5.0)`` holds the
next answers. Reference: developer.pagerduty.com, the REST API v2 reference (openapiv3) and its
pagination and rate-limit pages.
"""

from __future__ import annotations

import ssl
import tempfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import unquote

from bot.fakes.pki import TestCA
from bot.fakes.server import (
    FaultSwitches,
    JsonAnswer,
    Served,
    TLSServer,
    json_get_handler,
)

TOKEN = "pd-test-token-u+0123456789"
DEFAULT_LIMIT, MAX_LIMIT, ITERATION_LIMIT = 25, 100, 10_000

ERRORS: dict[int, tuple[str, int | None]] = {
    400: ("Invalid Input Provided", 2001),
    401: ("Authentication failed", 2006),
    403: ("Access Denied", 2010),
    404: ("Not Found", 2100),
    429: ("Rate Limit Exceeded", 2020),
    500: ("Internal Server Error", None),
    502: ("Bad Gateway", None),
    503: ("Service Unavailable", None),
}
"""The statuses :meth:`FakePagerDuty.fail` may produce, with PagerDuty's message and code."""


@dataclass
class OnCallEntry:
    user: str
    escalation_policy: str
    level: int
    schedule: str | None = None


@dataclass
class Fault:
    path: str
    status: int
    times: int | None
    """How many more calls fail; None for every call until :meth:`FakePagerDuty.heal`."""
    retry_after: str | None = None
    """A ``Retry-After`` header to answer a 429 with (seconds, or an HTTP date)."""


@dataclass
class FakePagerDuty(Served, FaultSwitches[Fault]):
    tokens: set[str] = field(default_factory=lambda: {TOKEN})
    users: dict[str, dict[str, str]] = field(default_factory=dict)
    """ID → ``{"name", "email"}``."""
    escalation_policies: dict[str, str] = field(default_factory=dict)
    """ID → name."""
    schedules: dict[str, str] = field(default_factory=dict)
    """ID → name."""
    oncalls: list[OnCallEntry] = field(default_factory=list)
    calls: list[tuple[str, dict[str, list[str]]]] = field(default_factory=list)
    """``(path, query)`` of every call, as received."""
    max_limit: int = MAX_LIMIT
    """The largest page it answers (PagerDuty's is 100); smaller to see paging at work."""

    def __post_init__(self) -> None:
        self._init_switches()
        self._folder = tempfile.TemporaryDirectory(prefix="fake-pagerduty-")
        ca = TestCA()
        self.ca_file = Path(self._folder.name) / "ca.crt"
        """The CA that signed the server's certificate: trust it (``SSL_CERT_FILE``) to call
        the fake, as PagerDuty's client only speaks HTTPS."""
        self.ca_file.write_bytes(ca.pem)
        cert, key = ca.write(Path(self._folder.name), "server", "localhost", server=True)
        context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
        context.load_cert_chain(cert, key)
        handler = json_get_handler(self.handle, self.delay)
        self._serve_on(TLSServer(("127.0.0.1", 0), handler, context), scheme="https")

    def stop(self) -> None:
        super().stop()
        self._folder.cleanup()

    # --- what tests arrange -------------------------------------------------------------

    def add_user(self, name: str, email: str) -> str:
        user_id = f"PU{len(self.users) + 1:05d}"
        self.users[user_id] = {"name": name, "email": email}
        return user_id

    def put_on_call(self, user_id: str, escalation_policy: str, level: int = 1,
                    schedule: str | None = None) -> None:
        self.oncalls.append(OnCallEntry(user_id, escalation_policy, level, schedule))

    def fail(self, path: str, status: int, *, times: int | None = None,
             retry_after: str | None = None) -> Fault:
        """Answer calls to ``path`` (``/oncalls``, ``/users``, or ``*`` for any) with
        ``status`` and PagerDuty's error body: ``times`` calls, or every call until
        :meth:`heal`; a 429 with ``retry_after`` also says ``Retry-After`` (as a proxy or
        gateway in front of PagerDuty may)."""
        if status not in ERRORS:
            raise ValueError(f"PagerDuty documents no {status} here; use one of {list(ERRORS)}")
        fault = Fault(path, status, times, retry_after)
        with self.lock:
            self.faults.append(fault)
        return fault


    def called(self, path: str) -> list[dict[str, list[str]]]:
        with self.lock:
            return [q for p, q in self.calls if p == path]

    # --- the API ------------------------------------------------------------------------

    def handle(self, path: str, query: dict[str, list[str]],
               authorization: str) -> JsonAnswer:
        with self.lock:
            self.calls.append((path, query))
            for fault in self.faults:
                if fault.path in (path, "*") and fault.times != 0:
                    if fault.times is not None:
                        fault.times -= 1
                    status, body, headers = _error(fault.status)
                    if fault.retry_after is not None and fault.status == 429:
                        headers = {**headers, "Retry-After": fault.retry_after}
                    return status, body, headers
        token = authorization.removeprefix("Token token=")
        if not authorization.startswith("Token token=") or token not in self.tokens:
            return _error(401)
        parts = [unquote(p) for p in path.strip("/").split("/") if p]
        if parts == ["users"]:
            term = _one(query, "query").lower()
            found = [{"id": uid, "type": "user", "summary": u["name"], "name": u["name"],
                      "email": u["email"], "self": f"{self.url}/users/{uid}"}
                     for uid, u in sorted(self.users.items())
                     if term in u["name"].lower() or term in u["email"].lower()]
            return _page("users", found, query, self.max_limit)
        if parts == ["oncalls"]:
            return _page("oncalls", self._oncalls(query), query, self.max_limit)
        if len(parts) == 2 and parts[0] in ("escalation_policies", "schedules"):
            names = self.escalation_policies if parts[0] == "escalation_policies" \
                else self.schedules
            if parts[1] not in names:
                return _error(404)
            kind = "escalation_policy" if parts[0] == "escalation_policies" else "schedule"
            return 200, {kind: {"id": parts[1], "type": kind, "name": names[parts[1]],
                                "summary": names[parts[1]]}}, {}
        return _error(404)

    def _oncalls(self, query: dict[str, list[str]]) -> list[dict[str, Any]]:
        users = set(query.get("user_ids[]", []))
        policies = set(query.get("escalation_policy_ids[]", []))
        schedules = set(query.get("schedule_ids[]", []))
        found: list[dict[str, Any]] = []
        seen: set[tuple[str, int, str]] = set()
        for entry in self.oncalls:
            if (users and entry.user not in users) \
                    or (policies and entry.escalation_policy not in policies) \
                    or (schedules and entry.schedule not in schedules):
                continue
            key = (entry.escalation_policy, entry.level, entry.user)
            if _one(query, "earliest") == "true" and key in seen:
                continue
            seen.add(key)
            found.append(self._entry_json(entry))
        return found

    def _entry_json(self, entry: OnCallEntry) -> dict[str, Any]:
        def reference(kind: str, ident: str, name: str) -> dict[str, str]:
            return {"id": ident, "type": f"{kind}_reference", "summary": name,
                    "self": f"{self.url}/{kind}s/{ident}"}

        user = self.users.get(entry.user, {"name": entry.user})
        return {
            "user": reference("user", entry.user, user["name"]),
            "escalation_policy": reference(
                "escalation_policy", entry.escalation_policy,
                self.escalation_policies.get(entry.escalation_policy, entry.escalation_policy)),
            "schedule": reference("schedule", entry.schedule,
                                  self.schedules.get(entry.schedule, entry.schedule))
            if entry.schedule else None,
            "escalation_level": entry.level,
            "start": "2026-01-05T09:00:00Z",
            "end": "2026-01-12T09:00:00Z",
        }


def _one(query: dict[str, list[str]], name: str, default: str = "") -> str:
    return query.get(name, [default])[-1]


def _error(status: int, *details: str) -> JsonAnswer:
    message, code = ERRORS[status]
    error: dict[str, Any] = {"message": message}
    if code is not None:
        error["code"] = code
    if details:
        error["errors"] = list(details)
    headers = {"ratelimit-limit": "960", "ratelimit-remaining": "0",
               "ratelimit-reset": "1"} if status == 429 else {}
    return status, {"error": error}, headers


def _page(wrapper: str, items: list[dict[str, Any]],
          query: dict[str, list[str]], max_limit: int) -> JsonAnswer:
    try:
        limit = min(int(_one(query, "limit", str(DEFAULT_LIMIT))), max_limit)
        offset = int(_one(query, "offset", "0"))
    except ValueError:
        return _error(400, "limit and offset must be whole numbers")
    if limit < 1 or offset < 0:
        return _error(400, "limit must be positive and offset at least 0")
    if offset + limit > ITERATION_LIMIT:
        return _error(400, f"Offset + limit must be at most {ITERATION_LIMIT}")
    chunk = items[offset:offset + limit]
    total = len(items) if _one(query, "total") == "true" else None
    return 200, {wrapper: chunk, "limit": limit, "offset": offset,
                 "more": offset + len(chunk) < len(items), "total": total}, {}
