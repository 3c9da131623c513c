"""Block Kit, built by pure functions from domain objects. No client, no I/O.

Every message has a plain-text fallback (``text``) for notifications and screen readers.
"""

from __future__ import annotations

import csv
import io
import json
from collections.abc import Iterable, Sequence
from datetime import datetime
from typing import Any

from bot.config import Config
from bot.domain.durations import format_duration
from bot.domain.model import POLICY_ACTOR, AccessRequest, Decision, Kind, State
from bot.domain.ports import Notice, NoticeKind

Block = dict[str, Any]

APPROVE, DENY, REVOKE, EXTEND, CANCEL = "approve", "deny", "revoke", "extend", "cancel"
CONFIRM_LINK = "confirm_link"
REQUEST_MODAL, DENY_MODAL, EXTEND_MODAL = "request_modal", "deny_modal", "extend_modal"
PICK_CLUSTER, PICK_ROLE = "pick_cluster", "pick_role"
MAX_LISTED = 15


def mention(who: str | None) -> str:
    if not who:
        return "someone"
    if who == POLICY_ACTOR:
        return "the policy"
    if who.startswith("cli:"):
        return f"operator {who.removeprefix('cli:')}"
    if who.startswith("S"):
        return f"<!subteam^{who}>"
    return f"<@{who}>"


def when(moment: datetime | None) -> str:
    if moment is None:
        return "-"
    return (f"<!date^{int(moment.timestamp())}^{{date_short_pretty}} {{time}}|"
            f"{moment.strftime('%Y-%m-%d %H:%M UTC')}>")


def _text(text: str) -> Block:
    return {"type": "section", "text": {"type": "mrkdwn", "text": text[:3000]}}


def _context(text: str) -> Block:
    return {"type": "context", "elements": [{"type": "mrkdwn", "text": text[:3000]}]}


def _plain(text: str) -> dict[str, Any]:
    return {"type": "plain_text", "text": text[:150], "emoji": True}


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
    return f"{mention(request.requester_id)} asks {length} {verb} *{request.target}*"


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
            line += f"\n:warning: The backend failed, retrying: {request.last_error}"
        return line
    if state is State.ACTIVE:
        return (f":large_green_circle: Active until {when(request.ends_at)} "
                f"(approved by {approvers}).")
    if state is State.EXPIRED:
        return f":checkered_flag: Expired {when(request.ended_at)}."
    if state is State.REVOKED:
        return (f":no_entry: Revoked by {mention(request.ended_by)} {when(request.ended_at)}: "
                f"{request.end_reason}")
    if state is State.DENIED:
        return f":x: Denied by {mention(request.ended_by)}: {request.end_reason}"
    if state is State.CANCELLED:
        return ":leftwards_arrow_with_hook: Cancelled by the requester."
    if state is State.TIMED_OUT:
        return f":zzz: Timed out: {request.end_reason}."
    return f":boom: Failed: {request.end_reason}"


def _fields(request: AccessRequest) -> Block:
    reason = request.reason or "_(none given)_"
    fields = [
        f"*Requester*\n{mention(request.requester_id)}",
        f"*Access*\n{request.target}",
        f"*Duration*\n{format_duration(request.duration)}",
        f"*Identity granted*\n`{request.subject}`",
        f"*Reason*\n{reason}",
    ]
    return {"type": "section", "fields": [{"type": "mrkdwn", "text": f[:2000]} for f in fields]}


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
                 + (f": {a.comment}" if a.comment else "") for a in decisions]
        blocks.append(_context("\n".join(lines)))
    if request.state is State.PENDING:
        blocks.append(_actions(request.id, button("Approve", APPROVE, request.id, "primary"),
                               button("Deny", DENY, request.id, "danger")))
    return f"{summary(request)}: {status(request, missing)}", blocks


def delay_note(notice: Notice) -> str:
    """What a slow grant looks like to the approvers and the requester."""
    slow = notice.detail or "the backend is slow"
    return f":hourglass_flowing_sand: Still working on it: {slow}."


def requester_message(notice: Notice) -> tuple[str, list[Block]] | None:
    """The DM to the requester for ``notice``, or None when they need not hear of it."""
    request = notice.request
    label = f"#{request.id} ({request.target})"
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
                f"{request.end_reason}")
    elif kind is NoticeKind.TIMED_OUT:
        text = (f":zzz: Request {label} timed out: {request.end_reason}. "
                "Ask again if you still need it.")
    elif kind is NoticeKind.FAILED:
        text = (f":boom: Access {label} could not be granted: {request.end_reason}\n"
                "The platform team has been told; ask again once it is fixed.")
    elif kind is NoticeKind.RETRYING:
        text = (f":warning: Request {label} is approved but the backend failed "
                f"({request.last_error}). The bot keeps retrying; you will hear when it works.")
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
                f"{request.end_reason}")
    else:
        return None
    if kind in (NoticeKind.EXPIRED, NoticeKind.REVOKED) and request.backend_ref.get(
            "certificate_not_after"):
        text += ("\nYour client certificate stays valid until it expires, but its RBAC "
                 "binding is gone, so it grants nothing.")
    return text, [_text(text), *buttons]


def weekly_reminder(grants: Sequence[AccessRequest], now: datetime) -> tuple[str, list[Block]]:
    text = f":calendar: {len(grants)} of your grants end within a week."
    blocks: list[Block] = [_text(text)]
    for grant in grants[:MAX_LISTED * 3]:
        blocks += [_text(f"{request_line(grant, now)}, ends {when(grant.ends_at)}"),
                   _actions(grant.id, button("Extend", EXTEND, grant.id))]
    return text, blocks[:100]


