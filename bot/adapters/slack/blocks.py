"""Block Kit, built by pure functions from domain objects. No client, no I/O.

Every message has a plain-text fallback (``text``) for notifications and screen readers.

Two rules hold for everything built here, each in one place:

- Text a person typed (reasons, comments, names, anything from a command, a form or the CLI)
  goes into mrkdwn only through :func:`escape`, so ``<!channel>``, ``<@U…>`` and
  ``<https://…|…>`` show as the characters they are.
- Every message and view leaves through :func:`fit_message` or :func:`fit_view`, which keep it
  within Slack's Block Kit limits (:data:`LIMITS`); builders summarise what would not fit
  before that, so that the cut is the last resort, never the plan.
"""

from __future__ import annotations

import html
import json
import re
from collections.abc import Collection, Iterable, Sequence
from datetime import datetime, timedelta
from typing import Any

from bot.config import Config
from bot.domain import windows
from bot.domain.durations import format_duration, parse_duration
from bot.domain.exports import csv_line
from bot.domain.model import (
    POLICY_ACTOR,
    WAITING_STATES,
    AccessRequest,
    Decision,
    Kind,
    Reach,
    State,
    Undelivered,
)
from bot.domain.oncall import on_call_approval
from bot.domain.policy import RolePolicy
from bot.domain.ports import Notice, NoticeKind
from bot.domain.reasons import ReasonLinks, unlinked
from bot.domain.reviews import AccessReview, ItemStatus, ReviewItem, Verdict
from bot.slack_ids import is_conversation, is_user_group

Block = dict[str, Any]

APPROVE, DENY, REVOKE, EXTEND, CANCEL = "approve", "deny", "revoke", "extend", "cancel"
CONFIRM_LINK = "confirm_link"
KEEP = "keep"
REVIEW_BLOCK = "review"
"""The block ID prefix of a grant in an access review: its Revoke is the review's decision."""
REQUEST_MODAL, DENY_MODAL, EXTEND_MODAL = "request_modal", "deny_modal", "extend_modal"
PICK_CLUSTER, PICK_ROLE = "pick_cluster", "pick_role"
APPROVE_FOR, REQUEST_AGAIN, PICK_GRANTEE = "approve_for", "request_again", "pick_grantee"
MAX_LISTED = 15


# --- typed text and Slack's limits ---------------------------------------------------------


def escape(text: str | None) -> str:
    """``text`` made inert in mrkdwn: Slack parses ``&``, ``<`` and ``>`` as control characters
    and shows ``&amp;``, ``&lt;`` and ``&gt;`` as the characters themselves (Slack's
    "Formatting text for app surfaces", *Escaping text*). Nothing else is encoded."""
    return html.escape(text or "", quote=False)


LIMITS = {
    "message_blocks": 50,
    "view_blocks": 100,
    "text_fallback": 4000,
    "section_text": 3000,
    "section_fields": 10,
    "field_text": 2000,
    "context_elements": 10,
    "context_text": 3000,
    "header_text": 150,
    "actions_elements": 25,
    "button_text": 75,
    "button_value": 2000,
    "option_text": 75,
    "option_value": 150,
    "select_options": 100,
    "placeholder_text": 150,
    "input_label": 2000,
    "input_hint": 2000,
    "input_value": 3000,
    "confirm_title": 100,
    "confirm_text": 300,
    "confirm_button": 30,
    "modal_title": 24,
    "modal_button": 24,
    "private_metadata": 3000,
    "block_id": 255,
}
"""Slack's Block Kit limits, in characters or items (Block Kit reference: blocks, block
elements, composition objects, view objects; chat.postMessage recommends a ``text`` of at most
4,000 characters and truncates at 40,000)."""


def shorten(text: str, limit: int) -> str:
    """``text`` cut to ``limit`` characters with an ellipsis, never inside ``<…>`` markup or an
    ``&…;`` entity, so that a cut never leaves half a mention or half an escaped character."""
    if len(text) <= limit:
        return text
    cut = text[:max(limit - 1, 0)]
    opened = cut.rfind("<")
    if opened > cut.rfind(">"):
        cut = cut[:opened]
    amp = cut.rfind("&")
    if amp >= 0 and ";" not in cut[amp:] and len(cut) - amp <= 5:
        cut = cut[:amp]
    return cut + "…"


def then_free_text(fixed: str, free: str, separator: str = "\n",
                   limit: int | None = None) -> str:
    """``fixed`` (the bot's own words: flags, facts, status) then ``free`` (text a person
    typed, already escaped) after ``separator``, ``free`` shortened so that the whole fits
    ``limit`` (a section's): a long reason never pushes a flag or a status out of the
    message."""
    if not free:
        return fixed
    room = (LIMITS["section_text"] if limit is None else limit) - len(fixed) - len(separator)
    return fixed + separator + shorten(free, room) if room > 1 else fixed


def _cut(text_object: Any, limit: int) -> None:
    if isinstance(text_object, dict) and isinstance(text_object.get("text"), str):
        text_object["text"] = shorten(text_object["text"], limit)


def _fit_confirm(confirm: Any) -> None:
    if isinstance(confirm, dict):
        _cut(confirm.get("title"), LIMITS["confirm_title"])
        _cut(confirm.get("text"), LIMITS["confirm_text"])
        _cut(confirm.get("confirm"), LIMITS["confirm_button"])
        _cut(confirm.get("deny"), LIMITS["confirm_button"])


def _fit_option(option: Any) -> None:
    if isinstance(option, dict):
        _cut(option.get("text"), LIMITS["option_text"])
        if isinstance(option.get("value"), str):
            option["value"] = option["value"][:LIMITS["option_value"]]


def _fit_element(element: Any) -> None:
    if not isinstance(element, dict):
        return
    kind = element.get("type")
    if kind == "button":
        _cut(element.get("text"), LIMITS["button_text"])
        if isinstance(element.get("value"), str):
            element["value"] = element["value"][:LIMITS["button_value"]]
        _fit_confirm(element.get("confirm"))
    elif kind == "static_select":
        size = LIMITS["select_options"]
        groups = element.get("option_groups")
        if isinstance(groups, list):
            element["option_groups"] = groups = groups[:size]
            for group in groups:
                group["options"] = list(group.get("options", []))[:size]
                _cut(group.get("label"), LIMITS["option_text"])
            offered = [o for group in groups for o in group["options"]]
        else:
            element["options"] = offered = list(element.get("options", []))[:size]
        if element.get("initial_option") not in offered:  # Slack: one of the options
            element.pop("initial_option", None)
        for option in [*offered, element.get("initial_option")]:
            _fit_option(option)
        _cut(element.get("placeholder"), LIMITS["placeholder_text"])
    elif kind == "plain_text_input":
        if isinstance(element.get("initial_value"), str):
            element["initial_value"] = element["initial_value"][:LIMITS["input_value"]]
        _cut(element.get("placeholder"), LIMITS["placeholder_text"])


