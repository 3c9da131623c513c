"""A local HTTP server that speaks the part of the Slack Web API the bot uses.

It keeps state (messages, views, files, DMs), records every call, checks the bot token, and
answers like a workspace does where Slack would refuse:

- channels it does not know are ``channel_not_found``; channels the bot was not invited to
  (``outside``) are ``not_in_channel``; archived ones are ``is_archived``; deactivated users
  cannot be DMed (``user_disabled``), nor can bot users (``cannot_dm_bot``);
- ``chat.postMessage`` takes a user ID as ``channel`` and posts in the app's DM with that
  user, answering that DM's ID (``D…``) as ``channel``, as Slack does: the DM is opened as
  ``conversations.open`` would open it, so the user's refusals (deactivated, a bot, and any
  failure arranged for ``conversations.open`` with that user) are the post's answer; once the
  DM is open the post is recorded, and matched by failures arranged for a channel, as posted
  in that DM;
- messages over Slack's limits are refused: more than 50 blocks, section text over 3,000
  characters, fields over 2,000, button text over 75, … answer ``invalid_blocks`` with Slack's
  ``errors`` list (JSON pointers); ``text`` over 40,000 characters is ``msg_too_long``; views
  over 100 blocks or with a title over 24 characters answer ``invalid_arguments``;
- any documented error of any method can be produced on demand, for one channel or user:
  ``fake.fail("chat.postMessage", "not_in_channel", channel="C0APPROVE")``;
  ``ratelimited`` answers 429 with ``Retry-After`` and 5xx errors their HTTP status.

Response URLs and file upload URLs point back at it. Error names and limits follow Slack's
method reference (docs.slack.dev/reference/methods/…) and Block Kit reference.
"""

from __future__ import annotations

import contextlib
import itertools
import json
import socket
import threading
import time
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any
from urllib.parse import parse_qs, urlparse
from zoneinfo import ZoneInfo

from slack_sdk.signature import SignatureVerifier

from bot.fakes.server import JsonHandler, Served

BOT_TOKEN = "xoxb-test-token-0123456789"
APP_TOKEN = "xapp-test-token-0123456789"
SIGNING_SECRET = "test-signing-secret-abcdef0123456789"


@dataclass
class Call:
    method: str
    params: dict[str, Any]
    """For a post addressed to a user, ``channel`` is the DM it went to (the user's ID when
    the DM could not be opened)."""
    user: str | None = None
    """The user ID a post was addressed to, in place of a channel."""


ERRORS: dict[str, frozenset[str]] = {
    "chat.postMessage": frozenset({
        "channel_not_found", "not_in_channel", "is_archived", "msg_too_long", "no_text",
        "invalid_blocks", "invalid_blocks_format", "msg_blocks_too_long", "too_many_attachments",
        "restricted_action", "restricted_action_read_only_channel",
        "restricted_action_thread_only_channel", "restricted_action_non_threadable_channel",
        "messages_tab_disabled", "ekm_access_denied", "team_access_not_granted",
        "duplicate_channel_not_found", "rate_limited"}),
    "chat.update": frozenset({
        "channel_not_found", "message_not_found", "cant_update_message", "edit_window_closed",
        "msg_too_long", "no_text", "invalid_blocks", "invalid_blocks_format",
        "msg_blocks_too_long", "is_inactive", "too_many_attachments", "update_failed",
        "not_in_channel", "is_archived"}),
    "chat.postEphemeral": frozenset({
        "channel_not_found", "is_archived", "msg_too_long", "no_text", "not_in_channel",
        "user_not_in_channel", "invalid_blocks", "restricted_action"}),
    "conversations.open": frozenset({
        "user_not_found", "user_disabled", "user_not_visible", "cannot_dm_bot",
        "channel_not_found", "not_enough_users", "too_many_users", "invalid_user_combination",
        "method_not_supported_for_channel_type"}),
    "conversations.info": frozenset({
        "channel_not_found", "team_not_found", "method_not_supported_for_channel_type"}),
    "files.getUploadURLExternal": frozenset({"invalid_arguments", "invalid_file_type"}),
    "files.completeUploadExternal": frozenset({
        "channel_not_found", "not_in_channel", "is_archived", "file_not_found",
        "file_update_failed", "invalid_channel", "posting_to_general_channel_denied",
        "restricted_action"}),
    "views.open": frozenset({
        "expired_trigger_id", "invalid_trigger_id", "exchanged_trigger_id", "view_too_large",
        "duplicate_external_id", "invalid_arguments"}),
    "views.update": frozenset({
        "not_found", "hash_conflict", "view_too_large", "duplicate_external_id",
        "invalid_arguments"}),
    "views.publish": frozenset({
        "not_found", "hash_conflict", "view_too_large", "duplicate_external_id",
        "invalid_arguments", "user_not_found"}),
    "users.info": frozenset({"user_not_found", "user_not_visible"}),
    "usergroups.users.list": frozenset({"no_such_subteam", "subteam_not_found"}),
}
"""Each method's own errors as Slack documents them; every method also answers the errors any
call can meet (:data:`COMMON_ERRORS`)."""

