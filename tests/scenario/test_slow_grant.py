"""A slow grant in Slack: the approval message and the requester hear that the bot is still
working on it, and what is slow, instead of silence; then the grant lands as usual."""

from __future__ import annotations

from collections.abc import Iterator
from datetime import timedelta

import pytest
from sqlalchemy import Engine

from bot.app import SlackRuntime, build_slack_runtime
from bot.config import Config, Settings
from bot.domain.model import State
from bot.fakes.slack import FakeSlack
from bot.services import grants
from tests.conftest import ALICE, BOB
from tests.fakes.ports import FakeClock
from tests.integration.test_leases import GatedGranter
from tests.scenario.conftest import APPROVALS_CHANNEL, Driver, wait_for

STILL_WORKING = "Still working on it: the Kubernetes API of cluster staging is slow."


@pytest.fixture
def slow_runtime(settings: Settings, slack_config: Config, engine: Engine, gated: GatedGranter,
                 clock: FakeClock) -> Iterator[SlackRuntime]:
    quick = settings.model_copy(update={"operation_heartbeat_seconds": 0.02})
    runtime = build_slack_runtime(quick, slack_config, http=True, engine=engine,
                                  granters={"staging": gated, "prod": gated}, clock=clock)
    worker = runtime.worker().start()
    yield runtime
    gated.release.set()
    worker.stop()
    runtime.inbox.close()


def approval_texts(slack: FakeSlack) -> list[str]:
    return [str(message["text"]) + str(message["blocks"])
            for (channel, _), message in slack.messages.items()
            if channel == APPROVALS_CHANNEL and not message.get("thread_ts")]


def test_a_slow_grant_is_shown_as_slow(slow_runtime: SlackRuntime, slack: FakeSlack,
                                       gated: GatedGranter, clock: FakeClock) -> None:
    driver = Driver(slow_runtime, slack)
    driver.ask(ALICE, "request staging edit 2h deploy the fix")
    driver.command(BOB, "approve 1")  # its answer comes once the grant returns
    assert gated.answered.wait(10)
    assert not [m for m in slack.dms_to(ALICE) if "Still working" in m["text"]]
    clock.advance(slow_runtime.ctx.retry.slow_after)

    dm = wait_for(lambda: [m for m in slack.dms_to(ALICE) if "Still working" in m["text"]])
    assert STILL_WORKING in dm[0]["text"]
    wait_for(lambda: any(STILL_WORKING in text for text in approval_texts(slack)))

    gated.release.set()
    wait_for(lambda: grants.get(slow_runtime.ctx, 1).state is State.ACTIVE)
    wait_for(lambda: [m for m in slack.dms_to(ALICE) if "is active" in m["text"]])
    wait_for(lambda: all(STILL_WORKING not in text for text in approval_texts(slack)))
    clock.advance(timedelta(minutes=5))
    assert len([m for m in slack.dms_to(ALICE) if "Still working" in m["text"]]) == 1
