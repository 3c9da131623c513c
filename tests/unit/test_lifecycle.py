"""The pure core, table-driven: every state against every action, allowed and refused."""

from __future__ import annotations

from collections.abc import Callable
from datetime import UTC, datetime, timedelta

import pytest

from bot.domain import lifecycle
from bot.domain.errors import (
    DomainError,
    InvalidInput,
    InvalidTransition,
    NotAuthorized,
    PolicyViolation,
)
from bot.domain.lifecycle import TRANSITIONS, Event
from bot.domain.model import POLICY_ACTOR, AccessRequest, Actor, Kind, State
from bot.domain.policy import RolePolicy

NOW = datetime(2026, 11, 30, 9, 0, tzinfo=UTC)
ALICE = Actor("U0ALICE")
BOB = Actor("U0BOB")
CAROL = Actor("U0CAROL")
DAVE_IN_GROUP = Actor("U0DAVE", groups=frozenset({"S0SRE"}))
STRANGER = Actor("U0EVE")
ADMIN = Actor("U0ADMIN", is_admin=True)

POLICY = RolePolicy(
    cluster="staging",
    role="edit",
    approvers=frozenset({"U0BOB", "U0CAROL", "S0SRE"}),
    cluster_approvers=frozenset({"U0BOB", "U0CAROL", "S0SRE", "U0OTHERROLE"}),
    max_duration=timedelta(hours=8),
    default_duration=timedelta(hours=1),
)


def policy(**changes: object) -> RolePolicy:
    return RolePolicy(**{**POLICY.__dict__, **changes})  # type: ignore[arg-type]


def request_in(state: State, **changes: object) -> AccessRequest:
    request = AccessRequest(
        id=7, requester_id=ALICE.user_id, cluster="staging", role="edit",
        duration=timedelta(hours=2), reason="deploy hotfix", subject="alice@example.com",
        created_at=NOW - timedelta(days=2), state=state,
    )
    if state in (State.ACTIVE, State.EXPIRED, State.REVOKED):
        request.activated_at = NOW - timedelta(hours=3)
        request.ends_at = NOW - timedelta(hours=1)
    for key, value in changes.items():
        setattr(request, key, value)
    return request


ACTIONS: dict[Event, Callable[[AccessRequest], None]] = {
    Event.APPROVE: lambda r: lifecycle.approve(r, BOB, POLICY, NOW),
    Event.DENY: lambda r: lifecycle.deny(r, BOB, POLICY, NOW, "not now"),
    Event.CANCEL: lambda r: lifecycle.cancel(r, ALICE, NOW),
    Event.TIME_OUT: lambda r: lifecycle.time_out(r, POLICY, NOW),
    Event.PROVISION: lambda r: lifecycle.activate(r, NOW),
    Event.FAIL: lambda r: lifecycle.fail(r, NOW, "GitLab said 403"),
    Event.EXPIRE: lambda r: lifecycle.expire(r, NOW),
    Event.REVOKE: lambda r: (lifecycle.check_revoke(r, ALICE, POLICY),
                             lifecycle.revoke(r, ALICE.user_id, NOW, "done")),
}

TABLE = [(state, event, TRANSITIONS.get((state, event))) for state in State for event in Event]
SETUP: dict[tuple[State, Event], dict[str, object]] = {
    # An approved request can be cancelled only while its scheduled window is ahead.
    (State.APPROVED, Event.CANCEL): {"window_start": NOW + timedelta(hours=1)},
}


@pytest.mark.parametrize(("state", "event", "expected"), TABLE,
                         ids=[f"{s.value}-{e.name.lower()}" for s, e, _ in TABLE])
def test_every_state_against_every_action(state: State, event: Event,
                                          expected: State | None) -> None:
    request = request_in(state, **SETUP.get((state, event), {}))
    if expected is None:
        with pytest.raises(InvalidTransition) as error:
            ACTIONS[event](request)
        assert "#7" in error.value.message
        assert state.value.replace("_", " ") in error.value.message
        assert request.state is state
    else:
        ACTIONS[event](request)
        assert request.state is expected


def test_the_table_is_the_specified_lifecycle() -> None:
    assert {(s.value, e.value, t.value) for (s, e), t in TRANSITIONS.items()} == {
        ("pending", "approve", "approved"),
        ("pending", "deny", "denied"),
        ("pending", "cancel", "cancelled"),
        ("pending", "time out", "timed_out"),
        ("approved", "provision", "active"),
        ("approved", "fail", "failed"),
        ("approved", "cancel", "cancelled"),
        ("active", "expire", "expired"),
        ("active", "revoke", "revoked"),
    }