COMMON_ERRORS = frozenset({
    "ratelimited", "not_authed", "invalid_auth", "account_inactive", "token_revoked",
    "token_expired", "no_permission", "missing_scope", "access_denied", "org_login_required",
    "invalid_arguments", "invalid_arg_name", "invalid_form_data", "request_timeout",
    "service_unavailable", "fatal_error", "internal_error", "team_added_to_org",
    "ekm_access_denied", "accesslimited"})

HTTP_STATUS = {"ratelimited": 429, "service_unavailable": 503, "fatal_error": 500,
               "internal_error": 500}
"""Errors Slack answers with an HTTP status other than 200."""

MESSAGE_BLOCKS, VIEW_BLOCKS = 50, 100
MESSAGE_TEXT = 40_000
"""Slack truncates or refuses ``text`` beyond this (``msg_too_long``)."""


@dataclass
class Failure:
    """One error :meth:`FakeSlack.fail` was told to produce."""

    method: str
    error: str
    match: dict[str, str]
    times: int | None
    """How many more calls fail; None for every call until :meth:`FakeSlack.heal`."""

    def applies(self, method: str, params: dict[str, Any]) -> bool:
        return method == self.method and self.times != 0 and all(
            str(params.get(key, "")) == value for key, value in self.match.items())


@dataclass
class FakeSlack(Served):
    users: dict[str, dict[str, str]] = field(default_factory=dict)
    """Users by ID: ``email``, ``name`` and ``tz`` (an IANA zone, ``Europe/London`` when not
    given), answered by ``users.info`` as Slack does (``tz``, ``tz_label``, ``tz_offset``;
    ``deleted`` for the deactivated)."""
    usergroups: dict[str, list[str]] = field(default_factory=dict)
    channels: set[str] = field(default_factory=set)
    """Channels the bot is a member of."""
    outside: set[str] = field(default_factory=set)
    """Channels that exist but the bot was never invited to: posting answers not_in_channel."""
    archived: set[str] = field(default_factory=set)
    """Archived channels (members or not): posting answers is_archived."""
    channel_names: dict[str, str] = field(default_factory=dict)
    deactivated: set[str] = field(default_factory=set)
    """Users whose account is deactivated: conversations.open answers user_disabled."""
    bot_users: set[str] = field(default_factory=set)
    """Bot users: conversations.open answers cannot_dm_bot; users.info says ``is_bot`` and
    shows no email, as for a bot."""
    guests: dict[str, str] = field(default_factory=dict)
    """Guests by ID: ``multi`` (users.info ``is_restricted``) or ``single`` (also
    ``is_ultra_restricted``)."""
    strangers: set[str] = field(default_factory=set)
    """Slack Connect users of another organisation: users.info ``is_stranger`` and their own
    ``team_id``."""
    calls: list[Call] = field(default_factory=list)
    messages: dict[tuple[str, str], dict[str, Any]] = field(default_factory=dict)
    responses: list[dict[str, Any]] = field(default_factory=list)
    files: dict[str, dict[str, Any]] = field(default_factory=dict)
    views: list[dict[str, Any]] = field(default_factory=list)
    rate_limited: dict[str, int] = field(default_factory=dict)
    """Method name → how many of its next calls get a 429 with Retry-After."""
    retry_after: int = 1
    on_call: Callable[[str, dict[str, Any]], None] | None = None
    """Called with each successful call, as it arrives (the demo prints them)."""
    latency: Callable[[str, dict[str, Any]], float] | None = None
    """Seconds a call (method, parameters) travels before Slack handles it; calls in flight
    together are handled in the order they arrive, as Slack does, not the order sent."""
    per_channel_interval: float = 0.0
    """Like Slack's chat.postMessage limit: at most one message per channel this often."""
    global_per_second: int = 0
    """A workspace-wide cap on chat.postMessage calls per second (0: none)."""
    socket_url: str | None = None
    """What ``apps.connections.open`` hands out (a ``FakeSocketMode``'s URL)."""
    channel_info: dict[str, dict[str, Any]] = field(default_factory=dict)
    """Channel ID → how its ``conversations.info`` object differs from a public channel the bot
    is in (``name``, ``is_archived``, ``is_member``, ``is_private``)."""

    def __post_init__(self) -> None:
        self._lock = threading.Lock()
        self.limited = 0
        self.failures: list[Failure] = []
        self.refused: list[tuple[str, str, dict[str, Any]]] = []
        """``(method, error, params)`` of every call answered with an error."""
        self._last_post: dict[str, float] = {}
        self._window: deque[float] = deque()
        self._ts = itertools.count(1)
        self._serve_on(ThreadingHTTPServer(("127.0.0.1", 0), _handler(self)))
        self.connections = 0
        """Connections clients opened."""
        self._open: set[socket.socket] = set()
        """Connections kept alive by clients (HTTP/1.1, as Slack keeps them): closed on stop,
        so that a stopped Slack answers nobody, however they connected."""
        self.api_url = self.url + "/api/"

    def stop(self) -> None:
        super().stop()
        self.hang_up()

    def hang_up(self) -> None:
        """Close every connection clients keep open, as Slack closes idle ones."""
        with self._lock:
            kept, self._open = list(self._open), set()
        for connection in kept:
            with contextlib.suppress(OSError):
                connection.shutdown(socket.SHUT_RDWR)

    # --- what tests look at -------------------------------------------------------------

    def called(self, method: str) -> list[dict[str, Any]]:
        with self._lock:
            return [c.params for c in self.calls if c.method == method]

    def dm_channel(self, user_id: str) -> str:
        return f"D{user_id}"

    def dms_to(self, user_id: str) -> list[dict[str, Any]]:
        channel = self.dm_channel(user_id)
        return [p for p in self.called("chat.postMessage") if p.get("channel") == channel]

    def addressed_to_users(self) -> list[str]:
        """The users posts were addressed to by their ID (each post once)."""
        with self._lock:
            return [c.user for c in self.calls if c.user is not None]

    def message(self, channel: str, ts: str) -> dict[str, Any]:
        with self._lock:
            return self.messages[(channel, ts)]

    def channel_messages(self, channel: str) -> list[dict[str, Any]]:
        with self._lock:
            return [m for (c, _), m in self.messages.items() if c == channel]

    def response_url(self) -> str:
        return f"{self.url}/respond/{next(self._ts)}"

    def responses_to(self, response_url: str) -> list[dict[str, Any]]:
        path = urlparse(response_url).path
        with self._lock:
            return [r for r in self.responses if r["_url"] == path]

    def errors(self, method: str | None = None) -> list[str]:
        """The errors answered so far, of ``method`` or of every method."""
        with self._lock:
            return [e for m, e, _ in self.refused if method is None or m == method]

    # --- what tests arrange -------------------------------------------------------------

    def fail(self, method: str, error: str, *, times: int | None = None,
             **match: str) -> Failure:
        """Answer ``method`` with ``error`` when its parameters match ``match`` (e.g.
        ``channel="C0APPROVE"``, ``users="U0BOB0002"``, ``trigger_id=…``): ``times`` calls, or
        every call until :meth:`heal`. Only errors Slack documents for the method are allowed."""
        if error not in ERRORS.get(method, frozenset()) | COMMON_ERRORS:
            raise ValueError(f"Slack does not document {error} for {method}")
        failure = Failure(method, error, {k: str(v) for k, v in match.items()}, times)
        with self._lock:
            self.failures.append(failure)
        return failure

    def heal(self, method: str | None = None) -> None:
        """Forget the failures arranged with :meth:`fail` (for ``method``, or all)."""
        with self._lock:
            self.failures = [f for f in self.failures
                             if method is not None and f.method != method]

    # --- the API ------------------------------------------------------------------------

    def handle(self, method: str, params: dict[str, Any],
               token: str | None) -> tuple[int, dict[str, Any], dict[str, str]]:
        if self.latency is not None:
            time.sleep(self.latency(method, params))
        status, answer, headers = self._answer(method, params, token)
        if not answer.get("ok"):
            with self._lock:
                self.refused.append((method, str(answer.get("error")), params))
        return status, answer, headers

    def _injected(self, method: str,
                  params: dict[str, Any]) -> tuple[int, dict[str, Any], dict[str, str]] | None:
        for failure in self.failures:
            if failure.applies(method, params):
                if failure.times is not None:
                    failure.times -= 1
                status = HTTP_STATUS.get(failure.error, 200)
                headers = {"Retry-After": str(self.retry_after)} if status == 429 else {}
                return status, {"ok": False, "error": failure.error}, headers
        return None

    def _answer(self, method: str, params: dict[str, Any],
                token: str | None) -> tuple[int, dict[str, Any], dict[str, str]]:
        with self._lock:
            user = self._addressed_user(method, params)
            injected = None
            if user is not None:  # the DM is opened first, then posted in
                injected = self._injected("conversations.open", {"users": user})
                refused = self._refused_dm(user) if injected is None else None
                if refused is not None:
                    injected = 200, {"ok": False, "error": refused}, {}
                if injected is None:
                    params = {**params, "channel": self.dm_channel(user)}
            self.calls.append(Call(method, params, user))
            injected = injected or self._injected(method, params)
            if injected is not None:
                if injected[0] == 429:
                    self.limited += 1
                return injected
            remaining = self.rate_limited.get(method, 0)
            if remaining or (method == "chat.postMessage" and self._over_limits(params)):
                if remaining:
                    self.rate_limited[method] = remaining - 1
                self.limited += 1
                return 429, {"ok": False, "error": "ratelimited"}, {
                    "Retry-After": str(self.retry_after)}
        expected = APP_TOKEN if method == "apps.connections.open" else BOT_TOKEN
        if token != expected and method != "api.test":
            return 200, {"ok": False, "error": "invalid_auth"}, {}
        handler = getattr(self, "api_" + method.replace(".", "_"), None)
        if handler is None:
            return 200, {"ok": False, "error": "unknown_method"}, {}
        with self._lock:
            answer = handler(params)
        if self.on_call is not None and answer.get("ok"):
            self.on_call(method, params)
        return 200, answer, {}

    def _over_limits(self, params: dict[str, Any]) -> bool:
        """Slack's posting limits, as configured; counts the post when it is allowed."""
        now = time.monotonic()
        channel = str(params.get("channel", ""))
        if self.per_channel_interval and now - self._last_post.get(channel, -1e9) \
                < self.per_channel_interval:
            return True
        if self.global_per_second:
            while self._window and now - self._window[0] >= 1.0:
                self._window.popleft()
            if len(self._window) >= self.global_per_second:
                return True
            self._window.append(now)
        self._last_post[channel] = now
        return False

    def _known(self, channel: str) -> bool:
        return channel in self.channels or channel.startswith("D")

    def _cannot_post(self, channel: str) -> str | None:
        """Why the bot cannot post in ``channel``, as Slack says it; None when it can."""
        if channel in self.archived:
            return "is_archived"
        if channel in self.outside:
            return "not_in_channel"
        if not self._known(channel):
            return "channel_not_found"
        return None

    def _ts_now(self) -> str:
        return f"{int(time.time())}.{next(self._ts):06d}"

    def api_auth_test(self, params: dict[str, Any]) -> dict[str, Any]:
        return {"ok": True, "user_id": "U0BOT", "user": "k8s-access", "bot_id": "B0BOT",
                "team_id": "T0TEAM", "team": "Test", "url": self.url + "/"}

    def api_apps_connections_open(self, params: dict[str, Any]) -> dict[str, Any]:
        if self.socket_url is None:
            return {"ok": False, "error": "socket_mode_not_enabled"}
        return {"ok": True, "url": self.socket_url}

    def api_users_info(self, params: dict[str, Any]) -> dict[str, Any]:
        user = self.users.get(params.get("user", ""))
        if user is None:
            return {"ok": False, "error": "user_not_found"}
        zone = user.get("tz") or "Europe/London"
        offset = datetime.now(UTC).astimezone(ZoneInfo(zone)).utcoffset() or timedelta()
        user_id = params["user"]
        bot, guest = user_id in self.bot_users, self.guests.get(user_id)
        profile = {"display_name": user.get("name")}
        if not bot:
            profile["email"] = user.get("email")
        return {"ok": True, "user": {
            "id": user_id, "name": user.get("name"),
            "team_id": "T0OTHER" if user_id in self.strangers else "T0TEAM",
            "deleted": user_id in self.deactivated,
            "is_bot": bot, "is_app_user": False,
            "is_restricted": guest is not None, "is_ultra_restricted": guest == "single",
            "is_stranger": user_id in self.strangers,
            "tz": zone, "tz_label": user.get("tz_label") or zone,
            "tz_offset": int(offset.total_seconds()),
            "profile": profile}}

    def api_usergroups_users_list(self, params: dict[str, Any]) -> dict[str, Any]:
        group = params.get("usergroup", "")
        if group not in self.usergroups:
            return {"ok": False, "error": "no_such_subteam"}
        return {"ok": True, "users": self.usergroups[group]}

    @staticmethod
    def _addressed_user(method: str, params: dict[str, Any]) -> str | None:
        """The user a ``chat.postMessage`` names as its ``channel`` (``U…``/``W…``)."""
        channel = str(params.get("channel", "")) if method == "chat.postMessage" else ""
        return channel if channel[:1] in ("U", "W") else None

    def _refused_dm(self, user: str) -> str | None:
        """Why Slack will not open a DM with ``user``; None when it will."""
        if user in self.deactivated:
            return "user_disabled"
        if user in self.bot_users:
            return "cannot_dm_bot"
        return None

    def api_conversations_open(self, params: dict[str, Any]) -> dict[str, Any]:
        users = params.get("users", "")
        refused = self._refused_dm(users)
        if refused is not None:
            return {"ok": False, "error": refused}
        return {"ok": True, "channel": {"id": self.dm_channel(users)}}

    def api_conversations_info(self, params: dict[str, Any]) -> dict[str, Any]:
        """What Slack shows the bot of a channel; ``channel_info`` overrides what the channel
        sets say. A private channel the bot is not in is invisible to it, as in Slack."""
        channel = params.get("channel", "")
        if channel.startswith("D"):
            return {"ok": True, "channel": {"id": channel, "is_im": True, "is_member": True,
                                            "user": channel[1:], "is_archived": False}}
        if channel not in self.channels | self.outside | self.archived | set(self.channel_info):
            return {"ok": False, "error": "channel_not_found"}
        name = self.channel_names.get(channel, channel.lower())
        info = {"id": channel, "name": name, "name_normalized": name, "is_channel": True,
                "is_private": False, "is_im": False, "is_archived": channel in self.archived,
                "is_member": channel in self.channels and channel not in self.outside,
                **self.channel_info.get(channel, {})}
        if info["is_private"] and not info["is_member"]:
            return {"ok": False, "error": "channel_not_found"}
        return {"ok": True, "channel": info}

    def api_chat_postMessage(self, params: dict[str, Any]) -> dict[str, Any]:
        channel = params.get("channel", "")
        refused = self._cannot_post(channel) or _refused_message(params)
        if refused:
            return _error(refused)
        ts = self._ts_now()
        self.messages[(channel, ts)] = {"text": params.get("text"),
                                        "blocks": _blocks(params.get("blocks")),
                                        "thread_ts": params.get("thread_ts")}
        return {"ok": True, "channel": channel, "ts": ts}

    def api_chat_update(self, params: dict[str, Any]) -> dict[str, Any]:
        key = (params.get("channel", ""), params.get("ts", ""))
        if key[0] in self.archived:
            return {"ok": False, "error": "is_archived"}
        if key not in self.messages:
            return {"ok": False, "error": "message_not_found"}
        refused = _refused_message(params)
        if refused:
            return _error(refused)
        self.messages[key] = {**self.messages[key], "text": params.get("text"),
                              "blocks": _blocks(params.get("blocks"))}
        return {"ok": True, "channel": key[0], "ts": key[1]}

    def api_chat_postEphemeral(self, params: dict[str, Any]) -> dict[str, Any]:
        refused = self._cannot_post(params.get("channel", "")) or _refused_message(params)
        if refused:
            return _error(refused)
        return {"ok": True, "message_ts": self._ts_now()}

    def api_views_open(self, params: dict[str, Any]) -> dict[str, Any]:
        return self._view(params)

    def api_views_update(self, params: dict[str, Any]) -> dict[str, Any]:
        return self._view(params)

    def api_views_publish(self, params: dict[str, Any]) -> dict[str, Any]:
        return self._view(params)

    def _view(self, params: dict[str, Any]) -> dict[str, Any]:
        raw = params.get("view")
        view: dict[str, Any] = json.loads(raw) if isinstance(raw, str) else dict(raw or {})
        problems = _view_problems(view)
        if problems:
            return {"ok": False, "error": "invalid_arguments",
                    "response_metadata": {"messages": [f"[ERROR] {p}" for p in problems]}}
        self.views.append(view)
        return {"ok": True, "view": {**view, "id": f"V{len(self.views)}", "hash": "h"}}

    def api_files_getUploadURLExternal(self, params: dict[str, Any]) -> dict[str, Any]:
        file_id = f"F{next(self._ts)}"
        self.files[file_id] = {"filename": params.get("filename"),
                               "length": int(params.get("length", 0)), "content": None}
        return {"ok": True, "file_id": file_id, "upload_url": f"{self.url}/upload/{file_id}"}

    def api_files_completeUploadExternal(self, params: dict[str, Any]) -> dict[str, Any]:
        raw = params.get("files")
        files: list[dict[str, Any]] = json.loads(raw) if isinstance(raw, str) else list(raw or [])
        channel = params.get("channel_id")
        refused = self._cannot_post(str(channel or ""))
        if refused:
            return {"ok": False, "error": refused}
        shared = []
        for item in files:
            stored = self.files.get(item["id"])
            if stored is None or stored["content"] is None:
                return {"ok": False, "error": "file_not_found"}
            stored["channel"] = channel
            shared.append({"id": item["id"], "name": stored["filename"]})
        return {"ok": True, "files": shared}

    def upload(self, file_id: str, content: bytes) -> bool:
        with self._lock:
            if file_id not in self.files:
                return False
            self.files[file_id]["content"] = content
            return True

    def uploaded_to(self, channel: str) -> list[dict[str, Any]]:
        with self._lock:
            return [f for f in self.files.values() if f.get("channel") == channel]


