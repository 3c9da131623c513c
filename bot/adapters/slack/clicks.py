"""What a click names, believed only as far as the bot's own buttons and menus could name it.

A button's value, a menu's chosen option and the block around them are the bot's own text sent
back by Slack, but anyone holding a signed request can change them, and a message can outlive
what it showed. So a click's request ID must be a request ID, agree with the block the bot put
it in, name a request that exists and, in an approvers channel, one whose approvals go to that
channel; an "Approve for…" option must be one of those the message offered. Anything else is
:class:`BrokenButton`: the person is told to type the command instead, and nothing changes.

Pure: the request is read by the caller (:mod:`~bot.adapters.slack.handling`).
"""

from __future__ import annotations

import re
from typing import Any

from bot.adapters.slack import blocks
from bot.adapters.slack.commands import MAX_REQUEST_ID, usage
from bot.config import Config
from bot.domain.durations import format_duration
from bot.domain.errors import InvalidInput
from bot.domain.model import AccessRequest

COMMAND_OF = {
    blocks.APPROVE: "approve", blocks.APPROVE_FOR: "approve", blocks.DENY: "deny",
    blocks.CANCEL: "cancel", blocks.REVOKE: "revoke", blocks.EXTEND: "extend",
    blocks.REQUEST_AGAIN: "request", blocks.KEEP: "list", blocks.CONFIRM_LINK: "help",
    blocks.DENY_MODAL: "deny", blocks.EXTEND_MODAL: "extend",
}
"""The command each button, menu or form stands for: what to type when it is broken."""
REQUEST_BLOCKS = frozenset({blocks.APPROVE, blocks.APPROVE_FOR, blocks.DENY, blocks.CANCEL,
                            blocks.REVOKE, blocks.EXTEND, blocks.REQUEST_AGAIN, blocks.KEEP,
                            blocks.REVIEW_BLOCK})
"""Block ID prefixes the bot writes as ``PREFIX:REQUEST_ID`` around a request's buttons."""
_MENU_DURATIONS = frozenset(format_duration(d) for d in blocks.APPROVE_FOR_CHOICES)
_USER_ID = re.compile(r"[UW][A-Z0-9]{2,31}", re.ASCII)


class BrokenButton(InvalidInput):
    """A click whose values are not what the bot's own message offered, or no longer are."""

    def __init__(self, action_id: str, what: str = "button") -> None:
        super().__init__(f"That {what} is broken or out of date; type "
                         f"{usage(COMMAND_OF.get(action_id, 'help'))} instead.")


def request_id(action: dict[str, Any]) -> int:
    """The request a button (its value) or a menu (its option's ``ID:…``) names, checked
    against the block the bot put it in (``PREFIX:ID``)."""
    action_id = str(action.get("action_id"))
    value = action.get("value")
    if action_id == blocks.APPROVE_FOR:
        value, _, chosen = str((action.get("selected_option") or {}).get("value", "")) \
            .partition(":")
        if chosen not in _MENU_DURATIONS:
            raise BrokenButton(action_id)
    if not isinstance(value, str) or re.fullmatch(r"[1-9][0-9]{0,9}", value, re.ASCII) is None \
            or int(value) > MAX_REQUEST_ID:
        raise BrokenButton(action_id)
    prefix, colon, named = str(action.get("block_id") or "").partition(":")
    if colon and prefix in REQUEST_BLOCKS and named != value:
        raise BrokenButton(action_id)
    return int(value)


def check_request(body: dict[str, Any], request: AccessRequest, config: Config) -> None:
    """The clicked request may stand where it was clicked: a message in an approvers channel
    carries only the requests whose approvals go there; an "Approve for…" option is one the
    approval message offers for this request."""
    action = body["actions"][0]
    action_id = str(action.get("action_id"))
    channel = _message_channel(body)
    if channel is not None:
        channels = {config.approvers_channel(cluster, role) for cluster, role in config.policies}
        if channel in channels and channel != config.approvers_channel(request.cluster,
                                                                       request.role):
            raise BrokenButton(action_id)
    if action_id == blocks.APPROVE_FOR:
        chosen = str(action["selected_option"]["value"]).partition(":")[2]
        offered = {format_duration(d) for d in blocks.approve_for_choices(request)}
        if chosen not in offered:
            raise BrokenButton(action_id)


def linked_user(action: dict[str, Any]) -> str:
    """The person a "Confirm link" button is about: a Slack user ID, the one its block names."""
    value = str(action.get("value") or "")
    prefix, colon, named = str(action.get("block_id") or "").partition(":")
    if _USER_ID.fullmatch(value) is None or (colon and prefix == "link" and named != value):
        raise BrokenButton(blocks.CONFIRM_LINK)
    return value


def _message_channel(body: dict[str, Any]) -> str | None:
    """The channel of the (non-ephemeral) message clicked; None on the Home tab, in a form or
    in an ephemeral answer (which may list any request)."""
    container = body.get("container")
    if isinstance(container, dict) and container.get("is_ephemeral"):
        return None
    if (body.get("view") or {}).get("type"):
        return None
    channel = body.get("channel")
    found = channel.get("id") if isinstance(channel, dict) else None
    return found if isinstance(found, str) else None
