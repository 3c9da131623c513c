"""Reasons tied to tickets: a role's ``reason_pattern`` the reason must contain, and its
``ticket_url`` that turns each matched ticket into a link target.

The pattern is a Python regular expression searched anywhere in the reason (``[A-Z]+-[0-9]+``
finds ``OPS-123`` in ``deploy OPS-123 hotfix``). The ticket is the match, or its group named
``ticket`` when the pattern has one. Links come back as structured pieces: rendering them
(Slack markup, plain text) is each edge's job, and the text a person typed is never markup.
"""

from __future__ import annotations

import re
import warnings
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass
from functools import lru_cache
from urllib.parse import quote

from bot.domain.errors import PolicyViolation
from bot.domain.model import AccessRequest
from bot.domain.policy import RolePolicy

TICKET_FIELD = "{ticket}"


@dataclass(frozen=True)
class ReasonPiece:
    """A run of the reason's text, with the link it points to when it is a ticket."""

    text: str
    link: str | None = None


@lru_cache(maxsize=256)
def compiled(pattern: str) -> re.Pattern[str]:
    """``pattern`` compiled once (configuration checked it compiles)."""
    return re.compile(pattern)


def nested_repetition(pattern: str) -> bool:
    """Whether ``pattern`` (which compiles) repeats something that itself repeats, like
    ``(a+)+`` or ``([A-Z]+-?)+``: Python's matcher may then try exponentially many ways to
    split a reason that almost matches, and a 40-character reason stops the bot for minutes.
    Safe and allowed: an atomic group ``(?>…)``, a lookaround or a possessive ``++`` inside,
    and both repetitions bounded (``(\\d{1,3}){2}``)."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DeprecationWarning)
        import sre_constants as op  # the parser re itself uses
        import sre_parse

    repeats = (op.MAX_REPEAT, op.MIN_REPEAT)
    atomic = (op.ATOMIC_GROUP, op.ASSERT, op.ASSERT_NOT)  # never backtracked into

    def nodes(value: object) -> Iterator[tuple[object, object]]:
        """Every node under ``value`` except inside atomic groups and lookarounds."""
        if isinstance(value, sre_parse.SubPattern):
            for code, argument in value.data:
                yield code, argument
                if code not in atomic:
                    yield from nodes(argument)
        elif isinstance(value, (tuple, list)):
            for item in value:
                yield from nodes(item)

    def repeated(code: object, argument: object) -> tuple[bool, object] | None:
        """Whether a repetition of more than once is unbounded, and its body; else None."""
        if code in repeats and isinstance(argument, tuple) and argument[1] > 1:
            return argument[1] == op.MAXREPEAT, argument[2]
        return None

    for node in nodes(sre_parse.parse(pattern)):
        outer = repeated(*node)
        if outer is None:
            continue
        inner = (repeated(*below) for below in nodes(outer[1]))
        if any(each is not None and (outer[0] or each[0]) for each in inner):
            return True
    return False


def check_reason_pattern(policy: RolePolicy, reason: str) -> None:
    """Refuse with :class:`PolicyViolation` a reason without a match of the role's
    ``reason_pattern``, saying ``reason_hint`` or, without one, the pattern itself."""
    if not policy.reason_pattern or compiled(policy.reason_pattern).search(reason):
        return
    hint = policy.reason_hint or f"include text matching {policy.reason_pattern}"
    raise PolicyViolation(
        f"{policy.cluster}/{policy.role} needs a reason that names its ticket: {hint}."
    )


def ticket_link(template: str, ticket: str) -> str:
    """``template`` with ``{ticket}`` replaced by ``ticket``, percent-encoded so that it stays
    one path segment or query value whatever was typed."""
    return template.replace(TICKET_FIELD, quote(ticket, safe=""))


def linked_reason(policy: RolePolicy, reason: str) -> tuple[ReasonPiece, ...]:
    """``reason`` split into text and ticket pieces, in order, their text joining back to
    ``reason``; one unlinked piece when the role has no ``ticket_url`` or nothing matches."""
    if not reason:
        return ()
    if not policy.reason_pattern or not policy.ticket_url:
        return (ReasonPiece(reason),)
    pattern = compiled(policy.reason_pattern)
    pieces: list[ReasonPiece] = []
    at = 0
    for match in pattern.finditer(reason):
        start, end = match.span("ticket" if "ticket" in pattern.groupindex else 0)
        if end == start:
            continue
        if start > at:
            pieces.append(ReasonPiece(reason[at:start]))
        ticket = reason[start:end]
        pieces.append(ReasonPiece(ticket, ticket_link(policy.ticket_url, ticket)))
        at = end
    if at < len(reason):
        pieces.append(ReasonPiece(reason[at:]))
    return tuple(pieces)


ReasonLinks = Callable[[AccessRequest], tuple[ReasonPiece, ...]]
"""A request's reason as :class:`ReasonPiece` runs, by the policy of its role."""


def unlinked(request: AccessRequest) -> tuple[ReasonPiece, ...]:
    """The reason as one piece of text, linking nothing (and nothing for no reason)."""
    return (ReasonPiece(request.reason),) if request.reason else ()


def linker(policies: Mapping[tuple[str, str], RolePolicy]) -> ReasonLinks:
    """:func:`linked_reason` for any request, by its role's policy in ``policies`` (keyed by
    cluster and role); a role no longer configured links nothing."""

    def links(request: AccessRequest) -> tuple[ReasonPiece, ...]:
        policy = policies.get((request.cluster, request.role))
        return linked_reason(policy, request.reason) if policy is not None else unlinked(request)

    return links
