"""The access request and the records around it, as plain data.

One :class:`AccessRequest` follows a person's ask from filing to its end. An extension is an
access request of kind ``extension`` whose ``parent_id`` names the grant it lengthens; it follows
the same lifecycle and, once applied, shares its parent's end.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime, timedelta
from enum import StrEnum
from typing import Any


class State(StrEnum):
    PENDING = "pending"
    APPROVED = "approved"
    ACTIVE = "active"
    EXPIRED = "expired"
    REVOKED = "revoked"
    DENIED = "denied"
    CANCELLED = "cancelled"
    TIMED_OUT = "timed_out"
    FAILED = "failed"

    @property
    def is_final(self) -> bool:
        return self in FINAL_STATES


FINAL_STATES = frozenset(
    {State.EXPIRED, State.REVOKED, State.DENIED, State.CANCELLED, State.TIMED_OUT, State.FAILED}
)
WAITING_STATES = (State.PENDING, State.APPROVED)
"""Asked for and not yet granted: waiting for a decision, or approved ahead of its window."""
OPEN_STATES = (*WAITING_STATES, State.ACTIVE)
"""Waiting or granted: what a second request for the same access would duplicate."""


class Kind(StrEnum):
    ACCESS = "access"
    EXTENSION = "extension"


class Decision(StrEnum):
    APPROVE = "approve"
    DENY = "deny"


POLICY_ACTOR = "policy"
"""The approver recorded when the policy itself approved (auto-approve, break-glass)."""


@dataclass(frozen=True)
class Actor:
    """Who acts: a user with the groups of users they belong to, or the bot itself."""

    user_id: str
    groups: frozenset[str] = frozenset()
    is_admin: bool = False

    def among(self, principals: frozenset[str]) -> bool:
        """Whether they are one of ``principals`` or in one of its groups: the one test of
        membership every rule about people uses."""
        return self.user_id in principals or bool(self.groups & principals)


@dataclass
class Approval:
    approver_id: str
    decision: Decision
    decided_at: datetime
    comment: str = ""
    duration: timedelta | None = None
    """For an approval: the shorter duration approved ("approve for less"); None: as asked."""


@dataclass(frozen=True)
class Undelivered:
    """A message that did not reach ``recipient`` (a channel or user ID), and why, in the
    messaging service's own words (``not_in_channel``, ``user_disabled``, …)."""

    recipient: str
    error: str
    retryable: bool = field(default=False, compare=False)
    """The service was down or rate-limiting (or a user group could not be listed): sending
    again later may work. What failed and why is the record; this is advice about it."""


@dataclass(frozen=True)
class Reach:
    """Where the approvers of a request were told of it: the approvers channel, or the
    approvers DMed one by one; what could not be reached; and the admins told when nobody
    could be."""

    channel: str | None = None
    people: tuple[str, ...] = ()
    undelivered: tuple[Undelivered, ...] = ()
    admins: tuple[str, ...] = ()

    @property
    def reached(self) -> bool:
        return self.channel is not None or bool(self.people)

    @property
    def may_reach_later(self) -> bool:
        """Nobody was reached, and some of it failed for a reason that may pass (Slack down
        or rate-limiting): sending again later may reach them."""
        return not self.reached and any(u.retryable for u in self.undelivered)


@dataclass(frozen=True)
class MessageRef:
    """Where a message about a request was posted, to find it again and update it: the
    conversation it is in and its ID there, both as the messaging service names them (in
    Slack: the channel ID and the message's ``ts``)."""

    conversation: str
    message: str


