"""PagerDuty's REST API v2, through the ``pagerduty`` client library: is this person on call?

The person is found by email (``GET /users?query=EMAIL``, every page; each user whose address
is exactly it, in any case, counts: two accounts with one address are both asked about),
then their current on-calls are listed (``GET /oncalls`` with ``user_ids[]`` and
``escalation_policy_ids[]`` or ``schedule_ids[]``, ``earliest=true``; ``since``/``until``
default to now), paged by ``offset``/``limit`` while ``more`` is true (the library's
``iter_all``). Each on-call carries its ``escalation_level`` (1 = first). Reference:
developer.pagerduty.com, "List all of the on-calls" and "List users"; error bodies are
``{"error": {"message": …, "code": …, "errors": […]}}``.

Calls are short (:data:`DEFAULT_TIMEOUT`), never retried on a network error, and retried
once after a short pause on a 429, unless the 429 asks for a longer wait than
:data:`RATE_LIMIT_WAIT` (``Retry-After``, or PagerDuty's ``ratelimit-reset``): a request is
not held up that long, so that is doubt at once. Any failure is an answer of doubt with the
reason; a refused token (401) or a rate limit ends the check at once (every other call would
meet the same).
"""

from __future__ import annotations

import ssl
from typing import Any

import pagerduty

from bot.adapters.oncall.service import (
    DEFAULT_TIMEOUT,
    ENDS_THE_CHECK,
    RATE_LIMIT_WAIT,
    OnCallServiceError,
    asked_wait,
    http_reason,
    network_reason,
    rate_limited_reason,
)
from bot.domain.oncall import OnCallAnswer, OnCallTargets

SERVICE = "PagerDuty"


class _WaitTooLongError(Exception):
    """A 429 asking for a longer wait than a request may take: out of the library's retry
    loop at once."""

    def __init__(self, response: Any, wait: float) -> None:
        super().__init__(f"429, asked to wait {wait}s")
        self.response = response
        self.wait = wait


class _Client(pagerduty.RestApiV2Client):
    """The library's client, told (by its ``postprocess`` hook, called on each answer) to give
    up on a 429 that asks for a longer wait than a request may take, instead of retrying."""

    def postprocess(self, response: Any, suffix: str | None = None) -> None:
        super().postprocess(response, suffix)
        if response.status_code == 429:
            wait = asked_wait(response.headers)
            if wait is not None and wait > RATE_LIMIT_WAIT:
                raise _WaitTooLongError(response, wait)


