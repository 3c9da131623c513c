"""The ports the use cases talk through, as protocols.

Adapters implement them after their technology (``SqlAlchemyUnitOfWork``,
``GitLabMembershipGranter``, ``SlackNotifier``); the composition root picks them.
"""

from __future__ import annotations

import builtins
from collections.abc import Collection, Iterable, Iterator, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from enum import StrEnum
from typing import Any, Protocol, runtime_checkable

from bot.domain.model import (
    AccessRequest,
    AuditEvent,
    IdentityLink,
    Kind,
    MessageRef,
    Operation,
    OperationKind,
    Reach,
    State,
)
from bot.domain.reviews import AccessReview, ReviewDecision

# --- backends -----------------------------------------------------------------------------


@dataclass(frozen=True)
class UserInfo:
    """What the bot knows of a Slack user when it resolves their identity on a backend."""

    slack_user_id: str
    email: str | None = None
    name: str | None = None
    links: dict[str, str] = field(default_factory=dict)
    """Confirmed links by provider, e.g. ``{"gitlab": "alice"}``."""
    known: bool = True
    """False when the directory has no such person, or only a deactivated account."""
    tz: str | None = None
    """The IANA time zone their clock shows (Slack's ``users.info`` ``tz``, like
    ``Europe/Berlin``); None when unknown. ``--at 22:00`` is read in it."""
    deactivated: bool = False
    """Their account is deactivated (Slack's ``deleted``): nothing starts for them."""
    bot: bool = False
    """The account is a bot or an app's, not a person's (Slack's ``is_bot``, ``is_app_user``,
    ``is_workflow_bot``)."""
    guest: bool = False
    """A guest with a restricted account (Slack's ``is_restricted``, ``is_ultra_restricted``)."""
    external: bool = False
    """From another organisation, met in a shared channel (Slack Connect: ``is_stranger``)."""


@dataclass(frozen=True)
class GrantSpec:
    """Everything a backend needs to grant, extend or revoke one request's access."""

    request_id: int
    requester_id: str
    cluster: str
    role: str
    namespace: str | None
    subject: str
    ends_at: datetime
    user_csr: str | None = None


@dataclass(frozen=True)
class Delivery:
    """How the grantee connects: a message and perhaps a file such as a kubeconfig.

    The file may hold a private key: it is handed to the notifier and then dropped, never
    stored and never logged (its ``repr`` hides the content).
    """

    instructions: str
    filename: str | None = None
    content: bytes | None = field(default=None, repr=False)


@dataclass(frozen=True)
class GrantResult:
    reference: dict[str, Any]
    """What revocation needs to undo exactly this grant; stored with the request."""
    delivery: Delivery


class Granter(Protocol):
    """One cluster's backend: GitLab group membership, X509 certificate, or RBAC binding."""

    def resolve_subject(self, user: UserInfo) -> str:
        """The identity the grant will carry; :class:`PolicyViolation` when it cannot be found."""
        ...

    def check_user_csr(self, csr_pem: str, subject: str) -> None:
        """Refuse a pasted CSR unless it is valid for ``subject`` (certificate backend only)."""
        ...

    def prepare(self, spec: GrantSpec) -> dict[str, Any]:
        """Read what exists before granting (recorded once, before the first attempt)."""
        ...

    def grant(self, spec: GrantSpec, prepared: dict[str, Any]) -> GrantResult:
        """Grant access until ``spec.ends_at``. Idempotent for the same request."""
        ...

    def extend(self, spec: GrantSpec, reference: dict[str, Any]) -> GrantResult:
        """Make an existing grant last until the new ``spec.ends_at``."""
        ...

    def revoke(self, spec: GrantSpec, reference: dict[str, Any]) -> None:
        """Undo exactly what ``grant`` did. Access already gone counts as revoked."""
        ...

    def describe(self, spec: GrantSpec, reference: dict[str, Any]) -> str:
        """A line for people: what the backend holds for this grant."""
        ...

    def shared_object(self, reference: dict[str, Any]) -> str | None:
        """Who else's grant may hold the same backend object as ``reference``: a key equal
        for every grant, of any configured cluster, that names that object (a GitLab
        membership: one per GitLab, group and user); None where each grant has its own
        (a RoleBinding named after its request)."""
        ...


