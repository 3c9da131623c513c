"""What a platform team runs: the image, the manifests, the probes, metrics and logs."""

from __future__ import annotations

import io
import json
import logging
import re
from pathlib import Path
from typing import Any

import pytest
from click.testing import CliRunner

from bot.adapters.web import WebApp
from bot.app import build_metrics, build_slack_runtime
from bot.cli import main
from bot.config import Config, Settings, load_config
from bot.domain.model import State
from bot.fakes.slack import BOT_TOKEN, SIGNING_SECRET, FakeSlack
from bot.logs import configure
from bot.serve import readiness
from bot.services import grants
from tests.conftest import ALICE, BOB
from tests.fakes.ports import FakeClock, InMemoryGranter

ROOT = Path(__file__).resolve().parents[2]


def test_shipped_configs_are_valid() -> None:
    for path in (ROOT / "examples" / "k8s-access.yaml", ROOT / "deploy" / "base" /
                 "k8s-access.yaml"):
        assert load_config(path).clusters


@pytest.fixture
def slack() -> Any:
    fake = FakeSlack(users={u: {"email": f"{u.lower()}@example.com"} for u in (ALICE, BOB)},
                     channels={"C0GENERAL"}).start()
    yield fake
    fake.stop()


def test_metrics_and_logs_of_a_full_flow(slack: FakeSlack, config: Config, engine: Any,
                                         granter: InMemoryGranter, clock: FakeClock) -> None:
    settings = Settings(slack_bot_token=BOT_TOKEN, slack_signing_secret=SIGNING_SECRET,
                        slack_api_url=slack.api_url, log_format="json")
    output = io.StringIO()
    handler = configure("DEBUG", "json", settings.secret_values(), stream=output)
    metrics = build_metrics(engine)
    runtime = build_slack_runtime(settings, config, http=True, engine=engine, metrics=metrics,
                                  granters={"staging": granter, "prod": granter}, clock=clock)
    from tests.scenario.conftest import Driver, wait_for

    worker = runtime.worker().start()
    try:
        driver = Driver(runtime, slack)
        driver.ask(ALICE, "request staging edit 1h deploy " + BOT_TOKEN)
        driver.ask(BOB, "approve 1")
        wait_for(lambda: grants.get(runtime.ctx, 1).state is State.ACTIVE)
        logging.getLogger("bot.test").info("leaking %s and %s", SIGNING_SECRET,
                                           "-----BEGIN PRIVATE KEY-----\nMIGH\n"
                                           "-----END PRIVATE KEY-----")
        driver.ask(ALICE, "revoke 1 done")
        driver.ask(ALICE, "request staging view 1h")  # auto-approved by the policy
    finally:
        worker.stop()
        runtime.inbox.close()
        logging.getLogger().removeHandler(handler)
    exposition = metrics.render()[0].decode()
    assert 'k8s_access_events_total{action="approved",cluster="staging"} 2.0' in exposition
    assert 'k8s_access_events_total{action="revoked",cluster="staging"} 1.0' in exposition
    assert re.search(r'k8s_access_backend_call_seconds_count\{cluster="staging",'
                     r'operation="grant",outcome="ok"\} 2\.0', exposition)
    assert 'k8s_access_requests{cluster="staging",state="revoked"} 1.0' in exposition
    # The test config names a user group this Slack does not have: counted, not fatal.
    assert ('k8s_access_slack_api_errors_total{error="no_such_subteam",'
            'method="usergroups.users.list"} 1.0') in exposition
    logs = output.getvalue()
    lines = [json.loads(line) for line in logs.splitlines()]
    assert any(line.get("request_id") == 1 for line in lines)
    for secret in (BOT_TOKEN, SIGNING_SECRET, "MIGH", "PRIVATE KEY-----\n"):
        assert secret not in logs


def test_readiness(slack: FakeSlack, config: Config, engine: Any) -> None:
    settings = Settings(slack_bot_token=BOT_TOKEN, slack_signing_secret=SIGNING_SECRET,
                        slack_api_url=slack.api_url)
    runtime = build_slack_runtime(settings, config, http=True, engine=engine, granters={})
    assert readiness(runtime)() == {}
    bad = Settings(slack_bot_token="xoxb-revoked", slack_signing_secret=SIGNING_SECRET,
                   slack_api_url=slack.api_url)
    import dataclasses

    from bot.adapters.slack.client import make_client
    broken = dataclasses.replace(runtime, client=make_client(bad))
    assert readiness(broken)() == {"slack": "invalid_auth"}
    app = WebApp(None, readiness(broken))
    statuses: list[str] = []
    body = b"".join(app({"PATH_INFO": "/readyz", "REQUEST_METHOD": "GET"},
                        lambda status, headers: statuses.append(status)))
    assert statuses == ["503 Service Unavailable"]
    assert json.loads(body)["failed"] == {"slack": "invalid_auth"}


def test_demo_shows_the_whole_flow() -> None:
    result = CliRunner().invoke(main, ["demo"], catch_exceptions=False)
    assert result.exit_code == 0, result.output
    for line in ("Username    alice@example.com", "$ kubectl auth can-i list pods\n      yes",
                 "Access #1 ended on time", "alice is now in platform/k8s-staging-edit",
                 "Revoked: the membership the bot created is removed."):
        assert line in result.output


def test_ci_runs_the_readme_test_command() -> None:
    readme = (ROOT / "README.md").read_text()
    assert "bash scripts/test.sh" in readme
    assert "bash scripts/test.sh" in (ROOT / ".ci" / "run").read_text()
