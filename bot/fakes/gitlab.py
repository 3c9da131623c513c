"""A local HTTP server speaking the part of GitLab's REST API v4 the bot uses, with real state.

Users, groups (by ID or URL-encoded full path, with parents for inherited membership) and
members; ``members`` and ``members/all``, each member with ``created_at`` and ``created_by`` (the
user whose token added it, as GitLab's member entity shows); pagination headers; error bodies as
GitLab sends them (``{"message": "404 Member Not Found"}``, ``{"message": "403 Forbidden"}``,
409 ``{"message": "Member already exists"}``); tokens that are users, admins searching by private
email, and Owner required to manage members; ``expires_at`` as GitLab takes it (a day no
earlier than today, else 400; kept by a PUT that omits it, cleared by null). Faults: the next
requests (or the next of one HTTP method) can fail with a status (a 429 saying
``Retry-After``), fail after doing their work (an answer lost on the way), or hang;
``before_list`` runs once while the next list of a group's members is being answered.
"""

from __future__ import annotations

import json
import threading
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, date, datetime
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any
from urllib.parse import parse_qs, unquote, urlparse

from bot.fakes.server import HeldAnswers, JsonHandler, Served

OWNER = 50


@dataclass
class GitLabUser:
    id: int
    username: str
    email: str
    public_email: str = ""
    is_admin: bool = False


@dataclass
class Group:
    id: int
    full_path: str
    parent_id: int | None = None
    members: dict[int, dict[str, Any]] = field(default_factory=dict)