def _fit_block(block: Block) -> None:
    kind = block.get("type")
    if isinstance(block.get("block_id"), str):
        block["block_id"] = block["block_id"][:LIMITS["block_id"]]
    if kind == "section":
        _cut(block.get("text"), LIMITS["section_text"])
        if "fields" in block:
            block["fields"] = block["fields"][:LIMITS["section_fields"]]
            for item in block["fields"]:
                _cut(item, LIMITS["field_text"])
        _fit_element(block.get("accessory"))
    elif kind == "context":
        block["elements"] = block["elements"][:LIMITS["context_elements"]]
        for item in block["elements"]:
            _cut(item, LIMITS["context_text"])
    elif kind == "header":
        _cut(block.get("text"), LIMITS["header_text"])
    elif kind == "actions":
        block["elements"] = block["elements"][:LIMITS["actions_elements"]]
        for item in block["elements"]:
            _fit_element(item)
    elif kind == "input":
        _cut(block.get("label"), LIMITS["input_label"])
        _cut(block.get("hint"), LIMITS["input_hint"])
        _fit_element(block.get("element"))


def _copied(value: Any) -> Any:
    """A copy of Block Kit JSON (dicts, lists or tuples, plain values) to cut without
    touching the builder's: what ``copy.deepcopy`` does for it, in a fraction of the time."""
    if isinstance(value, dict):
        return {key: _copied(item) for key, item in value.items()}
    if isinstance(value, list | tuple):
        return [_copied(item) for item in value]
    return value


def _fit_blocks(content: Sequence[Block], limit: int) -> list[Block]:
    fitted = [_copied(block) for block in content]
    if len(fitted) > limit:
        left_out = len(fitted) - limit + 1
        fitted = [*fitted[:limit - 1], _context(f"…and {left_out} more not shown here.")]
    for block in fitted:
        _fit_block(block)
    return fitted


def fit_message(text: str, content: Sequence[Block]) -> tuple[str, list[Block]]:
    """A message Slack accepts: at most 50 blocks, every text within its limit, a fallback of
    at most 4,000 characters. Builders summarise first; this only cuts what is still over."""
    return (shorten(text, LIMITS["text_fallback"]),
            _fit_blocks(content, LIMITS["message_blocks"]))


def fit_view(view: dict[str, Any]) -> dict[str, Any]:
    """A modal or Home tab Slack accepts: at most 100 blocks, titles and buttons within limits."""
    fitted = {**view, "blocks": _fit_blocks(view.get("blocks", []), LIMITS["view_blocks"])}
    for key in ("title", "submit", "close"):
        if key in fitted:
            fitted[key] = _copied(fitted[key])
            _cut(fitted[key], LIMITS["modal_title" if key == "title" else "modal_button"])
    metadata = fitted.get("private_metadata")
    if isinstance(metadata, str) and len(metadata) > LIMITS["private_metadata"]:
        raise ValueError("private_metadata over Slack's limit: keep less in it")
    return fitted


def sections(text: str) -> list[Block]:
    """``text`` as section blocks, split between lines so that none is over Slack's limit."""
    chunks: list[str] = []
    for line in text.split("\n"):
        if chunks and len(chunks[-1]) + 1 + len(line) <= LIMITS["section_text"]:
            chunks[-1] += "\n" + line
        else:
            chunks.append(line)
    return [_text(chunk) for chunk in chunks if chunk.strip()] or [_text(text or " ")]


def not_eligible(message: str, requesters: Iterable[str]) -> str:
    """A refusal for someone not among a role's ``requesters``: the message escaped, each
    principal it names (by ID) shown as a mention."""
    text = escape(message)
    for principal in sorted(requesters, key=len, reverse=True):
        text = re.sub(rf"\b{re.escape(escape(principal))}\b", mention(principal), text)
    return text


def reply(text: str) -> tuple[str, list[Block]]:
    """An answer to the person who acted: ``text`` (mrkdwn the bot wrote, typed parts already
    escaped) in as many sections as it needs."""
    return fit_message(text, sections(text))


# --- pieces -------------------------------------------------------------------------------


def mention(who: str | None) -> str:
    if not who:
        return "someone"
    if who == POLICY_ACTOR:
        return "the policy"
    if who.startswith("cli:"):
        return f"operator {escape(who.removeprefix('cli:'))}"
    if is_user_group(who):
        return f"<!subteam^{who}>"
    return f"<@{who}>"


def when(moment: datetime | None) -> str:
    if moment is None:
        return "-"
    return (f"<!date^{int(moment.timestamp())}^{{date_short_pretty}} {{time}}|"
            f"{moment.strftime('%Y-%m-%d %H:%M UTC')}>")


def _text(text: str) -> Block:
    return {"type": "section", "text": {"type": "mrkdwn", "text": text}}


def _context(text: str) -> Block:
    return {"type": "context", "elements": [{"type": "mrkdwn", "text": text}]}


def _plain(text: str) -> dict[str, Any]:
    """plain_text: Slack shows it as it is, so typed text needs no escaping here."""
    return {"type": "plain_text", "text": text, "emoji": True}


def target(request: AccessRequest) -> str:
    """Cluster, role and namespace, escaped: a namespace can come from what a person typed."""
    return escape(request.target)


def button(label: str, action_id: str, request_id: int | None, style: str | None = None,
           confirm: dict[str, Any] | None = None) -> Block:
    element: Block = {"type": "button", "text": _plain(label), "action_id": action_id,
                      "value": str(request_id)}
    if style:
        element["style"] = style
    if confirm:
        element["confirm"] = confirm
    return element


def _actions(request_id: int | None, *elements: Block) -> Block:
    return {"type": "actions", "block_id": f"{elements[0]['action_id']}:{request_id}",
            "elements": list(elements)}


def grant_buttons(request: AccessRequest) -> Block:
    confirm = {"title": _plain("Revoke access?"),
               "text": {"type": "mrkdwn", "text": f"Access of request #{request.id} ends now."},
               "confirm": _plain("Revoke"), "deny": _plain("Keep it")}
    return _actions(request.id, button("Extend", EXTEND, request.id),
                    button("Revoke", REVOKE, request.id, "danger", confirm))


APPROVE_FOR_CHOICES = tuple(parse_duration(d) for d in (
    "15m", "30m", "1h", "2h", "4h", "8h", "12h", "1d", "2d", "3d", "1w", "2w"))
