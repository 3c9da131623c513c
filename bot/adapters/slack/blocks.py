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

import copy
import csv
import html
import io
import json
from collections.abc import Iterable, Sequence
from datetime import datetime
from typing import Any

from bot.adapters.slack.directory import is_conversation, is_user_group
from bot.config import Config
from bot.domain.durations import format_duration
from bot.domain.model import POLICY_ACTOR, AccessRequest, Decision, Kind, Reach, State, Undelivered
from bot.domain.ports import Notice, NoticeKind
from bot.domain.reviews import AccessReview, ItemStatus, ReviewItem, Verdict

Block = dict[str, Any]

APPROVE, DENY, REVOKE, EXTEND, CANCEL = "approve", "deny", "revoke", "extend", "cancel"
CONFIRM_LINK = "confirm_link"
KEEP = "keep"
REVIEW_BLOCK = "review"
"""The block ID prefix of a grant in an access review: its Revoke is the review's decision."""
REQUEST_MODAL, DENY_MODAL, EXTEND_MODAL = "request_modal", "deny_modal", "extend_modal"
PICK_CLUSTER, PICK_ROLE = "pick_cluster", "pick_role"
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
        element["options"] = list(element.get("options", []))[:LIMITS["select_options"]]
        for option in [*element["options"], element.get("initial_option")]:
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


def _fit_blocks(content: Sequence[Block], limit: int) -> list[Block]:
    fitted = [copy.deepcopy(block) for block in content]
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
            fitted[key] = copy.deepcopy(fitted[key])
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


def title(request: AccessRequest) -> str:
    if request.break_glass:
        return f":rotating_light: *BREAK-GLASS* access #{request.id}"
    if request.kind is Kind.EXTENSION:
        return f":hourglass_flowing_sand: Extension #{request.id} of grant #{request.parent_id}"
    return f":closed_lock_with_key: Access request #{request.id}"


def summary(request: AccessRequest) -> str:
    length = format_duration(request.duration)
    verb = "more on" if request.kind is Kind.EXTENSION else "for"
    return f"{mention(request.requester_id)} asks {length} {verb} *{target(request)}*"


def status(request: AccessRequest, missing: int = 0) -> str:
    approvers = ", ".join(mention(a) for a in request.approvers_so_far()) or "nobody yet"
    state = request.state
    if state is State.PENDING:
        plural = "s" if missing != 1 else ""
        done = f" (approved by {approvers})" if request.approvers_so_far() else ""
        return f":hourglass: Waiting for {missing} more approval{plural}{done}."
    if state is State.APPROVED:
        line = f":white_check_mark: Approved by {approvers}; granting access…"
        if request.last_error:
            line += f"\n:warning: The backend failed, retrying: {escape(request.last_error)}"
        return line
    if state is State.ACTIVE:
        return (f":large_green_circle: Active until {when(request.ends_at)} "
                f"(approved by {approvers}).")
    if state is State.EXPIRED:
        return f":checkered_flag: Expired {when(request.ended_at)}."
    if state is State.REVOKED:
        return (f":no_entry: Revoked by {mention(request.ended_by)} {when(request.ended_at)}: "
                f"{escape(request.end_reason)}")
    if state is State.DENIED:
        return f":x: Denied by {mention(request.ended_by)}: {escape(request.end_reason)}"
    if state is State.CANCELLED:
        return ":leftwards_arrow_with_hook: Cancelled by the requester."
    if state is State.TIMED_OUT:
        return f":zzz: Timed out: {escape(request.end_reason)}."
    return f":boom: Failed: {escape(request.end_reason)}"


def _fields(request: AccessRequest) -> Block:
    reason = escape(request.reason) or "_(none given)_"
    fields = [
        f"*Requester*\n{mention(request.requester_id)}",
        f"*Access*\n{target(request)}",
        f"*Duration*\n{format_duration(request.duration)}",
        f"*Identity granted*\n`{escape(request.subject)}`",
        f"*Reason*\n{reason}",
    ]
    return {"type": "section", "fields": [{"type": "mrkdwn", "text": f} for f in fields]}