def _blocks(value: Any) -> list[dict[str, Any]]:
    if isinstance(value, str):
        return list(json.loads(value))
    return list(value or [])


def _error(refused: str | list[str]) -> dict[str, Any]:
    if isinstance(refused, str):
        return {"ok": False, "error": refused}
    return {"ok": False, "error": "invalid_blocks", "errors": refused,
            "response_metadata": {"messages": [f"[ERROR] {p}" for p in refused]}}


def _refused_message(params: dict[str, Any]) -> str | list[str] | None:
    """Why Slack would refuse this message's content: ``msg_too_long``, the ``invalid_blocks``
    problems, ``no_text``; None when it fits."""
    text = params.get("text")
    blocks = _blocks(params.get("blocks"))
    if not text and not blocks:
        return "no_text"
    if text is not None and len(str(text)) > MESSAGE_TEXT:
        return "msg_too_long"
    problems = _block_problems(blocks, MESSAGE_BLOCKS, "/blocks")
    return problems or None


def _view_problems(view: dict[str, Any]) -> list[str]:
    problems = _block_problems(list(view.get("blocks") or []), VIEW_BLOCKS, "/view/blocks")
    for key in ("title", "submit", "close"):
        problems += _too_long(view.get(key), 24, f"/view/{key}")
    if len(str(view.get("private_metadata") or "")) > 3000:
        problems.append("must be less than 3001 characters [json-pointer:/view/private_metadata]")
    return problems


