"""Who people are, from Slack: email, time zone (``tz``) and whether the account is
deactivated (``deleted``), a bot's, a guest's or from another organisation by ``users.info``;
user groups by ``usergroups.users.list``; both cached for a few minutes.

The rest of the bot speaks of principals (a user or a group of users, opaque IDs); this module
expands the user groups among them (Slack's ID kinds: :mod:`bot.slack_ids`).
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable, Iterable
from typing import Any, TypeVar

from slack_sdk import WebClient
from slack_sdk.errors import SlackApiError

from bot.domain.errors import TemporaryBackendError
from bot.domain.ports import People, UserInfo
from bot.slack_ids import is_user_group

T = TypeVar("T")
log = logging.getLogger(__name__)


class _TtlCache:
    def __init__(self, ttl_seconds: float) -> None:
        self._ttl = ttl_seconds
        self._items: dict[str, tuple[float, Any]] = {}
        self._lock = threading.Lock()

    def get(self, key: str, load: Callable[[], T]) -> T:
        now = time.monotonic()
        with self._lock:
            hit = self._items.get(key)
            if hit is not None and hit[0] > now:
                return hit[1]  # type: ignore[no-any-return]
        value = load()
        with self._lock:
            self._items[key] = (now + self._ttl, value)
        return value


class SlackDirectory:
    def __init__(self, client: WebClient, ttl_seconds: float = 300) -> None:
        self._client = client
        self._users = _TtlCache(ttl_seconds)
        self._groups = _TtlCache(ttl_seconds)

    def user_info(self, user_id: str) -> UserInfo:
        return self._users.get(user_id, lambda: self._load_user(user_id))

    def _load_user(self, user_id: str) -> UserInfo:
        try:
            user = self._client.users_info(user=user_id)["user"]
        except SlackApiError as error:
            if error.response.get("error") in ("user_not_found", "user_not_visible"):
                return UserInfo(slack_user_id=user_id, known=False)
            raise TemporaryBackendError(
                f"Slack did not say who {user_id} is: {error.response.get('error')}"
            ) from None
        except OSError as error:  # no answer: a timeout or a dropped connection
            raise TemporaryBackendError(
                f"Slack did not say who {user_id} is: it did not answer ({error})") from None
        profile = user.get("profile", {})
        return UserInfo(
            slack_user_id=user_id,
            email=profile.get("email"),
            name=user.get("name") or profile.get("display_name"),
            known=not user.get("deleted", False),
            tz=user.get("tz") or None,
            deactivated=bool(user.get("deleted")),
            bot=any(user.get(flag) for flag in ("is_bot", "is_app_user", "is_workflow_bot")),
            guest=bool(user.get("is_restricted") or user.get("is_ultra_restricted")),
            external=bool(user.get("is_stranger")),
        )

    def members(self, group_id: str) -> frozenset[str]:
        return self._groups.get(group_id, lambda: self._load_group(group_id))

    def _load_group(self, group_id: str) -> frozenset[str]:
        try:
            users = self._client.usergroups_users_list(usergroup=group_id)["users"]
        except SlackApiError as error:
            if error.response.get("error") in ("no_such_subteam", "subteam_not_found"):
                # A wrong ID in the config must not lock everyone else out: it has no members.
                log.error("user group %s in the configuration does not exist in Slack",
                          group_id)
                return frozenset()
            raise TemporaryBackendError(
                f"Slack did not list user group {group_id}: {error.response.get('error')}"
            ) from None
        except OSError as error:  # no answer: a timeout or a dropped connection
            raise TemporaryBackendError(
                f"Slack did not list user group {group_id}: it did not answer ({error})"
            ) from None
        return frozenset(users)

    def users(self, principals: Iterable[str]) -> People:
        """Users as themselves, user groups as their members; a group Slack cannot list now
        is logged and named as unlisted, so that the others are still told."""
        users: set[str] = set()
        unlisted: list[str] = []
        for principal in principals:
            if not is_user_group(principal):
                users.add(principal)
                continue
            try:
                users |= self.members(principal)
            except TemporaryBackendError as error:
                log.warning("could not list user group %s: %s", principal, error.message)
                unlisted.append(principal)
        return People(frozenset(users), tuple(unlisted))

    def groups_of(self, user_id: str, principals: frozenset[str]) -> frozenset[str]:
        """The user groups among ``principals`` that ``user_id`` is in. A group Slack cannot
        list now counts as one they are not in (logged): it grants nothing, and it never locks
        out everyone else, those named on their own included."""
        found: set[str] = set()
        for group in filter(is_user_group, principals):
            try:
                if user_id in self.members(group):
                    found.add(group)
            except TemporaryBackendError as error:
                log.error("%s; counted as not a member of it for now", error.message)
        return frozenset(found)
