"""The Slack edge's two halves: the acknowledgement only checks and keeps, the worker runs the
use case; and a button or form reaches the same handler as the command it stands for."""

from __future__ import annotations

import json
from datetime import timedelta
from typing import Any

import pytest
from sqlalchemy import Engine, text

from bot.adapters.slack import blocks
from bot.adapters.slack.forms import AccessWanted
from bot.adapters.slack.handlers import Handlers
from bot.app import SlackRuntime
from bot.domain.model import State
from bot.fakes.slack import FakeSlack
from bot.services import access, grants
from tests.conftest import ALICE, BOB, CAROL
from tests.scenario.conftest import Driver, selected, text_input, wait_for


def kept(engine: Engine) -> list[dict[str, Any]]:
    """The payloads waiting in the inbox for a worker."""
    with engine.connect() as connection:
        return [json.loads(body) for body in connection.execute(
            text("SELECT body FROM slack_inbox WHERE done_at IS NULL")).scalars()]


def deny_form_of_a_new_request(runtime: SlackRuntime) -> dict[str, Any]:
    """Alice's request #1, waiting for Bob; the Deny form Bob's click opens for it."""
    access.file_request(runtime.ctx, ALICE, "staging", "edit", duration=timedelta(hours=1),
                          reason="fix")
    return blocks.deny_modal(grants.get(runtime.ctx, 1))


def run_worker_until(runtime: SlackRuntime, done: Any) -> None:
    worker = runtime.worker().start()
    try:
        wait_for(done)
    finally:
        worker.stop()


def test_a_deny_form_is_acknowledged_and_kept_then_denied_by_the_worker(
        unattended: SlackRuntime, slack: FakeSlack, engine: Engine) -> None:
    ctx = unattended.ctx
    modal = deny_form_of_a_new_request(unattended)
    driver = Driver(unattended, slack)

    refused = driver.submit(BOB, modal, {"reason": text_input("reason", " ")})
    assert '"response_action": "errors"' in refused.body and "Say why" in refused.body
    assert kept(engine) == []  # checked once, at the door: a wrong form is never kept

    answer = driver.submit(BOB, modal, {"reason": text_input("reason", "use view")})
    assert (answer.status, answer.body) == (200, "")
    assert grants.get(ctx, 1).state is State.PENDING  # acknowledged; nothing decided yet
    [submission] = kept(engine)
    assert submission["type"] == "view_submission"
    assert submission["view"]["callback_id"] == "deny_modal"

    run_worker_until(unattended, lambda: grants.get(ctx, 1).state is State.DENIED)
    denied = grants.get(ctx, 1)
    assert (denied.ended_by, denied.end_reason) == (BOB, "use view")
    assert kept(engine) == []


def test_a_deny_form_overtaken_before_the_worker_runs_it_is_told_and_changes_nothing(
        unattended: SlackRuntime, slack: FakeSlack, engine: Engine) -> None:
    ctx = unattended.ctx
    modal = deny_form_of_a_new_request(unattended)
    assert Driver(unattended, slack).submit(
        BOB, modal, {"reason": text_input("reason", "no")}).body == ""
    access.cancel(ctx, 1, ALICE)  # between the acknowledgement and the work

    run_worker_until(unattended, lambda: [m for m in slack.dms_to(BOB)
                                          if "cannot be denied any more" in m["text"]])
    assert grants.get(ctx, 1).state is State.CANCELLED


@pytest.fixture
def reached(monkeypatch: pytest.MonkeyPatch) -> list[tuple[str, tuple[Any, ...]]]:
    """(handler, its arguments) of each handler call, in order; the handlers still run."""
    calls: list[tuple[str, tuple[Any, ...]]] = []
    for name in ("request", "approve", "deny", "cancel", "revoke", "extend"):
        original = getattr(Handlers, name)

        def spy(self: Handlers, *args: Any, _name: str = name, _original: Any = original,
                **kwargs: Any) -> Any:
            calls.append((_name, args))
            return _original(self, *args, **kwargs)

        monkeypatch.setattr(Handlers, name, spy)
    return calls


@pytest.mark.parametrize(("verb", "user", "filed", "state"), [
    ("approve", BOB, "request staging edit 1h fix", State.PENDING),
    ("cancel", ALICE, "request staging edit 1h fix", State.PENDING),
    ("revoke", ALICE, "request staging view 1h", State.ACTIVE),
])
def test_a_button_and_its_command_reach_the_same_handler(
        driver: Driver, runtime: SlackRuntime, reached: list[tuple[str, tuple[Any, ...]]],
        verb: str, user: str, filed: str, state: State) -> None:
    driver.ask(ALICE, filed)
    wait_for(lambda: grants.get(runtime.ctx, 1).state is state)
    driver.ask(user, f"{verb} 1")
    driver.press(user, verb, "1")
    assert [args[:2] for name, args in reached if name == verb] == [(user, 1), (user, 1)]


def test_a_form_and_its_command_reach_the_same_handler(
        driver: Driver, slack: FakeSlack, runtime: SlackRuntime,
        reached: list[tuple[str, tuple[Any, ...]]]) -> None:
    def form(callback_id: str) -> dict[str, Any]:
        views: list[dict[str, Any]] = wait_for(
            lambda: [v for v in slack.views if v.get("callback_id") == callback_id])
        return views[-1]

    # request: typed in full, then through the form.
    driver.ask(ALICE, "request prod view 1h typed")  # #1
    driver.command(ALICE, "request prod view")
    driver.submit(ALICE, form("request_modal"), {
        "cluster": selected("pick_cluster", "staging"), "role": selected("pick_role", "edit"),
        "duration": text_input("duration", "1h"), "reason": text_input("reason", "formed")})
    wait_for(lambda: [m for m in slack.dms_to(ALICE) if "Request #2 filed" in m["text"]])
    asked = [args[1] for name, args in reached if name == "request"]
    assert asked == [
        AccessWanted("prod", "view", timedelta(hours=1), "typed"),
        AccessWanted("prod", "view"),  # incomplete: the same handler opens the form
        AccessWanted("staging", "edit", timedelta(hours=1), "formed"),
    ]

    # deny: typed for #1, through the form for #2.
    driver.ask(CAROL, "deny 1 typed")
    driver.click(BOB, "deny", "2")
    driver.submit(BOB, form("deny_modal"), {"reason": text_input("reason", "formed")})
    wait_for(lambda: grants.get(runtime.ctx, 2).state is State.DENIED)
    assert [args for name, args in reached if name == "deny"] == [
        (CAROL, 1, "typed"), (BOB, 2, "formed")]

    # extend: typed, then through the form, for the same active grant (#3).
    driver.ask(ALICE, "request staging view 1h")
    wait_for(lambda: grants.get(runtime.ctx, 3).state is State.ACTIVE)
    driver.ask(ALICE, "extend 3 30m typed")
    driver.click(ALICE, "extend", "3", channel=slack.dm_channel(ALICE))
    driver.submit(ALICE, form("extend_modal"), {"duration": text_input("duration", "1h"),
                                                "reason": text_input("reason", "formed")})
    wait_for(lambda: len([n for n, _ in reached if n == "extend"]) == 2)
    assert [args for name, args in reached if name == "extend"] == [
        (ALICE, 3, timedelta(minutes=30), "typed"), (ALICE, 3, timedelta(hours=1), "formed")]