"""The shorter durations an approver is offered beside Approve (those under the asked)."""


def approve_for_value(request_id: int | None, duration: timedelta) -> str:
    """The value of an "Approve for…" option: ``ID:DURATION`` (``12:1h``)."""
    return f"{request_id}:{format_duration(duration)}"


def approve_for_choices(request: AccessRequest) -> list[timedelta]:
    """The shorter durations the "Approve for…" menu offers for ``request`` (none for an
    extension)."""
    if request.kind is not Kind.ACCESS:
        return []
    return [d for d in APPROVE_FOR_CHOICES if d < request.duration]


def decision_buttons(request: AccessRequest) -> list[Block]:
    """Approve and Deny; and below them, where a standard duration shorter than asked exists,
    an "Approve for…" menu of those (a section's accessory, so the buttons stay as they are)."""
    content = [_actions(request.id, button("Approve", APPROVE, request.id, "primary"),
                        button("Deny", DENY, request.id, "danger"))]
    shorter = approve_for_choices(request)
    if shorter:
        content.append({
            "type": "section", "block_id": f"{APPROVE_FOR}:{request.id}",
            "text": {"type": "mrkdwn", "text": f"Or approve less than the "
                     f"{format_duration(request.duration)} asked:"},
            "accessory": {
                "type": "static_select", "action_id": APPROVE_FOR,
                "placeholder": _plain("Approve for…"),
                "options": [_option(approve_for_value(request.id, d),
                                    f"Approve for {format_duration(d)}") for d in shorter]}})
    return content


def title(request: AccessRequest) -> str:
    if request.break_glass:
        return f":rotating_light: *BREAK-GLASS* access #{request.id}"
    if on_call_approval(request):
        return f":pager: *ON-CALL* access #{request.id}"
    if request.kind is Kind.EXTENSION:
        return f":hourglass_flowing_sand: Extension #{request.id} of grant #{request.parent_id}"
    return f":closed_lock_with_key: Access request #{request.id}"


def summary(request: AccessRequest) -> str:
    length = format_duration(request.duration)
    verb = "more on" if request.kind is Kind.EXTENSION else "for"
    if request.on_behalf:
        return (f"{mention(request.requester_id)} asks for {mention(request.grantee)}: "
                f"{length} {verb} *{target(request)}*")
    return f"{mention(request.requester_id)} asks {length} {verb} *{target(request)}*"


def reason_text(request: AccessRequest, links: ReasonLinks = unlinked) -> str:
    """The reason in mrkdwn: typed text escaped, each ticket its role's ``ticket_url``
    links to as ``<url|ticket>`` (the ticket's text escaped too; the URL carries it
    percent-encoded, see :func:`bot.domain.reasons.ticket_link`)."""
    return "".join(f"<{escape(piece.link)}|{escape(piece.text)}>" if piece.link
                   else escape(piece.text) for piece in links(request))


def granted_note(request: AccessRequest) -> str:
    """`` for 1h of the 2h asked`` when approvers approved less than asked; else empty."""
    granted = request.granted_duration
    if granted >= request.duration:
        return ""
    return f" for {format_duration(granted)} of the {format_duration(request.duration)} asked"


def status(request: AccessRequest, missing: int = 0) -> str:
    approvers = ", ".join(mention(a) for a in request.approvers_so_far()) or "nobody yet"
    state = request.state
    if state is State.PENDING:
        plural = "s" if missing != 1 else ""
        done = f" (approved by {approvers}{granted_note(request)})" \
            if request.approvers_so_far() else ""
        return f":hourglass: Waiting for {missing} more approval{plural}{done}."
    if state is State.APPROVED:
        line = (f":white_check_mark: Approved by {approvers}{granted_note(request)}; "
                "granting access…")
        if windows.approved_ahead(request):
            line = (f":white_check_mark: Approved by {approvers}{granted_note(request)}; "
                    f"access starts {when(request.window_start)}.")
        if request.last_error:
            line += f"\n:warning: The backend failed, retrying: {escape(request.last_error)}"
        return line
    if state is State.ACTIVE:
        return (f":large_green_circle: Active until {when(request.ends_at)} "
                f"(approved by {approvers}{granted_note(request)}).")
    if state is State.EXPIRED:
        return f":checkered_flag: Expired {when(request.ended_at)}."
    if state is State.REVOKED:
        return (f":no_entry: Revoked by {mention(request.ended_by)} {when(request.ended_at)}: "
                f"{escape(request.end_reason)}")
    if state is State.DENIED:
        return f":x: Denied by {mention(request.ended_by)}: {escape(request.end_reason)}"
    if state is State.CANCELLED:
        by = "the requester" if request.ended_by == request.requester_id \
            else mention(request.ended_by)
        return f":leftwards_arrow_with_hook: Cancelled by {by}."
    if state is State.TIMED_OUT:
        return f":zzz: Timed out: {escape(request.end_reason)}."
    return f":boom: Failed: {escape(request.end_reason)}"


def _fields(request: AccessRequest, links: ReasonLinks = unlinked) -> Block:
    reason = reason_text(request, links) or "_(none given)_"
    duration = format_duration(request.duration)
    if request.granted_duration < request.duration:
        duration = f"{format_duration(request.granted_duration)} (asked {duration})"
    fields = [
        f"*Requester*\n{mention(request.requester_id)}",
        f"*Access*\n{target(request)}",
        f"*Duration*\n{duration}",
        f"*Identity granted*\n`{escape(request.subject)}`",
        f"*Reason*\n{reason}",
    ]
    if request.on_behalf:
        fields.insert(1, f"*For*\n{mention(request.grantee)}")
    if request.window_start is not None:
        fields.append(f"*Window*\n{window(request)}")
    return {"type": "section", "fields": [{"type": "mrkdwn", "text": f} for f in fields]}


def window(request: AccessRequest, tz: str | None = None) -> str:
    """A scheduled window, from its start to its end: in each reader's own time zone (Slack
    renders the dates), or in UTC and ``tz`` (the requester's zone) when ``tz`` is given."""
    start, end = request.window_start, request.window_end
    if tz is not None and start is not None and end is not None:
        return f"{windows.render_time(start, tz)} to {windows.render_time(end, tz)}"
    return f"{when(start)} to {when(end)}"