REVIEW_DETAILED = 96
"""Grants shown one by one, with a Revoke button, in the weekly review; the rest go in a CSV."""


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


def access_review(grants: Sequence[AccessRequest], total: int,
                  now: datetime) -> list[tuple[str, list[Block]]]:
    """The weekly review of ``grants`` (the first of ``total``), in messages that fit Slack's
    50-block limit."""
    confirm = {"title": _plain("Revoke access?"),
               "text": {"type": "mrkdwn", "text": "The grant ends now."},
               "confirm": _plain("Revoke"), "deny": _plain("Keep it")}
    head = f":mag: Access review: {total} active grant{'s' if total != 1 else ''}."
    if total > len(grants):
        head += f" The first {len(grants)} are below; all of them are in the attached CSV."
    messages = []
    per_message = 24
    for start in range(0, max(len(grants), 1), per_message):
        chunk = grants[start:start + per_message]
        blocks: list[Block] = [_text(head if start == 0 else f"{head} (continued)")]
        for grant in chunk:
            approvers = ", ".join(mention(a) for a in grant.approvers_so_far()) or "-"
            blocks.append({
                "type": "section",
                "text": {"type": "mrkdwn", "text": (
                    f"*#{grant.id}* {mention(grant.requester_id)} on *{grant.target}* as "
                    f"`{grant.subject}`\nsince {when(grant.activated_at)}, until "
                    f"{when(grant.ends_at)}, approved by {approvers}")[:3000]},
                "accessory": button("Revoke", REVOKE, grant.id, "danger", confirm),
            })
        messages.append((head, blocks))
    return messages


def filed_message(request: AccessRequest, missing: int) -> str:
    if request.state is State.PENDING:
        return (f"Request #{request.id} filed: {summary(request)}. "
                f"Waiting for {missing} approval{'s' if missing != 1 else ''}.")
    return f"Request #{request.id}: {status(request, missing)}"


# --- lists and overviews ------------------------------------------------------------------


def request_line(request: AccessRequest, now: datetime) -> str:
    left = request.time_left(now)
    extra = f", {format_duration(left)} left" if request.state is State.ACTIVE and left else ""
    owner = mention(request.requester_id)
    kind = "extension of #" + str(request.parent_id) + " " if request.kind is Kind.EXTENSION \
        else ""
    return (f"*#{request.id}* {kind}{request.target} for {owner}: "
            f"{request.state.value.replace('_', ' ')}{extra}")


def listing(scope: str, found: Sequence[AccessRequest], now: datetime) -> tuple[str, list[Block]]:
    if not found:
        text = f"Nothing in `{scope}`."
        return text, [_text(text)]
    shown = list(found)[:MAX_LISTED]
    blocks = [_text(f"*{scope.capitalize()}* ({len(found)})")]
    blocks += [_text(request_line(r, now)) for r in shown]
    if len(found) > len(shown):
        blocks.append(_context(f"…and {len(found) - len(shown)} more."))
    return f"{len(found)} requests in {scope}", blocks


def clusters_overview(config: Config) -> str:
    lines = []
    for name, cluster in config.clusters.items():
        head = f"*{name}* ({cluster.backend})"
        if cluster.description:
            head += f": {cluster.description}"
        lines.append(head)
        for role in cluster.roles:
            policy = config.policy(name, role)
            who = ", ".join(mention(a) for a in sorted(policy.approvers)) or "the policy"
            extras = []
            if policy.namespaces:
                extras.append(f"namespaces {', '.join(policy.namespaces)}")
            if policy.auto_approve_up_to:
                extras.append(f"auto-approved up to {format_duration(policy.auto_approve_up_to)}")
            if policy.break_glass:
                extras.append("break-glass")
            if policy.approvals_required > 1:
                extras.append(f"{policy.approvals_required} approvals")
            extra = f"; {'; '.join(extras)}" if extras else ""
            lines.append(f"  • `{role}`: up to {format_duration(policy.max_duration)} "
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
            blocks.append(_text(f"{summary(request)}\n_{request.reason or 'no reason given'}_"))
            blocks.append(_actions(request.id, button("Approve", APPROVE, request.id, "primary"),
                                   button("Deny", DENY, request.id, "danger")))
    blocks.append(_context("Ask for access with `/k8s-access request`; `/k8s-access help` "
                           "shows every command."))
    return {"type": "home", "blocks": blocks[:100]}


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
    return {
        "type": "modal",
        "callback_id": REQUEST_MODAL,
        "title": _plain("Kubernetes access"),
        "submit": _plain("Request"),
        "close": _plain("Cancel"),
        "private_metadata": json.dumps({k: v for k, v in prefill.items() if v}),
        "blocks": blocks,
    }


def deny_modal(request: AccessRequest) -> dict[str, Any]:
    return {
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
    }


def extend_modal(request: AccessRequest) -> dict[str, Any]:
    return {
        "type": "modal",
        "callback_id": EXTEND_MODAL,
        "title": _plain(f"Extend grant #{request.id}"),
        "submit": _plain("Extend"),
        "close": _plain("Back"),
        "private_metadata": str(request.id),
        "blocks": [
            _text(f"*{request.target}* ends {when(request.ends_at)}."),
            _input("duration", "How much longer?", {"type": "plain_text_input",
                                                    "action_id": "duration",
                                                    "initial_value": "1h"},
                   hint="Like 90m, 4h or 1h30m."),
            _input("reason", "Reason", {"type": "plain_text_input", "action_id": "reason",
                                        "multiline": True}, optional=True),
        ],
    }