def _too_long(text: Any, limit: int, pointer: str) -> list[str]:
    """A text object (or a string) longer than ``limit``, or empty, in Slack's words."""
    value = text.get("text") if isinstance(text, dict) else text
    if value is None:
        return []
    if len(str(value)) > limit:
        return [f"must be less than {limit + 1} characters [json-pointer:{pointer}/text]"]
    if not str(value):
        return [f"must be more than 0 characters [json-pointer:{pointer}/text]"]
    return []


def _element_problems(element: dict[str, Any], pointer: str) -> list[str]:
    problems: list[str] = []
    kind = element.get("type")
    if kind == "button":
        problems += _too_long(element.get("text"), 75, f"{pointer}/text")
        if len(str(element.get("value") or "")) > 2000:
            problems.append(f"must be less than 2001 characters [json-pointer:{pointer}/value]")
    elif kind == "static_select":
        problems += _select_problems(element, pointer)
    elif kind == "plain_text_input":
        problems += _too_long(element.get("initial_value") or None, 3000,
                              f"{pointer}/initial_value")
    if len(str(element.get("action_id") or "")) > 255:
        problems.append(f"must be less than 256 characters [json-pointer:{pointer}/action_id]")
    return problems


def _select_problems(element: dict[str, Any], pointer: str) -> list[str]:
    """A static menu: ``options`` (at most 100) or ``option_groups`` (at most 100, each of at
    most 100 options and a label of 75), not both; an ``initial_option`` that exactly matches
    one of them."""
    problems: list[str] = []
    if "options" in element and "option_groups" in element:
        problems.append(f"must provide either options or option_groups [json-pointer:{pointer}]")
    groups = element.get("option_groups")
    if groups is None:
        groups, where = [{"options": element.get("options") or []}], [f"{pointer}/options"]
    else:
        where = [f"{pointer}/option_groups/{g}/options" for g in range(len(groups))]
        if len(groups) > 100:
            problems.append(
                f"no more than 100 items allowed [json-pointer:{pointer}/option_groups]")
        for g, group in enumerate(groups):
            problems += _too_long(group.get("label"), 75, f"{pointer}/option_groups/{g}/label")
    offered: list[Any] = []
    for group, at in zip(groups, where, strict=True):
        options = group.get("options") or []
        offered += options
        if len(options) > 100:
            problems.append(f"no more than 100 items allowed [json-pointer:{at}]")
        for j, option in enumerate(options):
            problems += _too_long(option.get("text"), 75, f"{at}/{j}/text")
            if len(str(option.get("value") or "")) > 150:
                problems.append(f"must be less than 151 characters [json-pointer:{at}/{j}/value]")
    initial = element.get("initial_option")
    if initial is not None and initial not in offered:
        problems.append(f"must match one of the options [json-pointer:{pointer}/initial_option]")
    return problems


