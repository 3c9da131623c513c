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
        number = match.group(1)
        shown = number if len(number) <= 24 else number[:23] + "…"  # cut, visibly
        raise NotFound(f"There is no request #{shown}.")
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


OPTIONS = frozenset({"--for", "--namespace", "--break-glass", "--at", "--reason"})
"""Every option name a person may mean: those of ``request`` and ``approve``, and the command
line's ``--reason``. Given to a verb that does not take it, it is refused wherever it stands;
any other ``--word`` is text once the free text has begun (``deny 12 breaks --force-push``)."""
TEXT = "?"
"""The option name :func:`_options` gives a ``--word`` that names no option: text, unless it
stands where the free text would begin (see :func:`_free_text`)."""


def _options(words: list[str], verb: str, takes: frozenset[str]) -> Iterator[tuple[str, str]]:
    """``(option, word)`` for each word: ``("", word)`` for a plain word, ``(TEXT, word)`` for
    a ``--word`` that names no option, else the option's name (``--for``, ``--for=…`` alike)
    with the word itself. An option ``verb`` does not take (one of ``takes``), or one given
    twice, is refused with the usage line: never ignored, and never the last one silently
    winning."""
    seen: set[str] = set()
    for typed in words:
        # Some keyboards turn a typed ``--`` into a dash: ``—for`` is ``--for``.
        dashed = re.sub(r"^[\u2013\u2014](?=[a-z])", "--", typed)
        word = dashed if dashed.partition("=")[0] in OPTIONS else typed
        name = word.partition("=")[0] if word.startswith(("--", "-n=")) else word
        if name == "-n":
            name = "--namespace"
        if not name.startswith("--") or name == "--":
            yield "", word
            continue
        if name not in OPTIONS:
            yield TEXT, word
            continue
        if name not in takes:
            raise InvalidInput(f"Unknown option `{word[:40]}`: {usage(verb)}. To write it as "
                               "text, wrap it in backticks.")
        if name in seen:
            raise InvalidInput(f"`{name}` is given twice: give it once, {usage(verb)}.")
        seen.add(name)
        yield name, word


def _free_text(words: list[tuple[str, str]], verb: str) -> str:
    """The free text in ``words``: a ``--word`` that names no option is refused where the
    text would begin (there it reads as a mistyped option), and is text after that."""
    if words and words[0][0] == TEXT:
        word = words[0][1]
        raise InvalidInput(f"Unknown option `{word[:40]}`: {usage(verb)}. To write it as text, "
                           "put another word before it, or wrap it in backticks.")
    return " ".join(word for _, word in words)


def _value(word: str, following: Iterator[tuple[str, str]]) -> str | None:
    """The value of an option: after ``=`` in the same word, else the next plain word."""
    if "=" in word:
        return word.partition("=")[2]
    name, value = next(following, ("", None))
    return value if not name else None


REQUEST_OPTIONS = OPTIONS - {"--reason"}


def _parse_request(words: list[str]) -> Command:
    namespace = None
    break_glass = False
    grantee_id = None
    at = None
    rest: list[tuple[str, str]] = []
    options = _options(words, "request", REQUEST_OPTIONS)
    for name, word in options:
        if name == "--for":
            grantee_id = parse_mention(_value(word, options))
        elif name == "--namespace":
            namespace = _value(word, options)
            if not namespace:
                raise InvalidInput(f"`{word.partition('=')[0]}` needs a namespace: "
                                   f"{usage('request')}.")
        elif name == "--break-glass":
            if "=" in word:
                raise InvalidInput(f"`--break-glass` takes no value: {usage('request')}.")
            break_glass = True
        elif name == "--at":
            at = _when(_value(word, options), (w for _, w in options))
        else:
            rest.append((name, word))
    # The cluster, role and duration are where the free text would begin, too.
    cluster = _free_text(rest[:1], "request") or None
    role = _free_text(rest[1:2], "request") or None
    rest = rest[2:]
    # A word that starts with a digit is meant as the duration: a typo there is an error,
    # not the start of the reason.
    duration = parse_duration(rest.pop(0)[1]) if rest and rest[0][1][:1].isdigit() else None
    return Command("request", cluster=cluster, role=role, namespace=namespace,
                   duration=duration, text=_free_text(rest, "request"), break_glass=break_glass,
                   grantee_id=grantee_id, at=at)


def _parse_approve(words: list[str]) -> Command:
    """``approve ID [--for DURATION] [COMMENT]``: ``--for`` (or ``--for=``) approves less
    than asked."""
    request_id = parse_request_id(words[0] if words else None, "approve")
    duration = None
    comment: list[tuple[str, str]] = []
    options = _options(words[1:], "approve", frozenset({"--for"}))
    for name, word in options:
        if name in ("", TEXT):
            comment.append((name, word))
            continue
        value = _value(word, options)
        if not value:
            raise InvalidInput(f"`--for` needs a duration: {usage('approve')}, like "
                               f"`approve {request_id} --for 1h`.")
        duration = parse_duration(value)
    return Command("approve", request_id=request_id, duration=duration,
                   text=_free_text(comment, "approve"))


def _plain(words: list[str], verb: str) -> str:
    """The free text of a verb that takes no option: an option there is refused."""
    return _free_text(list(_options(words, verb, frozenset())), verb)


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


def unescape(text: str) -> str:
    """``text`` as the person typed it: Slack sends the three characters it uses for markup
    as entities (``&`` as ``&amp;``, ``<`` as ``&lt;``, ``>`` as ``&gt;``; "Escaping text" in
    Slack's formatting reference), and keeps its own markup (``<@U…>`` mentions) as it is."""
    return text.replace("&lt;", "<").replace("&gt;", ">").replace("&amp;", "&")


def parse(text: str) -> Command:
    """The command in ``text``, a slash command's text as Slack sends it (:func:`unescape`);
    :class:`InvalidInput` that shows the right form otherwise."""
    words = unescape(text).split()
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
        return Command(verb, request_id=request_id, text=_plain(rest[1:], verb))
    if verb == "extend":
        request_id = parse_request_id(rest[0] if rest else None, verb)
        if len(rest) < 2:
            raise InvalidInput(f"How much longer? Write {usage('extend')}, like `extend 42 2h`.")
        text = _plain(rest[2:], verb)
        return Command("extend", request_id=request_id, duration=parse_duration(rest[1]),
                       text=text)
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
