"""The gitlab backend through python-gitlab against a local server speaking GitLab's REST API."""

from __future__ import annotations

import dataclasses
import time
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
import yaml
from gitlab.exceptions import GitlabError, GitlabHttpError
from sqlalchemy import Engine

from bot.adapters.gitlab import GitLabMembershipGranter
from bot.app import build_context
from bot.config import ACCESS_LEVELS, Config, Settings, parse_config
from bot.domain.errors import (
    NotAuthorized,
    PermanentBackendError,
    PolicyViolation,
    TemporaryBackendError,
)
from bot.domain.model import OperationKind, State
from bot.domain.ports import NoticeKind
from bot.fakes.gitlab import FakeGitLab, GitLabUser, Group
from bot.services import access, grants, identity, operations
from bot.services.context import Context, RetryPolicy
from tests.conftest import ADMIN, ALICE, BOB
from tests.fakes.ports import FakeClock, RecordingNotifier, StaticDirectory

H = timedelta(hours=1)
BOT_TOKEN = "glpat-bot-token"


@dataclasses.dataclass
class World:
    gitlab: FakeGitLab
    bot: GitLabUser
    alice: GitLabUser
    parent: Group
    view: Group
    edit: Group


@pytest.fixture
def world() -> Iterator[World]:
    fake = FakeGitLab().start()
    bot = fake.add_user("access-bot", "bot@example.com", admin=True, token=BOT_TOKEN)
    alice = fake.add_user("alice", "u0alice01@example.com")
    fake.add_user("alice2", "someone@example.com", public_email="public@example.com",
                  token="glpat-plain")
    parent = fake.add_group("platform")
    view = fake.add_group("platform/k8s-view", parent)
    edit = fake.add_group("platform/k8s-edit", parent)
    yield World(fake, bot, alice, parent, view, edit)
    fake.stop()


@pytest.fixture
def gl_config(world: World) -> Config:
    return gitlab_config(world)


def gitlab_config(world: World, users: dict[str, dict[str, str]] | None = None) -> Config:
    return parse_config({
        "admins": [ADMIN],
        "users": users or {},
        "clusters": {"staging": {
            "backend": "gitlab",
            "gitlab": {"agent_id": 42, "kas_proxy_url": "https://kas.example.com/k8s-proxy",
                       "url": world.gitlab.url},
            "approvers": [BOB],
            "roles": {
                "view": {"group": "platform/k8s-view"},
                "edit": {"group": world.edit.id, "access_level": "maintainer"},
            },
        }},
    }, Path("gitlab.yaml"))


def context(engine: Engine, config: Config, directory: StaticDirectory,
            token: str = BOT_TOKEN, timeout: float = 5) -> tuple[Context, RecordingNotifier]:
    notifier = RecordingNotifier()
    granter = GitLabMembershipGranter.connect(config, "staging", None, token, timeout=timeout)
    ctx = build_context(Settings(), config, engine=engine, granters={"staging": granter},
                        notifier=notifier, directory=directory)
    return dataclasses.replace(ctx, retry=RetryPolicy(jitter=0, first_delay=timedelta(0))), \
        notifier


@pytest.fixture
def gctx(engine: Engine, gl_config: Config, directory: StaticDirectory) -> Context:
    return context(engine, gl_config, directory)[0]


def grant(ctx: Context, role: str = "view") -> int:
    request = access.file_request(ctx, ALICE, "staging", role, duration=2 * H, reason="x")
    assert request.id is not None
    access.approve(ctx, request.id, BOB)
    return request.id


def test_grant_adds_the_member_and_revoke_removes_it(gctx: Context, world: World) -> None:
    request_id = grant(gctx)
    granted = grants.get(gctx, request_id)
    assert granted.state is State.ACTIVE and granted.subject == "alice"
    assert granted.ends_at is not None
    member = world.gitlab.member(world.view, world.alice)
    assert member is not None and member["created_by"] == world.bot.id
    assert {k: member[k] for k in ("access_level", "expires_at")} == {
        "access_level": 30, "expires_at": (granted.ends_at + timedelta(days=1)).date().isoformat()}
    assert granted.backend_ref["action"] == "created"
    grants.revoke(gctx, request_id, ALICE, "done")
    assert world.gitlab.member(world.view, world.alice) is None
    # Revoking what is already gone is harmless.
    gctx.granter("staging").revoke(operations.spec_for(granted, granted.ends_at),
                                   granted.backend_ref)


def test_higher_membership_is_left_alone(gctx: Context, world: World) -> None:
    world.view.members[world.alice.id] = {"access_level": 40, "expires_at": None}
    request_id = grant(gctx)
    assert grants.get(gctx, request_id).backend_ref["action"] == "pre_existing"
    grants.revoke(gctx, request_id, ALICE, "done")
    assert world.gitlab.member(world.view, world.alice) == {"access_level": 40,
                                                            "expires_at": None}


