"""Who may ask for a role and for whom, table-driven: allowed and refused."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest

from bot.domain import eligibility, lifecycle
from bot.domain.eligibility import NotEligible
from bot.domain.errors import NotAuthorized, PolicyViolation
from bot.domain.model import Actor, State
from bot.domain.policy import RolePolicy
from bot.domain.ports import UserInfo

NOW = datetime(2026, 11, 30, 9, 0, tzinfo=UTC)
ALICE = Actor("U0ALICE")
BOB_APPROVER = Actor("U0BOB")
DAVE_SRE = Actor("U0DAVE", groups=frozenset({"S0SRE"}))
EVE = Actor("U0EVE")
ADMIN = Actor("U0ADMIN", is_admin=True)

OPEN = RolePolicy(cluster="prod", role="edit", approvers=frozenset({"U0BOB"}),
                  cluster_approvers=frozenset({"U0BOB"}), max_duration=timedelta(hours=8),
                  default_duration=timedelta(hours=1))


def policy(**changes: object) -> RolePolicy:
    return RolePolicy(**{**OPEN.__dict__, **changes})  # type: ignore[arg-type]


LISTED = policy(requesters=frozenset({"U0ALICE", "S0SRE"}), user_groups=frozenset({"S0SRE"}))
FOR_OTHERS = policy(requesters=frozenset({"U0ALICE", "S0SRE"}), user_groups=frozenset({"S0SRE"}),
                    request_for_others=True)


@pytest.mark.parametrize(("role", "person", "allowed"), [
    (OPEN, EVE, True),                       # unset: everyone
    (LISTED, ALICE, True),                   # listed by user ID
    (LISTED, DAVE_SRE, True),                # through a user group
    (LISTED, EVE, False),
    (LISTED, ADMIN, False),                  # admins approve and revoke; they are not requesters
    (policy(requesters=frozenset()), ALICE, False),
])
def test_who_may_ask(role: RolePolicy, person: Actor, allowed: bool) -> None:
    assert role.may_request(person) is allowed
    if allowed:
        eligibility.check_eligible(role, person)
        return
    with pytest.raises(NotEligible) as error:
        eligibility.check_eligible(role, person)
    assert error.value.requesters == role.requesters
    assert f"{role.cluster}/{role.role}" in error.value.message


def test_refusal_says_who_may_ask() -> None:
    with pytest.raises(NotEligible) as error:
        eligibility.check_eligible(LISTED, EVE)
    assert "U0ALICE and members of user group S0SRE may" in error.value.message
    assert "<@" not in error.value.message


@pytest.mark.parametrize(("role", "requester", "grantee", "refused"), [
    (OPEN, ALICE, ALICE, None),                       # for oneself
    (LISTED, EVE, EVE, NotEligible),                  # for oneself, not listed
    (OPEN, BOB_APPROVER, ALICE, None),                # approvers may ask for others
    (OPEN, ADMIN, ALICE, None),                       # admins too
    (OPEN, ALICE, DAVE_SRE, NotAuthorized),           # others may not, by default
    (FOR_OTHERS, ALICE, DAVE_SRE, None),              # unless the role lets them
    (FOR_OTHERS, EVE, ALICE, NotAuthorized),          # ... and they may ask themselves
    (FOR_OTHERS, ALICE, EVE, NotEligible),            # the grantee must be eligible
    (LISTED, BOB_APPROVER, EVE, NotEligible),         # even when an approver asks
    (LISTED, ADMIN, ALICE, None),                     # an admin for an eligible person
])
def test_who_may_ask_for_whom(role: RolePolicy, requester: Actor, grantee: Actor,
                              refused: type[Exception] | None) -> None:
    if refused is None:
        eligibility.check_request_for(role, requester, grantee)
        return
    with pytest.raises(refused) as error:
        eligibility.check_request_for(role, requester, grantee)
    if refused is NotEligible and requester != grantee:
        assert str(error.value).startswith("The person you ask for")


def test_filing_for_someone_else_records_the_grantee() -> None:
    request = lifecycle.file_request(policy=OPEN, requester=BOB_APPROVER, grantee=ALICE,
                                     subject="alice@example.com", duration=None,
                                     reason="pairing on OPS-1", now=NOW)
    assert (request.requester_id, request.grantee_id, request.grantee) == (
        "U0BOB", "U0ALICE", "U0ALICE")
    assert request.on_behalf
    mine = lifecycle.file_request(policy=OPEN, requester=ALICE, grantee=ALICE, subject="a",
                                  duration=None, reason="x", now=NOW)
    assert mine.grantee_id is None and mine.grantee == "U0ALICE" and not mine.on_behalf


@pytest.mark.parametrize(("role", "requester", "grantee", "refused"), [
    (LISTED, EVE, None, NotEligible),
    (LISTED, BOB_APPROVER, EVE, NotEligible),
    (OPEN, ALICE, DAVE_SRE, NotAuthorized),
])
def test_filing_refuses(role: RolePolicy, requester: Actor, grantee: Actor | None,
                        refused: type[Exception]) -> None:
    with pytest.raises(refused):
        lifecycle.file_request(policy=role, requester=requester, grantee=grantee, subject="s",
                               duration=None, reason="x", now=NOW)


def test_nobody_breaks_the_glass_for_someone_else() -> None:
    glass = policy(break_glass=True)
    with pytest.raises(PolicyViolation, match="for yourself only"):
        lifecycle.file_request(policy=glass, requester=BOB_APPROVER, grantee=ALICE, subject="s",
                               duration=None, reason="x", now=NOW, break_glass=True)
    own = lifecycle.file_request(policy=glass, requester=ALICE, subject="s", duration=None,
                                 reason="x", now=NOW, break_glass=True)
    assert own.state is State.APPROVED


@pytest.mark.parametrize(("approver", "refused"), [
    (BOB_APPROVER, "own request"),        # the requester
    (ALICE, "asks for access for you"),   # the grantee, even as an approver
    (DAVE_SRE, None),                     # another approver
])
def test_neither_requester_nor_grantee_decides(approver: Actor, refused: str | None) -> None:
    role = policy(approvers=frozenset({"U0BOB", "U0ALICE", "S0SRE"}))
    request = lifecycle.file_request(policy=role, requester=BOB_APPROVER, grantee=ALICE,
                                     subject="s", duration=None, reason="x", now=NOW)
    for decide in (lambda: lifecycle.check_deny(request, approver, role),
                   lambda: lifecycle.approve(request, approver, role, NOW)):
        if refused is None:
            decide()
            continue
        with pytest.raises(NotAuthorized, match=refused):
            decide()
        assert request.approvals == [] and request.state is State.PENDING


def test_the_grantee_revokes_and_extends_not_the_requester() -> None:
    request = lifecycle.file_request(policy=OPEN, requester=ADMIN, grantee=ALICE,
                                     subject="s", duration=None, reason="x", now=NOW)
    lifecycle.approve(request, BOB_APPROVER, OPEN, NOW)
    lifecycle.activate(request, NOW)
    lifecycle.check_revoke(request, ALICE, OPEN)
    lifecycle.check_extend(request, ALICE)
    with pytest.raises(NotAuthorized):
        lifecycle.check_extend(request, ADMIN)
    with pytest.raises(NotAuthorized):
        lifecycle.check_revoke(request, EVE, OPEN)


def test_forms_list_only_what_a_person_may_ask_for() -> None:
    roles = [OPEN, policy(role="admin", requesters=frozenset({"S0SRE"}))]
    assert [p.role for p in eligibility.eligible_policies(roles, ALICE)] == ["edit"]
    assert [p.role for p in eligibility.eligible_policies(roles, DAVE_SRE)] == ["edit", "admin"]


def test_a_refusal_names_groups_as_the_policy_types_them_not_by_their_form() -> None:
    role = policy(requesters=frozenset({"U0ALICE", "SAM", "G0TEAM"}),
                  user_groups=frozenset({"G0TEAM"}))
    with pytest.raises(NotEligible) as error:
        eligibility.check_eligible(role, EVE)
    assert "SAM, U0ALICE and members of user group G0TEAM may" in error.value.message


CLUSTER_APPROVER = Actor("U0CARL")
SRE_OF_THE_CLUSTER = Actor("U0SAM", groups=frozenset({"S0OPS"}))
WIDE = policy(cluster_approvers=frozenset({"U0BOB", "U0CARL", "S0OPS"}))


@pytest.mark.parametrize(("person", "answers_for", "oversees"), [
    (BOB_APPROVER, True, True),           # the role's approver
    (ADMIN, True, True),
    (CLUSTER_APPROVER, False, True),      # approves another role of the cluster
    (SRE_OF_THE_CLUSTER, False, True),    # through a user group
    (DAVE_SRE, False, False),             # in a group that approves nothing here
    (EVE, False, False),
])
def test_who_answers_for_and_who_oversees_a_role(person: Actor, answers_for: bool,
                                                 oversees: bool) -> None:
    assert WIDE.is_approver_or_admin(person) is answers_for
    assert eligibility.may_request_for_others(WIDE, person) is answers_for
    assert WIDE.oversees(person) is oversees
    assert WIDE.may_revoke(person, "U0NOBODY") is oversees
    assert WIDE.may_revoke(person, person.user_id)


def test_the_parties_of_a_request_are_its_requester_and_grantee() -> None:
    own = lifecycle.file_request(policy=OPEN, requester=ALICE, subject="s", duration=None,
                                 reason="x", now=NOW)
    behalf = lifecycle.file_request(policy=OPEN, requester=BOB_APPROVER, grantee=ALICE,
                                    subject="s", duration=None, reason="x", now=NOW)
    assert own.parties == {"U0ALICE"}
    assert behalf.parties == {"U0BOB", "U0ALICE"}


def test_only_the_parties_may_ask_again() -> None:
    behalf = lifecycle.file_request(policy=OPEN, requester=BOB_APPROVER, grantee=ALICE,
                                    subject="s", duration=None, reason="x", now=NOW)
    behalf.id = 7
    eligibility.check_ask_again(behalf, "U0BOB")
    eligibility.check_ask_again(behalf, "U0ALICE")
    with pytest.raises(NotAuthorized, match="Request #7 is not yours to ask for again"):
        eligibility.check_ask_again(behalf, "U0EVE")


@pytest.mark.parametrize(("info", "says"), [
    (UserInfo("U0ALICE01", name="alice"), None),
    (UserInfo("U0ALICE01", name="alice", known=False, deactivated=True),
     "the Slack account of U0ALICE01 (alice) is deactivated"),
    (UserInfo("U0ALICE01", deactivated=True), "the Slack account of U0ALICE01 is deactivated"),
    (UserInfo("U0NOBODY9", known=False), "Slack knows no active user U0NOBODY9"),
    (UserInfo("U0BOT0001", name="deploybot", bot=True),
     "U0BOT0001 (deploybot) is a bot or an app, not a person"),
    (UserInfo("U0GUEST01", guest=True), "U0GUEST01 is a guest of this workspace"),
    (UserInfo("U0EXT0001", external=True, guest=True),
     "U0EXT0001 is from another organisation (a Slack Connect user)"),
])
def test_which_accounts_may_receive_access(info: UserInfo, says: str | None) -> None:
    assert eligibility.account_problem(info) == says