def test_final_states_are_the_ends_of_the_graph() -> None:
    sources = {s for s, _ in TRANSITIONS}
    assert {s for s in State if s.is_final} == set(State) - sources


# --- who may decide -----------------------------------------------------------------------


REFUSALS: list[tuple[str, Callable[[], object], type[DomainError], str]] = [
    ("self-approval, even by an approver",
     lambda: lifecycle.approve(request_in(State.PENDING, requester_id=BOB.user_id), BOB, POLICY,
                               NOW),
     NotAuthorized, "your own request"),
    ("approval by a non-approver",
     lambda: lifecycle.approve(request_in(State.PENDING), STRANGER, POLICY, NOW),
     NotAuthorized, "not an approver for staging/edit"),
    ("an admin is no approver",
     lambda: lifecycle.approve(request_in(State.PENDING), ADMIN, POLICY, NOW),
     NotAuthorized, "not an approver"),
    ("self-denial", lambda: lifecycle.deny(request_in(State.PENDING), ALICE, POLICY, NOW, "x"),
     NotAuthorized, "your own request"),
    ("denial by a non-approver",
     lambda: lifecycle.deny(request_in(State.PENDING), STRANGER, POLICY, NOW, "x"),
     NotAuthorized, "not an approver"),
    ("denial without a reason",
     lambda: lifecycle.deny(request_in(State.PENDING), BOB, POLICY, NOW, "  "),
     InvalidInput, "Say why"),
    ("cancel by someone else", lambda: lifecycle.cancel(request_in(State.PENDING), BOB, NOW),
     NotAuthorized, "Only the requester"),
    ("revoke by a stranger",
     lambda: lifecycle.check_revoke(request_in(State.ACTIVE), STRANGER, POLICY),
     NotAuthorized, "Only the grantee, approvers of staging and admins"),
    # Who may not act is told so before anything about where the request stands.
    ("approval of a finished request by a non-approver",
     lambda: lifecycle.approve(request_in(State.DENIED), STRANGER, POLICY, NOW),
     NotAuthorized, "not an approver"),
    ("denial of a finished request by a non-approver",
     lambda: lifecycle.deny(request_in(State.CANCELLED), STRANGER, POLICY, NOW, "x"),
     NotAuthorized, "not an approver"),
    ("cancel of a finished request by someone else",
     lambda: lifecycle.cancel(request_in(State.DENIED), BOB, NOW),
     NotAuthorized, "Only the requester"),
    ("revoke of a revoked grant by a stranger",
     lambda: lifecycle.check_revoke(request_in(State.REVOKED), STRANGER, POLICY),
     NotAuthorized, "Only the grantee, approvers of staging and admins"),
    ("extension of an expired grant by someone else",
     lambda: lifecycle.check_extend(request_in(State.EXPIRED), BOB),
     NotAuthorized, "Only the grantee"),
    ("expire before the end",
     lambda: lifecycle.expire(request_in(State.ACTIVE, ends_at=NOW + timedelta(minutes=1)), NOW),
     InvalidTransition, "has time left"),
    ("time out too early",
     lambda: lifecycle.time_out(request_in(State.PENDING, created_at=NOW - timedelta(hours=1)),
                                POLICY, NOW),
     InvalidTransition, "not waited long enough"),
]


@pytest.mark.parametrize(("case", "action", "error", "says"), REFUSALS,
                         ids=[r[0] for r in REFUSALS])
def test_refusals_name_the_reason(case: str, action: Callable[[], object],
                                  error: type[DomainError], says: str) -> None:
    with pytest.raises(error) as raised:
        action()
    assert says in raised.value.message


def test_approval_by_user_group_member() -> None:
    request = request_in(State.PENDING)
    assert lifecycle.approve(request, DAVE_IN_GROUP, POLICY, NOW)
    assert request.state is State.APPROVED
    assert request.decided_at == NOW


def test_quorum_needs_distinct_approvers() -> None:
    two = policy(approvals_required=2)
    request = request_in(State.PENDING)
    assert not lifecycle.approve(request, BOB, two, NOW)
    assert request.state is State.PENDING
    assert lifecycle.approvals_missing(request, two) == 1
    with pytest.raises(InvalidTransition, match="already decided"):
        lifecycle.approve(request, BOB, two, NOW)
    assert lifecycle.approve(request, CAROL, two, NOW)
    assert request.state is State.APPROVED
    assert request.approvers_so_far() == ["U0BOB", "U0CAROL"]