def test_lower_membership_is_raised_then_restored(gctx: Context, world: World) -> None:
    world.view.members[world.alice.id] = {"access_level": 20, "expires_at": "2027-01-31"}
    request_id = grant(gctx)
    assert world.gitlab.member(world.view, world.alice)["access_level"] == 30  # type: ignore[index]
    grants.revoke(gctx, request_id, ALICE, "done")
    assert world.gitlab.member(world.view, world.alice) == {"access_level": 20,
                                                            "expires_at": "2027-01-31"}


def test_inherited_lower_membership_gets_a_direct_one(gctx: Context, world: World) -> None:
    world.parent.members[world.alice.id] = {"access_level": 30, "expires_at": None}
    request_id = grant(gctx, "edit")
    assert world.gitlab.member(world.edit, world.alice)["access_level"] == 40  # type: ignore[index]
    grants.revoke(gctx, request_id, ALICE, "done")
    assert world.gitlab.member(world.edit, world.alice) is None
    assert world.gitlab.member(world.parent, world.alice) is not None


def test_gitlab_failing_mid_grant_is_retried(gctx: Context, world: World) -> None:
    request = access.file_request(gctx, ALICE, "staging", "view", duration=H, reason="x")
    assert request.id is not None
    world.gitlab.fail_next = [502]
    waiting = access.approve(gctx, request.id, BOB)
    assert waiting.state is State.APPROVED
    assert "GitLab answered 502" in (waiting.last_error or "")
    operations.run_due(gctx)
    assert grants.get(gctx, request.id).state is State.ACTIVE


def test_gitlab_hanging_is_retried(engine: Engine, gl_config: Config, world: World,
                                   directory: StaticDirectory) -> None:
    ctx, _ = context(engine, gl_config, directory, timeout=0.5)
    request = access.file_request(ctx, ALICE, "staging", "view", duration=H, reason="x")
    assert request.id is not None
    world.gitlab.hang_next = 1
    waiting = access.approve(ctx, request.id, BOB)
    assert waiting.state is State.APPROVED
    assert "unreachable or too slow" in (waiting.last_error or "")
    operations.run_due(ctx)
    assert grants.get(ctx, request.id).state is State.ACTIVE


def test_member_added_before_a_crash_is_still_the_bots(gctx: Context, world: World) -> None:
    request = access.file_request(gctx, ALICE, "staging", "view", duration=H, reason="x")
    assert request.id is not None
    granter = gctx.granter("staging")
    approved = dataclasses.replace(request, state=State.APPROVED)
    spec = operations.spec_for(approved, request.created_at + H)
    prepared = granter.prepare(spec)
    granter.grant(spec, prepared)  # the worker died after this call, before its commit
    second = granter.grant(spec, prepared)
    assert second.reference["action"] == "created"
    granter.revoke(spec, second.reference)
    assert world.gitlab.member(world.view, world.alice) is None


@pytest.mark.parametrize(("role", "group", "by_hand", "action"), [
    ("view", "view", 30, "pre_existing"),   # Developer by hand, Developer asked: kept as is
    ("view", "view", 40, "pre_existing"),
    ("view", "view", 20, "raised"),         # Reporter by hand: raised, then restored
    ("edit", "edit", 30, "raised"),
])
def test_a_membership_made_by_hand_before_the_retry_is_not_taken_over(
        gctx: Context, world: World, role: str, group: str, by_hand: int, action: str) -> None:
    owner = world.gitlab.add_user("owner", "owner@example.com")
    world.gitlab.add_member(world.parent, owner, 50)
    target = getattr(world, group)
    request = access.file_request(gctx, ALICE, "staging", role, duration=H, reason="x")
    assert request.id is not None
    world.gitlab.fail_on["POST"] = [500]
    assert access.approve(gctx, request.id, BOB).state is State.APPROVED
    made = world.gitlab.add_member(target, world.alice, by_hand, by=owner)
    operations.run_due(gctx)  # the retry's POST answers 409 Member already exists
    granted = grants.get(gctx, request.id)
    assert granted.state is State.ACTIVE
    assert granted.backend_ref["action"] == action
    grants.revoke(gctx, request.id, ALICE, "done")
    assert world.gitlab.member(target, world.alice) == made  # exactly what the owner made


def test_a_lost_answer_is_the_bots_own_membership(gctx: Context, world: World) -> None:
    request = access.file_request(gctx, ALICE, "staging", "view", duration=H, reason="x")
    assert request.id is not None
    world.gitlab.lose_answer_on["POST"] = [502]  # GitLab added her, the answer never arrived
    assert access.approve(gctx, request.id, BOB).state is State.APPROVED
    operations.run_due(gctx)
    assert grants.get(gctx, request.id).backend_ref["action"] == "created"
    grants.revoke(gctx, request.id, ALICE, "done")
    assert world.gitlab.member(world.view, world.alice) is None


