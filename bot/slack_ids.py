"""Slack's IDs told apart by their form: the one place that knows them, used by the settings
(which check the IDs a config file names) and by the Slack adapter (which sends to them).

``U…``/``W…`` are users (``W…`` in an Enterprise Grid organisation), ``S…`` user groups,
``C…``/``G…`` conversations (``G…`` a private channel of the older kind), ``D…`` direct
messages; after the letter, upper-case letters and digits (Slack's "Formatting text for app
surfaces" reference). The use cases and the domain never look: to them these are opaque
principals.
"""

from __future__ import annotations

import re

_PRINCIPAL = re.compile(r"^[UWS][A-Z0-9]{2,}$")
_CONVERSATION = re.compile(r"^[CG][A-Z0-9]{2,}$")


def is_user_group(slack_id: str) -> bool:
    """A user group (``S…``), as opposed to a user or a conversation."""
    return slack_id.startswith("S")


def is_person(slack_id: str) -> bool:
    """A user (``U…``, or ``W…`` in an Enterprise Grid organisation)."""
    return slack_id[:1] in ("U", "W")


def is_conversation(slack_id: str) -> bool:
    """A channel (``C…``) or a private channel of the older kind (``G…``)."""
    return slack_id[:1] in ("C", "G")


def is_direct_message(slack_id: str) -> bool:
    """A direct message conversation (``D…``), as Slack names the DM it posted a message to a
    user's ID in."""
    return slack_id.startswith("D")


def is_principal_id(value: str) -> bool:
    """Written as a user or user group ID, as a config file must name approvers and admins."""
    return _PRINCIPAL.match(value) is not None


def is_conversation_id(value: str) -> bool:
    """Written as a channel ID (not a channel's name), as ``approvers_channel`` must be."""
    return _CONVERSATION.match(value) is not None