def _block_problems(blocks: list[dict[str, Any]], limit: int, pointer: str) -> list[str]:
    """Block Kit's limits: blocks per surface, section text 3,000, fields 10 of 2,000 each,
    header 150, actions 25 elements, context 10, button text 75, options 100 of 75."""
    problems: list[str] = []
    if len(blocks) > limit:
        problems.append(f"no more than {limit} items allowed [json-pointer:{pointer}]")
    for i, block in enumerate(blocks):
        at = f"{pointer}/{i}"
        kind = block.get("type")
        if len(str(block.get("block_id") or "")) > 255:
            problems.append(f"must be less than 256 characters [json-pointer:{at}/block_id]")
        if kind == "section":
            if block.get("text") is None and not block.get("fields"):
                problems.append(f"must provide text or fields [json-pointer:{at}]")
            problems += _too_long(block.get("text"), 3000, f"{at}/text")
            fields = block.get("fields") or []
            if len(fields) > 10:
                problems.append(f"no more than 10 items allowed [json-pointer:{at}/fields]")
            for j, item in enumerate(fields):
                problems += _too_long(item, 2000, f"{at}/fields/{j}")
            if isinstance(block.get("accessory"), dict):
                problems += _element_problems(block["accessory"], f"{at}/accessory")
        elif kind == "header":
            problems += _too_long(block.get("text"), 150, f"{at}/text")
        elif kind == "context":
            elements = block.get("elements") or []
            if len(elements) > 10:
                problems.append(f"no more than 10 items allowed [json-pointer:{at}/elements]")
            for j, item in enumerate(elements):
                problems += _too_long(item, 3000, f"{at}/elements/{j}")
        elif kind == "actions":
            elements = block.get("elements") or []
            if len(elements) > 25:
                problems.append(f"no more than 25 items allowed [json-pointer:{at}/elements]")
            for j, item in enumerate(elements):
                problems += _element_problems(item, f"{at}/elements/{j}")
        elif kind == "input":
            problems += _too_long(block.get("label"), 2000, f"{at}/label")
            problems += _too_long(block.get("hint"), 2000, f"{at}/hint")
            if isinstance(block.get("element"), dict):
                problems += _element_problems(block["element"], f"{at}/element")
    return problems