def test_the_sweep_removes_only_memberships_the_bot_made_and_no_grant_explains(
        engine: Engine, gl_config: Config, world: World, directory: StaticDirectory) -> None:
    ctx, _ = context(engine, gl_config, directory)
    ctx = dataclasses.replace(ctx, retry=dataclasses.replace(ctx.retry, grant_attempts=1))
    owner = world.gitlab.add_user("owner", "owner@example.com")
    carol = world.gitlab.add_user("carol", "carol@example.com")
    dave = world.gitlab.add_user("dave", "dave@example.com")
    world.gitlab.add_member(world.parent, owner, 50)
    failed = access.file_request(ctx, ALICE, "staging", "view", duration=H, reason="x")
    assert failed.id is not None
    world.gitlab.lose_answer_on["POST"] = [502]  # added, but the grant gave up
    assert access.approve(ctx, failed.id, BOB).state is State.FAILED
    live = grant(ctx, "edit")
    world.gitlab.add_member(world.view, carol, 30, by=owner)       # by hand
    world.gitlab.add_member(world.view, dave, 30, by=world.bot)    # the bot's user, no record
    assert world.gitlab.member(world.view, world.alice) is not None

    found = {s.grant.describe(): (s.removed, s.why)
             for s in grants.reconcile(ctx, grace=timedelta(0))}
    assert found == {
        "platform/k8s-view/alice": (False, f"made for request #{failed.id} (failed); no live "
                                           "grant explains it"),
        "platform/k8s-view/dave": (False, "made by the bot's account, but no request of this "
                                          "bot made it; left alone"),
    }
    assert grants.reconcile(ctx, fix=True) == []  # all younger than the grace period
    removed = [s.grant.describe() for s in grants.reconcile(ctx, fix=True, grace=timedelta(0))
               if s.removed]
    assert removed == ["platform/k8s-view/alice"]
    assert world.gitlab.member(world.view, world.alice) is None
    assert world.gitlab.member(world.view, carol) is not None
    assert world.gitlab.member(world.view, dave) is not None
    assert world.gitlab.member(world.edit, world.alice) is not None
    assert grants.get(ctx, live).state is State.ACTIVE


def test_a_grant_approved_while_the_sweep_lists_keeps_its_membership(
        gctx: Context, world: World) -> None:
    approved: list[int] = []
    world.gitlab.before_list = lambda: approved.append(grant(gctx))
    assert grants.reconcile(gctx, fix=True, grace=timedelta(0)) == []
    assert approved and grants.get(gctx, approved[0]).state is State.ACTIVE
    assert world.gitlab.member(world.view, world.alice) is not None


def test_members_show_who_created_them(world: World) -> None:
    made = world.gitlab.add_member(world.view, world.alice, 30, by=world.bot,
                                   created_at=datetime(2026, 1, 2, 3, 4, 5, tzinfo=UTC))
    assert made["created_at"] == "2026-01-02T03:04:05.000Z"
    granter = GitLabMembershipGranter.connect(gitlab_config(world), "staging", None, BOT_TOKEN)
    held = granter.managed()
    assert [(g.subject, g.key, g.created_at) for g in held] == [
        ("alice", (world.view.id, world.alice.id), datetime(2026, 1, 2, 3, 4, 5, tzinfo=UTC))]


def test_token_without_rights_fails_with_an_operator_message(
        engine: Engine, gl_config: Config, world: World, directory: StaticDirectory) -> None:
    directory.emails[ALICE] = "u0alice01@example.com"
    ctx, notifier = context(engine, gl_config, directory, token="glpat-plain")
    with pytest.raises(PolicyViolation, match="by a private email needs an admin token"):
        access.file_request(ctx, ALICE, "staging", "view", duration=H, reason="x")
    with ctx.transaction() as uow:
        assert uow.requests.find() == []
    identity.link_gitlab(ctx, ALICE, "alice")  # pending: GitLab hides her email from this token
    identity.confirm_link(ctx, ADMIN, ALICE)
    request = access.file_request(ctx, ALICE, "staging", "view", duration=H, reason="x")
    assert request.id is not None and request.subject == "alice"
    failed = access.approve(ctx, request.id, BOB)
    assert failed.state is State.FAILED
    assert "needs the Owner role on the group" in (failed.end_reason or "")
    assert NoticeKind.FAILED in notifier.kinds(request.id)
    with pytest.raises(PermanentBackendError, match="not Owner of group platform/k8s-view"):
        ctx.granter("staging").check()  # type: ignore[attr-defined]


def test_connect_check_passes_for_an_owner(gctx: Context) -> None:
    assert "may manage every role's group" in gctx.granter("staging").check()  # type: ignore[attr-defined]