def approval_message(request: AccessRequest, missing: int, note: str | None = None,
                     links: ReasonLinks = unlinked) -> tuple[str, list[Block]]:
    """The approvers' message: who asks for what and why (``links`` turns its tickets into
    links); buttons while it is pending; ``note`` (the bot's own words, such as
    :func:`delay_note`) under the status."""
    line = "\n".join(filter(None, (status(request, missing), note, on_call_note(request))))
    blocks = [_text(title(request)), _fields(request, links), _context(line)]
    decisions = [a for a in request.approvals if a.approver_id != POLICY_ACTOR]
    if decisions:
        lines = [f"{':white_check_mark:' if a.decision is Decision.APPROVE else ':x:'} "
                 f"{mention(a.approver_id)} {when(a.decided_at)}"
                 + (f" for {format_duration(a.duration)}" if a.duration else "")
                 + (f": {escape(a.comment)}" if a.comment else "") for a in decisions]
        # One context per decision: a quorum of long comments stays readable and within limits.
        blocks += [_context(line) for line in lines[:LIMITS["message_blocks"] - 5]]
    if request.state is State.PENDING:
        blocks += decision_buttons(request)
    return fit_message(f"{summary(request)}: {status(request, missing)}", blocks)


def outcome_reply(request: AccessRequest, missing: int) -> str:
    """The reply in an approval message's thread when the grant failed or is retried."""
    return shorten(f":warning: Request #{request.id} ({target(request)}): "
                   f"{status(request, missing)}", LIMITS["text_fallback"])


def waiting_reply(request: AccessRequest, missing: int) -> str:
    """The reminder in an approval message's thread that the request still waits."""
    return shorten(f":hourglass: Request #{request.id} ({target(request)}) has waited since "
                   f"{when(request.created_at)}: {status(request, missing)}",
                   LIMITS["text_fallback"])


def escalated(text: str, content: list[Block]) -> tuple[str, list[Block]]:
    """An approval message for approvers an escalation step added: why it comes to them."""
    why = (":arrow_double_up: Escalated to you: nobody has decided on this request yet, "
           "and you may now.")
    return fit_message(f"Escalated to you: {text}", [_text(why), *content])


def delay_note(notice: Notice) -> str:
    """What a slow grant looks like to the approvers and the requester."""
    slow = notice.detail or "the backend is slow"
    return f":hourglass_flowing_sand: Still working on it: {slow}."


def requester_message(notice: Notice,
                      links: ReasonLinks = unlinked) -> tuple[str, list[Block]] | None:
    """The DM to the grantee (the requester, unless asked on someone's behalf) for
    ``notice``, or None when they need not hear of it."""
    request = notice.request
    label = f"#{request.id} ({target(request)})"
    kind = notice.kind
    buttons: list[Block] = []
    if kind is NoticeKind.ACTIVE:
        text = (f":large_green_circle: Your access {label} is active until "
                f"{when(request.ends_at)}{granted_note(request)}.")
        if request.reason:
            text += f"\nReason: {reason_text(request, links)}"
        if notice.delivery is not None:
            text += f"\n{notice.delivery.instructions}"
        buttons = [grant_buttons(request)]
    elif kind is NoticeKind.EXTENDED and notice.parent is not None:
        text = (f":hourglass_flowing_sand: Grant #{notice.parent.id} now lasts until "
                f"{when(notice.parent.ends_at)}.")
        if notice.delivery is not None and notice.delivery.instructions:
            text += f"\n{notice.delivery.instructions}"
        buttons = [grant_buttons(notice.parent)]
    elif kind is NoticeKind.APPROVED and windows.approved_ahead(request):
        text = (f":white_check_mark: Request {label} was approved: your access starts at "
                f"{when(request.window_start)} and ends at {when(request.window_end)}. You will "
                f"get it then; `/k8s-access cancel {request.id}` withdraws it before.")
    elif kind is NoticeKind.APPROVED:
        text = (f":white_check_mark: Request {label} was approved{granted_note(request)}; "
                "granting access now.")
    elif kind is NoticeKind.DENIED:
        text = (f":x: Request {label} was denied by {mention(request.ended_by)}: "
                f"{escape(request.end_reason)}")
    elif kind is NoticeKind.TIMED_OUT:
        text = (f":zzz: Request {label} timed out: {escape(request.end_reason)}. "
                "Ask again if you still need it.")
    elif kind is NoticeKind.FAILED and request.window_start is not None:
        text = (f":boom: Your scheduled access {label} could not start: "
                f"{escape(request.end_reason).rstrip('.')}. Ask again if you still need it.")
    elif kind is NoticeKind.FAILED and request.kind is Kind.EXTENSION:
        text = (f":boom: Extension {label} of grant #{request.parent_id} could not apply: "
                f"{escape(request.end_reason).rstrip('.')}. Ask for new access if you still "
                "need it.")
    elif kind is NoticeKind.FAILED:
        text = (f":boom: Access {label} could not be granted: {escape(request.end_reason)}\n"
                "The platform team has been told; ask again once it is fixed.")
    elif kind is NoticeKind.RETRYING:
        text = (f":warning: Request {label} is approved but the backend failed "
                f"({escape(request.last_error)}). The bot keeps retrying; you will hear when "
                "it works.")
    elif kind is NoticeKind.SLOW:
        text = (f"{delay_note(notice)} Request {label} is approved; you will hear as soon as "
                "the access is active.")
    elif kind is NoticeKind.EXPIRING:
        text = (f":alarm_clock: Your access {label} ends {when(request.ends_at)}. "
                "Extend it if you still need it.")
        buttons = [grant_buttons(request)]
    elif kind is NoticeKind.EXPIRED:
        text = f":checkered_flag: Your access {label} has expired."
    elif kind is NoticeKind.REVOKED:
        text = (f":no_entry: Your access {label} was revoked by {mention(request.ended_by)}: "
                f"{escape(request.end_reason)}")
    else:
        return None
    if kind in (NoticeKind.EXPIRED, NoticeKind.REVOKED) and request.backend_ref.get(
            "certificate_not_after"):
        text += ("\nYour client certificate stays valid until it expires, but its RBAC "
                 "binding is gone, so it grants nothing.")
    if kind in (NoticeKind.EXPIRED, NoticeKind.REVOKED) and request.kind is Kind.ACCESS:
        buttons = [_actions(request.id, button("Request again", REQUEST_AGAIN, request.id))]
    if request.on_behalf:
        text += f"\n_{mention(request.requester_id)} asked for this access for you._"
    return fit_message(text, [*sections(text), *buttons])


BEHALF_OUTCOMES = frozenset({
    NoticeKind.APPROVED, NoticeKind.ACTIVE, NoticeKind.DENIED, NoticeKind.TIMED_OUT,
    NoticeKind.FAILED, NoticeKind.RETRYING, NoticeKind.EXPIRED, NoticeKind.REVOKED})
"""What the requester of access on someone else's behalf hears of, beside the grantee."""


