"""A worker killed in the middle of a grant is replaced within a lease of about a minute; a
worker that is alive and slow keeps its operation, and people hear that it is slow.

The first worker is a real process that files and approves a request, so that it runs the grant
itself, against the local Kubernetes API server (rbac and certificate) or GitLab server; its
backend call has been answered but does not
return until the test says so, as when a worker hangs or dies right after the backend did its
part. The second worker is this test process. Both read one clock the test moves: no test waits
for a lease to run out in real time.
"""

from __future__ import annotations

import dataclasses
import multiprocessing
import os
import signal
import threading
from collections.abc import Callable, Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
from pydantic import ValidationError
from sqlalchemy import Engine

from bot.adapters.db.engine import make_engine
from bot.app import build_context, build_granters
from bot.config import Config, Settings, parse_config
from bot.domain.model import OperationKind, State
from bot.domain.ports import Granter, GrantResult, GrantSpec, Notice, NoticeKind
from bot.fakes.gitlab import FakeGitLab
from bot.fakes.kubernetes import FakeKubernetes
from bot.services import access, grants, operations
from bot.services.context import Context
from tests.conftest import ALICE, BOB
from tests.fakes.ports import FakeClock, InMemoryGranter, RecordingNotifier, StaticDirectory
from tests.scenario.conftest import wait_for

STEP = timedelta(seconds=20)
"""How far the clock moves between two looks: less than a lease."""
HEARTBEAT_SECONDS = 0.02
"""The heartbeat's real interval here, so that a renewal follows each clock step at once."""
FORK = multiprocessing.get_context("fork")


@dataclasses.dataclass
class Target:
    """A backend to grant on: its configuration, and what it holds for the requester."""

    config: Config
    settings: Settings
    granted: Callable[[], int]
    slow: str
    """How a slow call to it is described."""


def kubernetes_target(folder: Path, backend: str) -> tuple[Target, Callable[[], None]]:
    kube = FakeKubernetes(folder).start()
    kube.allow_bot()
    config = parse_config({"clusters": {"team": {
        "backend": backend,
        "kubernetes": {"server": kube.url,
                       "kubeconfig": str(kube.kubeconfig("bot", "k8s-access-bot")),
                       "username_template": "oidc:{email}" if backend == "rbac" else "{email}"},
        "approvers": [BOB],
        "roles": {"view": {"cluster_role": "view"}},
    }}}, Path("leases.yaml"))

    def granted() -> int:
        """The bindings the bot made for people (not the bot's own)."""
        return sum(1 for binding in kube.cluster_role_bindings.values()
                   if (binding["metadata"].get("labels") or {}).get(
                       "app.kubernetes.io/managed-by") == "k8s-access-bot")

    return (Target(config, Settings(), granted, "the Kubernetes API of cluster team is slow"),
            kube.stop)


def gitlab_target() -> tuple[Target, Callable[[], None]]:
    fake = FakeGitLab().start()
    fake.add_user("access-bot", "bot@example.com", admin=True, token="glpat-bot")
    alice = fake.add_user("alice", f"{ALICE.lower()}@example.com")
    group = fake.add_group("platform/k8s-view")
    config = parse_config({"clusters": {"team": {
        "backend": "gitlab",
        "gitlab": {"agent_id": 42, "kas_proxy_url": "https://kas.example.com/k8s-proxy",
                   "url": fake.url},
        "approvers": [BOB],
        "roles": {"view": {"group": group.full_path}},
    }}}, Path("leases.yaml"))
    return (Target(config, Settings(gitlab_token="glpat-bot"),
                   lambda: int(fake.member(group, alice) is not None), "GitLab is slow"),
            fake.stop)


@pytest.fixture(params=["rbac", "certificate", "gitlab"])
def target(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Target]:
    made, stop = gitlab_target() if request.param == "gitlab" \
        else kubernetes_target(tmp_path, request.param)
    yield made
    stop()


class HangingGranter:
    """The real granter, whose grant returns only when ``release`` is set: the backend has done
    its part, the worker has not heard back yet."""

    def __init__(self, real: Granter, answered: Any, release: Any) -> None:
        self._real = real
        self._answered = answered
        self._release = release

    def __getattr__(self, name: str) -> Any:
        return getattr(self._real, name)

    def grant(self, spec: GrantSpec, prepared: dict[str, Any]) -> GrantResult:
        result = self._real.grant(spec, prepared)
        self._answered.set()
        self._release.wait()
        return result