def test_one_denial_ends_a_pending_quorum() -> None:
    two = policy(approvals_required=2)
    request = request_in(State.PENDING)
    lifecycle.approve(request, BOB, two, NOW)
    lifecycle.deny(request, CAROL, two, NOW, "too broad")
    assert request.state is State.DENIED
    assert (request.ended_by, request.end_reason) == ("U0CAROL", "too broad")


@pytest.mark.parametrize("revoker", [ALICE, BOB, DAVE_IN_GROUP, ADMIN, Actor("U0OTHERROLE")],
                         ids=["grantee", "approver", "group-approver", "admin",
                              "approver-of-another-role"])
def test_who_may_revoke(revoker: Actor) -> None:
    request = request_in(State.ACTIVE)
    lifecycle.check_revoke(request, revoker, POLICY)
    lifecycle.revoke(request, revoker.user_id, NOW, "incident over")
    assert request.state is State.REVOKED
    assert request.ended_by == revoker.user_id


# --- filing -------------------------------------------------------------------------------


def file(pol: RolePolicy = POLICY, **changes: object) -> AccessRequest:
    arguments: dict[str, object] = {
        "policy": pol, "requester": ALICE, "subject": "alice@example.com",
        "duration": timedelta(hours=2), "reason": "deploy", "now": NOW,
    }
    arguments.update(changes)
    return lifecycle.file_request(**arguments)  # type: ignore[arg-type]


def test_filed_request_waits_for_approval() -> None:
    request = file()
    assert request.state is State.PENDING
    assert request.activated_at is None and request.ends_at is None


def test_default_duration_when_none_given() -> None:
    assert file(duration=None).duration == timedelta(hours=1)


FILING_REFUSALS: list[tuple[str, dict[str, object], RolePolicy, type[DomainError], str]] = [
    ("longer than the maximum", {"duration": timedelta(hours=9)}, POLICY, PolicyViolation,
     "ask for 8h or less"),
    ("shorter than ten minutes", {"duration": timedelta(minutes=5)}, POLICY, PolicyViolation,
     "at least 10m"),
    ("no reason", {"reason": " "}, POLICY, PolicyViolation, "needs a reason"),
    ("break-glass where the role has none", {"break_glass": True}, POLICY, PolicyViolation,
     "has no break-glass"),
    ("break-glass without a reason", {"break_glass": True, "reason": ""},
     policy(break_glass=True, require_reason=False), PolicyViolation, "needs a reason"),
    ("namespace missing", {}, policy(namespaces=("shop", "pay")), InvalidInput,
     "Name a namespace for staging/edit: choose one of shop, pay"),
    ("unknown namespace", {"namespace": "kube-system"}, policy(namespaces=("shop", "pay")),
     InvalidInput, "'kube-system' is not a namespace"),
    ("namespace on a cluster-wide role", {"namespace": "shop"}, POLICY, InvalidInput,
     "cluster-wide"),
]


@pytest.mark.parametrize(("case", "changes", "pol", "error", "says"), FILING_REFUSALS,
                         ids=[r[0] for r in FILING_REFUSALS])
def test_filing_refusals(case: str, changes: dict[str, object], pol: RolePolicy,
                         error: type[DomainError], says: str) -> None:
    with pytest.raises(error) as raised:
        file(pol, **changes)
    assert says in raised.value.message


def test_reason_optional_where_the_role_says_so() -> None:
    assert file(policy(require_reason=False), reason="").state is State.PENDING


def test_single_namespace_is_implied() -> None:
    assert file(policy(namespaces=("shop",))).namespace == "shop"


def test_auto_approve_up_to_its_limit() -> None:
    auto = policy(auto_approve_up_to=timedelta(hours=2))
    request = file(auto, duration=timedelta(hours=2))
    assert request.state is State.APPROVED and request.approved_by_policy
    assert request.approvers_so_far() == [POLICY_ACTOR]
    assert file(auto, duration=timedelta(hours=3)).state is State.PENDING


def test_break_glass_self_activates_flagged() -> None:
    request = file(policy(break_glass=True), break_glass=True, reason="prod is down")
    assert request.state is State.APPROVED
    assert request.break_glass and request.approved_by_policy


