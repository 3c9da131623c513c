"""Opsgenie's Who-is-on-call API over plain HTTP (its SDK is unmaintained): is this person on
call in one of these schedules?

``GET /v2/schedules/{identifier}/on-calls?scheduleIdentifierType=name|id&flat=true`` with
``Authorization: GenieKey KEY`` answers ``{"data": {"_parent": {"id", "name", "enabled"},
"onCallRecipients": [usernames]}, "took", "requestId"}`` for now (``date`` left out); Opsgenie
usernames are email addresses. Errors answer ``{"message", "took", "requestId"}``: 401 for a
bad key, 403 when the key may not read the schedule, 404 for an unknown schedule, 429 when
rate-limited (``X-RateLimit-*`` headers). Reference: docs.opsgenie.com, "Who is On Call API"
and "Response". There is no paging on this endpoint.

Calls are short (:data:`DEFAULT_TIMEOUT`) and never retried (a 429's reason says how long it
asks to wait, from ``Retry-After``); a schedule that fails is doubt with the reason, unless
the person is on call in another. A refused key (401) or a rate limit (429) ends the check at
once: every other schedule would meet it too.
"""

from __future__ import annotations

import re
from typing import Any
from urllib.parse import quote

import requests

from bot.adapters.oncall.service import (
    DEFAULT_TIMEOUT,
    ENDS_THE_CHECK,
    OnCallServiceError,
    asked_wait,
    http_reason,
    network_reason,
    rate_limited_reason,
)
from bot.domain.oncall import OnCallAnswer, OnCallTargets

SERVICE = "Opsgenie"
DEFAULT_URL = "https://api.opsgenie.com"
_UUID = re.compile(r"^[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}$", re.I)


def identifier_type(schedule: str) -> str:
    """``id`` for a schedule ID (a UUID), else ``name``."""
    return "id" if _UUID.match(schedule) else "name"


class OpsgenieOnCall:
    """Answers for the ``opsgenie`` section of a role's on-call targets."""

    service = SERVICE

    def __init__(self, api_key: str, url: str | None = None, *,
                 timeout: float = DEFAULT_TIMEOUT) -> None:
        self.url = (url or DEFAULT_URL).rstrip("/")
        self.timeout = timeout
        self._session = requests.Session()
        self._session.headers.update({"Authorization": f"GenieKey {api_key}",
                                      "Accept": "application/json"})

    def check(self, email: str, targets: OnCallTargets) -> OnCallAnswer:
        wanted = targets.opsgenie
        if wanted is None:
            return OnCallAnswer.unknown(SERVICE, "this role names no Opsgenie schedules")
        address = email.strip().lower()
        failures: list[str] = []
        for schedule in wanted.schedules:  # one that fails never hides another that says yes
            try:
                name, recipients = self.on_call(schedule)
            except OnCallServiceError as error:
                if error.status in ENDS_THE_CHECK:  # every other schedule would meet it too
                    return OnCallAnswer.unknown(SERVICE, error.reason)
                failures.append(error.reason if len(wanted.schedules) == 1
                                else f"schedule {schedule}: {error.reason}")
                continue
            if address in {r.strip().lower() for r in recipients}:
                return OnCallAnswer.on_call(SERVICE, f"schedule {name}")
        if failures:
            return OnCallAnswer.unknown(SERVICE, "; ".join(failures))
        plural = "s" if len(wanted.schedules) > 1 else ""
        return OnCallAnswer.not_on_call(SERVICE, f"not on call in schedule{plural} "
                                                 f"{', '.join(wanted.schedules)}")

    def on_call(self, schedule: str) -> tuple[str, list[str]]:
        """The schedule's name and the usernames on call in it now. Raises
        :class:`OnCallServiceError`."""
        path = f"/v2/schedules/{quote(schedule, safe='')}/on-calls"
        try:
            response = self._session.get(
                self.url + path, timeout=self.timeout,
                params={"scheduleIdentifierType": identifier_type(schedule), "flat": "true"})
        except requests.RequestException as error:
            raise OnCallServiceError(SERVICE, network_reason(error, self.timeout)) from None
        body = _json(response)
        if response.status_code != 200:
            message = str(body.get("message") or "") if isinstance(body, dict) else ""
            reason = rate_limited_reason(message, asked_wait(response.headers)) \
                if response.status_code == 429 else http_reason(response.status_code, message)
            raise OnCallServiceError(SERVICE, reason, response.status_code)
        data = body.get("data") if isinstance(body, dict) else None
        if not isinstance(data, dict):
            raise OnCallServiceError(SERVICE, f"the answer to GET {path} is not Opsgenie's")
        parent = data.get("_parent") or {}
        recipients = data.get("onCallRecipients") or []
        return str(parent.get("name") or schedule), [str(r) for r in recipients]


def _json(response: requests.Response) -> Any:
    try:
        return response.json()
    except ValueError:
        return None