def test_identity_by_email_link_and_mapping(gctx: Context, world: World, engine: Engine,
                                            gl_config: Config,
                                            directory: StaticDirectory) -> None:
    assert identity.whoami(gctx, ALICE).subjects["staging"] == "`alice`"
    directory.emails[ALICE] = "nobody@example.com"
    with pytest.raises(PolicyViolation, match="No single GitLab account shows the email"):
        access.file_request(gctx, ALICE, "staging", "view", duration=H, reason="x")
    pending = identity.link_gitlab(gctx, ALICE, "alice")
    assert not pending.confirmed
    with pytest.raises(NotAuthorized):
        identity.confirm_link(gctx, BOB, ALICE)
    assert identity.confirm_link(gctx, ADMIN, ALICE).confirmed
    assert identity.whoami(gctx, ALICE).subjects["staging"] == "`alice`"
    directory.emails[ALICE] = "u0alice01@example.com"
    assert identity.link_gitlab(gctx, ALICE, "alice").confirmed  # same email: at once
    ctx, _ = context(engine, gitlab_config(world, users={ALICE: {"gitlab": "alice2"}}),
                     directory)
    assert identity.whoami(ctx, ALICE).subjects["staging"] == "`alice2`"


def test_kubeconfig_for_the_agent(engine: Engine, gl_config: Config,
                                  directory: StaticDirectory) -> None:
    ctx, notifier = context(engine, gl_config, directory)
    request_id = grant(ctx)
    delivery = next(n.delivery for n in notifier.notices if n.kind is NoticeKind.ACTIVE)
    assert delivery is not None and delivery.content is not None
    document = yaml.safe_load(delivery.content)
    assert document["clusters"][0]["cluster"]["server"] == "https://kas.example.com/k8s-proxy"
    assert document["users"][0]["user"]["exec"]["args"] == [
        "cluster", "agent", "get-token", "--agent", "42"]
    assert "--token=pat:42:<your token>" in delivery.instructions
    assert "gitlab:user:alice" in delivery.instructions
    with ctx.transaction() as uow:
        operation = uow.operations.get(request_id, OperationKind.GRANT)
    assert operation is not None and operation.prepared is not None
    assert operation.prepared["direct"] is None


def test_the_sweep_says_when_gitlab_cannot_be_read(gctx: Context, world: World) -> None:
    world.gitlab.fail_next = [503]
    with pytest.raises(TemporaryBackendError, match="reconcile could not read staging: GitLab "
                                                    "answered 503"):
        grants.reconcile(gctx, fix=True)


@pytest.mark.parametrize(("before", "removed"), [(True, False), (False, True)])
def test_the_sweep_removes_a_membership_only_if_made_after_the_request(
        gctx: Context, world: World, before: bool, removed: bool) -> None:
    request_id = grant(gctx)
    grants.revoke(gctx, request_id, ALICE, "done")
    filed = grants.get(gctx, request_id).created_at
    world.gitlab.add_member(world.view, world.alice, 30, by=world.bot,  # now, or before filing
                            created_at=filed - timedelta(minutes=10) if before else None)
    strays = grants.reconcile(gctx, fix=True, grace=timedelta(0))
    assert [s.removed for s in strays] == [removed]
    assert (world.gitlab.member(world.view, world.alice) is None) is removed


def two_clusters_on_one_group(engine: Engine, world: World,
                               directory: StaticDirectory) -> Context:
    """``staging`` and ``prod`` whose role ``view`` is the same GitLab group."""
    cluster = {"backend": "gitlab", "approvers": [BOB],
               "gitlab": {"agent_id": 42, "kas_proxy_url": "https://kas.example.com/k8s-proxy",
                          "url": world.gitlab.url},
               "roles": {"view": {"group": "platform/k8s-view"}}}
    config = parse_config({"admins": [ADMIN], "clusters": {"staging": cluster, "prod": cluster}},
                          Path("gitlab.yaml"))
    granters = {name: GitLabMembershipGranter.connect(config, name, None, BOT_TOKEN, timeout=5)
                for name in ("staging", "prod")}
    ctx = build_context(Settings(), config, engine=engine, granters=granters,
                        notifier=RecordingNotifier(), directory=directory)
    return dataclasses.replace(ctx, retry=RetryPolicy(jitter=0, first_delay=timedelta(0)))


def test_revoking_one_clusters_grant_keeps_the_membership_another_live_grant_uses(
        engine: Engine, world: World, directory: StaticDirectory) -> None:
    ctx = two_clusters_on_one_group(engine, world, directory)
    prod = access.file_request(ctx, ALICE, "prod", "view", duration=H, reason="x")
    assert prod.id is not None
    access.approve(ctx, prod.id, BOB)
    staging = access.file_request(ctx, ALICE, "staging", "view", duration=2 * H, reason="x")
    assert staging.id is not None
    access.approve(ctx, staging.id, BOB)
    assert grants.get(ctx, staging.id).backend_ref["action"] == "pre_existing"
    grants.revoke(ctx, prod.id, ALICE, "done")
    assert grants.get(ctx, staging.id).state is State.ACTIVE
    member = world.gitlab.member(world.view, world.alice)
    assert member is not None  # staging's access stays, until staging's own end
    ends_at = grants.get(ctx, staging.id).ends_at
    assert ends_at is not None
    assert member["expires_at"] == (ends_at + timedelta(days=1)).date().isoformat()
    assert grants.get(ctx, staging.id).backend_ref["action"] == "created"  # staging's now
    with ctx.transaction() as uow:
        assert [e.action for e in uow.audit.events() if e.request_id == staging.id][-1] \
            == "handed over"
    grants.revoke(ctx, staging.id, ALICE, "done")
    assert world.gitlab.member(world.view, world.alice) is None  # the last grant removes it


