"""The shape of what Slack sends the bot, checked at the door.

Real Slack sends well-formed payloads, but a signed request is not a proof of shape (a proxy,
a test tool, a future payload version). Each payload the handlers read is checked here
before it is kept for the worker: a malformed one is answered HTTP 400 and never queued, so no
handler meets a ``KeyError`` and nobody sees a 500. The handlers read ``private_metadata``
through the same functions, so what is checked is what is used.
"""

from __future__ import annotations

import json
from typing import Any

from bot.adapters.slack import blocks
from bot.adapters.slack.commands import MAX_REQUEST_ID

MODAL_ONLY_ACTIONS = frozenset({blocks.PICK_CLUSTER, blocks.PICK_ROLE, "namespace"})
"""Actions that exist only inside the request form: sent from anywhere else they are forged."""
REQUEST_ACTIONS = frozenset({blocks.APPROVE, blocks.DENY, blocks.REVOKE, blocks.EXTEND,
                             blocks.CANCEL, blocks.REQUEST_AGAIN, blocks.KEEP})
"""Buttons whose value is the request's ID."""
CHOICE_ACTIONS = frozenset({blocks.APPROVE_FOR})
"""Menus whose chosen option's value starts with the request's ID (``ID:…``)."""
FORM_ACTIONS = frozenset({blocks.DENY, blocks.EXTEND, blocks.REQUEST_AGAIN})
"""Buttons that open a form, so they need Slack's ``trigger_id``."""


class MalformedPayload(ValueError):
    """A payload that is not what Slack sends (or what the bot wrote into a view)."""


def form_memory(view: dict[str, Any]) -> dict[str, Any]:
    """What the request form remembers (``private_metadata``, a JSON object the bot wrote)."""
    raw = view.get("private_metadata") or "{}"
    try:
        memory = json.loads(raw) if isinstance(raw, str) else None
    except ValueError:
        memory = None
    if not isinstance(memory, dict) or not all(
            isinstance(value, str | bool) for value in memory.values()):
        raise MalformedPayload("the form's private_metadata is not what the bot wrote")
    return memory


def view_request_id(view: dict[str, Any]) -> int:
    """The request a Deny or Extend form is about (its ``private_metadata``)."""
    raw = view.get("private_metadata")
    if not isinstance(raw, str) or not raw.isascii() or not raw.isdigit() or len(raw) > 10 \
            or not 0 < int(raw) <= MAX_REQUEST_ID:
        raise MalformedPayload("the form's private_metadata is not a request ID")
    return int(raw)


def _text(value: Any) -> bool:
    return isinstance(value, str) and bool(value)


def _values(view: dict[str, Any]) -> None:
    state = view.get("state")
    values = state.get("values") if isinstance(state, dict) else None
    if not isinstance(values, dict) or not all(
            isinstance(elements, dict) and all(isinstance(e, dict) for e in elements.values())
            for elements in values.values()):
        raise MalformedPayload("the view has no state.values")
    for elements in values.values():
        for element in elements.values():
            value, selected = element.get("value"), element.get("selected_option")
            user = element.get("selected_user")
            text = (value is None or isinstance(value, str)) and (
                user is None or isinstance(user, str))
            chosen = selected is None or (isinstance(selected, dict)
                                          and isinstance(selected.get("value"), str))
            if not (text and chosen):
                raise MalformedPayload("a form value that is not text")


def _user(body: dict[str, Any]) -> None:
    user = body.get("user")
    if not isinstance(user, dict) or not _text(user.get("id")):
        raise MalformedPayload("no user.id")


def _block_actions(body: dict[str, Any]) -> None:
    _user(body)
    actions = body.get("actions")
    if not isinstance(actions, list) or not actions or not isinstance(actions[0], dict):
        raise MalformedPayload("no actions")
    action = actions[0]
    action_id = action.get("action_id")
    if not _text(action_id):
        raise MalformedPayload("an action without action_id")
    if "value" in action and not isinstance(action["value"], str):
        raise MalformedPayload("an action value that is not a string")
    if action_id in REQUEST_ACTIONS and not isinstance(action.get("value"), str):
        raise MalformedPayload("a request button without its request ID")
    if action_id in CHOICE_ACTIONS:
        chosen = action.get("selected_option")
        if not isinstance(chosen, dict) or not isinstance(chosen.get("value"), str):
            raise MalformedPayload("a menu without its chosen option")
    if action_id in FORM_ACTIONS and not _text(body.get("trigger_id")):
        raise MalformedPayload("a form button without trigger_id")
    if action_id in MODAL_ONLY_ACTIONS:
        view = body.get("view")
        if not isinstance(view, dict) or view.get("callback_id") != blocks.REQUEST_MODAL \
                or not _text(view.get("id")):
            raise MalformedPayload(f"{action_id} outside the request form")
        _values(view)
        form_memory(view)


def _view_submission(body: dict[str, Any]) -> None:
    _user(body)
    view = body.get("view")
    if not isinstance(view, dict) or not _text(view.get("callback_id")):
        raise MalformedPayload("a submission without its view")
    _values(view)
    callback = view["callback_id"]
    if callback == blocks.REQUEST_MODAL:
        form_memory(view)
    elif callback in (blocks.DENY_MODAL, blocks.EXTEND_MODAL):
        view_request_id(view)


def _command(body: dict[str, Any]) -> None:
    if not _text(body.get("user_id")):
        raise MalformedPayload("a command without user_id")
    if not isinstance(body.get("text", ""), str):
        raise MalformedPayload("a command whose text is not a string")


def _event(body: dict[str, Any]) -> None:
    event = body.get("event")
    if not isinstance(event, dict) or not _text(event.get("type")):
        raise MalformedPayload("an event callback without its event")
    if event["type"] == "app_home_opened" and not _text(event.get("user")):
        raise MalformedPayload("app_home_opened without user")


_CHECKS = {"block_actions": _block_actions, "view_submission": _view_submission,
           "event_callback": _event}


def check(body: Any) -> None:
    """Raise :class:`MalformedPayload` unless ``body`` (as Bolt parses it) has the shape the
    bot's handlers read. Payload types the bot does not handle pass: Bolt answers 404."""
    if not isinstance(body, dict):
        raise MalformedPayload("the payload is not an object")
    if "command" in body:
        _command(body)
        return
    kind = body.get("type")
    if kind is not None and not isinstance(kind, str):
        raise MalformedPayload("type is not a string")
    view = body.get("view")
    if view is not None and (not isinstance(view, dict) or not _text(view.get("type"))):
        raise MalformedPayload("a view without its type")
    checker = _CHECKS.get(kind or "")
    if checker is not None:
        checker(body)


def in_review(body: dict[str, Any]) -> bool:
    """Whether the button was clicked in an access review (its block, see
    :func:`bot.adapters.slack.blocks.access_review`)."""
    block_id = body["actions"][0].get("block_id")
    return isinstance(block_id, str) and block_id.startswith(f"{blocks.REVIEW_BLOCK}:")
