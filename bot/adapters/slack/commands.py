"""Parse the text of ``/k8s-access …`` into a typed command, or say how to write it right.

Pure: no Slack client, no database. :mod:`~bot.adapters.slack.handling` routes the result to
the handler of its verb.
"""

from __future__ import annotations

import re
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import timedelta

from bot.domain.durations import parse_duration
from bot.domain.errors import InvalidInput, NotFound

SLASH_COMMAND = "/k8s-access"
"""The bot's one slash command (``app-manifest.yaml`` declares it)."""
USAGE = {
    "request": "request [CLUSTER [ROLE [DURATION]]] [REASON…]   (options: -n NAMESPACE, "
               "--break-glass, --for @USER, --at WHEN)",
    "list": "list [mine|pending|active|all]",
    "approve": "approve ID [--for DURATION] [COMMENT]",
    "deny": "deny ID REASON",
    "cancel": "cancel ID",
    "revoke": "revoke ID [REASON]",
    "extend": "extend ID DURATION [REASON]",
    "clusters": "clusters",
    "whoami": "whoami",
    "link": "link gitlab USERNAME",
    "help": "help",
}


@dataclass(frozen=True)
class Command:
    verb: str
    request_id: int | None = None
    cluster: str | None = None
    role: str | None = None
    namespace: str | None = None
    duration: timedelta | None = None
    text: str = ""
    """The free text: reason, comment, list scope or the linked username."""
    break_glass: bool = False
    grantee_id: str | None = None
    """``request --for @user``: the Slack user the access is for."""
    at: str | None = None
    """``--at WHEN``: when a scheduled window starts, as typed (read by the use case)."""


def usage(verb: str) -> str:
    return f"`/k8s-access {USAGE[verb]}`"


MAX_REQUEST_ID = 2**31 - 1
"""Request IDs are the database's ``INTEGER`` keys: a larger number names no request."""


def parse_request_id(word: str | None, verb: str) -> int:
    """The request ID in ``word`` (``42`` or ``#42``), range-checked before it reaches the
    database; :class:`InvalidInput` or :class:`NotFound` that says what to write otherwise."""
    if word is None:
        raise InvalidInput(f"Which request? Write {usage(verb)}, for example `{verb} 42`.")
    shown = word if len(word) <= 40 else word[:39] + "…"
    match = re.fullmatch(r"#?(\d+)", word.strip(), re.ASCII)
    if match is None:
        raise InvalidInput(f"'{shown}' is not a request ID: write {usage(verb)}, like `{verb} 42`.")
    digits = match.group(1).lstrip("0")
    if not digits or len(digits) > len(str(MAX_REQUEST_ID)) or int(digits) > MAX_REQUEST_ID:
        raise NotFound(f"There is no request #{match.group(1)[:24]}.")
    return int(digits)


_MENTION = re.compile(r"<@(?P<id>[UW][A-Z0-9]{2,31})(?:\|[^>]*)?>|(?P<bare>[UW][A-Z0-9]{2,31})",
                      re.ASCII)


def parse_mention(word: str | None) -> str:
    """The Slack user ID in a mention as Slack sends it in a command's text (``<@U123|bob>``
    or ``<@U123>``), or a bare user ID; :class:`InvalidInput` saying how to write it."""
    match = _MENTION.fullmatch(word or "")
    if match is None:
        shown = (word or "")[:40]
        what = f"'{shown}' is not a mention of a Slack user" if word else "`--for` needs a person"
        raise InvalidInput(
            f"{what}: pick the person from the list Slack offers as you type @, like "
            "`request --for @bob staging view 2h reason`.")
    return match["id"] or match["bare"]


def _parse_request(words: list[str]) -> Command:
    namespace = None
    break_glass = False
    grantee_id = None
    at = None
    rest: list[str] = []
    given: set[str] = set()
    iterator = iter(words)
    for word in iterator:
        _once(given, word, "request")
        if word == "--for":
            grantee_id = parse_mention(next(iterator, None))
        elif word.startswith("--for="):
            grantee_id = parse_mention(word.split("=", 1)[1])
        elif word in ("-n", "--namespace"):
            namespace = next(iterator, None)
            if namespace is None:
                raise InvalidInput(f"`{word}` needs a namespace: {usage('request')}.")
        elif word.startswith("--namespace="):
            namespace = word.split("=", 1)[1]
        elif word == "--break-glass":
            break_glass = True
        elif word == "--at" or word.startswith("--at="):
            at = _when(word.partition("=")[2] or next(iterator, None), iterator)
        elif word.startswith("--"):
            raise InvalidInput(f"Unknown option `{word}`: {usage('request')}.")
        else:
            rest.append(word)
    cluster = rest.pop(0) if rest else None
    role = rest.pop(0) if rest else None
    # A word that starts with a digit is meant as the duration: a typo there is an error,
    # not the start of the reason.
    duration = parse_duration(rest.pop(0)) if rest and rest[0][:1].isdigit() else None
    return Command("request", cluster=cluster, role=role, namespace=namespace,
                   duration=duration, text=" ".join(rest), break_glass=break_glass,
                   grantee_id=grantee_id, at=at)