def test_grants_ending_together_on_one_group_leave_nothing_behind(
        engine: Engine, world: World, directory: StaticDirectory) -> None:
    ctx = two_clusters_on_one_group(engine, world, directory)
    ids = []
    for cluster in ("prod", "staging"):
        filed = access.file_request(ctx, ALICE, cluster, "view", duration=H, reason="x")
        assert filed.id is not None
        access.approve(ctx, filed.id, BOB)
        ids.append(filed.id)
    clock = ctx.clock
    later = dataclasses.replace(ctx, clock=lambda: clock() + 2 * H)
    grants.expire_due(later)
    assert [grants.get(later, i).state for i in ids] == [State.EXPIRED, State.EXPIRED]
    assert world.gitlab.member(world.view, world.alice) is None


def test_a_grant_expiring_in_a_batch_hands_the_membership_to_the_live_one(
        engine: Engine, world: World, directory: StaticDirectory) -> None:
    ctx = two_clusters_on_one_group(engine, world, directory)
    prod = access.file_request(ctx, ALICE, "prod", "view", duration=H, reason="x")
    staging = access.file_request(ctx, ALICE, "staging", "view", duration=2 * H, reason="x")
    assert prod.id is not None and staging.id is not None
    access.approve(ctx, prod.id, BOB)
    access.approve(ctx, staging.id, BOB)
    clock = ctx.clock
    later = dataclasses.replace(ctx, clock=lambda: clock() + H + timedelta(minutes=1))
    assert grants.expire_due(later) == 1
    assert grants.get(later, prod.id).state is State.EXPIRED
    assert grants.get(later, staging.id).state is State.ACTIVE
    assert world.gitlab.member(world.view, world.alice) is not None  # staging's until its end
    assert grants.get(later, staging.id).backend_ref["action"] == "created"
    with later.transaction() as uow:
        assert [e.action for e in uow.audit.events() if e.request_id == staging.id][-1] \
            == "handed over"
    end = dataclasses.replace(ctx, clock=lambda: clock() + 2 * H + timedelta(minutes=1))
    assert grants.expire_due(end) == 1
    assert world.gitlab.member(world.view, world.alice) is None


def test_a_409_on_a_membership_the_bot_made_for_another_cluster_is_not_taken_over(
        engine: Engine, world: World, directory: StaticDirectory) -> None:
    ctx = two_clusters_on_one_group(engine, world, directory)
    staging = access.file_request(ctx, ALICE, "staging", "view", duration=H, reason="x")
    assert staging.id is not None
    world.gitlab.fail_on["POST"] = [500]
    assert access.approve(ctx, staging.id, BOB).state is State.APPROVED
    prod = access.file_request(ctx, ALICE, "prod", "view", duration=2 * H, reason="x")
    assert prod.id is not None
    access.approve(ctx, prod.id, BOB)
    assert grants.get(ctx, prod.id).state is State.ACTIVE
    operations.run_due(ctx)  # staging's retry answers 409: the membership is prod's grant
    assert grants.get(ctx, staging.id).state is State.ACTIVE
    grants.revoke(ctx, staging.id, ALICE, "done")
    assert grants.get(ctx, prod.id).state is State.ACTIVE
    assert world.gitlab.member(world.view, world.alice) is not None  # prod's access stays
    grants.revoke(ctx, prod.id, ALICE, "done")
    assert world.gitlab.member(world.view, world.alice) is None


# --- one membership, several clusters' grants, any order ------------------------------

LEVELS = {"prod": "developer", "staging": "maintainer", "dev": "developer"}
"""Each cluster's role ``view`` is the same group, at these access levels."""
START = datetime(2026, 11, 30, 20, 0, tzinfo=UTC)
"""Late in the day: grants of different lengths end on different days, so GitLab's
``expires_at`` tells them apart."""
BY_HAND_EXPIRES = "2027-06-30"


def shared_group(engine: Engine, world: World, directory: StaticDirectory,
                 clock: FakeClock) -> Context:
    config: Config = parse_config({"admins": [ADMIN], "clusters": {
        cluster: {"backend": "gitlab", "approvers": [BOB],
                  "gitlab": {"agent_id": 42, "url": world.gitlab.url,
                             "kas_proxy_url": "https://kas.example.com/k8s-proxy"},
                  "roles": {"view": {"group": "platform/k8s-view", "access_level": level}}}
        for cluster, level in LEVELS.items()}}, Path("gitlab.yaml"))
    granters = {name: GitLabMembershipGranter.connect(config, name, None, BOT_TOKEN, timeout=5)
                for name in LEVELS}
    ctx = build_context(Settings(), config, engine=engine, granters=granters,
                        notifier=RecordingNotifier(), directory=directory, clock=clock)
    return dataclasses.replace(ctx, retry=RetryPolicy(jitter=0, first_delay=timedelta(0)))