class QueueNotifier(RecordingNotifier):
    """Hands each notice's kind to the test process."""

    def __init__(self, kinds: Any) -> None:
        super().__init__()
        self._kinds = kinds

    def notify(self, notice: Notice) -> None:
        super().notify(notice)
        self._kinds.put((notice.kind.value, notice.detail))


def first_worker(database_url: str, target: Target, directory: StaticDirectory, now: Any,
                 answered: Any, release: Any, ids: Any, kinds: Any) -> None:
    """Runs in a process of its own: file a request and approve it, which runs the grant."""
    settings = target.settings.model_copy(
        update={"operation_heartbeat_seconds": HEARTBEAT_SECONDS})
    config = target.config
    granters = {name: HangingGranter(real, answered, release)
                for name, real in build_granters(settings, config).items()}
    ctx = build_context(settings, config, engine=make_engine(database_url),
                        granters=granters, notifier=QueueNotifier(kinds), directory=directory,
                        clock=lambda: datetime.fromtimestamp(now.value, UTC))
    request = access.file_request(ctx, ALICE, "team", "view", duration=timedelta(hours=1),
                                  reason="incident 42")
    ids.put(request.id)
    access.approve(ctx, request.id or 0, BOB)


@dataclasses.dataclass
class Race:
    ctx: Context
    """The second worker's."""
    now: Any
    worker: Any
    answered: Any
    release: Any
    kinds: Any
    request_id: int

    def advance(self, delta: timedelta) -> None:
        self.now.value += delta.total_seconds()

    def clock(self) -> datetime:
        return datetime.fromtimestamp(self.now.value, UTC)

    def lease_until(self) -> datetime | None:
        with self.ctx.transaction() as uow:
            operation = uow.operations.get(self.request_id, OperationKind.GRANT)
        assert operation is not None
        return operation.lease_until

    def notices(self) -> list[tuple[str, str | None]]:
        seen = []
        while not self.kinds.empty():
            seen.append(self.kinds.get())
        return seen


@pytest.fixture
def race(engine: Engine, database_url: str, target: Target,
         directory: StaticDirectory) -> Iterator[Race]:
    config = target.config
    # The clock starts at the present: a certificate's lifetime is counted by the API server.
    now = FORK.Value("d", datetime.now(UTC).timestamp())
    answered, release = FORK.Event(), FORK.Event()
    ids, kinds = FORK.Queue(), FORK.Queue()
    worker = FORK.Process(target=first_worker, args=(database_url, target, directory, now,
                                                     answered, release, ids, kinds))
    worker.start()
    try:
        request_id = ids.get(timeout=60)
        if not answered.wait(60):
            seen = []
            while not kinds.empty():
                seen.append(kinds.get())
            raise AssertionError(f"the first worker never heard from the backend: {seen}")
        ctx = build_context(target.settings, config,
                            engine=engine, granters=build_granters(target.settings, config),
                            notifier=RecordingNotifier(), directory=directory,
                            clock=lambda: datetime.fromtimestamp(now.value, UTC))
        yield Race(ctx, now, worker, answered, release, kinds, request_id)
    finally:  # a killed worker may leave the events' locks taken: kill, never release
        if worker.is_alive():
            os.kill(worker.pid, signal.SIGKILL)
        worker.join(30)


def renewed_after(race: Race) -> Callable[[], bool]:
    """True once the first worker's lease runs a full lease from the clock's present."""
    wanted = race.clock() + race.ctx.retry.lease
    return lambda: (race.lease_until() or wanted - timedelta(1)) >= wanted


def hold_while_alive(race: Race, target: Target) -> None:
    """Two leases' worth of clock pass while the first worker hangs: it keeps the grant."""
    assert race.ctx.retry.lease <= timedelta(minutes=1)
    elapsed = timedelta(0)
    while elapsed < 2 * race.ctx.retry.lease:
        race.advance(STEP)
        elapsed += STEP
        wait_for(renewed_after(race), timeout=30)
        assert operations.run_due(race.ctx) == 0, "a second worker took over a live worker's grant"
    assert grants.get(race.ctx, race.request_id).state is State.APPROVED
    assert target.granted() == 1  # by the first worker, once


def activations(ctx: Context, request_id: int) -> int:
    with ctx.transaction() as uow:
        return sum(1 for event in uow.audit.events()
                   if event.request_id == request_id and event.action == "activated")