@runtime_checkable
class SharedObjects(Protocol):
    """A backend whose object several grants may hold at once (:meth:`Granter.shared_object`):
    one GitLab membership for two clusters' roles on the same group."""

    def share(self, holders: list[tuple[GrantSpec, dict[str, Any]]],
              known: list[dict[str, Any]]) -> list[dict[str, Any]]:
        """Leave the shared object exactly as ``holders`` explain (the live grants that keep
        it, each with its spec and reference): what was there before the bot touched it,
        raised to the highest level they need until the latest of their ends; restored, or
        removed where the bot made it, when no holder remains. ``known``: the references of
        every grant on the object not yet ended (those ending now too), which tell what was
        there before. Returns the holders' references, in order, as they now stand."""
        ...


@dataclass(frozen=True)
class ManagedGrant:
    """Something a backend holds that says it is the bot's: a RoleBinding labelled for this
    installation and cluster, or a GitLab membership the bot's user created."""

    name: str
    namespace: str | None
    request_id: int | None
    """The request it names (a binding's annotation); None when it names none (GitLab)."""
    subject: str | None
    created_at: datetime | None = None
    """When the backend made it (``creationTimestamp``, GitLab's ``created_at``)."""
    owned: bool = True
    """False for what only the bot's records can claim: a binding of an older version without
    installation and cluster labels; its request must be of this cluster and this subject."""
    key: tuple[int, ...] = ()
    """Backend identifiers the removal needs (GitLab: group ID, user ID)."""

    def describe(self) -> str:
        return f"{self.namespace}/{self.name}" if self.namespace else self.name


@runtime_checkable
class Reconcilable(Protocol):
    """A backend that can list what it holds for the bot, to find what no grant explains."""

    def managed(self) -> list[ManagedGrant]:
        """Everything this cluster's backend holds as the bot's; never another cluster's."""
        ...

    def explained_by(self, grant: ManagedGrant, request: AccessRequest) -> bool:
        """Whether ``request`` (of this cluster, in any state) is about ``grant``: the same
        group or binding."""
        ...

    def remove(self, grant: ManagedGrant) -> None: ...


@dataclass(frozen=True)
class ExternalAccount:
    username: str
    email: str | None
    """The email as the backend shows it to the bot; None when it keeps it private."""


@runtime_checkable
class AccountDirectory(Protocol):
    """A backend with accounts of its own that people link to (GitLab)."""

    def account(self, username: str) -> ExternalAccount | None: ...


# --- people -------------------------------------------------------------------------------


@dataclass(frozen=True)
class People:
    """The users some principals stand for (see :class:`Directory`)."""

    users: frozenset[str] = frozenset()
    unlisted: tuple[str, ...] = ()
    """Groups whose members could not be listed now; the others are expanded all the same."""


class Directory(Protocol):
    """Who people are (Slack in production).

    A *principal* is a user or a group of users, named by an opaque ID: the configuration's
    approvers and admins are principals. Only the directory tells users and groups apart.
    """

    def user_info(self, user_id: str) -> UserInfo: ...

    def groups_of(self, user_id: str, principals: frozenset[str]) -> frozenset[str]:
        """The groups among ``principals`` that ``user_id`` belongs to (users among them are
        not groups). A group that cannot be listed now counts as one they are not in."""
        ...

    def users(self, principals: Iterable[str]) -> People:
        """The users ``principals`` stand for: a user itself, a group its members (a group
        that does not exist has none). Never raises for a group it cannot list now: that one
        is named in :attr:`People.unlisted`."""
        ...


