"""Shared fixtures: a real database (SQLite by default, PostgreSQL when DATABASE_URL says so),
migrated once per run and emptied after each test, and a use-case context over fakes."""

from __future__ import annotations

import dataclasses
import os
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import Engine, create_engine, text
from sqlalchemy.engine import make_url

from bot.adapters.db import migrate
from bot.adapters.db.engine import make_engine
from bot.adapters.db.models import Base
from bot.app import build_context
from bot.config import Config, Settings, parse_config
from bot.fakes.opsgenie import FakeOpsgenie
from bot.fakes.pagerduty import FakePagerDuty
from bot.services.context import Context, RetryPolicy
from tests.fakes.ports import FakeClock, InMemoryGranter, RecordingNotifier, StaticDirectory

BASE_URL = os.environ.get("DATABASE_URL", "")
ON_POSTGRES = BASE_URL.startswith("postgresql")


def create_database(tmp: Path) -> tuple[str, Callable[[], None]]:
    """A new, empty database of the kind under test, and how to drop it."""
    if not ON_POSTGRES:
        path = tmp / f"{uuid.uuid4().hex}.db"
        return f"sqlite:///{path}", lambda: path.unlink(missing_ok=True)
    url = make_url(BASE_URL.replace("postgresql://", "postgresql+psycopg://", 1))
    name = f"k8sab_test_{uuid.uuid4().hex[:12]}"
    admin = create_engine(url, isolation_level="AUTOCOMMIT")
    with admin.connect() as connection:
        connection.execute(text(f'CREATE DATABASE "{name}"'))

    def drop() -> None:
        with admin.connect() as connection:
            connection.execute(text(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))
        admin.dispose()

    return url.set(database=name).render_as_string(hide_password=False), drop


@pytest.fixture(scope="session")
def database_url(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    url, drop = create_database(tmp_path_factory.mktemp("db"))
    yield url
    drop()


@pytest.fixture(scope="session")
def migrated_engine(database_url: str) -> Iterator[Engine]:
    engine = make_engine(database_url, pool_size=60, max_overflow=10) if ON_POSTGRES \
        else make_engine(database_url)
    migrate.upgrade(engine)
    yield engine
    engine.dispose()


@pytest.fixture
def engine(migrated_engine: Engine) -> Iterator[Engine]:
    yield migrated_engine
    with migrated_engine.begin() as connection:
        if ON_POSTGRES:
            names = ", ".join(t.name for t in Base.metadata.sorted_tables)
            connection.execute(text(f"TRUNCATE {names} RESTART IDENTITY CASCADE"))
        else:
            for table in reversed(Base.metadata.sorted_tables):
                connection.execute(table.delete())


ALICE, BOB, CAROL, DAVE, ADMIN = "U0ALICE01", "U0BOB0002", "U0CAROL03", "U0DAVE004", "U0ADMIN05"
APPROVER_GROUP = "S0SRE0001"

TEST_CONFIG: dict[str, Any] = {
    "admins": [ADMIN],
    "clusters": {
        "staging": {
            "backend": "rbac",
            "kubernetes": {"server": "https://staging.example", "kubeconfig": "/dev/null"},
            "approvers": [BOB, APPROVER_GROUP],
            "roles": {
                "view": {"cluster_role": "view", "auto_approve_up_to": "2h",
                         "require_reason": False},
                "edit": {"cluster_role": "edit", "max_duration": "1d", "self_extend": True},
                "deploy": {"role": "edit", "role_kind": "ClusterRole",
                           "namespaces": ["shop", "payments"]},
            },
        },
        "prod": {
            "backend": "rbac",
            "kubernetes": {"server": "https://prod.example", "kubeconfig": "/dev/null"},
            "approvers": [BOB, CAROL, DAVE],
            "approvals_required": 2,
            "max_duration": "4h",
            "roles": {
                "view": {"cluster_role": "view"},
                "admin": {"cluster_role": "cluster-admin", "break_glass": True,
                          "max_duration": "1h"},
            },
        },
    },
}


@pytest.fixture
def config() -> Config:
    return parse_config(TEST_CONFIG, Path("test.yaml"))


@pytest.fixture
def clock() -> FakeClock:
    return FakeClock()


@pytest.fixture
def granter() -> InMemoryGranter:
    return InMemoryGranter()


@pytest.fixture
def notifier() -> RecordingNotifier:
    return RecordingNotifier()


@pytest.fixture
def directory() -> StaticDirectory:
    return StaticDirectory(
        emails={u: f"{u.lower()}@example.com" for u in (ALICE, BOB, CAROL, DAVE, ADMIN)},
        groups={APPROVER_GROUP: {DAVE}},
    )


@pytest.fixture
def ctx(engine: Engine, config: Config, granter: InMemoryGranter, notifier: RecordingNotifier,
        directory: StaticDirectory, clock: FakeClock) -> Context:
    context = build_context(
        Settings(), config, engine=engine,
        granters={"staging": granter, "prod": granter},
        notifier=notifier, directory=directory, clock=clock,
    )
    return dataclasses.replace(context, retry=RetryPolicy(jitter=0))


PD_POLICY, PD_OTHER_POLICY, PD_SCHEDULE = "PPLATF1", "PDATA01", "PSCHED1"
"""The escalation policies and schedule the local PagerDuty knows (:func:`pd`)."""


@pytest.fixture
def pd(monkeypatch: pytest.MonkeyPatch) -> Iterator[FakePagerDuty]:
    """A local PagerDuty REST API v2 over HTTPS, its CA trusted for the test."""
    fake = FakePagerDuty(escalation_policies={PD_POLICY: "Platform", PD_OTHER_POLICY: "Data"},
                         schedules={PD_SCHEDULE: "Platform primary"}).start()
    monkeypatch.setenv("SSL_CERT_FILE", str(fake.ca_file))  # PagerDuty's client: HTTPS only
    yield fake
    fake.stop()


@pytest.fixture
def og() -> Iterator[FakeOpsgenie]:
    """A local Opsgenie Who-is-on-call API."""
    fake = FakeOpsgenie().start()
    yield fake
    fake.stop()