def wanted(origin: dict[str, Any] | None, live: list[tuple[str, datetime]]) -> Any:
    """What the membership must be: the origin where no live grant needs more, else the
    highest live level until the day after the latest live end."""
    top = max((ACCESS_LEVELS[LEVELS[cluster]] for cluster, _ in live), default=0)
    if origin is not None and origin["access_level"] >= top:
        return origin
    if not live:
        return None
    latest = max(ends for _, ends in live)
    return (top, (latest + timedelta(days=1)).date().isoformat())


def held(world: World) -> Any:
    member = world.gitlab.member(world.view, world.alice)
    if member is None:
        return None
    return (member["access_level"], member["expires_at"])


@pytest.mark.parametrize("hours", [(1, 1, 1), (1, 1, 5), (1, 3, 5), (5, 1, 1)],
                         ids=["one-batch", "two-then-one", "three-batches", "one-then-two"])
@pytest.mark.parametrize("by_hand", [None, 30, 40], ids=["none", "developer", "maintainer"])
@pytest.mark.parametrize("order", [("prod", "staging", "dev"), ("staging", "prod", "dev"),
                                   ("dev", "prod", "staging")],
                         ids=lambda order: "-".join(order))
def test_the_membership_is_what_the_live_grants_explain_after_every_batch(
        engine: Engine, world: World, directory: StaticDirectory, order: tuple[str, ...],
        by_hand: int | None, hours: tuple[int, ...]) -> None:
    clock = FakeClock(START)
    ctx = shared_group(engine, world, directory, clock)
    origin: dict[str, Any] | None = None
    if by_hand is not None:
        owner = world.gitlab.add_user("owner", "owner@example.com")
        origin = dict(world.gitlab.add_member(world.view, world.alice, by_hand, by=owner,
                                              expires_at=BY_HAND_EXPIRES))
    ends: dict[int, tuple[str, datetime]] = {}
    for cluster, length in zip(order, hours, strict=True):
        filed = access.file_request(ctx, ALICE, cluster, "view", duration=length * H,
                                    reason="x")
        assert filed.id is not None
        assert access.approve(ctx, filed.id, BOB).state is State.ACTIVE
        ends[filed.id] = (cluster, START + length * H)

    def check() -> None:
        live = [ends[i] for i in ends if grants.get(ctx, i).state is State.ACTIVE]
        expected = wanted(origin, live)
        if expected is origin and origin is not None:
            assert world.gitlab.member(world.view, world.alice) == origin  # exactly as made
        else:
            assert held(world) == expected, f"live: {live}"

    check()
    for moment in sorted({end for _, end in ends.values()}):
        clock.now = moment + timedelta(minutes=1)
        grants.expire_due(ctx)
        assert all(grants.get(ctx, i).state is State.EXPIRED
                   for i, (_, end) in ends.items() if end <= moment)
        check()


@pytest.mark.parametrize("hanging", [1, 1000], ids=["one-call", "every-call"])
def test_a_hung_gitlab_holds_up_an_expiry_pass_for_its_timeout_only(
        engine: Engine, gl_config: Config, world: World, directory: StaticDirectory,
        hanging: int) -> None:
    """python-gitlab's timeout bounds each call that hangs: the pass ends what it can and is
    over long before GitLab answers; the retry pass ends the rest once it does."""
    ctx, _ = context(engine, gl_config, directory, timeout=0.5)
    ids = [grant(ctx, "view"), grant(ctx, "edit")]
    clock = ctx.clock
    later = dataclasses.replace(ctx, clock=lambda: clock() + 2 * H + timedelta(minutes=1))
    world.gitlab.hang_next, world.gitlab.hang_seconds = hanging, 8.0
    started = time.monotonic()
    assert grants.expire_due(later) == 2
    assert time.monotonic() - started < 6  # bounded by the timeout, not the 8s hang
    world.gitlab.hang_next = 0
    left = [grants.get(later, i) for i in ids if grants.get(later, i).state is State.ACTIVE]
    assert left, "a hung call ends no grant"
    assert all("unreachable or too slow" in (g.last_error or "") for g in left)
    if hanging == 1000:
        assert len(left) == 2
    operations.run_due(later)
    assert all(grants.get(later, i).state is State.EXPIRED for i in ids)
    assert world.gitlab.member(world.view, world.alice) is None
    assert world.gitlab.member(world.edit, world.alice) is None


