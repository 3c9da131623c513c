"""What people type for the policy features: ``request --for @user`` and ``approve ID --for
DURATION``, parsed into commands or refused with how to write them; and how the pieces are
shown in Slack (ticket links, who may ask, the approval choices)."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest

from bot.adapters.slack import blocks
from bot.adapters.slack.commands import parse, parse_mention
from bot.domain.errors import InvalidInput
from bot.domain.model import AccessRequest, Approval, Decision
from bot.domain.ports import Notice, NoticeKind
from bot.domain.reasons import ReasonPiece

H = timedelta(hours=1)
NOW = datetime(2026, 1, 5, 9, tzinfo=UTC)


@pytest.mark.parametrize(("text", "grantee", "cluster", "reason"), [
    ("request --for <@U0BOB0002|bob> staging view 2h why", "U0BOB0002", "staging", "why"),
    ("request --for <@U0BOB0002> staging view 2h why", "U0BOB0002", "staging", "why"),
    ("request staging --for <@W0BOB0002> view 2h why", "W0BOB0002", "staging", "why"),
    ("request staging view 2h why --for=U0BOB0002", "U0BOB0002", "staging", "why"),
    ("request staging view 2h why", None, "staging", "why"),
])
def test_request_for_someone_anywhere_after_request(text: str, grantee: str | None,
                                                    cluster: str, reason: str) -> None:
    command = parse(text)
    assert (command.grantee_id, command.cluster, command.role, command.duration,
            command.text) == (grantee, cluster, "view", 2 * H, reason)


@pytest.mark.parametrize(("word", "says"), [
    ("@bob", "'@bob' is not a mention of a Slack user"),
    ("<#C0GENERAL|general>", "is not a mention of a Slack user"),
    ("<!channel>", "is not a mention of a Slack user"),
    ("<@U0BOB0002", "is not a mention of a Slack user"),
    (None, "`--for` needs a person"),
])
def test_what_is_not_a_mention_says_how_to_write_it(word: str | None, says: str) -> None:
    with pytest.raises(InvalidInput) as refused:
        parse_mention(word)
    assert says in refused.value.message and "as you type @" in refused.value.message


@pytest.mark.parametrize(("text", "duration", "comment"), [
    ("approve 4", None, ""),
    ("approve 4 looks fine", None, "looks fine"),
    ("approve 4 --for 1h", H, ""),
    ("approve 4 --for 90m looks fine", timedelta(minutes=90), "looks fine"),
    ("approve 4 looks fine --for 1h", H, "looks fine"),
])
def test_approve_for_less(text: str, duration: timedelta | None, comment: str) -> None:
    command = parse(text)
    assert (command.verb, command.request_id, command.duration, command.text) == (
        "approve", 4, duration, comment)


def request(**changes: object) -> AccessRequest:
    fields: dict[str, object] = dict(
        requester_id="U0ALICE01", cluster="staging", role="edit", duration=2 * H,
        reason="fix OPS-1", subject="alice@example.com", created_at=NOW, id=7)
    fields.update(changes)
    return AccessRequest(**fields)  # type: ignore[arg-type]


def test_a_ticket_is_a_link_and_typed_text_stays_text() -> None:
    hostile = (ReasonPiece("see <!channel> & "),
               ReasonPiece("A|B>C", "https://jira.example/browse/A%7CB%3EC?x=1&y=2"),
               ReasonPiece(" <@U0BOB0002>"))
    shown = blocks.reason_text(request(), lambda r: hostile)
    assert shown == ("see &lt;!channel&gt; &amp; "
                     "<https://jira.example/browse/A%7CB%3EC?x=1&amp;y=2|A|B&gt;C>"
                     " &lt;@U0BOB0002&gt;")
    assert blocks.reason_text(request()) == "fix OPS-1"  # nothing linked by default


def test_who_may_ask_is_shown_as_mentions() -> None:
    message = ("You are not among those who may ask for staging/secrets: U0CAROL03 and members "
               "of user group S0SRE0001 may.")
    assert blocks.not_eligible(message, {"U0CAROL03", "S0SRE0001"}) == (
        "You are not among those who may ask for staging/secrets: <@U0CAROL03> and members "
        "of user group <!subteam^S0SRE0001> may.")


@pytest.mark.parametrize(("asked", "offered"), [
    (timedelta(minutes=15), []),
    (timedelta(minutes=20), ["15m"]),
    (2 * H, ["15m", "30m", "1h"]),
    (timedelta(days=30), ["15m", "30m", "1h", "2h", "4h", "8h", "12h", "1d", "2d", "3d", "1w",
                          "2w"]),
])
def test_the_approval_message_offers_shorter_standard_durations(
        asked: timedelta, offered: list[str]) -> None:
    _, content = blocks.approval_message(request(duration=asked), 1)
    menus = [b["accessory"] for b in content if b.get("accessory", {}).get("action_id")
             == blocks.APPROVE_FOR]
    assert [o["value"] for menu in menus for o in menu["options"]] == [
        f"7:{d}" for d in offered]


def test_the_granted_duration_is_shown_where_it_is_less() -> None:
    approved = request(approvals=[Approval("U0BOB0002", Decision.APPROVE, NOW, "", H)])
    _text, content = blocks.approval_message(approved, 0)
    assert "*Duration*\\n1h (asked 2h)" in str(content).replace("\n", "\\n")
    assert "for 1h" in str(content)
    dm = blocks.requester_message(Notice(NoticeKind.APPROVED, approved))
    assert dm is not None and "was approved for 1h of the 2h asked" in dm[0]


def test_on_behalf_both_hear_and_only_the_grantee_connects() -> None:
    ended = request(grantee_id="U0BOB0002", ended_by="U0ADMIN05", end_reason="done")
    grantee = blocks.requester_message(Notice(NoticeKind.REVOKED, ended))
    asker = blocks.behalf_message(Notice(NoticeKind.REVOKED, ended))
    assert grantee is not None and asker is not None
    assert "<@U0ALICE01> asked for this access for you" in grantee[0]
    assert asker[0].startswith("Request #7 you made for <@U0BOB0002>")
    assert blocks.behalf_message(Notice(NoticeKind.REVOKED, request())) is None
    assert blocks.behalf_message(Notice(NoticeKind.EXPIRING, ended)) is None