def behalf_message(notice: Notice,
                   unsent: str | None = None) -> tuple[str, list[Block]] | None:
    """The DM to someone who asked on another's behalf: each outcome of their request (that
    the grantee received how to connect, or ``unsent``: Slack's error for the DM or file that
    could not reach them), with "Request again" once it ended; None otherwise."""
    request = notice.request
    if not request.on_behalf or notice.kind not in BEHALF_OUTCOMES:
        return None
    text = (f"Request #{request.id} you made for {mention(request.grantee)} "
            f"({target(request)}): {status(request, notice.approvals_missing)}")
    if notice.kind is NoticeKind.ACTIVE and unsent is not None:
        text += (f"\n:warning: {mention(request.grantee)} could not be sent how to connect: "
                 f"Slack answered `{escape(unsent)}`. Revoke it with `/k8s-access revoke "
                 f"{request.id}` and ask again once they can get DMs from the bot.")
    elif notice.kind is NoticeKind.ACTIVE:
        text += f"\n{mention(request.grantee)} received how to connect."
    buttons = [_actions(request.id, button("Request again", REQUEST_AGAIN, request.id))] \
        if notice.kind in (NoticeKind.EXPIRED, NoticeKind.REVOKED) else []
    return fit_message(text, [*sections(text), *buttons])


REMINDER_LISTED = 45
"""Grants shown one by one, each with its Extend button, in the weekly reminder."""


def weekly_reminder(grants: Sequence[AccessRequest], now: datetime,
                    links: ReasonLinks = unlinked) -> tuple[str, list[Block]]:
    """The DM to someone whose grants end within a week: one block per grant with its Extend
    button, the rest counted with the command that lists them."""
    text = f":calendar: {len(grants)} of your grants end within a week."
    blocks: list[Block] = [_text(text)]
    for grant in grants[:REMINDER_LISTED]:
        blocks.append({**_text(f"{request_line(grant, now, links)}, ends {when(grant.ends_at)}"),
                       "accessory": button("Extend", EXTEND, grant.id)})
    if len(grants) > REMINDER_LISTED:
        blocks.append(_context(f"…and {len(grants) - REMINDER_LISTED} more: "
                               "`/k8s-access list active` shows them all."))
    return fit_message(text, blocks)


REVIEW_DETAILED = 24
"""Grants still to decide shown one by one, with Keep and Revoke, in the weekly review (two
blocks each, within Slack's 50); beyond that all of them go in a CSV file."""


def access_review_csv(items: Sequence[ReviewItem]) -> str:
    """Every grant of a review, one row each: who holds it, what, since and until when, who
    approved it, and this week's decision on it. Cells are safe to open in a spreadsheet
    (:func:`bot.domain.exports.csv_line`)."""
    lines = [csv_line(["id", "grantee", "requester", "cluster", "role", "namespace", "subject",
                       "since", "until", "approved_by", "carried_over", "status",
                       "decided_by", "decided_at"])]
    for item in items:
        grant, decision = item.grant, item.decision
        lines.append(csv_line([
            grant.id, grant.grantee, grant.requester_id, grant.cluster, grant.role,
            grant.namespace, grant.subject,
            grant.activated_at.isoformat() if grant.activated_at else None,
            grant.ends_at.isoformat() if grant.ends_at else None,
            " ".join(grant.approvers_so_far()), "yes" if item.carried_over else None,
            item.status.value, decision.by if decision else None,
            decision.at.isoformat() if decision else None]))
    return "".join(lines)


def _review_line(item: ReviewItem, links: ReasonLinks) -> str:
    """A grant still to decide: which it is, the carried-over flag, the facts, then its
    reason, which alone is shortened to fit."""
    grant = item.grant
    approvers = ", ".join(mention(a) for a in grant.approvers_so_far()) or "-"
    carried = "\n:repeat: _Carried over: nobody reviewed it last week._" if item.carried_over \
        else ""
    return then_free_text(
        f"*#{grant.id}* {mention(grant.grantee)} on *{target(grant)}* as "
        f"`{escape(grant.subject)}`{carried}\nsince {when(grant.activated_at)}, until "
        f"{when(grant.ends_at)}, approved by {approvers}", reason_text(grant, links))


def _review_outcome(item: ReviewItem) -> str:
    grant = item.grant
    head = f"*#{grant.id}* {mention(grant.grantee)} on *{target(grant)}*"
    decision = item.decision
    if decision is not None and decision.verdict is Verdict.KEEP:
        return f":white_check_mark: {head}: kept by {mention(decision.by)} {when(decision.at)}"
    if decision is not None:
        return f":no_entry: {head}: revoked by {mention(decision.by)} {when(decision.at)}"
    ended = "ending" if grant.state is State.ACTIVE else grant.state.value.replace('_', ' ')
    return f":checkered_flag: {head}: {ended}, nothing to review"


def access_review(review: AccessReview,
                  links: ReasonLinks = unlinked) -> tuple[str, list[Block]]:
    """The weekly review as it stands: progress ("N of M reviewed"), each grant still to
    decide with Revoke (beside it) and Keep (under it), the decided ones one line each
    (``links`` turns tickets in reasons into links). Beyond :data:`REVIEW_DETAILED` grants to
    decide the rest is counted (they are in the CSV)."""
    confirm = {"title": _plain("Revoke access?"),
               "text": {"type": "mrkdwn", "text": "The grant ends now."},
               "confirm": _plain("Revoke"), "deny": _plain("Keep it")}
    total = review.total
    head = (f":mag: Access review: {total} active grant{'s' if total != 1 else ''}. "
            f"{review.progress()}.")
    still = [item for item in review.items if item.status is ItemStatus.OPEN]
    shown_open = {id(item) for item in still[:REVIEW_DETAILED]}
    room = LIMITS["message_blocks"] - 2 - 2 * len(shown_open)
    settled = [item for item in review.items if item.status is not ItemStatus.OPEN]
    shown_settled = {id(item) for item in settled[:max(room, 0)]}
    text = head
    if total > REVIEW_DETAILED:
        text += " All of them are in the attached CSV."
    blocks: list[Block] = [_text(text)]
    for item in review.items:
        grant = item.grant
        if id(item) in shown_open:
            blocks.append({"type": "section", "block_id": f"{REVIEW_BLOCK}:{grant.id}",
                           "text": {"type": "mrkdwn", "text": _review_line(item, links)},
                           "accessory": button("Revoke", REVOKE, grant.id, "danger", confirm)})
            blocks.append(_actions(grant.id, button("Keep", KEEP, grant.id, "primary")))
        elif id(item) in shown_settled:
            blocks.append(_context(_review_outcome(item)))
    left = total - len(shown_open) - len(shown_settled)
    if left:
        waiting = len(still) - len(shown_open)
        blocks.append(_context(f"…and {left} more ({waiting} still to review): all of them "
                               "are in the attached CSV."))
    return fit_message(head, blocks)