def test_a_membership_made_again_by_hand_outlives_the_shared_grants(
        engine: Engine, world: World, directory: StaticDirectory) -> None:
    """Someone removes the membership the bot made and adds the user again by hand: when the
    grants end, the bot removes nothing it did not make."""
    ctx = two_clusters_on_one_group(engine, world, directory)
    for cluster in ("prod", "staging"):
        filed = access.file_request(ctx, ALICE, cluster, "view", duration=H, reason="x")
        assert filed.id is not None
        access.approve(ctx, filed.id, BOB)
    owner = world.gitlab.add_user("owner", "owner@example.com")
    del world.view.members[world.alice.id]
    made = world.gitlab.add_member(world.view, world.alice, 30, by=owner)
    clock = ctx.clock
    grants.expire_due(dataclasses.replace(ctx, clock=lambda: clock() + 2 * H))
    assert world.gitlab.member(world.view, world.alice) == made


def test_the_fake_takes_expires_at_as_gitlab_does(world: World) -> None:
    """A PUT without ``expires_at`` keeps it, null clears it, a past day is refused (400),
    today is taken: what GitLab's members API and member validation do."""
    gl = GitLabMembershipGranter.connect(gitlab_config(world), "staging", None, BOT_TOKEN).gl
    members = gl.groups.get(world.view.id).members
    today = datetime.now(UTC).date()
    members.create({"user_id": world.alice.id, "access_level": 20,
                    "expires_at": "2099-01-31"})
    gl.http_put(f"/groups/{world.view.id}/members/{world.alice.id}",
                post_data={"access_level": 30})
    assert world.gitlab.member(world.view, world.alice)["expires_at"] == "2099-01-31"  # type: ignore[index]
    for bad in ((today - timedelta(days=1)).isoformat(), "soon"):
        with pytest.raises(GitlabHttpError) as refused:
            gl.http_put(f"/groups/{world.view.id}/members/{world.alice.id}",
                        post_data={"access_level": 30, "expires_at": bad})
        assert refused.value.response_code == 400
    assert world.gitlab.member(world.view, world.alice)["expires_at"] == "2099-01-31"  # type: ignore[index]
    gl.http_put(f"/groups/{world.view.id}/members/{world.alice.id}",
                post_data={"access_level": 30, "expires_at": today.isoformat()})
    gl.http_put(f"/groups/{world.view.id}/members/{world.alice.id}",
                post_data={"access_level": 30, "expires_at": None})
    assert world.gitlab.member(world.view, world.alice)["expires_at"] is None  # type: ignore[index]
    carol = world.gitlab.add_user("carol", "carol@example.com")
    with pytest.raises(GitlabError) as refused:
        members.create({"user_id": carol.id, "access_level": 30,
                        "expires_at": (today - timedelta(days=3)).isoformat()})
    assert refused.value.response_code == 400
    assert world.gitlab.member(world.view, carol) is None


@pytest.mark.parametrize("kind", ["grant", "expiry"])
def test_a_rate_limited_gitlab_is_retried_when_it_asks_not_waited_out(
        gctx: Context, world: World, kind: str) -> None:
    """python-gitlab would sleep out each 429's Retry-After, ten times over, holding the
    operation's lease past every timeout; the bot fails the call at once and retries it on its
    own schedule, no sooner than GitLab asked."""
    world.gitlab.retry_after = 600
    if kind == "grant":
        request = access.file_request(gctx, ALICE, "staging", "view", duration=H, reason="x")
        assert request.id is not None
        world.gitlab.fail_next = [429] * 20
        started, asked = time.monotonic(), gctx.clock()
        waiting = access.approve(gctx, request.id, BOB)
        assert waiting.state is State.APPROVED
    else:
        request_id = grant(gctx)
        clock = gctx.clock
        gctx = dataclasses.replace(gctx, clock=lambda: clock() + 3 * H)
        world.gitlab.fail_next = [429] * 20
        started, asked = time.monotonic(), gctx.clock()
        assert grants.expire_due(gctx) == 1
        waiting = grants.get(gctx, request_id)
        assert waiting.state is State.ACTIVE
    assert time.monotonic() - started < 5
    assert len(world.gitlab.fail_next) == 19, "one call, not ten retries"
    assert "rate-limiting" in (waiting.last_error or "") and "600 s" in waiting.last_error
    with gctx.transaction() as uow:
        operation = uow.operations.get(waiting.id or 0, OperationKind.GRANT if kind == "grant"
                                       else OperationKind.REVOKE)
    assert operation.next_attempt_at is not None
    assert operation.next_attempt_at >= asked + timedelta(seconds=600)


