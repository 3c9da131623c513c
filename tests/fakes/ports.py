"""In-memory granter, notifier, directory and clock for use-case tests.

The granter behaves like a real backend: idempotent per request, revocation of what is gone
counts as done, and it can be told to fail temporarily or permanently.
"""

from __future__ import annotations

import threading
from collections import Counter
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any

from bot.domain.errors import PermanentBackendError, PolicyViolation, TemporaryBackendError
from bot.domain.model import AccessRequest, MessageRef
from bot.domain.ports import (
    Delivery,
    ExternalAccount,
    GrantResult,
    GrantSpec,
    Notice,
    NoticeKind,
    People,
    UserInfo,
)
from bot.domain.reviews import AccessReview


class FakeClock:
    def __init__(self, start: datetime | None = None) -> None:
        self.now = start or datetime(2026, 11, 30, 9, 0, tzinfo=UTC)
        self._lock = threading.Lock()

    def __call__(self) -> datetime:
        with self._lock:
            return self.now

    def advance(self, delta: timedelta) -> None:
        with self._lock:
            self.now += delta


@dataclass
class InMemoryGranter:
    """Grants are entries in ``active``: subject → ends_at, keyed by request ID."""

    active: dict[int, tuple[str, datetime]] = field(default_factory=dict)
    calls: Counter[str] = field(default_factory=Counter)
    accounts: dict[str, ExternalAccount] = field(default_factory=dict)
    """Accounts people may link to, as a GitLab backend has."""
    fail_next: list[Exception] = field(default_factory=list)
    """Raised, in order, by the next calls to grant/extend/revoke."""
    lock: threading.Lock = field(default_factory=threading.Lock)

    def account(self, username: str) -> ExternalAccount | None:
        return self.accounts.get(username)

    def resolve_subject(self, user: UserInfo) -> str:
        if user.links.get("kubernetes"):
            return user.links["kubernetes"]
        if not user.email:
            raise PolicyViolation(f"No email is known for <@{user.slack_user_id}>.")
        return user.email

    def _maybe_fail(self, what: str) -> None:
        with self.lock:
            self.calls[what] += 1
            if self.fail_next:
                raise self.fail_next.pop(0)

    def check_user_csr(self, csr_pem: str, subject: str) -> None:
        if "BEGIN CERTIFICATE REQUEST" not in csr_pem:
            raise PolicyViolation("not a CSR")

    def prepare(self, spec: GrantSpec) -> dict[str, Any]:
        self.calls["prepare"] += 1
        return {"existed": spec.request_id in self.active}

    def grant(self, spec: GrantSpec, prepared: dict[str, Any]) -> GrantResult:
        self._maybe_fail("grant")
        with self.lock:
            if spec.request_id not in self.active:
                self.calls["granted"] += 1
            self.active[spec.request_id] = (spec.subject, spec.ends_at)
        return GrantResult(
            reference={"binding": f"k8s-access-{spec.request_id}"},
            delivery=Delivery(f"connect as {spec.subject}", "kubeconfig.yaml",
                              b"client-key-data: SECRET"),
        )

    def extend(self, spec: GrantSpec, reference: dict[str, Any]) -> GrantResult:
        self._maybe_fail("extend")
        with self.lock:
            self.active[spec.request_id] = (spec.subject, spec.ends_at)
        return GrantResult(reference=reference, delivery=Delivery("extended"))

    def revoke(self, spec: GrantSpec, reference: dict[str, Any]) -> None:
        self._maybe_fail("revoke")
        with self.lock:
            if self.active.pop(spec.request_id, None) is not None:
                self.calls["revoked"] += 1

    def describe(self, spec: GrantSpec, reference: dict[str, Any]) -> str:
        return f"binding {reference.get('binding')}"

    def shared_object(self, reference: dict[str, Any]) -> str | None:
        return None  # each grant has its own


def temporary(message: str = "backend unavailable") -> TemporaryBackendError:
    return TemporaryBackendError(message)


def permanent(message: str = "forbidden") -> PermanentBackendError:
    return PermanentBackendError(message)


@dataclass
class RecordingNotifier:
    notices: list[Notice] = field(default_factory=list)
    reminders: list[tuple[str, list[int]]] = field(default_factory=list)
    reviews: list[tuple[str, list[int]]] = field(default_factory=list)
    attachments: list[str] = field(default_factory=list)
    """The audiences whose review's attachment was sent (or found not needed), in order."""
    shown: dict[MessageRef, str] = field(default_factory=dict)
    """Each review message's progress as last updated in place."""
    lock: threading.Lock = field(default_factory=threading.Lock)

    def remind(self, user_id: str, grants: Sequence[AccessRequest],
               admins: Sequence[str] = ()) -> None:
        with self.lock:
            self.reminders.append((user_id, [g.id or 0 for g in grants]))

    def review(self, review: AccessReview, admins: Sequence[str] = ()) -> MessageRef | None:
        with self.lock:
            self.reviews.append((review.audience, [i.grant.id or 0 for i in review.items]))
            return MessageRef(review.audience, f"review-{len(self.reviews)}")

    def review_attachment(self, review: AccessReview, admins: Sequence[str] = ()) -> None:
        with self.lock:
            self.attachments.append(review.audience)

    def update_review(self, review: AccessReview) -> None:
        assert review.message is not None, "only a posted review is updated"
        with self.lock:
            self.shown[review.message] = review.progress()

    def notify(self, notice: Notice) -> None:
        with self.lock:
            self.notices.append(notice)

    def kinds(self, request_id: int | None = None) -> list[NoticeKind]:
        return [n.kind for n in self.notices
                if request_id is None or n.request.id == request_id]


@dataclass
class StaticDirectory:
    emails: dict[str, str] = field(default_factory=dict)
    groups: dict[str, set[str]] = field(default_factory=dict)
    zones: dict[str, str] = field(default_factory=dict)
    """Time zones by user (Slack's ``tz``); unlisted users have none."""
    deactivated: set[str] = field(default_factory=set)
    bots: set[str] = field(default_factory=set)
    guests: set[str] = field(default_factory=set)
    strangers: set[str] = field(default_factory=set)
    """Slack Connect users of another organisation."""

    def user_info(self, user_id: str) -> UserInfo:
        return UserInfo(slack_user_id=user_id, email=self.emails.get(user_id),
                        name=user_id.lower(), tz=self.zones.get(user_id),
                        deactivated=user_id in self.deactivated, bot=user_id in self.bots,
                        guest=user_id in self.guests, external=user_id in self.strangers)

    def groups_of(self, user_id: str, candidates: frozenset[str]) -> frozenset[str]:
        return frozenset(g for g in candidates if user_id in self.groups.get(g, set()))

    def users(self, principals: Iterable[str]) -> People:
        found: set[str] = set()
        for principal in principals:
            found |= self.groups.get(principal, {principal})
        return People(frozenset(found))
