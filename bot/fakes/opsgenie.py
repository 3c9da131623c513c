"""A local HTTP server speaking Opsgenie's Who-is-on-call API, with state.

``GET /v2/schedules/{identifier}/on-calls`` with ``scheduleIdentifierType`` (``id`` by
default, or ``name``) and ``flat``: with ``flat=true`` the data holds ``onCallRecipients``
(usernames, which are emails), otherwise ``onCallParticipants`` (``{id, name, type}``).
Every answer carries ``took`` and ``requestId`` and the ``X-Request-ID`` header; keys are
sent as ``Authorization: GenieKey …``. The endpoint is not paged.

Errors are Opsgenie's ``{"message", "took", "requestId"}``: 401 for a missing or unknown key,
403 when the key may not read the schedule (a team key for another team's schedule), 404 for
an unknown schedule, 429 with ``X-RateLimit-State: THROTTLED`` and its reason and period.
Faults on demand: ``fake.fail(503, times=2)``; ``fake.slow(5.0)`` holds the next answers.
Reference: docs.opsgenie.com, "Who is On Call API", "Response" and "Rate Limiting".
"""

from __future__ import annotations

import uuid
from dataclasses import dataclass, field
from http.server import ThreadingHTTPServer
from typing import Any
from urllib.parse import unquote

from bot.fakes.server import FaultSwitches, JsonAnswer, Served, json_get_handler

API_KEY = "og-test-key-0123456789"

MESSAGES = {
    401: "Could not authenticate",
    403: "You are not authorized to take this action.",
    404: "Schedule not found",
    422: "Invalid scheduleIdentifierType",
    429: "Rate limit exceeded",
    500: "Internal Server Error",
    502: "Bad Gateway",
    503: "Service Unavailable",
}
"""The statuses :meth:`FakeOpsgenie.fail` may produce, with a message like Opsgenie's."""


@dataclass
class Schedule:
    id: str
    name: str
    on_call: list[str] = field(default_factory=list)
    """Usernames (emails) on call now."""
    enabled: bool = True
    readable_by: set[str] | None = None
    """Keys that may read it; None for every key (an account-wide key)."""


@dataclass
class FakeOpsgenie(Served, FaultSwitches[list[int | None]]):
    """Its faults are ``[status, times left, Retry-After]`` (times None: until :meth:`heal`;
    Retry-After None: not said)."""

    keys: set[str] = field(default_factory=lambda: {API_KEY})
    schedules: dict[str, Schedule] = field(default_factory=dict)
    calls: list[tuple[str, dict[str, list[str]]]] = field(default_factory=list)
    """``(path, query)`` of every call, as received."""

    def __post_init__(self) -> None:
        self._init_switches()
        self._serve_on(ThreadingHTTPServer(("127.0.0.1", 0),
                                           json_get_handler(self.answer, self.delay)))

    # --- what tests arrange -------------------------------------------------------------

    def add_schedule(self, name: str, on_call: list[str] | None = None) -> Schedule:
        schedule = Schedule(str(uuid.uuid4()), name, list(on_call or []))
        self.schedules[schedule.id] = schedule
        return schedule

    def fail(self, status: int, *, times: int | None = None,
             retry_after: int | None = None) -> None:
        """Answer the next ``times`` calls (or every call until :meth:`heal`) with ``status``
        and Opsgenie's error body; a 429 with ``retry_after`` also says ``Retry-After``
        (seconds)."""
        if status not in MESSAGES:
            raise ValueError(f"Opsgenie documents no {status} here; use one of "
                             f"{list(MESSAGES)}")
        with self.lock:
            self.faults.append([status, times, retry_after])


    # --- the API ------------------------------------------------------------------------

    def handle(self, path: str, query: dict[str, list[str]],
               authorization: str) -> JsonAnswer:
        with self.lock:
            self.calls.append((path, query))
            for fault in self.faults:
                status, times, retry_after = fault
                if times != 0:
                    if times is not None:
                        fault[1] = times - 1
                    assert status is not None
                    code, body, headers = _error(status)
                    if retry_after is not None and status == 429:
                        headers = {**headers, "Retry-After": str(retry_after)}
                    return code, body, headers
        key = authorization.removeprefix("GenieKey ")
        if not authorization.startswith("GenieKey ") or key not in self.keys:
            return _error(401)
        parts = [unquote(p) for p in path.strip("/").split("/")]
        if len(parts) != 4 or parts[:2] != ["v2", "schedules"] or parts[3] != "on-calls":
            return _error(404, "No handler found")
        kind = query.get("scheduleIdentifierType", ["id"])[-1]
        if kind not in ("id", "name"):
            return _error(422)
        schedule = next((s for s in self.schedules.values()
                         if (s.id if kind == "id" else s.name) == parts[2]), None)
        if schedule is None:
            return _error(404, f"Schedule with identifier [{parts[2]}] not found")
        if schedule.readable_by is not None and key not in schedule.readable_by:
            return _error(403)
        data: dict[str, Any] = {"_parent": {"id": schedule.id, "name": schedule.name,
                                            "enabled": schedule.enabled}}
        if query.get("flat", ["false"])[-1] == "true":
            data["onCallRecipients"] = list(schedule.on_call)
        else:
            data["onCallParticipants"] = [
                {"id": str(uuid.uuid5(uuid.NAMESPACE_DNS, name)), "name": name, "type": "user"}
                for name in schedule.on_call]
        return 200, {"data": data, **_meta()}, {}

    def answer(self, path: str, query: dict[str, list[str]], authorization: str) -> JsonAnswer:
        """:meth:`handle`, with the request ID and timing headers every answer carries."""
        status, payload, headers = self.handle(path, query, authorization)
        return status, payload, {"X-Request-ID": str(payload["requestId"]),
                                 "X-Response-Time": str(payload["took"]), **headers}


def _meta() -> dict[str, Any]:
    return {"took": 0.012, "requestId": str(uuid.uuid4())}


def _error(status: int, message: str | None = None) -> JsonAnswer:
    headers = {"X-RateLimit-State": "THROTTLED", "X-RateLimit-Reason": "ACCOUNT",
               "X-RateLimit-Period-In-Sec": "60"} if status == 429 else {}
    return status, {"message": message or MESSAGES[status], **_meta()}, headers