@dataclass
class FakeGitLab(Served, HeldAnswers):
    users: dict[int, GitLabUser] = field(default_factory=dict)
    groups: dict[int, Group] = field(default_factory=dict)
    tokens: dict[str, int] = field(default_factory=dict)
    fail_next: list[int] = field(default_factory=list)
    fail_on: dict[str, list[int]] = field(default_factory=dict)
    """By HTTP method: the statuses the next requests of that method fail with."""
    lose_answer_on: dict[str, list[int]] = field(default_factory=dict)
    """By HTTP method: the next requests of that method do their work, then answer this status."""
    before_list: Callable[[], None] | None = None
    """Runs once, before the next list of a group's members is answered."""
    retry_after: int | None = None
    """The ``Retry-After`` a failing 429 says, as GitLab's rate limiter does (None: not said)."""
    hang_next: int = 0
    hang_seconds: float = 2.0
    calls: list[tuple[str, str]] = field(default_factory=list)
    per_page_cap: int = 100

    def __post_init__(self) -> None:
        self.lock = threading.RLock()
        self._serve_on(ThreadingHTTPServer(("127.0.0.1", 0), _handler(self)))

    # --- helpers for tests ---------------------------------------------------------------

    def add_user(self, username: str, email: str, *, public_email: str = "",
                 admin: bool = False, token: str | None = None) -> GitLabUser:
        user = GitLabUser(len(self.users) + 1, username, email, public_email, admin)
        self.users[user.id] = user
        if token:
            self.tokens[token] = user.id
        return user

    def add_group(self, full_path: str, parent: Group | None = None) -> Group:
        group = Group(100 + len(self.groups), full_path, parent.id if parent else None)
        self.groups[group.id] = group
        return group

    def member(self, group: Group, user: GitLabUser) -> dict[str, Any] | None:
        return group.members.get(user.id)

    def add_member(self, group: Group, user: GitLabUser, access_level: int,
                   by: GitLabUser | None = None, expires_at: str | None = None,
                   created_at: datetime | None = None) -> dict[str, Any]:
        """A membership made outside the bot (by ``by``, a group owner, in the web UI)."""
        with self.lock:
            group.members[user.id] = {
                "access_level": access_level, "expires_at": expires_at,
                "created_at": _timestamp(created_at or datetime.now(UTC)),
                "created_by": by.id if by is not None else None}
            return group.members[user.id]

    # --- the API ------------------------------------------------------------------------

    def _group(self, ref: str) -> Group | None:
        ref = unquote(ref)
        if ref.isdigit():
            return self.groups.get(int(ref))
        return next((g for g in self.groups.values() if g.full_path == ref), None)

    def _effective(self, group: Group, user_id: int) -> dict[str, Any] | None:
        best = None
        current: Group | None = group
        while current is not None:
            found = current.members.get(user_id)
            if found and (best is None or found["access_level"] > best["access_level"]):
                best = found
            current = self.groups.get(current.parent_id) if current.parent_id else None
        return best

    def _member_json(self, user_id: int, membership: dict[str, Any]) -> dict[str, Any]:
        user = self.users[user_id]
        data = {"id": user.id, "username": user.username, "name": user.username,
                "state": "active", "access_level": membership["access_level"],
                "created_at": membership.get("created_at"),
                "expires_at": membership.get("expires_at")}
        creator = self.users.get(membership.get("created_by") or 0)
        if creator is not None:
            data["created_by"] = {"id": creator.id, "username": creator.username,
                                  "name": creator.username, "state": "active",
                                  "avatar_url": None,
                                  "web_url": f"{self.url}/{creator.username}"}
        return data

    def _user_json(self, user: GitLabUser, viewer: GitLabUser) -> dict[str, Any]:
        data: dict[str, Any] = {"id": user.id, "username": user.username,
                                "name": user.username, "state": "active",
                                "public_email": user.public_email or None}
        if viewer.is_admin:
            data["email"] = user.email
            data["is_admin"] = user.is_admin
        return data

    def handle(self, token: str | None, method: str, path: str, query: dict[str, str],
               body: dict[str, Any]) -> tuple[int, Any, dict[str, str]]:
        with self.lock:
            self.calls.append((method, path))
            failing = self.fail_on.get(method)
            if self.fail_next or failing:
                code = (failing or self.fail_next).pop(0)
                if code == 429:
                    said = {} if self.retry_after is None else {
                        "Retry-After": str(self.retry_after)}
                    return code, {"message": "Retry later"}, said
                return code, {"message": f"{code} Internal Server Error"}, {}
            viewer_id = self.tokens.get(token or "")
            if viewer_id is None:
                return 401, {"message": "401 Unauthorized"}, {}
            viewer = self.users[viewer_id]
            parts = [p for p in path.removeprefix("/api/v4/").split("/") if p]
            if parts == ["user"]:
                return 200, self._user_json(viewer, viewer) | {"is_admin": viewer.is_admin}, {}
            if parts == ["users"] and method == "GET":
                found = list(self.users.values())
                if "username" in query:
                    found = [u for u in found if u.username.lower() == query["username"].lower()]
                if "search" in query:
                    term = query["search"].lower()
                    found = [u for u in found if term in u.username.lower()
                             or term == u.public_email.lower()
                             or (viewer.is_admin and term == u.email.lower())]
                return self._page([self._user_json(u, viewer) for u in found], query)
            if len(parts) >= 2 and parts[0] == "groups":
                group = self._group(parts[1])
                if group is None:
                    return 404, {"message": "404 Group Not Found"}, {}
                if len(parts) == 2 and method == "GET":
                    return 200, {"id": group.id, "full_path": group.full_path,
                                 "path": group.full_path.rsplit("/", 1)[-1],
                                 "parent_id": group.parent_id}, {}
                return self._members(viewer, group, method, parts[2:], query, body)
            return 404, {"message": "404 Not found"}, {}

    def _page(self, items: list[Any], query: dict[str, str]) -> tuple[int, Any, dict[str, str]]:
        per_page = min(int(query.get("per_page", 20)), self.per_page_cap)
        page = int(query.get("page", 1))
        total_pages = max((len(items) + per_page - 1) // per_page, 1)
        chunk = items[(page - 1) * per_page: page * per_page]
        headers = {"X-Total": str(len(items)), "X-Total-Pages": str(total_pages),
                   "X-Per-Page": str(per_page), "X-Page": str(page),
                   "X-Next-Page": str(page + 1) if page < total_pages else ""}
        return 200, chunk, headers

    def _members(self, viewer: GitLabUser, group: Group, method: str, rest: list[str],
                 query: dict[str, str], body: dict[str, Any]) -> tuple[int, Any, dict[str, str]]:
        if not rest or rest[0] != "members":
            return 404, {"message": "404 Not found"}, {}
        inherited = len(rest) > 1 and rest[1] == "all"
        ids = rest[2:] if inherited else rest[1:]
        if method == "GET":
            if ids:
                user_id = int(ids[0])
                found = self._effective(group, user_id) if inherited \
                    else group.members.get(user_id)
                if found is None:
                    return 404, {"message": "404 Member Not Found"}, {}
                return 200, self._member_json(user_id, found), {}
            members = {uid: m for uid, m in group.members.items()}
            if inherited:
                members = {uid: self._effective(group, uid) or {} for uid in self.users
                           if self._effective(group, uid)}
            return self._page([self._member_json(uid, m) for uid, m in sorted(members.items())],
                              query)
        manager = viewer.is_admin or (self._effective(group, viewer.id) or {}).get(
            "access_level", 0) >= OWNER
        if not manager:
            return 403, {"message": "403 Forbidden"}, {}
        if method == "POST" and not ids:
            user_id = int(body.get("user_id", 0))
            if user_id not in self.users:
                return 404, {"message": "404 User Not Found"}, {}
            if user_id in group.members:
                return 409, {"message": "Member already exists"}, {}
            inherited_level = (self._effective(group, user_id) or {}).get("access_level", 0)
            level = int(body["access_level"])
            refused = _refused_expiry(body)
            if refused is not None:
                return refused
            if level < inherited_level:
                return 400, {"message": {"access_level": [
                    f"should be greater than or equal to {inherited_level} inherited "
                    "membership from group"]}}, {}
            group.members[user_id] = {"access_level": level,
                                      "expires_at": body.get("expires_at") or None,
                                      "created_at": _timestamp(datetime.now(UTC)),
                                      "created_by": viewer.id}
            return 201, self._member_json(user_id, group.members[user_id]), {}
        if not ids:
            return 405, {"message": "405 Method Not Allowed"}, {}
        user_id = int(ids[0])
        if user_id not in group.members:
            return 404, {"message": "404 Member Not Found"}, {}
        if method == "PUT":
            refused = _refused_expiry(body)
            if refused is not None:
                return refused
            changed = {**group.members[user_id],
                       "access_level": int(body.get("access_level",
                                                    group.members[user_id]["access_level"]))}
            if "expires_at" in body:  # omitted, it stays; null or "" clears it
                changed["expires_at"] = body["expires_at"] or None
            group.members[user_id] = changed
            return 200, self._member_json(user_id, group.members[user_id]), {}
        if method == "DELETE":
            del group.members[user_id]
            return 204, None, {}
        return 405, {"message": "405 Method Not Allowed"}, {}


def _refused_expiry(body: dict[str, Any]) -> tuple[int, Any, dict[str, str]] | None:
    """GitLab's answer to an ``expires_at`` it does not take: not a date (400 from the API's
    parameter check), or a day before today (400 from the member's validation; today is
    accepted). ``None`` when the body's expiry is absent, empty or acceptable."""
    raw = body.get("expires_at")
    if not raw:
        return None
    try:
        day = date.fromisoformat(str(raw)[:10])
    except ValueError:
        return 400, {"error": "expires_at is invalid"}, {}
    if day < datetime.now(UTC).date():
        return 400, {"message": {"expires_at": ["cannot be a date in the past"]}}, {}
    return None


def _timestamp(moment: datetime) -> str:
    """GitLab's form: ``2026-12-01T02:03:04.123Z``."""
    return moment.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%S.%f")[:-3] + "Z"


def _handler(fake: FakeGitLab) -> type[BaseHTTPRequestHandler]:
    class Handler(JsonHandler):
        def _serve(self) -> None:
            url = urlparse(self.path)
            raw = self.read_body()
            body: dict[str, Any] = {}
            if raw and "json" in self.headers.get("Content-Type", ""):
                body = json.loads(raw)
            elif raw:
                body = {k: v[0] for k, v in parse_qs(raw.decode()).items()}
            fake.hang_if_due()
            query = {k: v[0] for k, v in parse_qs(url.query).items()}
            if self.command == "GET" and url.path.endswith("/members"):
                fake.run_before_list()
            status, payload, headers = fake.handle(self.headers.get("PRIVATE-TOKEN"),
                                                   self.command, url.path, query, body)
            with fake.lock:
                lost = fake.lose_answer_on.get(self.command)
                if lost and 200 <= status < 300:
                    code = lost.pop(0)
                    status, payload, headers = (code, {"message": f"{code} Bad Gateway"}, {})
            self.send_json(status, payload, headers)

        do_GET = do_POST = do_PUT = do_DELETE = _serve

    return Handler