@pytest.mark.parametrize("shared", [False, True], ids=["one-grant", "shared"])
def test_a_raised_membership_whose_own_expiry_passed_is_restored_as_lapsed(
        engine: Engine, world: World, directory: StaticDirectory, shared: bool) -> None:
    """Alice was a Reporter until yesterday (GitLab's daily job has not removed her yet); a
    grant raises her. GitLab refuses to set a past expiry (400), so restoring the old one
    verbatim fails every time and leaves her raised: she gets her old level back, lapsing
    today."""
    yesterday = (datetime.now(UTC).date() - timedelta(days=1)).isoformat()
    world.gitlab.add_member(world.view, world.alice, 20, expires_at=yesterday)
    ctx = two_clusters_on_one_group(engine, world, directory) if shared else \
        context(engine, gitlab_config(world), directory)[0]
    ids = []
    for cluster in ("prod", "staging") if shared else ("staging",):
        filed = access.file_request(ctx, ALICE, cluster, "view", duration=H, reason="x")
        assert filed.id is not None
        access.approve(ctx, filed.id, BOB)
        ids.append(filed.id)
    assert world.gitlab.member(world.view, world.alice)["access_level"] == 30  # type: ignore[index]
    clock = ctx.clock
    later = dataclasses.replace(ctx, clock=lambda: clock() + 2 * H)
    grants.expire_due(later)
    assert [grants.get(later, i).state for i in ids] == [State.EXPIRED] * len(ids)
    member = world.gitlab.member(world.view, world.alice)
    assert member is not None
    assert (member["access_level"], member["expires_at"]) == (
        20, datetime.now(UTC).date().isoformat())


@pytest.mark.parametrize("ends", ["before_grant", "after_grant"])
def test_a_grant_provisioned_while_the_shared_membership_ends_keeps_its_access(
        engine: Engine, world: World, directory: StaticDirectory, ends: str) -> None:
    """prod's grant made the membership; staging's grant of the same group is being
    provisioned (it has seen the membership) when prod's grant expires: not yet active, it
    is no holder to prod's ending, which removes the membership; staging's grant must still
    end up with it."""
    ctx = two_clusters_on_one_group(engine, world, directory)
    prod = access.file_request(ctx, ALICE, "prod", "view", duration=H, reason="x")
    assert prod.id is not None
    access.approve(ctx, prod.id, BOB)
    clock = ctx.clock
    later = dataclasses.replace(ctx, clock=lambda: clock() + H + timedelta(minutes=1))
    staging = access.file_request(later, ALICE, "staging", "view", duration=2 * H, reason="x")
    assert staging.id is not None
    granter = later.granter("staging")
    original = granter.grant

    def grant_while_prod_ends(spec: Any, prepared: dict[str, Any]) -> Any:
        if ends == "before_grant":
            assert grants.expire_due(later) == 1
            return original(spec, prepared)
        result = original(spec, prepared)
        assert grants.expire_due(later) == 1
        return result

    granter.grant = grant_while_prod_ends  # type: ignore[method-assign]
    access.approve(later, staging.id, BOB)
    granter.grant = original  # type: ignore[method-assign]
    operations.run_due(later)
    assert grants.get(later, prod.id).state is State.EXPIRED
    assert grants.get(later, staging.id).state is State.ACTIVE
    member = world.gitlab.member(world.view, world.alice)
    assert member is not None and member["access_level"] == 30
    # and when staging's grant ends, nothing is left behind
    grants.expire_due(dataclasses.replace(ctx, clock=lambda: clock() + 4 * H))
    assert world.gitlab.member(world.view, world.alice) is None


def test_an_extension_made_while_the_shared_membership_ends_keeps_its_new_end(
        engine: Engine, world: World, directory: StaticDirectory) -> None:
    """staging's grant is extended while prod's grant on the same group ends: prod's end
    sets the membership to staging's end as it read it, the old one, after the extension
    wrote the new one; the extension must still leave GitLab's expiry at its new end."""
    evening = datetime.now(UTC).replace(hour=20, minute=0, second=0, microsecond=0)
    ctx = dataclasses.replace(two_clusters_on_one_group(engine, world, directory),
                              clock=lambda: evening)  # the extension ends past midnight
    ids = {}
    for cluster, hours in (("prod", 1), ("staging", 2)):
        filed = access.file_request(ctx, ALICE, cluster, "view", duration=hours * H,
                                    reason="x")
        assert filed.id is not None
        access.approve(ctx, filed.id, BOB)
        ids[cluster] = filed.id
    clock = ctx.clock
    later = dataclasses.replace(ctx, clock=lambda: clock() + H + timedelta(minutes=1))
    granter = later.granter("staging")
    original = granter.extend

    def extend_while_prod_ends(spec: Any, reference: dict[str, Any]) -> Any:
        result = original(spec, reference)
        assert grants.expire_due(later) == 1
        return result

    granter.extend = extend_while_prod_ends  # type: ignore[method-assign]
    extension = access.extend(later, ids["staging"], ALICE, 6 * H, "longer")
    if extension.state is State.PENDING:
        assert extension.id is not None
        access.approve(later, extension.id, BOB)
    granter.extend = original  # type: ignore[method-assign]
    operations.run_due(later)
    staging = grants.get(later, ids["staging"])
    assert grants.get(later, ids["prod"]).state is State.EXPIRED
    assert staging.state is State.ACTIVE and staging.ends_at is not None
    assert staging.ends_at == clock() + 8 * H
    member = world.gitlab.member(world.view, world.alice)
    assert member is not None
    assert member["expires_at"] == (staging.ends_at + timedelta(days=1)).date().isoformat()