def link_confirmation(user_id: str, username: str) -> tuple[str, list[Block]]:
    """The admins' DM when someone links a GitLab account whose email is not theirs."""
    text = (f"{mention(user_id)} wants to be GitLab user `{escape(username)}`, whose email "
            "GitLab does not show as theirs. Confirm only if you know it is their account.")
    return fit_message(text, [_text(text), {
        "type": "actions", "block_id": f"link:{user_id}",
        "elements": [{**button("Confirm link", CONFIRM_LINK, None, "primary"),
                      "value": user_id}]}])


def filed_message(request: AccessRequest, missing: int, tz: str | None = None) -> str:
    """The requester's answer to a new request: where it stands, a scheduled window in UTC and
    in ``tz`` (their time zone) and, for a role with on-call auto-approval, why being on call
    approved it or not."""
    text = _filed(request, missing)
    if request.window_start is not None:
        text += f"\nWindow: {window(request, tz or 'UTC')}."
    return text + on_call_line(request)


def _filed(request: AccessRequest, missing: int) -> str:
    if request.state is State.PENDING and request.notified is not None \
            and not request.notified.reached:
        return (f"Request #{request.id} filed: {summary(request)}.\n"
                f"{reach_line(request.notified)} It stays pending, and the approvers are told "
                "again later.")
    if request.state is State.PENDING:
        return (f"Request #{request.id} filed: {summary(request)}. "
                f"Waiting for {missing} approval{'s' if missing != 1 else ''}"
                f"{reach_line(request.notified)}")
    return f"Request #{request.id}: {status(request, missing)}"


# --- delivery -----------------------------------------------------------------------------


def _recipient(recipient: str) -> str:
    if is_conversation(recipient):
        return f"<#{recipient}>"
    return mention(recipient)


_WHY = {
    "not_in_channel": "the bot is not in {who} (invite it with `/invite`)",
    "channel_not_found": "channel `{id}` does not exist or is private to the bot",
    "is_archived": "{who} is archived",
    "user_disabled": "{who} is deactivated",
    "account_inactive": "{who} is deactivated",
    "user_not_found": "{who} is not a user of this workspace",
    "user_not_visible": "{who} is not visible to the bot",
    "cannot_dm_bot": "{who} is a bot and cannot get DMs",
    "messages_tab_disabled": "{who} has turned off messages from apps",
    "usergroup_unavailable": "Slack did not list the members of {who}",
}


def undelivered_reason(failure: Undelivered) -> str:
    """Why one recipient was not reached, for people (Slack's error code for the rest)."""
    who = _recipient(failure.recipient)
    template = _WHY.get(failure.error)
    if template is not None:
        return template.format(who=who, id=failure.recipient)
    return f"Slack answered `{failure.error}` for {who}"


def reach_line(reach: Reach | None) -> str:
    """The end of "Waiting for N approvals…": where the request went; or, alone, the truth
    that it went nowhere. A full stop when it is not known."""
    if reach is None:
        return "."
    reasons = _listed(reach)
    if reach.channel is not None:
        return f" from the approvers in {_recipient(reach.channel)}."
    if reach.people:
        line = f" from {', '.join(mention(p) for p in reach.people)}, told by DM."
        return line + (f" (Not reached: {reasons}.)" if reasons else "")
    return _nobody(reach, reasons)


def _told(reach: Reach) -> str:
    return ("an admin has been told" if reach.admins
            else "no admin could be told either: tell the platform team yourself")


def _nobody(reach: Reach, reasons: str) -> str:
    return (f":warning: No approver could be reached: {reasons or 'no approvers are set'}; "
            f"{_told(reach)}.")


def _reasons(reach: Reach) -> str:
    return _listed(reach) or "no approvers are set"


REASONS_LISTED = 10
"""Recipients not reached named one by one with why; the rest are counted."""


def _listed(reach: Reach) -> str:
    """Why each recipient was not reached, the first :data:`REASONS_LISTED`, then how many
    more: a group of hundreds never pushes the rest of the message out."""
    shown = [undelivered_reason(u) for u in reach.undelivered[:REASONS_LISTED]]
    more = len(reach.undelivered) - len(shown)
    return "; ".join(shown) + (f"; and {more} more not reached" if more > 0 else "")


def unreachable_message(request: AccessRequest, reach: Reach) -> str:
    """The requester's DM when nobody could be told of their request: it waits and they are
    told again; or, approved already (on call, break-glass), it stands unreviewed."""
    head = (f":warning: Request #{request.id} ({target(request)}) reached no approver: "
            f"{_reasons(reach)}; {_told(reach)}.")
    if request.state is not State.PENDING:
        return (f"{head} Your access stands; the approvers who review it were not told of "
                "it.")
    return (f"{head} It stays pending and the approvers are told again later; "
            f"`/k8s-access cancel {request.id}` withdraws it.")


def file_undelivered(request: AccessRequest, error: str) -> str:
    """The requester's DM when their kubeconfig could not be shared (it is never kept)."""
    return (f":warning: Your kubeconfig for request #{request.id} could not be delivered: "
            f"Slack answered `{error}`. The bot keeps no copy of it: revoke the grant with "
            f"`/k8s-access revoke {request.id}` and ask again for a new one.")


def refused_report(purpose: str, recipient: str, error: str) -> str:
    """The admins' DM when Slack refused a weekly message as invalid."""
    return (f":warning: The weekly {purpose} for {_recipient(recipient)} was not sent: Slack "
            f"refused it (`{error}`). It is not tried again; the bot's log has Slack's details "
            "(look for \"not tried again\"). Please report it.")


def unreachable_alert(request: AccessRequest, reach: Reach) -> str:
    """The admins' DM when nobody could be told of a request."""
    then = ("the approvers are told again later" if request.state is State.PENDING
            else "it was approved without them, so review it yourself")
    return (f":rotating_light: {title(request)} from {mention(request.requester_id)} "
            f"({target(request)}) reached no approver: {_reasons(reach)}. Fix the approvers "
            f"channel or the approvers in the configuration; {then}.")


# --- lists and overviews ------------------------------------------------------------------