def _handler(slack: FakeSlack) -> type[BaseHTTPRequestHandler]:
    class Handler(JsonHandler):  # connections kept alive, as Slack keeps them
        content_type = "application/json; charset=utf-8"
        disable_nagle_algorithm = True  # headers and body leave in two writes

        def setup(self) -> None:
            super().setup()
            with slack._lock:
                slack.connections += 1
                slack._open.add(self.connection)

        def finish(self) -> None:
            with slack._lock:
                slack._open.discard(self.connection)
            super().finish()

        def do_GET(self) -> None:
            self.do_POST()

        def do_POST(self) -> None:
            url = urlparse(self.path)
            raw = self.read_body()
            if url.path.startswith("/respond/"):
                with slack._lock:
                    slack.responses.append({**json.loads(raw or b"{}"), "_url": url.path})
                self.send_response(200)
                self.send_header("Content-Length", "2")
                self.end_headers()
                self.wfile.write(b"ok")
                return
            if url.path.startswith("/upload/"):
                ok = slack.upload(url.path.rsplit("/", 1)[1], raw)
                self.send_response(200 if ok else 404)
                self.send_header("Content-Length", "2")
                self.end_headers()
                self.wfile.write(b"OK")
                return
            if not url.path.startswith("/api/"):
                self.send_json(404, {"ok": False, "error": "not_found"})
                return
            params: dict[str, Any] = {k: v[0] for k, v in parse_qs(url.query).items()}
            content_type = self.headers.get("Content-Type", "")
            if raw and content_type.startswith("application/json"):
                params.update(json.loads(raw))
            elif raw:
                params.update({k: v[0] for k, v in parse_qs(raw.decode()).items()})
            auth = self.headers.get("Authorization", "")
            token = auth.removeprefix("Bearer ") if auth else params.get("token")
            status, payload, headers = slack.handle(url.path.removeprefix("/api/"), params, token)
            self.send_json(status, payload, headers)

    return Handler


def signed_headers(body: str, *, secret: str = SIGNING_SECRET, timestamp: int | None = None,
                   content_type: str = "application/x-www-form-urlencoded") -> dict[str, str]:
    """Headers exactly as Slack signs a request (v0 HMAC-SHA256 over ``v0:ts:body``)."""
    stamp = str(timestamp if timestamp is not None else int(time.time()))
    signature = SignatureVerifier(secret).generate_signature(timestamp=stamp, body=body)
    return {"content-type": content_type, "x-slack-request-timestamp": stamp,
            "x-slack-signature": signature or ""}