def approval_message(request: AccessRequest, missing: int,
                     note: str | None = None) -> tuple[str, list[Block]]:
    """The approvers' message: who asks for what and why; buttons while it is pending;
    ``note`` (the bot's own words, such as :func:`delay_note`) under the status."""
    line = status(request, missing) + (f"\n{note}" if note else "")
    blocks = [_text(title(request)), _fields(request), _context(line)]
    decisions = [a for a in request.approvals if a.approver_id != POLICY_ACTOR]
    if decisions:
        lines = [f"{':white_check_mark:' if a.decision is Decision.APPROVE else ':x:'} "
                 f"{mention(a.approver_id)} {when(a.decided_at)}"
                 + (f": {escape(a.comment)}" if a.comment else "") for a in decisions]
        # One context per decision: a quorum of long comments stays readable and within limits.
        blocks += [_context(line) for line in lines[:LIMITS["message_blocks"] - 5]]
    if request.state is State.PENDING:
        blocks.append(_actions(request.id, button("Approve", APPROVE, request.id, "primary"),
                               button("Deny", DENY, request.id, "danger")))
    return fit_message(f"{summary(request)}: {status(request, missing)}", blocks)


def delay_note(notice: Notice) -> str:
    """What a slow grant looks like to the approvers and the requester."""
    slow = notice.detail or "the backend is slow"
    return f":hourglass_flowing_sand: Still working on it: {slow}."


def requester_message(notice: Notice) -> tuple[str, list[Block]] | None:
    """The DM to the requester for ``notice``, or None when they need not hear of it."""
    request = notice.request
    label = f"#{request.id} ({target(request)})"
    kind = notice.kind
    buttons: list[Block] = []
    if kind is NoticeKind.ACTIVE:
        text = (f":large_green_circle: Your access {label} is active until "
                f"{when(request.ends_at)}.")
        if notice.delivery is not None:
            text += f"\n{notice.delivery.instructions}"
        buttons = [grant_buttons(request)]
    elif kind is NoticeKind.EXTENDED and notice.parent is not None:
        text = (f":hourglass_flowing_sand: Grant #{notice.parent.id} now lasts until "
                f"{when(notice.parent.ends_at)}.")
        if notice.delivery is not None and notice.delivery.instructions:
            text += f"\n{notice.delivery.instructions}"
        buttons = [grant_buttons(notice.parent)]
    elif kind is NoticeKind.APPROVED:
        text = f":white_check_mark: Request {label} was approved; granting access now."
    elif kind is NoticeKind.DENIED:
        text = (f":x: Request {label} was denied by {mention(request.ended_by)}: "
                f"{escape(request.end_reason)}")
    elif kind is NoticeKind.TIMED_OUT:
        text = (f":zzz: Request {label} timed out: {escape(request.end_reason)}. "
                "Ask again if you still need it.")
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
    return fit_message(text, [*sections(text), *buttons])


REMINDER_LISTED = 45
"""Grants shown one by one, each with its Extend button, in the weekly reminder."""


def weekly_reminder(grants: Sequence[AccessRequest], now: datetime) -> tuple[str, list[Block]]:
    """The DM to someone whose grants end within a week: one block per grant with its Extend
    button, the rest counted with the command that lists them."""
    text = f":calendar: {len(grants)} of your grants end within a week."
    blocks: list[Block] = [_text(text)]
    for grant in grants[:REMINDER_LISTED]:
        blocks.append({**_text(f"{request_line(grant, now)}, ends {when(grant.ends_at)}"),
                       "accessory": button("Extend", EXTEND, grant.id)})
    if len(grants) > REMINDER_LISTED:
        blocks.append(_context(f"…and {len(grants) - REMINDER_LISTED} more: "
                               "`/k8s-access list active` shows them all."))
    return fit_message(text, blocks)