@dataclass(frozen=True)
class Audience:
    """Who hears of a request, resolved by the use case before it asks the notifier: user
    groups expanded, the requester left out of the approvers."""

    conversation: str | None = None
    """The approvers' shared conversation (channel), tried first; None when there is none."""
    approvers: tuple[str, ...] = ()
    """The approvers one by one, for when there is no conversation or it cannot be posted in."""
    unlisted: tuple[str, ...] = ()
    """Approver groups whose members could not be listed: reported as not reached."""
    admins: tuple[str, ...] = ()
    """Told when no approver could be (``UNREACHABLE``), or when a weekly message was refused."""


class NoticeKind(StrEnum):
    FILED = "filed"
    DECISION = "decision"
    APPROVED = "approved"
    ACTIVE = "active"
    DENIED = "denied"
    CANCELLED = "cancelled"
    TIMED_OUT = "timed_out"
    FAILED = "failed"
    RETRYING = "retrying"
    EXTENDED = "extended"
    EXPIRED = "expired"
    REVOKED = "revoked"
    EXPIRING = "expiring"
    STILL_PENDING = "still_pending"
    UNREACHABLE = "unreachable"
    """No approver could be told of the request: the requester and the admins hear why."""
    SLOW = "slow"
    """A grant's backend call is still running after a while: ``detail`` says what is slow."""
    ON_CALL_APPROVED = "on_call_approved"
    """A new request approved by policy because the requester is on call: announced to the
    approvers loudly, flagged for review (like break-glass, without the siren)."""
    ESCALATED = "escalated"
    """An escalation step added approvers to a waiting request: the approval message goes to
    them (``audience``), with its buttons."""
    REFRESHED = "refreshed"
    """The approval messages alone (``messages``), shown again as the request stands now: the
    update of a decision that raced another may have reached them after the newer one's."""


@dataclass(frozen=True)
class Notice:
    """Something people should hear about, sent after the transaction that caused it commits.

    It carries everything the notifier needs, resolved by the use case: the notifier reads no
    configuration, no policy and no database."""

    kind: NoticeKind
    request: AccessRequest
    actor: str | None = None
    delivery: Delivery | None = None
    parent: AccessRequest | None = None
    approvals_missing: int = 0
    """Approvals the request still needs (:func:`bot.domain.lifecycle.approvals_missing`)."""
    reach: Reach | None = None
    """For ``UNREACHABLE``: where the request could not go, and why."""
    detail: str | None = None
    audience: Audience | None = None
    """For ``FILED``, ``STILL_PENDING`` (the approvers) and ``UNREACHABLE`` (the admins)."""
    messages: tuple[MessageRef, ...] = ()
    """The request's approval messages posted before, oldest first: updated in place."""
    parent_messages: tuple[MessageRef, ...] = ()
    """The parent grant's approval messages, for a notice about an extension."""


@dataclass(frozen=True)
class Posted:
    """What the notifier did for one notice: where the approvers were told, and the approval
    messages it posted, which the use case stores for the notices that follow."""

    reach: Reach | None = None
    messages: tuple[MessageRef, ...] = ()