def request_line(request: AccessRequest, now: datetime, links: ReasonLinks = unlinked,
                 also: str = "") -> str:
    """``*#12* staging/edit for <@U…>: active, 1h left``, then who asked on their behalf,
    ``also`` (more of the bot's words, such as the status) and the reason (its tickets linked
    by ``links``), which alone is shortened to fit."""
    left = request.time_left(now)
    extra = f", {format_duration(left)} left" if request.state is State.ACTIVE and left else ""
    owner = mention(request.grantee)
    kind = "extension of #" + str(request.parent_id) + " " if request.kind is Kind.EXTENSION \
        else ""
    if request.on_behalf:
        extra += f", asked by {mention(request.requester_id)}"
    return then_free_text(f"*#{request.id}* {kind}{target(request)} for {owner}: "
                          f"{request.state.value.replace('_', ' ')}{extra}{also}",
                          reason_text(request, links), " — ")


def listing(scope: str, found: Sequence[AccessRequest], now: datetime,
            links: ReasonLinks = unlinked) -> tuple[str, list[Block]]:
    scope = escape(scope)
    if not found:
        text = f"Nothing in `{scope}`."
        return fit_message(text, [_text(text)])
    shown = list(found)[:MAX_LISTED]
    blocks = [_text(f"*{scope.capitalize()}* ({len(found)})")]
    blocks += [_text(request_line(r, now, links)) for r in shown]
    if len(found) > len(shown):
        blocks.append(_context(f"…and {len(found) - len(shown)} more."))
    return fit_message(f"{len(found)} requests in {scope}", blocks)


def clusters_overview(config: Config,
                      allowed: Collection[tuple[str, str]] | None = None) -> str:
    """Clusters and roles with their limits and approvers; only the ``allowed`` (cluster,
    role) pairs when given (what the person may ask for)."""
    lines = []
    for name, cluster in config.clusters.items():
        roles = [role for role in cluster.roles if allowed is None or (name, role) in allowed]
        if not roles:
            continue
        head = f"*{escape(name)}* ({cluster.backend})"
        if cluster.description:
            head += f": {escape(cluster.description)}"
        lines.append(head)
        for role in roles:
            policy = config.policy(name, role)
            who = ", ".join(mention(a) for a in sorted(policy.approvers)) or "the policy"
            extras = []
            if policy.namespaces:
                extras.append(f"namespaces {escape(', '.join(policy.namespaces))}")
            if policy.auto_approve_up_to:
                extras.append(f"auto-approved up to {format_duration(policy.auto_approve_up_to)}")
            if policy.break_glass:
                extras.append("break-glass")
            if policy.approvals_required > 1:
                extras.append(f"{policy.approvals_required} approvals")
            if policy.reason_hint or policy.reason_pattern:
                extras.append(f"reason: {escape(policy.reason_hint or policy.reason_pattern)}")
            extra = f"; {'; '.join(extras)}" if extras else ""
            lines.append(f"  • `{escape(role)}`: up to {format_duration(policy.max_duration)} "
                         f"(default {format_duration(policy.default_duration)}), "
                         f"approved by {who}{extra}")
    return "\n".join(lines) or ("You may ask for no role here. `/k8s-access clusters` lists "
                                "what you may ask for; ask the platform team if you need one.")


def home_view(mine: Iterable[AccessRequest], waiting: Iterable[AccessRequest], now: datetime,
              missing: dict[int, int], links: ReasonLinks = unlinked) -> dict[str, Any]:
    blocks: list[Block] = [{"type": "header", "text": _plain("Kubernetes access")}]
    mine = list(mine)
    active = [r for r in mine if r.is_active_grant]
    pending = [r for r in mine if r.state in WAITING_STATES]
    blocks.append(_text("*Your active grants*" if active else "_No active grants._"))
    for request in active[:MAX_LISTED]:
        blocks += [_text(request_line(request, now, links)), grant_buttons(request)]
    blocks.append({"type": "divider"})
    blocks.append(_text("*Your pending requests*" if pending else "_No pending requests._"))
    for request in pending[:MAX_LISTED]:
        state = status(request, missing.get(request.id or 0, 0))
        blocks.append(_text(request_line(request, now, links, f"\n{state}")))
        if request.state is State.PENDING or (
                windows.approved_ahead(request) and (request.window_start or now) > now):
            blocks.append(_actions(request.id, button("Cancel", CANCEL, request.id)))
    waiting = list(waiting)
    if waiting:
        blocks.append({"type": "divider"})
        blocks.append(_text(f"*Waiting for your decision* ({len(waiting)})"))
        for request in waiting[:MAX_LISTED]:
            reason = reason_text(request, links) or "no reason given"
            blocks.append(_text(f"{summary(request)}\n_{reason}_"))
            blocks += decision_buttons(request)
    blocks.append(_context("Ask for access with `/k8s-access request`; `/k8s-access help` "
                           "shows every command."))
    return fit_view({"type": "home", "blocks": blocks})


# --- modals -------------------------------------------------------------------------------


def _option(value: str, label: str | None = None) -> dict[str, Any]:
    return {"text": _plain(label or value), "value": value}


def _input(block_id: str, label: str, element: Block, optional: bool = False,
           hint: str | None = None, dispatch: bool = False) -> Block:
    block: Block = {"type": "input", "block_id": block_id, "label": _plain(label),
                    "element": element, "optional": optional}
    if hint:
        block["hint"] = _plain(hint)
    if dispatch:
        block["dispatch_action"] = True
    return block


def _select(action_id: str, options: Sequence[str], initial: str | None) -> Block:
    """A menu of ``options``; more than one menu holds (Slack's 100) go in groups of 100,
    each labelled by its first and last, so that every one can be picked."""
    size = LIMITS["select_options"]
    element: Block = {"type": "static_select", "action_id": action_id}
    if len(options) <= size:
        element["options"] = [_option(o) for o in options]
    else:
        element["option_groups"] = [
            {"label": _plain(f"{chunk[0]} … {chunk[-1]}"), "options": [_option(o) for o in chunk]}
            for chunk in (options[i:i + size] for i in range(0, len(options), size))]
    if initial in options:
        element["initial_option"] = _option(initial)  # type: ignore[arg-type]
    return element


