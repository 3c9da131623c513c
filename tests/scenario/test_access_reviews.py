"""Access reviews that record decisions, through signed HTTP into the real Bolt app against the
local Slack: Keep and Revoke as approver, admin, grantee and stranger; the review's progress
updated in place; a double click counted once; what nobody decided carried into next week's
review and counted; the attestations exported by the command line."""

from __future__ import annotations

import csv
import io
import json
from datetime import timedelta
from typing import Any

import pytest
from click.testing import CliRunner

from bot.adapters.metrics import PrometheusMetrics
from bot.adapters.slack import blocks
from bot.app import SlackRuntime
from bot.cli import main
from bot.config import Config, parse_config
from bot.domain.model import AuditEvent, State
from bot.fakes.slack import BOT_TOKEN, SIGNING_SECRET, FakeSlack
from bot.services import access, grants, reminders
from tests.conftest import ADMIN, ALICE, BOB, CAROL, DAVE
from tests.fakes.ports import FakeClock
from tests.scenario.conftest import APPROVALS_CHANNEL, Driver, scenario_data, wait_for

WEEK = timedelta(days=7)
FIRST_WEEK, SECOND_WEEK = "2026-11-30T09:00", "2026-12-07T09:00"


@pytest.fixture
def slack_config(config: Config) -> Config:
    """Staging's view role granted for up to three weeks, so that grants live into next week's
    review."""
    data = scenario_data()
    data["clusters"]["staging"]["roles"]["view"].update(max_duration="3w",
                                                        auto_approve_up_to="3w")
    return parse_config(data, config.source)


def active(driver: Driver, user: str, length: str = "10d") -> int:
    """An auto-approved staging grant of ``user``; its ID."""
    answer = driver.ask(user, f"request staging view {length}")["text"]
    request_id = int(answer.split("#", 1)[1].split(":", 1)[0].split(" ", 1)[0])
    return request_id


def more_than_shown(runtime: SlackRuntime, grant: int) -> None:
    """Copies of ``grant``: more than the review message shows, so its CSV file goes too."""
    with runtime.ctx.transaction() as uow:
        template = uow.requests.get(grant)
        for _ in range(blocks.REVIEW_DETAILED):
            template.id, template.version = None, 0
            uow.requests.add(template)


def reviews_in(slack: FakeSlack, channel: str) -> list[str]:
    """The ``ts`` of the review messages in ``channel``, oldest first."""
    return sorted(ts for (c, ts), m in list(slack.messages.items())
                  if c == channel and "Access review" in (m.get("text") or ""))


def keep(driver: Driver, user: str, grant: int, ts: str,
         channel: str = APPROVALS_CHANNEL) -> str:
    return driver.press(user, "keep", str(grant), ts=ts, channel=channel)


def revoke_in_review(driver: Driver, user: str, grant: int, ts: str) -> str:
    return driver.press(user, "revoke", str(grant), ts=ts, block_id=f"review:{grant}")


def actions_of(message: dict[str, Any]) -> list[tuple[str, str]]:
    found = []
    for block in message["blocks"]:
        elements = block.get("elements", []) if block["type"] == "actions" else \
            [block["accessory"]] if "accessory" in block else []
        found += [(e["action_id"], e["value"]) for e in elements if e.get("type") == "button"]
    return found


def attestations(runtime: SlackRuntime) -> list[AuditEvent]:
    with runtime.ctx.transaction() as uow:
        return [e for e in uow.audit.events() if e.action == "attested"]