class PagerDutyOnCall:
    """Answers for the ``pagerduty`` section of a role's on-call targets."""

    service = SERVICE

    def __init__(self, token: str, url: str | None = None, *,
                 timeout: float = DEFAULT_TIMEOUT) -> None:
        self.timeout = timeout
        # The system's CAs (SSL_CERT_FILE and SSL_CERT_DIR override them), like the rest of
        # the bot's HTTPS clients.
        self.client = _Client(token, base_url=url or None,
                              verify=ssl.create_default_context())
        self.client.timeout = timeout  # type: ignore[assignment]  # httpx takes seconds
        self.client.max_network_attempts = 0  # a failed connection is an answer of doubt
        self.client.retry = {429: 1}  # once, after sleep_timer × 2 seconds; then give up
        self.client.sleep_timer = 0.1

    @property
    def url(self) -> str:
        return str(self.client.url)

    def check(self, email: str, targets: OnCallTargets) -> OnCallAnswer:
        wanted = targets.pagerduty
        if wanted is None:
            return OnCallAnswer.unknown(SERVICE, "this role names no PagerDuty targets")
        try:
            users = self.users_by_email(email)
        except OnCallServiceError as error:
            return OnCallAnswer.unknown(SERVICE, error.reason)
        if not users:
            return OnCallAnswer.not_on_call(SERVICE, f"no PagerDuty user has the email {email}")
        user_ids = tuple(str(user.get("id") or "") for user in users)
        if not all(user_ids):
            return OnCallAnswer.unknown(SERVICE, "the answer to GET /users is not PagerDuty's")
        levels: list[int] = []
        failures: list[str] = []
        # The policies and the schedules are asked apart: one that fails never hides the
        # other saying yes.
        for filters in ({"escalation_policy_ids": wanted.escalation_policies},
                        {"schedule_ids": wanted.schedules}):
            if not any(filters.values()):
                continue
            try:
                entries = self.on_calls(user_ids, **filters)
            except OnCallServiceError as error:
                if error.status in ENDS_THE_CHECK:
                    return OnCallAnswer.unknown(SERVICE, error.reason)
                failures.append(error.reason)
                continue
            for entry in entries:
                level = int(entry.get("escalation_level") or 0)
                if "schedule_ids" in filters or level in wanted.levels:
                    return OnCallAnswer.on_call(SERVICE, _where(entry))
                levels.append(level)
        if failures:
            return OnCallAnswer.unknown(SERVICE, "; ".join(dict.fromkeys(failures)))
        if levels:
            return OnCallAnswer.level_not_counted(SERVICE, levels, wanted.levels)
        return OnCallAnswer.not_on_call(SERVICE, "not on call in " + _targets(
            wanted.escalation_policies, wanted.schedules))

    # --- calls -------------------------------------------------------------------------

    def users_by_email(self, email: str) -> list[dict[str, Any]]:
        """Every PagerDuty user with exactly this email (any case), from every page of the
        query's matches (which include addresses that merely contain it)."""
        wanted = email.strip().lower()
        found: list[Any] = self._call(lambda: list(self.client.iter_all(
            "users", params={"query": email})))
        return [user for user in found if isinstance(user, dict)
                and str(user.get("email") or "").strip().lower() == wanted]

    def on_calls(self, user_ids: tuple[str, ...], *,
                 escalation_policy_ids: tuple[str, ...] = (),
                 schedule_ids: tuple[str, ...] = ()) -> list[dict[str, Any]]:
        """The users' on-calls right now, filtered by the given IDs, every page."""
        params: dict[str, Any] = {"user_ids": list(user_ids), "earliest": "true"}
        if escalation_policy_ids:
            params["escalation_policy_ids"] = list(escalation_policy_ids)
        if schedule_ids:
            params["schedule_ids"] = list(schedule_ids)
        found: list[dict[str, Any]] = self._call(
            lambda: list(self.client.iter_all("oncalls", params=params)))
        return found

    def resource(self, kind: str, identifier: str) -> dict[str, Any]:
        """``GET /{kind}/{identifier}`` (``escalation_policies``, ``schedules``), unwrapped."""
        found = self._call(lambda: self.client.rget(f"{kind}/{identifier}"))
        if not isinstance(found, dict):
            raise OnCallServiceError(SERVICE, f"the answer to GET /{kind}/{identifier} is not "
                                              "PagerDuty's")
        return found

    def _call(self, call: Any) -> Any:
        """Run ``call``, translating the library's errors into :class:`OnCallServiceError`."""
        try:
            return call()
        except _WaitTooLongError as limited:
            raise OnCallServiceError(SERVICE, rate_limited_reason(
                _message(limited.response), limited.wait), 429) from None
        except pagerduty.HttpError as error:
            response = error.response
            assert response is not None  # an HttpError always has its response
            raise OnCallServiceError(SERVICE, http_reason(response.status_code,
                                                          _message(response)),
                                     response.status_code) from None
        except pagerduty.Error as error:
            raise OnCallServiceError(SERVICE, network_reason(error, self.timeout)) from None
        except (pagerduty.UrlError, ValueError, KeyError, TypeError) as error:
            raise OnCallServiceError(SERVICE, f"the answer is not PagerDuty's "
                                              f"({type(error).__name__})") from None


def _message(response: Any) -> str:
    """``error.message`` (and ``error.errors``) of a PagerDuty error body; empty if none."""
    try:
        error = response.json().get("error") or {}
    except ValueError:
        return ""
    message = str(error.get("message") or "")
    details = [str(e) for e in error.get("errors") or []]
    return f"{message}: {'; '.join(details)}" if details else message


def _where(entry: dict[str, Any]) -> str:
    policy = entry.get("escalation_policy") or {}
    schedule = entry.get("schedule") or {}
    where = f"escalation policy {policy.get('summary', '?')} ({policy.get('id', '?')}), " \
            f"level {entry.get('escalation_level', '?')}"
    if schedule:
        where += f", schedule {schedule.get('summary', '?')} ({schedule.get('id', '?')})"
    return where


def _targets(policies: tuple[str, ...], schedules: tuple[str, ...]) -> str:
    named = [f"escalation polic{'y' if len(policies) == 1 else 'ies'} {', '.join(policies)}"
             ] if policies else []
    named += [f"schedule{'' if len(schedules) == 1 else 's'} {', '.join(schedules)}"
              ] if schedules else []
    return " or ".join(named)