def request_modal(config: Config, prefill: dict[str, Any],
                  allowed: Collection[tuple[str, str]] | None = None,
                  for_others: Collection[tuple[str, str]] = ()) -> dict[str, Any]:
    """The request form, pre-filled; the role list follows the chosen cluster. Only the
    ``allowed`` (cluster, role) pairs are offered when given (what the person may ask for);
    once a role of ``for_others`` is chosen (or someone was typed after ``--for``), "For"
    picks someone else to receive it."""
    def offered(cluster: str, role: str) -> bool:
        return allowed is None or (cluster, role) in allowed

    clusters = [name for name, cluster in config.clusters.items()
                if any(offered(name, role) for role in cluster.roles)]
    cluster = prefill.get("cluster") if prefill.get("cluster") in clusters else (
        clusters[0] if len(clusters) == 1 else None)
    blocks = [_input("cluster", "Cluster", _select(PICK_CLUSTER, clusters, cluster),
                     dispatch=True)]
    role = prefill.get("role")
    if cluster is not None:
        roles = [name for name in config.clusters[cluster].roles if offered(cluster, name)]
        role = role if role in roles else (roles[0] if len(roles) == 1 else None)
        blocks.append(_input("role", "Role", _select(PICK_ROLE, roles, role), dispatch=True))
        if (cluster, role) in for_others or prefill.get("for"):
            blocks.append(_grantee_input(prefill.get("for")))
        if role is not None:
            policy = config.policy(cluster, role)
            if policy.namespaces:
                blocks.append(_input("namespace", "Namespace",
                                     _select("namespace", policy.namespaces,
                                             prefill.get("namespace"))))
            hint = f"Up to {format_duration(policy.max_duration)}, like 90m, 4h or 1h30m."
            duration = prefill.get("duration") or format_duration(policy.default_duration)
            blocks.append(_input("duration", "Duration",
                                 {"type": "plain_text_input", "action_id": "duration",
                                  "initial_value": duration}, hint=hint))
            if not prefill.get("break_glass"):
                blocks.append(_start_at(policy, prefill.get("start_at")))
            blocks.append(_input("reason", "Reason",
                                 {"type": "plain_text_input", "action_id": "reason",
                                  "multiline": True, "initial_value": prefill.get("reason", "")},
                                 optional=not policy.require_reason,
                                 hint=policy.reason_hint))
            if policy.allow_own_csr:
                blocks.append(_input(
                    "csr", "Your own CSR (optional)",
                    {"type": "plain_text_input", "action_id": "csr", "multiline": True},
                    optional=True,
                    hint="Paste a PEM CSR with CN set to your Kubernetes username and no O to "
                         "keep your private key to yourself; leave empty to get a new key."))
    return fit_view({
        "type": "modal",
        "callback_id": REQUEST_MODAL,
        "title": _plain("Kubernetes access"),
        "submit": _plain("Request"),
        "close": _plain("Cancel"),
        "private_metadata": _form_memory(prefill),
        "blocks": blocks,
    })


def _grantee_input(chosen: str | None) -> Block:
    """The request form's "For": someone else who is to receive the access."""
    element: Block = {"type": "users_select", "action_id": PICK_GRANTEE,
                      "placeholder": _plain("Yourself")}
    if chosen:
        element["initial_user"] = chosen
    return _input("for", "For", element, optional=True,
                  hint="Leave empty to ask for yourself; pick someone to ask on their behalf.")


def _start_at(policy: RolePolicy, typed: str | None) -> Block:
    """The request form's optional "Start at": empty starts the access once approved."""
    element: Block = {"type": "plain_text_input", "action_id": "start_at",
                      "placeholder": _plain("tomorrow 22:00")}
    if typed:
        element["initial_value"] = typed
    return _input("start_at", "Start at", element, optional=True, hint=(
        "Empty: as soon as approved. Or a time in your Slack time zone, like 22:00, "
        "tomorrow 22:00 or 2026-12-02T22:00 (end it in Z for UTC), up to "
        f"{format_duration(policy.max_schedule_ahead)} ahead."))


def _form_memory(prefill: dict[str, Any]) -> str:
    """What the request form remembers between its versions (JSON), within Slack's limit for
    ``private_metadata``: the longest typed values are dropped first when it would not fit."""
    kept = {k: v for k, v in prefill.items() if v}
    memory = json.dumps(kept, ensure_ascii=False)
    while len(memory) > LIMITS["private_metadata"]:
        kept.pop(max(kept, key=lambda k: len(str(kept[k]))))
        memory = json.dumps(kept, ensure_ascii=False)
    return memory


def deny_modal(request: AccessRequest) -> dict[str, Any]:
    return fit_view({
        "type": "modal",
        "callback_id": DENY_MODAL,
        "title": _plain(f"Deny request #{request.id}"),
        "submit": _plain("Deny"),
        "close": _plain("Back"),
        "private_metadata": str(request.id),
        "blocks": [
            _text(summary(request)),
            _input("reason", "Why?", {"type": "plain_text_input", "action_id": "reason",
                                      "multiline": True},
                   hint="The requester sees this, so say what to change."),
        ],
    })


def extend_modal(request: AccessRequest) -> dict[str, Any]:
    return fit_view({
        "type": "modal",
        "callback_id": EXTEND_MODAL,
        "title": _plain(f"Extend grant #{request.id}"),
        "submit": _plain("Extend"),
        "close": _plain("Back"),
        "private_metadata": str(request.id),
        "blocks": [
            _text(f"*{target(request)}* ends {when(request.ends_at)}."),
            _input("duration", "How much longer?", {"type": "plain_text_input",
                                                    "action_id": "duration",
                                                    "initial_value": "1h"},
                   hint="Like 90m, 4h or 1h30m."),
            _input("reason", "Reason", {"type": "plain_text_input", "action_id": "reason",
                                        "multiline": True}, optional=True),
        ],
    })


# --- on-call auto-approval ------------------------------------------------------------


def on_call_note(request: AccessRequest) -> str | None:
    """The approvers' line under the status of a request approved because its requester is
    on call: where, and that it awaits their review; None for any other request."""
    comment = on_call_approval(request)
    if comment is None:
        return None
    where = comment.partition("; ")[2] or comment
    return (f":pager: Approved by the policy because the requester is {escape(where)}. "
            "Flagged for review: revoke it if it should not stand.")


def on_call_announcement(request: AccessRequest,
                         links: ReasonLinks = unlinked) -> tuple[str, list[Block]]:
    """The approvers' message for a request approved because its requester is on call: loud
    (``@here``) like break-glass, without the siren; its reason's tickets linked by
    ``links`` like every approval message's."""
    text, content = approval_message(request, 0, links=links)
    return fit_message(f"<!here> :pager: ON-CALL: {text}", content)


def break_glass_announcement(text: str, content: list[Block]) -> tuple[str, list[Block]]:
    """A break-glass request's approval message, loud (``@here``) with the siren."""
    return fit_message(f"<!here> :rotating_light: BREAK-GLASS: {text}", content)


def on_call_line(request: AccessRequest) -> str:
    """What the requester is told about on-call auto-approval of their new request: that it
    approved it, or why it went to the approvers; empty when the role has none."""
    if request.on_call is None:
        return ""
    if on_call_approval(request) is not None:
        return (f"\n:pager: Approved by the policy because you are {escape(request.on_call)}. "
                "The approvers were told and will review it.")
    return (f"\n:information_source: Not approved by being on call, so the approvers decide: "
            f"{escape(request.on_call)}.")