class Notifier(Protocol):
    def notify(self, notice: Notice) -> Posted | None:
        """Tell the people ``notice`` concerns, each on their own: one who cannot be reached
        never stops the others. ``reach``: for ``FILED`` and ``STILL_PENDING``, where the
        approvers were told (falling back from their conversation to each approver); for
        ``UNREACHABLE``, the admins told; None for the rest. None where the notifier cannot
        know at all."""
        ...

    def remind(self, user_id: str, grants: Sequence[AccessRequest],
               admins: Sequence[str] = ()) -> None:
        """The weekly DM: the user's grants that end soon, each with an Extend button.
        :class:`Undeliverable` when it could not be delivered; ``admins`` hear of a message
        refused as invalid."""
        ...

    def review(self, review: AccessReview, admins: Sequence[str] = ()) -> MessageRef | None:
        """The weekly access review's message to its audience (an approvers conversation or
        one approver): its progress, and the first grants still to decide with Keep and
        Revoke. The message posted, to update in place; None where the notifier keeps none.
        :class:`Undeliverable` when it could not be delivered; ``admins`` hear of a message
        refused as invalid."""
        ...

    def review_attachment(self, review: AccessReview, admins: Sequence[str] = ()) -> None:
        """What goes beside the review's message: all of its grants in a file, when there are
        more than the message shows; nothing otherwise. :class:`Undeliverable` when it could
        not be delivered; ``admins`` hear of one refused as invalid."""
        ...

    def update_review(self, review: AccessReview) -> None:
        """Show ``review`` as it stands now in its message (``review.message``)."""
        ...


# --- observation ------------------------------------------------------------------------


class Metrics(Protocol):
    """What operators graph: every audited action, backend calls, job runs, expiry lag."""

    def event(self, action: str, cluster: str) -> None: ...

    def backend_call(self, operation: str, cluster: str, seconds: float, outcome: str) -> None:
        """``outcome``: ok, temporary, permanent or unexpected."""
        ...

    def job_run(self, job: str, seconds: float, handled: int, ok: bool) -> None: ...

    def expiry_lag(self, seconds: float) -> None:
        """How long after its end a grant was actually revoked."""
        ...

    def undelivered(self, purpose: str, error: str, kind: str) -> None:
        """A message that reached nobody: ``purpose`` (approval, requester, reminder, …),
        the messaging service's ``error``, and its ``kind``: temporary (retried), recipient
        (that recipient cannot receive; skipped) or invalid (content refused; not retried)."""
        ...

    def review_unreviewed(self, cluster: str, count: int) -> None:
        """How many of ``cluster``'s active grants the last weekly review left undecided, set
        when the next one is made (they are carried into it)."""
        ...


# --- storage ------------------------------------------------------------------------------


class AccessRequests(Protocol):
    """The access requests and their extensions, with their approvals."""

    def add(self, request: AccessRequest) -> AccessRequest:
        """Store a new request; sets its ``id`` and ``version``."""
        ...

    def get(self, request_id: int, *, for_update: bool = False) -> AccessRequest:
        """The request; :class:`NotFound` when there is none. ``for_update`` locks its row."""
        ...

    def save(self, request: AccessRequest) -> None:
        """Write the request if nobody changed it since it was read, else
        :class:`ConcurrentModification`."""
        ...

    def save_many(self, requests: Sequence[AccessRequest]) -> None:
        """:meth:`save` for each of ``requests``, written together; one changed by someone
        else fails them all (:class:`ConcurrentModification`)."""
        ...

    def get_many(self, request_ids: Collection[int], *,
                 for_update: bool = False) -> list[AccessRequest]:
        """Those of ``request_ids`` that exist, by ID; ``for_update`` locks their rows."""
        ...

    def extensions_of(self, grant_ids: Collection[int],
                      states: Sequence[State]) -> list[AccessRequest]:
        """The extensions in ``states`` of the grants ``grant_ids``, by ID."""
        ...

    def find(
        self,
        *,
        requester_id: str | None = None,
        states: Sequence[State] | None = None,
        clusters: Sequence[str] | None = None,
        kind: Kind | None = None,
        parent_id: int | None = None,
        limit: int | None = 100,
        subject: str | None = None,
        grantee: str | None = None,
        involving: str | None = None,
    ) -> list[AccessRequest]:
        """Newest first; ``limit=None`` for all; ``subject``: the identity granted to;
        ``grantee``: the Slack user who receives the access (the requester unless asked on
        someone's behalf); ``involving``: requests a Slack user filed or receives."""
        ...

    def due_to_expire(self, now: datetime, limit: int, *,
                      skip_locked: bool = False) -> list[AccessRequest]:
        """Active grants whose end has come and whose revocation is not yet owed, soonest
        end first. ``skip_locked`` locks their rows for this transaction and passes over rows
        another transaction holds (another replica's batch), where the database can."""
        ...

    def next_to_expire(self) -> datetime | None:
        """The soonest end (UTC) among the grants :meth:`due_to_expire` would return once it
        has come, past when one is due already; ``None`` when there is none. Grants whose
        revocation is owed (being revoked, or failed and left to the retries) are not counted."""
        ...

    def pending_created_before(self, before: datetime, limit: int) -> list[AccessRequest]:
        """Pending requests filed at or before ``before``, oldest first."""
        ...

    def active_ending_before(self, until: datetime, limit: int) -> list[AccessRequest]:
        """Active grants whose end comes before ``until``, soonest first."""
        ...

    def pending_past(self, created_before: datetime, window_started_before: datetime,
                     limit: int) -> list[AccessRequest]:
        """Pending requests that may be past their deadline: unscheduled ones filed at or
        before ``created_before``, scheduled ones whose window started at or before
        ``window_started_before``; oldest first. Their rows are locked for the transaction,
        and rows another transaction holds are skipped (where the database can)."""
        ...


