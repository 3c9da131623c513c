"""Who may approve what, for how long: the policy of one role on one cluster.

Configuration builds these objects (``bot.config``); the lifecycle reads them. Cluster-wide
settings are already folded into each role's policy, with the role's own overrides on top.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import timedelta

from bot.domain.model import Actor
from bot.domain.oncall import OnCallPolicy

DEFAULT_MAX_SCHEDULE_AHEAD = timedelta(days=14)


@dataclass(frozen=True)
class EscalationStep:
    """Approvers added to a request still pending ``after`` its filing (see
    :mod:`bot.domain.escalation`)."""

    after: timedelta
    approvers: frozenset[str]
    """Slack user IDs and user group IDs, like :attr:`RolePolicy.approvers`."""


@dataclass(frozen=True)
class RolePolicy:
    cluster: str
    role: str
    approvers: frozenset[str]
    """The principals that may approve: users and groups of users, by the opaque IDs the
    directory gives them (see :class:`bot.domain.ports.Directory`)."""
    cluster_approvers: frozenset[str]
    """Everyone who approves any role of the cluster: they may also revoke its grants."""
    max_duration: timedelta
    default_duration: timedelta
    approvals_required: int = 1
    require_reason: bool = True
    pending_timeout: timedelta = timedelta(hours=24)
    break_glass: bool = False
    auto_approve_up_to: timedelta | None = None
    self_extend: bool = False
    allow_own_csr: bool = False
    namespaces: tuple[str, ...] = ()
    """Non-empty for a namespaced role: a request must name one of these namespaces."""
    requesters: frozenset[str] | None = None
    """Slack user IDs and user group IDs who may ask for this role; None: everyone."""
    request_for_others: bool = False
    """Anyone who may ask may also ask on someone else's behalf (approvers and admins always
    may)."""
    max_schedule_ahead: timedelta = DEFAULT_MAX_SCHEDULE_AHEAD
    """How far ahead of its filing a scheduled window may start."""
    escalation: tuple[EscalationStep, ...] = ()
    """Ordered by ``after``, each earlier than :attr:`pending_timeout`."""
    reason_pattern: str | None = None
    """A regular expression (Python ``re`` syntax) a reason must contain a match of."""
    reason_hint: str | None = None
    """Said to a person whose reason misses :attr:`reason_pattern`."""
    ticket_url: str | None = None
    """A link template with ``{ticket}``, filled with the text :attr:`reason_pattern` matched."""
    on_call: OnCallPolicy | None = None
    """``auto_approve_on_call``: who is on call is approved by policy (``bot.domain.oncall``)."""
    user_groups: frozenset[str] = frozenset()
    """Which of the principals this policy names (approvers, cluster approvers, requesters,
    escalation steps) are groups of users: the configuration tells them apart, so that no rule
    reads an ID's form."""

    @property
    def namespaced(self) -> bool:
        return bool(self.namespaces)

    def is_approver(self, actor: Actor) -> bool:
        """One of the role's own approvers (those escalation adds aside:
        :func:`bot.domain.escalation.may_decide`)."""
        return actor.among(self.approvers)

    def is_approver_or_admin(self, actor: Actor) -> bool:
        """Answers for the role: sees its pending requests, may ask for it on someone's
        behalf."""
        return actor.is_admin or self.is_approver(actor)

    def oversees(self, actor: Actor) -> bool:
        """Admins, and the approvers of any role of the cluster: they may revoke the role's
        grants, review them and see them listed."""
        return actor.is_admin or actor.among(self.approvers | self.cluster_approvers)

    def may_request(self, person: Actor) -> bool:
        """Whether ``person`` (their user groups resolved) is among :attr:`requesters`."""
        return self.requesters is None or person.among(self.requesters)

    def may_revoke(self, actor: Actor, grantee_id: str) -> bool:
        return actor.user_id == grantee_id or self.oversees(actor)

    def auto_approves(self, duration: timedelta) -> bool:
        return self.auto_approve_up_to is not None and duration <= self.auto_approve_up_to
