"""Reasons tied to tickets, table-driven: the pattern the reason must contain, and the links."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest

from bot.domain import lifecycle, reasons
from bot.domain.errors import PolicyViolation
from bot.domain.model import Actor
from bot.domain.policy import RolePolicy
from bot.domain.reasons import ReasonPiece

NOW = datetime(2026, 11, 30, 9, 0, tzinfo=UTC)
JIRA = "https://jira.example.com/browse/{ticket}"
POLICY = RolePolicy(cluster="prod", role="edit", approvers=frozenset({"U0BOB"}),
                    cluster_approvers=frozenset(), max_duration=timedelta(hours=8),
                    default_duration=timedelta(hours=1), reason_pattern=r"[A-Z]+-[0-9]+",
                    reason_hint="name the Jira ticket, like OPS-123", ticket_url=JIRA)


def policy(**changes: object) -> RolePolicy:
    return RolePolicy(**{**POLICY.__dict__, **changes})  # type: ignore[arg-type]


@pytest.mark.parametrize(("role", "reason", "says"), [
    (POLICY, "deploy OPS-123 hotfix", None),
    (POLICY, "OPS-1", None),
    (POLICY, "deploy the hotfix", "needs a reason that names its ticket: name the Jira ticket"),
    (POLICY, "ops-123", "name the Jira ticket"),
    (policy(reason_hint=None), "nothing", r"include text matching \[A-Z\]\+-\[0-9\]\+"),
    (policy(reason_pattern=None), "anything", None),
])
def test_the_reason_must_contain_the_pattern(role: RolePolicy, reason: str,
                                             says: str | None) -> None:
    if says is None:
        reasons.check_reason_pattern(role, reason)
        return
    with pytest.raises(PolicyViolation, match=says):
        reasons.check_reason_pattern(role, reason)


def test_filing_and_the_form_refuse_a_reason_that_misses_it() -> None:
    with pytest.raises(PolicyViolation, match="like OPS-123"):
        lifecycle.file_request(policy=POLICY, requester=Actor("U0ALICE"), subject="s",
                               duration=None, reason="hotfix", now=NOW)
    errors = lifecycle.field_errors(POLICY, duration=timedelta(hours=1), reason="hotfix",
                                    namespace=None)
    assert list(errors) == ["reason"] and "OPS-123" in errors["reason"]


def link(ticket: str) -> str:
    return f"https://jira.example.com/browse/{ticket}"


@pytest.mark.parametrize(("role", "reason", "pieces"), [
    (POLICY, "deploy OPS-123 now",
     (ReasonPiece("deploy "), ReasonPiece("OPS-123", link("OPS-123")), ReasonPiece(" now"))),
    (POLICY, "OPS-1 and SEC-2",
     (ReasonPiece("OPS-1", link("OPS-1")), ReasonPiece(" and "),
      ReasonPiece("SEC-2", link("SEC-2")))),
    (POLICY, "no ticket", (ReasonPiece("no ticket"),)),
    (POLICY, "", ()),
    (policy(ticket_url=None), "OPS-1", (ReasonPiece("OPS-1"),)),
    (policy(reason_pattern=r"ticket (?P<ticket>\d+)", ticket_url="https://t.example/{ticket}"),
     "see ticket 42", (ReasonPiece("see ticket "), ReasonPiece("42", "https://t.example/42"))),
    (policy(reason_pattern=r"#\S+", ticket_url="https://t.example/?q={ticket}"),
     "#a/b&c", (ReasonPiece("#a/b&c", "https://t.example/?q=%23a%2Fb%26c"),)),
])
def test_tickets_become_link_targets(role: RolePolicy, reason: str,
                                     pieces: tuple[ReasonPiece, ...]) -> None:
    assert reasons.linked_reason(role, reason) == pieces
    assert "".join(p.text for p in pieces) == reason