class AuditTrail(Protocol):
    """The append-only audit log."""

    def record(self, event: AuditEvent) -> None: ...

    def events(self, since: datetime | None = None) -> Iterator[AuditEvent]:
        """Every event (at or after ``since``), in the order they were recorded."""
        ...


class OperationQueue(Protocol):
    """The backend calls the bot owes, each held by one worker at a time under a lease."""

    def enqueue(self, operation: Operation) -> bool:
        """Owe an operation (leased already when it names its lease's owner); False when the
        same request already owes one of that kind."""
        ...

    def get(self, request_id: int, kind: OperationKind) -> Operation | None: ...

    def save(self, operation: Operation) -> None:
        """Write the operation back; :class:`NotFound` when it was never enqueued."""
        ...

    def claim(self, operation_id: int, owner: str, now: datetime, until: datetime) -> bool:
        """Take the lease on a pending, due operation nobody else holds."""
        ...

    def renew(self, operation_id: int, owner: str, until: datetime) -> bool:
        """Extend ``owner``'s lease on a pending operation to ``until``; False when it is no
        longer ``owner``'s (another worker claimed it after the lease lapsed, or it is done)."""
        ...

    def due(self, now: datetime, limit: int) -> list[Operation]:
        """Pending operations whose time has come and whose lease (if any) has lapsed."""
        ...

    def next_due(self, now: datetime) -> datetime | None:
        """When the soonest pending operation no live lease holds at ``now`` comes due (UTC;
        past when one is due already), ``None`` when none is owed: when :meth:`due` next has
        work, unless a worker holding one dies."""
        ...

    def enqueue_many(self, operations: Sequence[Operation]) -> list[Operation]:
        """:meth:`enqueue` for each of ``operations`` in one statement, as they are (a lease
        named in them is taken with them); those owed here, their ``id`` set. The others were
        owed already."""
        ...

    def renew_many(self, operation_ids: Collection[int], owner: str,
                   until: datetime) -> set[int]:
        """:meth:`renew` for each of ``operation_ids``: the IDs still ``owner``'s, each now
        held until ``until`` (and its row locked for the transaction)."""
        ...

    def finish_many(self, operation_ids: Collection[int], owner: str) -> set[int]:
        """Mark done those of ``operation_ids`` still pending under ``owner``'s lease, the
        lease released; their IDs. The others are left as they are."""
        ...


class IdentityLinks(Protocol):
    """People's ties to their accounts on a backend (GitLab)."""

    def get(self, slack_user_id: str, provider: str) -> IdentityLink | None: ...

    def save(self, link: IdentityLink) -> None:
        """Add the link, or replace the one of the same person and provider."""
        ...