def test_a_worker_killed_mid_grant_is_replaced_after_one_short_lease(
        race: Race, target: Target) -> None:
    hold_while_alive(race, target)
    os.kill(race.worker.pid, signal.SIGKILL)
    race.worker.join(30)

    race.advance(race.ctx.retry.lease - timedelta(seconds=1))
    assert operations.run_due(race.ctx) == 0  # the dead worker's last renewal still holds
    race.advance(timedelta(seconds=2))
    assert operations.run_due(race.ctx) == 1  # taken over: about a minute after it died

    final = grants.get(race.ctx, race.request_id)
    assert final.state is State.ACTIVE
    assert target.granted() == 1
    assert activations(race.ctx, race.request_id) == 1
    assert operations.run_due(race.ctx) == 0


def test_a_slow_grant_keeps_its_worker_and_people_hear_it_is_slow(
        race: Race, target: Target) -> None:
    hold_while_alive(race, target)
    race.release.set()
    race.worker.join(60)
    assert race.worker.exitcode == 0

    final = grants.get(race.ctx, race.request_id)
    assert final.state is State.ACTIVE
    assert target.granted() == 1
    assert activations(race.ctx, race.request_id) == 1
    assert operations.run_due(race.ctx) == 0
    seen = wait_for(race.notices, timeout=30)
    kinds = [kind for kind, _ in seen]
    assert kinds.count(NoticeKind.SLOW.value) == 1
    assert kinds.index(NoticeKind.SLOW.value) < kinds.index(NoticeKind.ACTIVE.value)
    detail = dict(seen)[NoticeKind.SLOW.value]
    assert detail == target.slow


class GatedGranter(InMemoryGranter):
    """Grants, then does not return until ``release`` is set."""

    def __init__(self, shared: InMemoryGranter) -> None:
        super().__init__(active=shared.active, calls=shared.calls, lock=shared.lock)
        self.answered = threading.Event()
        self.release = threading.Event()

    def grant(self, spec: GrantSpec, prepared: dict[str, Any]) -> GrantResult:
        result = super().grant(spec, prepared)
        self.answered.set()
        assert self.release.wait(60)
        return result


def test_a_worker_that_lost_its_lease_writes_nothing(ctx: Context, granter: InMemoryGranter,
                                                     notifier: RecordingNotifier,
                                                     clock: FakeClock) -> None:
    """A worker cut off from the database (its heartbeat cannot renew) is taken over; when
    its backend call returns at last, the grant is already recorded and it records nothing."""
    gated = GatedGranter(granter)
    cut_off = dataclasses.replace(ctx, granters={"staging": gated}, worker_id="cut-off",
                                  retry=dataclasses.replace(ctx.retry, heartbeat=timedelta(days=1)))
    request = access.file_request(ctx, ALICE, "staging", "edit", duration=timedelta(hours=1),
                                  reason="deploy")
    assert request.id is not None
    outcome: list[object] = []

    def approve() -> None:
        try:
            outcome.append(access.approve(cut_off, request.id or 0, BOB).state)
        except Exception as error:
            outcome.append(error)

    first = threading.Thread(target=approve)
    first.start()
    try:
        assert gated.answered.wait(60)
        clock.advance(ctx.retry.lease + timedelta(seconds=1))
        assert operations.run_due(ctx) == 1  # taken over, and finished
    finally:
        gated.release.set()
        first.join(60)
    assert outcome == [State.ACTIVE]  # no error: the first worker left it to the second
    assert grants.get(ctx, request.id).state is State.ACTIVE
    assert activations(ctx, request.id) == 1
    assert notifier.kinds(request.id).count(NoticeKind.ACTIVE) == 1
    assert granter.calls["granted"] == 1


def test_lease_settings_come_from_the_environment(monkeypatch: pytest.MonkeyPatch,
                                                  config: Config, engine: Engine) -> None:
    monkeypatch.setenv("OPERATION_LEASE_SECONDS", "60")
    monkeypatch.setenv("OPERATION_HEARTBEAT_SECONDS", "20")
    monkeypatch.setenv("OPERATION_SLOW_AFTER_SECONDS", "90")
    retry = build_context(Settings(), config, engine=engine, granters={}).retry
    assert (retry.lease, retry.heartbeat, retry.slow_after) == (
        timedelta(seconds=60), timedelta(seconds=20), timedelta(seconds=90))
    monkeypatch.setenv("OPERATION_HEARTBEAT_SECONDS", "31")
    with pytest.raises(ValidationError, match="operation_heartbeat_seconds"):
        Settings()
    monkeypatch.setenv("OPERATION_LEASE_SECONDS", "0")
    with pytest.raises(ValidationError, match="operation_lease_seconds"):
        Settings()