REVIEW_DETAILED = 24
"""Grants still to decide shown one by one, with Keep and Revoke, in the weekly review (two
blocks each, within Slack's 50); beyond that all of them go in a CSV file."""


def access_review_csv(grants: Sequence[AccessRequest]) -> str:
    buffer = io.StringIO()
    writer = csv.writer(buffer, lineterminator="\n")
    writer.writerow(["id", "requester", "cluster", "role", "namespace", "subject", "since",
                     "until", "approved_by"])
    for grant in grants:
        writer.writerow([grant.id, grant.requester_id, grant.cluster, grant.role,
                         grant.namespace or "", grant.subject,
                         grant.activated_at.isoformat() if grant.activated_at else "",
                         grant.ends_at.isoformat() if grant.ends_at else "",
                         " ".join(grant.approvers_so_far())])
    return buffer.getvalue()


def _review_line(item: ReviewItem) -> str:
    grant = item.grant
    approvers = ", ".join(mention(a) for a in grant.approvers_so_far()) or "-"
    carried = "\n:repeat: _Carried over: nobody reviewed it last week._" if item.carried_over \
        else ""
    return (f"*#{grant.id}* {mention(grant.requester_id)} on *{target(grant)}* as "
            f"`{escape(grant.subject)}`\nsince {when(grant.activated_at)}, until "
            f"{when(grant.ends_at)}, approved by {approvers}{carried}")


def _review_outcome(item: ReviewItem) -> str:
    grant = item.grant
    head = f"*#{grant.id}* {mention(grant.requester_id)} on *{target(grant)}*"
    decision = item.decision
    if decision is not None and decision.verdict is Verdict.KEEP:
        return f":white_check_mark: {head}: kept by {mention(decision.by)} {when(decision.at)}"
    if decision is not None:
        return f":no_entry: {head}: revoked by {mention(decision.by)} {when(decision.at)}"
    return f":checkered_flag: {head}: {grant.state.value.replace('_', ' ')}, nothing to review"


def access_review(review: AccessReview) -> tuple[str, list[Block]]:
    """The weekly review as it stands: progress ("N of M reviewed"), each grant still to
    decide with Revoke (beside it) and Keep (under it), the decided ones one line each. Beyond
    :data:`REVIEW_DETAILED` grants to decide the rest is counted (they are in the CSV)."""
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
                           "text": {"type": "mrkdwn", "text": _review_line(item)},
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


def filed_message(request: AccessRequest, missing: int) -> str:
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


def section(text: str) -> Block:
    """One mrkdwn section, for messages that are a single paragraph."""
    return _text(text)


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
    reasons = "; ".join(undelivered_reason(u) for u in reach.undelivered)
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
    return "; ".join(undelivered_reason(u) for u in reach.undelivered) or "no approvers are set"


def unreachable_message(request: AccessRequest, reach: Reach) -> str:
    """The requester's DM when nobody could be told of their request."""
    return (f":warning: Request #{request.id} ({target(request)}) reached no approver: "
            f"{_reasons(reach)}; {_told(reach)}. It stays pending and the approvers are told again "
            f"later; `/k8s-access cancel {request.id}` withdraws it.")


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
    return (f":rotating_light: {title(request)} from {mention(request.requester_id)} "
            f"({target(request)}) reached no approver: {_reasons(reach)}. Fix the approvers "
            "channel or the approvers in the configuration; the approvers are told again later.")


# --- lists and overviews ------------------------------------------------------------------


def request_line(request: AccessRequest, now: datetime) -> str:
    left = request.time_left(now)
    extra = f", {format_duration(left)} left" if request.state is State.ACTIVE and left else ""
    owner = mention(request.requester_id)
    kind = "extension of #" + str(request.parent_id) + " " if request.kind is Kind.EXTENSION \
        else ""
    return (f"*#{request.id}* {kind}{target(request)} for {owner}: "
            f"{request.state.value.replace('_', ' ')}{extra}")