def test_keep_and_revoke_are_decided_by_approvers_and_admins_only(
        driver: Driver, slack: FakeSlack, runtime: SlackRuntime) -> None:
    alices, carols = active(driver, ALICE), active(driver, CAROL)
    assert reminders.weekly(runtime.ctx) == 1  # the review; no grant ends within the week
    [ts] = reviews_in(slack, APPROVALS_CHANNEL)
    review = slack.message(APPROVALS_CHANNEL, ts)
    assert "Access review: 2 active grants. 0 of 2 reviewed." in review["text"]
    assert sorted(actions_of(review)) == sorted([
        ("keep", str(alices)), ("revoke", str(alices)),
        ("keep", str(carols)), ("revoke", str(carols))])

    # Refused: the grantee (even with the review's Revoke, which a grantee could use
    # elsewhere), and someone who approves nothing on staging. Nothing changes.
    assert "You cannot review grant" in keep(driver, ALICE, alices, ts)
    assert "You cannot review grant" in revoke_in_review(driver, CAROL, carols, ts)
    assert "Only approvers of staging and admins" in keep(driver, CAROL, alices, ts)
    assert grants.get(runtime.ctx, carols).state is State.ACTIVE
    assert attestations(runtime) == []
    assert "0 of 2 reviewed" in slack.message(APPROVALS_CHANNEL, ts)["text"]

    # An approver keeps Alice's grant: recorded, and the review shows it in place.
    answer = keep(driver, BOB, alices, ts)
    assert f"You kept grant #{alices}" in answer and "1 of 2 reviewed" in answer
    review = slack.message(APPROVALS_CHANNEL, ts)
    assert "1 of 2 reviewed" in review["text"]
    assert ("keep", str(alices)) not in actions_of(review)
    assert any(f"kept by <@{BOB}>" in b["elements"][0]["text"] for b in review["blocks"]
               if b["type"] == "context")
    [attested] = attestations(runtime)
    assert (attested.actor, attested.request_id) == (BOB, alices)
    assert attested.details["period"] == FIRST_WEEK
    assert attested.details["subject"] == "u0alice01@example.com"

    # Another approver (by group) comes second: told, nothing recorded twice.
    assert "already reviewed this week" in keep(driver, DAVE, alices, ts)
    assert len(attestations(runtime)) == 1

    # An admin revokes Carol's grant from the review.
    answer = revoke_in_review(driver, ADMIN, carols, ts)
    assert f"Grant #{carols} is revoked" in answer and "2 of 2 reviewed" in answer
    revoked = grants.get(runtime.ctx, carols)
    assert revoked.state is State.REVOKED
    assert (revoked.ended_by, revoked.end_reason) == (ADMIN, "revoked in the access review")
    review = slack.message(APPROVALS_CHANNEL, ts)
    assert "2 of 2 reviewed" in review["text"] and actions_of(review) == []
    assert "is revoked: there is nothing left to review" in keep(driver, BOB, carols, ts)
    assert len(attestations(runtime)) == 1


def test_a_double_click_records_one_attestation(driver: Driver, slack: FakeSlack,
                                                runtime: SlackRuntime) -> None:
    grant = active(driver, ALICE)
    reminders.weekly(runtime.ctx)
    [ts] = reviews_in(slack, APPROVALS_CHANNEL)
    seen = len(slack.responses)
    for user in (BOB, BOB, DAVE):  # all at once: the worker takes them side by side
        driver.click(user, "keep", str(grant), ts=ts)
    answers = [r["text"] for r in wait_for(lambda: (
        slack.responses[seen:] if len(slack.responses) - seen >= 3 else None))]
    assert sum("You kept grant" in a for a in answers) == 1
    assert sum("already reviewed this week" in a for a in answers) == 2
    assert len(attestations(runtime)) == 1
    assert "1 of 1 reviewed" in slack.message(APPROVALS_CHANNEL, ts)["text"]


def test_reviews_by_dm_are_all_updated(driver: Driver, slack: FakeSlack,
                                       runtime: SlackRuntime) -> None:
    """Prod has no approvers channel: each approver gets the review; a decision in one DM
    shows in every one, and counts once."""
    ctx = runtime.ctx
    request = access.file_request(ctx, ALICE, "prod", "view", duration=timedelta(hours=4),
                                  reason="incident")
    assert request.id is not None
    access.approve(ctx, request.id, BOB)
    access.approve(ctx, request.id, CAROL)
    assert grants.get(ctx, request.id).state is State.ACTIVE
    reminders.weekly(ctx)
    dms = {user: reviews_in(slack, slack.dm_channel(user)) for user in (BOB, CAROL, DAVE)}
    assert all(len(found) == 1 for found in dms.values()), dms

    answer = keep(driver, CAROL, request.id, dms[CAROL][0], channel=slack.dm_channel(CAROL))
    assert "1 of 1 reviewed" in answer
    for user, [ts] in dms.items():
        assert "1 of 1 reviewed" in slack.message(slack.dm_channel(user), ts)["text"], user
    assert "already reviewed" in keep(driver, BOB, request.id, dms[BOB][0],
                                      channel=slack.dm_channel(BOB))