class OnceKeys(Protocol):
    """Keys claimed once across all replicas: what was done is not done again."""

    def claim_key(self, key: str, now: datetime) -> bool:
        """Claim a unique key once across all replicas; False when it was claimed before."""
        ...

    def claim_keys(self, keys: Sequence[str], now: datetime) -> set[str]:
        """:meth:`claim_key` for many keys in one go: those claimed now."""
        ...

    def release_key(self, key: str) -> None:
        """Give a claimed key back, when what it stood for could not be done."""
        ...

    def forget_keys(self, claimed_before: datetime) -> int:
        """Delete the keys claimed before ``claimed_before``; how many."""
        ...


class MessageReferences(Protocol):
    """Where messages about a request were posted, to update them as it moves on."""

    def add(self, request_id: int, purpose: str, ref: MessageRef) -> None:
        """Remember a message about the request (``purpose``: approval…). One per
        conversation and purpose: the first one kept stays."""
        ...

    def list(self, request_id: int, purpose: str) -> builtins.list[MessageRef]:
        """The request's messages for ``purpose``, oldest first."""
        ...

    def list_many(self, request_ids: Collection[int],
                  purpose: str) -> dict[int, builtins.list[MessageRef]]:
        """:meth:`list` for each of ``request_ids`` at once; a request with none is left
        out."""
        ...


class AccessReviews(Protocol):
    """The weekly access reviews: each audience's list of grants, where it was posted, and the
    one decision per grant and week (see :mod:`bot.domain.reviews`)."""

    def open(self, period: str, audience: str, grants: Sequence[tuple[int, bool]],
             now: datetime) -> tuple[int, bool]:
        """The ID of ``audience``'s review of ``period``, and whether it was made now: with
        ``grants`` (grant ID, carried over) in that order; one that exists is left as it is."""
        ...

    def get(self, review_id: int, now: datetime) -> AccessReview:
        """The review with its grants and this week's decisions, each grant whose access is
        ending at ``now`` marked so (:func:`bot.domain.reviews.ending`); :class:`NotFound`
        if none."""
        ...

    def set_message(self, review_id: int, ref: MessageRef) -> None: ...

    def decided(self, review_id: int) -> int:
        """How many of the review's grants have a decision in its period: a count that only
        grows, to tell cheaply whether a review read earlier is still as the database has
        it."""
        ...

    def previous_period(self, period: str) -> str | None:
        """The latest period reviewed before ``period``; None when there was none."""
        ...

    def undecided(self, period: str) -> set[int]:
        """The grants some review of ``period`` listed that got no decision that week."""
        ...

    def latest_period(self, grant_id: int) -> str | None:
        """The latest period whose reviews list ``grant_id``; None when none does."""
        ...

    def listing(self, period: str, grant_id: int) -> builtins.list[int]:
        """The reviews of ``period`` that list ``grant_id``."""
        ...

    def decision(self, period: str, grant_id: int) -> ReviewDecision | None: ...

    def decide(self, period: str, decision: ReviewDecision) -> bool:
        """Record ``decision`` unless the grant has one for ``period`` already (False then):
        once across replicas, by the database."""
        ...


class UnitOfWork(Protocol):
    """One database transaction over every store: commit explicitly, roll back on leaving
    without a commit."""

    @property
    def requests(self) -> AccessRequests: ...

    @property
    def audit(self) -> AuditTrail: ...

    @property
    def operations(self) -> OperationQueue: ...

    @property
    def links(self) -> IdentityLinks: ...

    @property
    def once(self) -> OnceKeys: ...

    @property
    def messages(self) -> MessageReferences: ...

    @property
    def reviews(self) -> AccessReviews: ...

    def __enter__(self) -> UnitOfWork: ...

    def __exit__(self, *exc: object) -> None: ...

    def commit(self) -> None: ...