def listing(scope: str, found: Sequence[AccessRequest], now: datetime) -> tuple[str, list[Block]]:
    scope = escape(scope)
    if not found:
        text = f"Nothing in `{scope}`."
        return fit_message(text, [_text(text)])
    shown = list(found)[:MAX_LISTED]
    blocks = [_text(f"*{scope.capitalize()}* ({len(found)})")]
    blocks += [_text(request_line(r, now)) for r in shown]
    if len(found) > len(shown):
        blocks.append(_context(f"…and {len(found) - len(shown)} more."))
    return fit_message(f"{len(found)} requests in {scope}", blocks)


def clusters_overview(config: Config) -> str:
    lines = []
    for name, cluster in config.clusters.items():
        head = f"*{escape(name)}* ({cluster.backend})"
        if cluster.description:
            head += f": {escape(cluster.description)}"
        lines.append(head)
        for role in cluster.roles:
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
            extra = f"; {'; '.join(extras)}" if extras else ""
            lines.append(f"  • `{escape(role)}`: up to {format_duration(policy.max_duration)} "
                         f"(default {format_duration(policy.default_duration)}), "
                         f"approved by {who}{extra}")
    return "\n".join(lines)


def home_view(mine: Iterable[AccessRequest], waiting: Iterable[AccessRequest], now: datetime,
              missing: dict[int, int]) -> dict[str, Any]:
    blocks: list[Block] = [{"type": "header", "text": _plain("Kubernetes access")}]
    mine = list(mine)
    active = [r for r in mine if r.state is State.ACTIVE and r.kind is Kind.ACCESS]
    pending = [r for r in mine if r.state in (State.PENDING, State.APPROVED)]
    blocks.append(_text("*Your active grants*" if active else "_No active grants._"))
    for request in active[:MAX_LISTED]:
        blocks += [_text(request_line(request, now)), grant_buttons(request)]
    blocks.append({"type": "divider"})
    blocks.append(_text("*Your pending requests*" if pending else "_No pending requests._"))
    for request in pending[:MAX_LISTED]:
        state = status(request, missing.get(request.id or 0, 0))
        blocks.append(_text(f"{request_line(request, now)}\n{state}"))
        if request.state is State.PENDING:
            blocks.append(_actions(request.id, button("Cancel", CANCEL, request.id)))
    waiting = list(waiting)
    if waiting:
        blocks.append({"type": "divider"})
        blocks.append(_text(f"*Waiting for your decision* ({len(waiting)})"))
        for request in waiting[:MAX_LISTED]:
            reason = escape(request.reason) or "no reason given"
            blocks.append(_text(f"{summary(request)}\n_{reason}_"))
            blocks.append(_actions(request.id, button("Approve", APPROVE, request.id, "primary"),
                                   button("Deny", DENY, request.id, "danger")))
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
    element: Block = {"type": "static_select", "action_id": action_id,
                      "options": [_option(o) for o in options][:100]}
    if initial in options:
        element["initial_option"] = _option(initial)  # type: ignore[arg-type]
    return element


def request_modal(config: Config, prefill: dict[str, Any]) -> dict[str, Any]:
    """The request form, pre-filled; the role list follows the chosen cluster."""
    clusters = list(config.clusters)
    cluster = prefill.get("cluster") if prefill.get("cluster") in clusters else (
        clusters[0] if len(clusters) == 1 else None)
    blocks = [_input("cluster", "Cluster", _select(PICK_CLUSTER, clusters, cluster),
                     dispatch=True)]
    role = prefill.get("role")
    if cluster is not None:
        roles = list(config.clusters[cluster].roles)
        role = role if role in roles else (roles[0] if len(roles) == 1 else None)
        blocks.append(_input("role", "Role", _select(PICK_ROLE, roles, role), dispatch=True))
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
            blocks.append(_input("reason", "Reason",
                                 {"type": "plain_text_input", "action_id": "reason",
                                  "multiline": True, "initial_value": prefill.get("reason", "")},
                                 optional=not policy.require_reason))
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