_OPTIONS = {"--for": "--for", "-n": "-n", "--namespace": "-n", "--at": "--at"}
"""The options that take a value, each under one name (``-n`` and ``--namespace`` are one)."""


def _once(given: set[str], word: str, verb: str, options: tuple[str, ...] = tuple(_OPTIONS)
          ) -> None:
    """Refuse an option that takes a value when it was given before in the same command:
    which of the two was meant is not for the bot to guess."""
    name = _OPTIONS.get(word.partition("=")[0]) if word.startswith("-") else None
    if name is None or word.partition("=")[0] not in options:
        return
    if name in given:
        raise InvalidInput(f"`{name}` is given twice: give it once, {usage(verb)}.")
    given.add(name)


def _parse_approve(words: list[str]) -> Command:
    """``approve ID [--for DURATION] [COMMENT]``: ``--for`` approves less than asked."""
    request_id = parse_request_id(words[0] if words else None, "approve")
    rest = words[1:]
    duration = None
    given: set[str] = set()
    for word in rest:
        _once(given, word, "approve", options=("--for",))
    if "--for" in rest:
        at = rest.index("--for")
        if at + 1 >= len(rest):
            raise InvalidInput(f"`--for` needs a duration: {usage('approve')}, like "
                               f"`approve {request_id} --for 1h`.")
        duration = parse_duration(rest[at + 1])
        rest = rest[:at] + rest[at + 2:]
    return Command("approve", request_id=request_id, duration=duration, text=" ".join(rest))


_WHEN_HOW = ("`--at` needs a start, like `--at 22:00`, `--at tomorrow 22:00` or "
             "`--at 2026-12-02T22:00` (your Slack time zone, or end it in `Z` for UTC)")


def _when(first: str | None, following: Iterator[str]) -> str:
    """The words of ``--at WHEN``: one (``22:00``, ``2026-12-02T22:00``), or two where the
    first names only the day (``tomorrow 22:00``, ``2026-12-02 22:00``)."""
    if not first or first.startswith("-"):
        raise InvalidInput(f"{_WHEN_HOW}.")
    if first.lower() == "tomorrow" or re.fullmatch(r"\d{4}-\d{2}-\d{2}", first, re.ASCII):
        clock = next(following, None)
        if clock is None:
            raise InvalidInput(f"`--at {first}` needs a time of day too: {_WHEN_HOW}.")
        return f"{first} {clock}"
    return first


def parse(text: str) -> Command:
    """The command in ``text``; :class:`InvalidInput` that shows the right form otherwise."""
    words = text.split()
    if not words:
        return Command("help")
    verb, rest = words[0].lower(), words[1:]
    if verb in ("help", "clusters", "whoami"):
        return Command(verb)
    if verb == "request":
        return _parse_request(rest)
    if verb == "list":
        if len(rest) > 1:
            raise InvalidInput(f"Write {usage('list')}.")
        return Command("list", text=rest[0] if rest else "mine")
    if verb == "approve":
        return _parse_approve(rest)
    if verb in ("deny", "cancel", "revoke"):
        request_id = parse_request_id(rest[0] if rest else None, verb)
        return Command(verb, request_id=request_id, text=" ".join(rest[1:]))
    if verb == "extend":
        request_id = parse_request_id(rest[0] if rest else None, verb)
        if len(rest) < 2:
            raise InvalidInput(f"How much longer? Write {usage('extend')}, like `extend 42 2h`.")
        return Command("extend", request_id=request_id, duration=parse_duration(rest[1]),
                       text=" ".join(rest[2:]))
    if verb == "link":
        if len(rest) != 2 or rest[0].lower() != "gitlab":
            raise InvalidInput(f"Write {usage('link')}, like `link gitlab alice`.")
        return Command("link", text=rest[1].lstrip("@"))
    raise InvalidInput(
        f"`{words[0]}` is not a command. Try one of: {', '.join(USAGE)} "
        "(`/k8s-access help` shows how)."
    )


def help_text() -> str:
    lines = [f"• `/k8s-access {form}`" for form in USAGE.values()]
    return (
        "*k8s-access*: time-boxed Kubernetes access, approved in Slack.\n"
        + "\n".join(lines)
        + "\nDurations look like `90m`, `4h`, `2d`, `1w` or `1h30m`. "
        "Example: `/k8s-access request staging edit 4h deploy hotfix`; "
        "`--at tomorrow 22:00` asks for a window that starts then (your Slack time zone)."
    )
