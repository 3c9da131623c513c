"""A local HTTP server that speaks the part of the Slack Web API the bot uses.

It keeps state (messages, views, files, DMs), records every call, checks the bot token, answers
``channel_not_found`` for channels it does not know, and can be told to rate-limit a method with
a 429 and ``Retry-After`` like Slack does. Response URLs and file upload URLs point back at it.
"""

from __future__ import annotations

import itertools
import json
import threading
import time
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any
from urllib.parse import parse_qs, urlparse

from slack_sdk.signature import SignatureVerifier

from bot.fakes.server import BackgroundServer

BOT_TOKEN = "xoxb-test-token-0123456789"
APP_TOKEN = "xapp-test-token-0123456789"
SIGNING_SECRET = "test-signing-secret-abcdef0123456789"


@dataclass
class Call:
    method: str
    params: dict[str, Any]


@dataclass
class FakeSlack:
    users: dict[str, dict[str, str]] = field(default_factory=dict)
    usergroups: dict[str, list[str]] = field(default_factory=dict)
    channels: set[str] = field(default_factory=set)
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
        self._last_post: dict[str, float] = {}
        self._window: deque[float] = deque()
        self._ts = itertools.count(1)
        self._server = BackgroundServer(ThreadingHTTPServer(("127.0.0.1", 0), _handler(self)))
        self.url = self._server.url
        self.api_url = self.url + "/api/"

    def start(self) -> FakeSlack:
        self._server.start()
        return self

    def stop(self) -> None:
        self._server.stop()

    # --- what tests look at -------------------------------------------------------------

    def called(self, method: str) -> list[dict[str, Any]]:
        with self._lock:
            return [c.params for c in self.calls if c.method == method]

    def dm_channel(self, user_id: str) -> str:
        return f"D{user_id}"

    def dms_to(self, user_id: str) -> list[dict[str, Any]]:
        channel = self.dm_channel(user_id)
        return [p for p in self.called("chat.postMessage") if p.get("channel") == channel]

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

    # --- the API ------------------------------------------------------------------------

    def handle(self, method: str, params: dict[str, Any],
               token: str | None) -> tuple[int, dict[str, Any], dict[str, str]]:
        with self._lock:
            self.calls.append(Call(method, params))
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

    def _ts_now(self) -> str:
        return f"{int(time.time())}.{next(self._ts):06d}"

    def api_auth_test(self, params: dict[str, Any]) -> dict[str, Any]:
        return {"ok": True, "user_id": "U0BOT", "user": "k8s-access", "bot_id": "B0BOT",
                "team_id": "T0TEAM", "team": "Test", "url": self.url + "/"}

    def api_conversations_info(self, params: dict[str, Any]) -> dict[str, Any]:
        """A private channel the bot is not in is invisible to it, as in Slack."""
        channel = params.get("channel", "")
        if not self._known(channel):
            return {"ok": False, "error": "channel_not_found"}
        info = {"id": channel, "name": channel.lower(), "is_channel": not channel.startswith("D"),
                "is_im": channel.startswith("D"), "is_private": False, "is_archived": False,
                "is_member": True, **self.channel_info.get(channel, {})}
        if info["is_private"] and not info["is_member"]:
            return {"ok": False, "error": "channel_not_found"}
        return {"ok": True, "channel": info}

    def api_apps_connections_open(self, params: dict[str, Any]) -> dict[str, Any]:
        if self.socket_url is None:
            return {"ok": False, "error": "socket_mode_not_enabled"}
        return {"ok": True, "url": self.socket_url}

    def api_users_info(self, params: dict[str, Any]) -> dict[str, Any]:
        user = self.users.get(params.get("user", ""))
        if user is None:
            return {"ok": False, "error": "user_not_found"}
        return {"ok": True, "user": {"id": params["user"], "name": user.get("name"),
                                     "profile": {"email": user.get("email"),
                                                 "display_name": user.get("name")}}}

    def api_usergroups_users_list(self, params: dict[str, Any]) -> dict[str, Any]:
        group = params.get("usergroup", "")
        if group not in self.usergroups:
            return {"ok": False, "error": "no_such_subteam"}
        return {"ok": True, "users": self.usergroups[group]}

    def api_conversations_open(self, params: dict[str, Any]) -> dict[str, Any]:
        users = params.get("users", "")
        return {"ok": True, "channel": {"id": self.dm_channel(users)}}

    def api_chat_postMessage(self, params: dict[str, Any]) -> dict[str, Any]:
        channel = params.get("channel", "")
        if not self._known(channel):
            return {"ok": False, "error": "channel_not_found"}
        ts = self._ts_now()
        self.messages[(channel, ts)] = {"text": params.get("text"),
                                        "blocks": _blocks(params.get("blocks")),
                                        "thread_ts": params.get("thread_ts")}
        return {"ok": True, "channel": channel, "ts": ts}

    def api_chat_update(self, params: dict[str, Any]) -> dict[str, Any]:
        key = (params.get("channel", ""), params.get("ts", ""))
        if key not in self.messages:
            return {"ok": False, "error": "message_not_found"}
        self.messages[key] = {**self.messages[key], "text": params.get("text"),
                              "blocks": _blocks(params.get("blocks"))}
        return {"ok": True, "channel": key[0], "ts": key[1]}

    def api_chat_postEphemeral(self, params: dict[str, Any]) -> dict[str, Any]:
        if not self._known(params.get("channel", "")):
            return {"ok": False, "error": "channel_not_found"}
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


def _handler(slack: FakeSlack) -> type[BaseHTTPRequestHandler]:
    class Handler(BaseHTTPRequestHandler):
        def log_message(self, format: str, *args: Any) -> None:
            pass

        def _body(self) -> bytes:
            return self.rfile.read(int(self.headers.get("Content-Length") or 0))

        def _send(self, status: int, payload: dict[str, Any],
                  headers: dict[str, str] | None = None) -> None:
            body = json.dumps(payload).encode()
            self.send_response(status)
            self.send_header("Content-Type", "application/json; charset=utf-8")
            self.send_header("Content-Length", str(len(body)))
            for name, value in (headers or {}).items():
                self.send_header(name, value)
            self.end_headers()
            self.wfile.write(body)

        def do_GET(self) -> None:
            self.do_POST()

        def do_POST(self) -> None:
            url = urlparse(self.path)
            raw = self._body()
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
                self._send(404, {"ok": False, "error": "not_found"})
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
            self._send(status, payload, headers)

    return Handler


def signed_headers(body: str, *, secret: str = SIGNING_SECRET, timestamp: int | None = None,
                   content_type: str = "application/x-www-form-urlencoded") -> dict[str, str]:
    """Headers exactly as Slack signs a request (v0 HMAC-SHA256 over ``v0:ts:body``)."""
    stamp = str(timestamp if timestamp is not None else int(time.time()))
    signature = SignatureVerifier(secret).generate_signature(timestamp=stamp, body=body)
    return {"content-type": content_type, "x-slack-request-timestamp": stamp,
            "x-slack-signature": signature or ""}