def test_what_nobody_decided_is_carried_over_counted_and_exported(
        driver: Driver, slack: FakeSlack, runtime: SlackRuntime, clock: FakeClock,
        metrics: PrometheusMetrics, database_url: str) -> None:
    alices, carols = active(driver, ALICE), active(driver, CAROL)
    reminders.weekly(runtime.ctx)
    [first] = reviews_in(slack, APPROVALS_CHANNEL)
    keep(driver, BOB, alices, first)  # Carol's grant: nobody decides this week

    clock.advance(WEEK)
    assert reminders.weekly(runtime.ctx) == 3  # the review, and two grants now end in 3 days
    [_, second] = reviews_in(slack, APPROVALS_CHANNEL)
    review = slack.message(APPROVALS_CHANNEL, second)
    assert "Access review: 2 active grants. 0 of 2 reviewed." in review["text"]
    carried = [b["text"]["text"] for b in review["blocks"]
               if b.get("block_id", "").startswith("review:") and "Carried over" in
               b["text"]["text"]]
    assert len(carried) == 1 and carried[0].startswith(f"*#{carols}*")
    assert metrics.registry.get_sample_value(
        "k8s_access_review_unreviewed", {"cluster": "staging"}) == 1.0
    assert metrics.registry.get_sample_value(
        "k8s_access_review_unreviewed", {"cluster": "prod"}) == 0.0

    # A click in last week's message decides in this week's review, which shows it.
    assert "1 of 2 reviewed" in keep(driver, BOB, carols, first)
    assert "1 of 2 reviewed" in slack.message(APPROVALS_CHANNEL, second)["text"]

    env = {"DATABASE_URL": database_url, "SLACK_BOT_TOKEN": BOT_TOKEN,
           "SLACK_SIGNING_SECRET": SIGNING_SECRET}
    exported = CliRunner().invoke(main, ["audit", "export", "--attestations"], env=env,
                                  catch_exceptions=False)
    assert exported.exit_code == 0, exported.output
    lines = [json.loads(line) for line in exported.stdout.splitlines()]
    assert [(r["grant_id"], r["kept_by"], r["period"]) for r in lines] == [
        (alices, BOB, FIRST_WEEK), (carols, BOB, SECOND_WEEK)]
    assert {r["cluster"] for r in lines} == {"staging"}
    as_csv = CliRunner().invoke(main, ["audit", "export", "--attestations", "--format", "csv"],
                                env=env, catch_exceptions=False)
    rows = list(csv.DictReader(io.StringIO(as_csv.stdout)))
    assert [(int(r["grant_id"]), r["kept_by"]) for r in rows] == [(alices, BOB), (carols, BOB)]
    everything = CliRunner().invoke(main, ["audit", "export"], env=env, catch_exceptions=False)
    assert len(everything.stdout.splitlines()) > len(lines)  # the flag keeps attestations only


def test_a_review_whose_csv_file_failed_is_posted_once_and_its_file_sent_next_pass(
        driver: Driver, slack: FakeSlack, runtime: SlackRuntime, clock: FakeClock) -> None:
    """More grants than the message shows: the CSV file goes beside it. Slack takes the
    message but not the file; the next pass sends the file and updates the message in
    place, never posting a second review."""
    first = active(driver, ALICE)
    more_than_shown(runtime, first)
    slack.fail("files.completeUploadExternal", "service_unavailable", times=3,
               channel_id=APPROVALS_CHANNEL)
    assert reminders.weekly(runtime.ctx) == 0  # the file could not go: tried again later
    [ts] = reviews_in(slack, APPROVALS_CHANNEL)
    keep(driver, BOB, first, ts)

    clock.advance(timedelta(minutes=1))
    assert reminders.weekly(runtime.ctx) == 1
    assert reminders.weekly(runtime.ctx) == 0
    assert reviews_in(slack, APPROVALS_CHANNEL) == [ts]  # one review message, updated
    assert "1 of 25 reviewed" in slack.message(APPROVALS_CHANNEL, ts)["text"]
    uploads = [c for c in slack.called("files.completeUploadExternal")
               if c.get("channel_id") == APPROVALS_CHANNEL]
    assert len(uploads) == 4  # three refused, then the one that went