@dataclass
class AccessRequest:
    requester_id: str
    cluster: str
    role: str
    duration: timedelta
    reason: str
    subject: str
    created_at: datetime
    state: State = State.PENDING
    kind: Kind = Kind.ACCESS
    namespace: str | None = None
    parent_id: int | None = None
    break_glass: bool = False
    approved_by_policy: bool = False
    decided_at: datetime | None = None
    activated_at: datetime | None = None
    ends_at: datetime | None = None
    ended_at: datetime | None = None
    ended_by: str | None = None
    end_reason: str | None = None
    last_error: str | None = None
    user_csr: str | None = None
    """A CSR the requester pasted (roles with ``allow_own_csr``): public, so it may be stored."""
    grantee_id: str | None = None
    """Who receives the access when someone asked on their behalf; None: the requester."""
    window_start: datetime | None = None
    """A scheduled window's start (UTC); the window is ``[window_start, window_start +
    granted_duration]``. None: access starts once approved."""
    escalations_applied: int = 0
    """How many of the role's escalation steps have added their approvers, in order."""
    renotified: int = 0
    """How many times the approvers were reminded of this pending request."""
    approvals: list[Approval] = field(default_factory=list)
    backend_ref: dict[str, Any] = field(default_factory=dict)
    id: int | None = None
    version: int = 0
    notified: Reach | None = field(default=None, compare=False)
    """Where the approvers were told of it, as the notifier reported when it was filed; not
    stored, so None on a request read back from the store."""
    on_call: str | None = field(default=None, compare=False)
    """Why being on call approved it, or why not (:attr:`bot.domain.oncall.OnCallDecision.detail`)
    for a role with on-call auto-approval, as found when it was filed; not stored (the
    ``requested`` audit event keeps it)."""
    approvals_missing: int = field(default=0, compare=False)
    """Approvals it still waits for, as the use case that returned it counted them
    (:func:`bot.domain.lifecycle.approvals_missing`); not stored, so 0 on a request read back
    from the store."""

    @property
    def label(self) -> str:
        return f"#{self.id}" if self.id is not None else "the new request"

    @property
    def target(self) -> str:
        """``cluster/role`` with the namespace when the role is namespaced."""
        base = f"{self.cluster}/{self.role}"
        return f"{base} in namespace {self.namespace}" if self.namespace else base

    @property
    def grantee(self) -> str:
        """The Slack user who receives the access: the person asked for, or the requester."""
        return self.grantee_id or self.requester_id

    @property
    def parties(self) -> frozenset[str]:
        """The people the request is about: who asked and who receives the access (one
        person unless asked on someone's behalf). They never decide on it."""
        return frozenset({self.requester_id, self.grantee})

    @property
    def is_active_grant(self) -> bool:
        """Access being held now (not an extension, which lengthens one)."""
        return self.kind is Kind.ACCESS and self.state is State.ACTIVE

    @property
    def on_behalf(self) -> bool:
        return self.grantee_id is not None and self.grantee_id != self.requester_id

    @property
    def granted_duration(self) -> timedelta:
        """The duration asked, or the shortest an approver approved if shorter."""
        approved = [a.duration for a in self.approvals
                    if a.decision is Decision.APPROVE and a.duration is not None]
        return min([self.duration, *approved])

    @property
    def window_end(self) -> datetime | None:
        """A scheduled window's end, for the duration granted so far; None when unscheduled."""
        if self.window_start is None:
            return None
        return self.window_start + self.granted_duration

    def approvers_so_far(self) -> list[str]:
        return [a.approver_id for a in self.approvals if a.decision is Decision.APPROVE]

    def time_left(self, now: datetime) -> timedelta | None:
        if self.ends_at is None:
            return None
        return max(self.ends_at - now, timedelta())


@dataclass(frozen=True)
class AuditEvent:
    """One line of the append-only audit log: who did what to which request, when and why."""

    at: datetime
    actor: str
    action: str
    request_id: int | None = None
    details: dict[str, Any] = field(default_factory=dict)
    id: int | None = None


class OperationKind(StrEnum):
    GRANT = "grant"
    EXTEND = "extend"
    REVOKE = "revoke"


class OperationState(StrEnum):
    PENDING = "pending"
    DONE = "done"
    FAILED = "failed"


@dataclass
class Operation:
    """A backend call the bot owes: recorded before it is made, completed after it succeeded.

    A row per request and kind makes the call happen once; a lease lets one worker hold it; a
    worker that dies mid-call lets the lease lapse and the next pass finishes the work.
    """

    request_id: int
    kind: OperationKind
    next_attempt_at: datetime
    state: OperationState = OperationState.PENDING
    attempts: int = 0
    intent: dict[str, Any] = field(default_factory=dict)
    """Why the call is owed (for a revocation: by whom, why, expiry or revocation)."""
    prepared: dict[str, Any] | None = None
    """What the backend looked like before the first attempt, so that retries undo exactly it."""
    lease_owner: str | None = None
    lease_until: datetime | None = None
    last_error: str | None = None
    id: int | None = None


@dataclass(frozen=True)
class IdentityLink:
    """A Slack user's tie to an account elsewhere (``provider`` is ``gitlab``)."""

    slack_user_id: str
    provider: str
    username: str
    confirmed: bool
    created_at: datetime
    confirmed_by: str | None = None