def test_clock_starts_at_activation() -> None:
    request = request_in(State.APPROVED)
    later = NOW + timedelta(hours=5)
    lifecycle.activate(request, later)
    assert request.activated_at == later
    assert request.ends_at == later + timedelta(hours=2)


def test_one_open_request_per_target() -> None:
    new = request_in(State.PENDING, id=None)
    with pytest.raises(PolicyViolation, match="extend it instead"):
        lifecycle.check_no_duplicate(new, [request_in(State.ACTIVE)])
    with pytest.raises(PolicyViolation, match="still waiting"):
        lifecycle.check_no_duplicate(new, [request_in(State.PENDING)])
    lifecycle.check_no_duplicate(new, [request_in(State.ACTIVE, role="view")])


# --- extensions ---------------------------------------------------------------------------


def active_grant(hours_left: float = 1) -> AccessRequest:
    return request_in(State.ACTIVE, activated_at=NOW - timedelta(hours=1),
                      ends_at=NOW + timedelta(hours=hours_left))


def extension(pol: RolePolicy, grant: AccessRequest, hours: float,
              who: Actor = ALICE) -> AccessRequest:
    return lifecycle.file_extension(grant=grant, policy=pol, requester=who,
                                    duration=timedelta(hours=hours), reason="more", now=NOW)


def test_extension_waits_for_approval_by_default() -> None:
    ext = extension(POLICY, active_grant(), 2)
    assert (ext.kind, ext.state, ext.parent_id) == (Kind.EXTENSION, State.PENDING, 7)


def test_self_extension_within_the_maximum_is_approved_at_once() -> None:
    pol = policy(self_extend=True)
    assert extension(pol, active_grant(1), 2).state is State.APPROVED  # 1h + 1h + 2h <= 8h
    assert extension(pol, active_grant(1), 7).state is State.PENDING  # would reach 9h


def test_extension_applies_to_the_grant() -> None:
    grant = active_grant(1)
    ext = extension(policy(self_extend=True), grant, 2)
    lifecycle.apply_extension(ext, grant, NOW)
    assert grant.ends_at == NOW + timedelta(hours=3)
    assert ext.state is State.ACTIVE and ext.ends_at == grant.ends_at
    lifecycle.check_revoke(grant, ALICE, POLICY)
    lifecycle.revoke(grant, ALICE.user_id, NOW, "done")
    lifecycle.end_with_parent(ext, grant)
    assert ext.state is State.REVOKED


@pytest.mark.parametrize(
    ("grant", "who", "error", "says"),
    [
        (request_in(State.PENDING), ALICE, InvalidTransition, "only an active grant"),
        (request_in(State.EXPIRED), ALICE, InvalidTransition, "only an active grant"),
        (active_grant(), BOB, NotAuthorized, "Only the grantee"),
    ],
    ids=["pending", "expired", "not-the-grantee"],
)
def test_extension_refusals(grant: AccessRequest, who: Actor, error: type[DomainError],
                            says: str) -> None:
    with pytest.raises(error, match=says):
        extension(POLICY, grant, 1, who)


# --- what a typed request still lacks -----------------------------------------------------


@pytest.mark.parametrize(("changes", "reason", "namespace", "break_glass", "complete"), [
    ({}, "deploy", None, False, True),
    ({}, "  ", None, False, False),  # the role requires a reason
    ({"require_reason": False}, "", None, False, True),
    ({"require_reason": False, "break_glass": True}, "", None, True, False),  # always says why
    ({"require_reason": False, "break_glass": True}, "prod down", None, True, True),
    ({"namespaces": ("shop",)}, "deploy", None, False, True),  # the one namespace by default
    ({"namespaces": ("shop", "cart")}, "deploy", None, False, False),
    ({"namespaces": ("shop", "cart")}, "deploy", "cart", False, True),
    # Naming a namespace the role does not have is complete, and refused when filed.
    ({"namespaces": ("shop", "cart")}, "deploy", "ghost", False, True),
])
def test_is_complete(changes: dict[str, object], reason: str, namespace: str | None,
                     break_glass: bool, complete: bool) -> None:
    assert lifecycle.is_complete(policy(**changes), reason=reason, namespace=namespace,
                                 break_glass=break_glass) is complete