def test_keep_on_a_grant_whose_time_is_up_is_refused_and_the_review_shows_it(
        driver: Driver, slack: FakeSlack, runtime: SlackRuntime, clock: FakeClock) -> None:
    grant = active(driver, ALICE, "2h")
    reminders.weekly(runtime.ctx)
    [ts] = reviews_in(slack, APPROVALS_CHANNEL)
    clock.advance(timedelta(hours=2))  # its end: the expiry sweep has not run yet
    assert "Only approvers of staging and admins" in keep(driver, CAROL, grant, ts)
    assert "0 of 1 reviewed" in slack.message(APPROVALS_CHANNEL, ts)["text"]  # untouched
    answer = keep(driver, BOB, grant, ts)
    assert f"Grant #{grant} is already ending" in answer
    assert attestations(runtime) == []
    review = slack.message(APPROVALS_CHANNEL, ts)
    assert "1 of 1 reviewed" in review["text"] and actions_of(review) == []
    assert any(f"*#{grant}*" in b["elements"][0]["text"] and "ending, nothing to review" in
               b["elements"][0]["text"] for b in review["blocks"] if b["type"] == "context")


@pytest.mark.parametrize("refusal", ["not_in_channel", "is_archived", "channel_not_found",
                                     "temporary_then_kicked"])
def test_a_review_the_approvers_channel_refuses_goes_to_each_approver_by_dm(
        driver: Driver, slack: FakeSlack, runtime: SlackRuntime, clock: FakeClock,
        refusal: str) -> None:
    """An approvers channel the bot cannot post to falls back to DMs (SPEC, delivery): the
    review goes to each of the role's approvers (a group's members too), once, and a Keep in
    a DM decides for every copy."""
    grant = active(driver, ALICE)
    slack.channels.discard(APPROVALS_CHANNEL)
    if refusal == "not_in_channel":
        slack.outside.add(APPROVALS_CHANNEL)
    elif refusal == "is_archived":
        slack.archived.add(APPROVALS_CHANNEL)
    elif refusal == "temporary_then_kicked":  # a DM that fails for now is sent next pass
        slack.outside.add(APPROVALS_CHANNEL)
        slack.fail("chat.postMessage", "service_unavailable", times=3,
                   channel=slack.dm_channel(DAVE))
    reminders.weekly(runtime.ctx)
    if refusal == "temporary_then_kicked":
        assert reviews_in(slack, slack.dm_channel(DAVE)) == []
        clock.advance(timedelta(minutes=1))
        reminders.weekly(runtime.ctx)
    clock.advance(timedelta(minutes=1))
    reminders.weekly(runtime.ctx)  # nothing is sent twice
    dms = {user: reviews_in(slack, slack.dm_channel(user)) for user in (BOB, DAVE)}
    assert all(len(found) == 1 for found in dms.values()), dms
    assert reviews_in(slack, slack.dm_channel(CAROL)) == []  # approves nothing on staging

    answer = keep(driver, DAVE, grant, dms[DAVE][0], channel=slack.dm_channel(DAVE))
    assert "1 of 1 reviewed" in answer
    assert "1 of 1 reviewed" in slack.message(slack.dm_channel(BOB), dms[BOB][0])["text"]


def test_a_review_whose_file_the_channel_refuses_stays_in_the_channel(
        driver: Driver, slack: FakeSlack, runtime: SlackRuntime) -> None:
    """The channel took the message but refuses its CSV file: the review stands there, and
    no approver gets a second copy by DM."""
    first = active(driver, ALICE)
    more_than_shown(runtime, first)
    slack.fail("files.completeUploadExternal", "restricted_action", channel_id=APPROVALS_CHANNEL)
    reminders.weekly(runtime.ctx)
    assert len(reviews_in(slack, APPROVALS_CHANNEL)) == 1
    assert all(reviews_in(slack, slack.dm_channel(user)) == [] for user in (BOB, DAVE))