@pytest.mark.parametrize(("actor", "reason", "error", "says"), [
    (BOB, None, None, ""),  # the Deny form may open
    (BOB, "not now", None, ""),
    (BOB, "  ", InvalidInput, "Say why you deny it"),
    (CAROL, "", InvalidInput, "Say why you deny it"),
    (ALICE, "mine", NotAuthorized, "cannot deny your own request"),
    (STRANGER, "no", NotAuthorized, "not an approver"),
    (STRANGER, "", NotAuthorized, "not an approver"),  # who acts is checked before the reason
])
def test_check_deny_is_what_deny_checks(actor: Actor, reason: str | None,
                                        error: type[DomainError] | None, says: str) -> None:
    request = request_in(State.PENDING)
    if error is None:
        lifecycle.check_deny(request, actor, POLICY, reason)
        return
    with pytest.raises(error, match=says):
        lifecycle.check_deny(request, actor, POLICY, reason)
    with pytest.raises(error, match=says):
        lifecycle.deny(request, actor, POLICY, NOW, reason or "")
    assert request.state is State.PENDING


# --- withdrawing a scheduled window -------------------------------------------------------

H = timedelta(hours=1)


@pytest.mark.parametrize(("case", "changes", "actor", "error", "says"), [
    ("window ahead", {"window_start": NOW + H}, ALICE, None, ""),
    ("window a minute ahead", {"window_start": NOW + timedelta(minutes=1)}, ALICE, None, ""),
    ("window starting now", {"window_start": NOW}, ALICE, InvalidTransition,
     "its window started"),
    ("window under way", {"window_start": NOW - H}, ALICE, InvalidTransition,
     "its window started"),
    ("unscheduled, being granted", {}, ALICE, InvalidTransition,
     "its access is being granted"),
    ("someone else's window", {"window_start": NOW + H}, BOB, NotAuthorized,
     "Only the requester"),
])
def test_an_approved_window_is_withdrawn_only_before_it_starts(
        case: str, changes: dict[str, object], actor: Actor, error: type[DomainError] | None,
        says: str) -> None:
    request = request_in(State.APPROVED, decided_at=NOW - H, **changes)
    if error is None:
        lifecycle.cancel(request, actor, NOW)
        assert request.state is State.CANCELLED
        assert request.end_reason == "cancelled by the requester before its window started"
        return
    with pytest.raises(error, match=says):
        lifecycle.cancel(request, actor, NOW)
    assert request.state is State.APPROVED and request.ended_at is None


# --- who may withdraw a request filed on someone's behalf -----------------------------------

APPROVER = Actor("U0BOB")


@pytest.mark.parametrize(("state", "by", "grantee", "allowed", "why"), [
    (State.PENDING, ALICE, None, True, "cancelled by the requester"),
    (State.PENDING, CAROL, CAROL.user_id, True, "cancelled by the person it was asked for"),
    (State.PENDING, ALICE, CAROL.user_id, True, "cancelled by the requester"),
    (State.PENDING, ADMIN, None, True, "cancelled by an admin"),
    (State.PENDING, ADMIN, CAROL.user_id, True, "cancelled by an admin"),
    (State.PENDING, APPROVER, None, False, "(or an admin)"),
    (State.PENDING, APPROVER, CAROL.user_id, False,
     "(or the person it asks access for, or an admin)"),
    (State.PENDING, STRANGER, CAROL.user_id, False, "approvers deny it instead"),
    (State.PENDING, DAVE_IN_GROUP, CAROL.user_id, False, "Only the requester can cancel"),
])
def test_who_may_cancel(state: State, by: Actor, grantee: str | None, allowed: bool,
                        why: str) -> None:
    request = request_in(state, grantee_id=grantee)
    if allowed:
        lifecycle.cancel(request, by, NOW)
        assert (request.state, request.ended_by, request.end_reason) == (
            State.CANCELLED, by.user_id, why)
    else:
        with pytest.raises(NotAuthorized, match=why.replace("(", r"\(").replace(")", r"\)")):
            lifecycle.cancel(request, by, NOW)
        assert request.state is state


@pytest.mark.parametrize(("by", "allowed"), [
    (CAROL, True),       # the grantee, asked for by Alice
    (ALICE, False),      # the requester who asked for Carol: not an approver
    (ADMIN, True), (DAVE_IN_GROUP, True), (STRANGER, False),
])
def test_who_may_revoke_a_grant_asked_on_someone_s_behalf(by: Actor, allowed: bool) -> None:
    request = request_in(State.ACTIVE, grantee_id=CAROL.user_id)
    if allowed:
        lifecycle.check_revoke(request, by, POLICY)
    else:
        with pytest.raises(NotAuthorized):
            lifecycle.check_revoke(request, by, POLICY)
