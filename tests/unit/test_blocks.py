"""Every Block Kit builder, over generated content: what it builds fits Slack's limits, and no
text a person typed turns into markup.

The limits are written out here again from Slack's Block Kit reference (blocks, block elements,
composition objects, view objects; chat.postMessage for the ``text`` fallback), so that this
checker does not trust the code it checks.
"""

from __future__ import annotations

import csv
import dataclasses
import io
import re
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from bot.adapters.slack import blocks
from bot.config import Config, parse_config
from bot.domain.model import AccessRequest, Approval, Decision, Kind, Reach, State, Undelivered
from bot.domain.ports import Delivery, Notice, NoticeKind
from bot.domain.reviews import AccessReview, ReviewDecision, ReviewItem, Verdict
from tests.conftest import TEST_CONFIG

NOW = datetime(2026, 3, 2, 9, 0, tzinfo=UTC)
HOSTILE = "db down <!channel> ask <@U0BOB000001> see <https://sso.evil.example|the SSO page> & co"
RAW_MARKUP = ("<!channel>", "<@U0BOB000001>", "<https://sso.evil.example")

# --- an independent checker ---------------------------------------------------------------

BOT_MARKUP = re.compile(
    r"<(?:@[UW][A-Z0-9]+|!subteam\^S[A-Z0-9]+|!here"
    r"|!date\^\d+\^\{date_short_pretty\} \{time\}\|[^<>]*)>")
"""The only ``<…>`` the bot itself writes: mentions of IDs, the break-glass ``<!here>`` and
dates. Anything else between angle brackets came from typed text."""


def _plain(obj: Any, limit: int, where: str) -> None:
    assert isinstance(obj, dict) and obj["type"] == "plain_text", where
    assert 0 < len(obj["text"]) <= limit, f"{where}: {len(obj['text'])} > {limit}"


def _mrkdwn(obj: Any, limit: int, where: str, seen: list[str]) -> None:
    assert isinstance(obj, dict) and obj["type"] in ("mrkdwn", "plain_text"), where
    assert 0 < len(obj["text"]) <= limit, f"{where}: {len(obj['text'])} > {limit}"
    if obj["type"] == "mrkdwn":
        seen.append(obj["text"])


def _element(element: dict[str, Any], seen: list[str]) -> None:
    kind = element["type"]
    if kind == "button":
        _plain(element["text"], 75, "button text")
        assert len(element.get("value", "")) <= 2000
        confirm = element.get("confirm")
        if confirm:
            _plain(confirm["title"], 100, "confirm title")
            _mrkdwn(confirm["text"], 300, "confirm text", seen)
            _plain(confirm["confirm"], 30, "confirm button")
            _plain(confirm["deny"], 30, "deny button")
    elif kind == "static_select":
        # options, or option_groups (up to 100 of up to 100 options each), never both
        assert ("options" in element) != ("option_groups" in element), element.keys()
        groups = element.get("option_groups") or [{"options": element.get("options")}]
        assert 0 < len(groups) <= 100
        offered = []
        for group in groups:
            if "label" in group:
                _plain(group["label"], 75, "option group label")
            assert 0 < len(group["options"]) <= 100
            offered += group["options"]
        for option in [*offered, element.get("initial_option")]:
            if option is not None:
                _plain(option["text"], 75, "option text")
                assert len(option["value"]) <= 150
        # Slack: initial_option "exactly matches one of the options".
        assert element.get("initial_option") in [None, *offered], element["initial_option"]
    elif kind == "plain_text_input":
        assert len(element.get("initial_value", "")) <= 3000
    else:
        raise AssertionError(f"unexpected element {kind}")


def _block(block: dict[str, Any], seen: list[str]) -> None:
    kind = block["type"]
    assert len(block.get("block_id", "")) <= 255
    if kind == "section":
        assert "text" in block or "fields" in block
        if "text" in block:
            _mrkdwn(block["text"], 3000, "section text", seen)
        for field in block.get("fields", []):
            _mrkdwn(field, 2000, "section field", seen)
        assert len(block.get("fields", [])) <= 10
        if "accessory" in block:
            _element(block["accessory"], seen)
    elif kind == "context":
        assert 0 < len(block["elements"]) <= 10
        for item in block["elements"]:
            _mrkdwn(item, 3000, "context", seen)
    elif kind == "header":
        _plain(block["text"], 150, "header")
    elif kind == "actions":
        assert 0 < len(block["elements"]) <= 25
        for item in block["elements"]:
            _element(item, seen)
    elif kind == "input":
        _plain(block["label"], 2000, "input label")
        if "hint" in block:
            _plain(block["hint"], 2000, "input hint")
        _element(block["element"], seen)
    else:
        assert kind == "divider", kind


def check_markup(texts: list[str]) -> None:
    for text in texts:
        leftover = BOT_MARKUP.sub("", text)
        assert "<" not in leftover and ">" not in leftover, text
        for raw in RAW_MARKUP:
            assert raw not in text


def check_message(message: tuple[str, list[dict[str, Any]]]) -> list[str]:
    """Assert ``message`` is one Slack accepts; returns its mrkdwn texts, fallback included."""
    text, content = message
    assert 0 < len(text) <= 4000, len(text)
    assert 0 < len(content) <= 50, len(content)
    seen = [text]
    for block in content:
        _block(block, seen)
    check_markup(seen)
    return seen


def check_view(view: dict[str, Any]) -> list[str]:
    assert 0 < len(view["blocks"]) <= 100, len(view["blocks"])
    if view["type"] == "modal":
        _plain(view["title"], 24, "modal title")
        for key in ("submit", "close"):
            if key in view:
                _plain(view[key], 24, f"modal {key}")
        assert len(view.get("private_metadata", "")) <= 3000
    seen: list[str] = []
    for block in view["blocks"]:
        _block(block, seen)
    check_markup(seen)
    return seen


# --- generated content --------------------------------------------------------------------

SLACK_IDS = st.from_regex(r"U0[A-Z0-9]{7}", fullmatch=True)
TYPED_ALPHABET = st.characters(codec="utf-8", exclude_categories=("Cs",)) | st.sampled_from(
    list("<>&|@!#*_~`\n "))
PIECES = st.text(TYPED_ALPHABET, max_size=12) | st.sampled_from(
    ["<!channel>", "<@U0BOB000001>", "<https://evil|x>", "&amp;", "<!date^1^{time}|x>"])
TYPED = st.one_of(
    st.lists(PIECES, max_size=6).map("".join),
    st.builds(lambda part, times: part * times, PIECES.filter(bool), st.integers(1, 900)),
    st.just(HOSTILE),
)
MOMENTS = st.datetimes(min_value=datetime(2025, 1, 1), max_value=datetime(2030, 1, 1),
                       timezones=st.just(UTC))


@st.composite
def requests(draw: st.DrawFn, state: State | None = None) -> AccessRequest:
    approvals = draw(st.lists(st.builds(
        Approval, SLACK_IDS, st.sampled_from(Decision), MOMENTS, TYPED), max_size=30))
    kind = draw(st.sampled_from(Kind))
    return AccessRequest(
        requester_id=draw(SLACK_IDS), cluster=draw(TYPED), role=draw(TYPED),
        duration=timedelta(minutes=draw(st.integers(10, 3650 * 24 * 60))),
        reason=draw(TYPED), subject=draw(TYPED), created_at=draw(MOMENTS),
        state=state or draw(st.sampled_from(State)), kind=kind,
        namespace=draw(st.none() | TYPED),
        parent_id=draw(st.integers(1, 2**31 - 1)) if kind is Kind.EXTENSION else None,
        break_glass=draw(st.booleans()), activated_at=draw(st.none() | MOMENTS),
        ends_at=draw(st.none() | MOMENTS), ended_at=draw(st.none() | MOMENTS),
        ended_by=draw(st.none() | SLACK_IDS | st.just("policy") | TYPED.map(lambda t: "cli:" + t)),
        end_reason=draw(st.none() | TYPED), last_error=draw(st.none() | TYPED),
        approvals=approvals, id=draw(st.integers(1, 2**31 - 1)),
        grantee_id=draw(st.none() | SLACK_IDS), window_start=draw(st.none() | MOMENTS),
        on_call=draw(st.none() | TYPED),
    )


FEW = settings(max_examples=40, deadline=None,
               suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large])


@FEW
@given(requests(), st.integers(0, 20))
def test_approval_message_fits_and_shows_typed_text_as_text(request: AccessRequest,
                                                            missing: int) -> None:
    check_message(blocks.approval_message(request, missing))


@FEW
@given(requests(), st.sampled_from(NoticeKind), st.none() | TYPED, requests(State.ACTIVE))
def test_every_requester_message_fits(request: AccessRequest, kind: NoticeKind,
                                      instructions: str | None, parent: AccessRequest) -> None:
    delivery = Delivery(blocks.escape(instructions)) if instructions is not None else None
    message = blocks.requester_message(Notice(kind, request, delivery=delivery, parent=parent))
    if message is not None:
        check_message(message)


@FEW
@given(st.lists(requests(State.ACTIVE), max_size=120))
def test_weekly_reminder_fits_however_many_grants(grants: list[AccessRequest]) -> None:
    check_message(blocks.weekly_reminder(grants, NOW))


@FEW
@given(st.lists(requests(State.ACTIVE), max_size=blocks.REVIEW_DETAILED), st.integers(0, 500))
def test_access_review_fits(grants: list[AccessRequest], extra: int) -> None:
    # ``extra`` grants already decided or ended: each a line while room is left, then counted.
    ended = AccessRequest(requester_id="U0ERIN005", cluster="staging", role="view",
                          duration=timedelta(hours=1), reason=HOSTILE, subject=HOSTILE,
                          created_at=NOW, state=State.EXPIRED)
    settled = [ReviewItem(dataclasses.replace(ended, id=n + 1), carried_over=n % 2 == 0,
                          decision=ReviewDecision(n + 1, Verdict(("keep", "revoke")[n % 3 % 2]),
                                                  "U0BOB0002", NOW) if n % 3 else None)
               for n in range(extra)]
    review = AccessReview("2026-03-02T09:00", "C0APPROVE",
                          (*(ReviewItem(g, carried_over=True) for g in grants), *settled))
    messages = [blocks.access_review(review)]
    for message in messages:
        check_message(message)
    shown = [b["accessory"]["value"] for _, content in messages for b in content
             if "accessory" in b]
    assert shown == [str(g.id) for g in grants]


@FEW
@given(TYPED, st.lists(requests(), max_size=60))
def test_listing_fits(scope: str, found: list[AccessRequest]) -> None:
    check_message(blocks.listing(scope or "mine", found, NOW))


@FEW
@given(st.lists(requests(), max_size=40), st.lists(requests(State.PENDING), max_size=40))
def test_home_view_fits(mine: list[AccessRequest], waiting: list[AccessRequest]) -> None:
    view = blocks.home_view(mine, waiting, NOW, {r.id or 0: 2 for r in [*mine, *waiting]})
    check_view(view)


@FEW
@given(requests(State.PENDING), requests(State.ACTIVE))
def test_deny_and_extend_forms_fit(pending: AccessRequest, active: AccessRequest) -> None:
    check_view(blocks.deny_modal(pending))
    check_view(blocks.extend_modal(active))


def _config(clusters: int, roles: int, words: int) -> Config:
    data: dict[str, Any] = {"admins": TEST_CONFIG["admins"], "clusters": {}}
    for c in range(clusters):
        data["clusters"][f"cluster-{c:03d}-" + "x" * 40] = {
            "backend": "rbac", "description": "a long description <!channel> " * words,
            "kubernetes": {"server": "https://k.example", "kubeconfig": "/dev/null"},
            "approvers": [f"U0APPR{a:03d}" for a in range(20)],
            "roles": {f"role-{r:02d}-" + "y" * 50: {
                "role": "edit", "role_kind": "ClusterRole",
                "namespaces": [f"namespace-{n:03d}-" + "z" * 40 for n in range(120)]}
                for r in range(roles)},
        }
    return parse_config(data, Path("big.yaml"))


@pytest.mark.parametrize(("clusters", "roles", "words"), [(1, 1, 0), (3, 4, 60), (60, 6, 90)])
def test_clusters_overview_fits(clusters: int, roles: int, words: int) -> None:
    check_message(blocks.reply(blocks.clusters_overview(_config(clusters, roles, words))))


@FEW
@given(st.fixed_dictionaries({}, optional={
    "cluster": TYPED, "role": TYPED, "namespace": TYPED, "duration": TYPED, "reason": TYPED,
    "break_glass": st.booleans()}))
def test_request_form_fits_whatever_was_typed(prefill: dict[str, Any]) -> None:
    config = _config(2, 3, 5)
    cluster = next(iter(config.clusters))
    check_view(blocks.request_modal(config, prefill))
    chosen = {**prefill, "cluster": cluster, "role": next(iter(config.clusters[cluster].roles))}
    check_view(blocks.request_modal(config, chosen))


def test_weekly_reminder_of_many_grants_counts_the_rest() -> None:
    grant = AccessRequest("U0ALICE01", "staging", "view", timedelta(hours=1), "x", "alice",
                          NOW, state=State.ACTIVE, ends_at=NOW + timedelta(days=2), id=1)
    text, content = blocks.weekly_reminder([grant] * 60, NOW)
    check_message((text, content))
    assert "60 of your grants" in text
    assert "…and 15 more" in str(content[-1])


@pytest.mark.parametrize("field", ["reason", "end_reason", "last_error", "namespace",
                                   "subject"])
def test_typed_text_in_every_field_is_escaped(field: str) -> None:
    request = AccessRequest("U0ALICE01", "staging", "edit", timedelta(hours=1), "fix",
                            "alice", NOW, state=State.REVOKED, id=7, ended_by="cli:ops",
                            approvals=[Approval("U0BOB0002", Decision.APPROVE, NOW, HOSTILE)])
    setattr(request, field, HOSTILE)
    texts = check_message(blocks.approval_message(request, 0))
    texts += check_message(blocks.requester_message(Notice(NoticeKind.REVOKED, request))
                           or ("-", []))
    assert any("&lt;!channel&gt;" in t for t in texts)


def test_escape_is_slacks_three_characters_only() -> None:
    assert blocks.escape("a & b <!channel> 'q' \"d\"") == \
        "a &amp; b &lt;!channel&gt; 'q' \"d\""


@pytest.mark.parametrize(("text", "limit", "expected"), [
    ("abcdef", 6, "abcdef"),
    ("abcdefg", 6, "abcde…"),
    ("ab <@U0BOB0002> cd", 8, "ab …"),
    ("ab &amp; cd", 6, "ab …"),
    ("ab &amp; cd", 9, "ab &amp;…"),
])
def test_shorten_never_cuts_markup_in_half(text: str, limit: int, expected: str) -> None:
    assert blocks.shorten(text, limit) == expected


@FEW
@given(SLACK_IDS, TYPED)
def test_link_confirmation_fits(user_id: str, username: str) -> None:
    check_message(blocks.link_confirmation(user_id, username))


@FEW
@given(TYPED)
def test_any_reply_fits_once_escaped(text: str) -> None:
    check_message(blocks.reply(blocks.escape(text) or "-"))


# --- flags before free text; CSV cells no spreadsheet runs ---------------------------------

LONG_REASON = "& <@U0BOB0002> " * 300  # 2000 typed characters; escaped, far longer


def review_grant(**fields: Any) -> AccessRequest:
    base = AccessRequest(requester_id="U0ALICE01", cluster="staging", role="view",
                         duration=timedelta(hours=4), reason=LONG_REASON, subject="alice",
                         created_at=NOW, state=State.ACTIVE, activated_at=NOW,
                         ends_at=NOW + timedelta(hours=4), id=7)
    return dataclasses.replace(base, **fields)


def test_a_long_reason_never_hides_the_carried_over_flag() -> None:
    review = AccessReview("2026-03-02T09:00", "C0APPROVE",
                          (ReviewItem(review_grant(), carried_over=True),))
    texts = check_message(blocks.access_review(review))
    [line] = [t for t in texts if t.startswith("*#7*")]
    assert "Carried over" in line and "approved by" in line
    assert line.endswith("…") and len(line) <= blocks.LIMITS["section_text"]


def test_a_long_reason_never_hides_a_pending_requests_status_on_the_home_tab() -> None:
    pending = review_grant(state=State.PENDING, activated_at=None, ends_at=None)
    view = blocks.home_view([pending], [], NOW, {7: 2})
    check_view(view)
    [line] = [b["text"]["text"] for b in view["blocks"]
              if b["type"] == "section" and b["text"]["text"].startswith("*#7*")]
    assert blocks.status(pending, 2) in line and line.endswith("…")


@pytest.mark.parametrize("typed", ["=HYPERLINK(\"https://evil.example\")", "+1+2", "-3",
                                   "@SUM(A1)", "\t=1", "\r=1"])
def test_review_csv_cells_never_start_a_formula(typed: str) -> None:
    grant = review_grant(subject=typed, namespace=typed, role=typed, reason=typed,
                         grantee_id="U0CAROL03")
    content = blocks.access_review_csv([ReviewItem(
        grant, decision=ReviewDecision(7, Verdict.KEEP, "U0BOB0002", NOW))])
    rows = list(csv.DictReader(io.StringIO(content, newline="")))
    assert rows[0]["subject"] == rows[0]["namespace"] == rows[0]["role"] == "'" + typed
    assert (rows[0]["grantee"], rows[0]["requester"]) == ("U0CAROL03", "U0ALICE01")
    assert (rows[0]["status"], rows[0]["decided_by"]) == ("kept", "U0BOB0002")
    assert rows[0]["id"] == "7"


def test_a_grant_whose_access_is_ending_shows_as_ended_without_buttons() -> None:
    review = AccessReview("2026-03-02T09:00", "C0APPROVE", (
        ReviewItem(review_grant(reason="x"), ending=True),
        ReviewItem(review_grant(id=8, reason="x", state=State.EXPIRED))))
    text, content = blocks.access_review(review)
    check_message((text, content))
    assert "2 of 2 reviewed" in text
    lines = [b["elements"][0]["text"] for b in content if b["type"] == "context"]
    assert any(line.startswith(":checkered_flag: *#7*") and "ending, nothing to review" in line
               for line in lines)
    assert any("*#8*" in line and "expired, nothing to review" in line for line in lines)
    assert not any("accessory" in b or b["type"] == "actions" for b in content)


@FEW
@given(requests(), st.sampled_from(NoticeKind), st.integers(0, 20), TYPED)
def test_the_newer_messages_fit_and_show_typed_text_as_text(
        request: AccessRequest, kind: NoticeKind, missing: int, on_call: str) -> None:
    """Escalations, on-call announcements, the DMs to who asked on someone's behalf, the
    answer to a new request and the notices that nobody could be told: whatever was typed."""
    if kind is NoticeKind.ON_CALL_APPROVED:
        request.approvals.append(Approval("policy", Decision.APPROVE, NOW,
                                          f"on-call: flagged for review; {on_call}"))
    check_message(blocks.escalated(*blocks.approval_message(request, missing)))
    check_message(blocks.on_call_announcement(request))
    check_message(blocks.break_glass_announcement(*blocks.approval_message(request, missing)))
    for reply in (blocks.outcome_reply(request, missing), blocks.waiting_reply(request, missing)):
        check_message((reply, [{"type": "divider"}]))  # a thread reply: its text alone
    for unsent in (None, "messages_tab_disabled", on_call):
        message = blocks.behalf_message(Notice(kind, request, approvals_missing=missing),
                                        unsent)
        if message is not None:
            check_message(message)
    for text in (blocks.filed_message(request, missing, "Europe/Berlin"),
                 blocks.unreachable_alert(request, Reach()),
                 blocks.unreachable_message(request, Reach())):
        check_message(blocks.reply(text))


@pytest.mark.parametrize("pick", [0, 99, 100, 119])
def test_a_role_with_more_namespaces_than_a_menu_holds_offers_and_keeps_each(pick: int) -> None:
    """A role of 120 namespaces: every one can be picked in the form, and one chosen before
    (a pre-filled form, "Request again") is shown as chosen."""
    config = _config(1, 1, 0)
    cluster = next(iter(config.clusters))
    role = next(iter(config.clusters[cluster].roles))
    namespaces = config.policy(cluster, role).namespaces
    view = blocks.request_modal(config, {"cluster": cluster, "role": role,
                                         "namespace": namespaces[pick]})
    check_view(view)
    [menu] = [b["element"] for b in view["blocks"] if b["block_id"] == "namespace"]
    offered = [o["value"] for g in menu.get("option_groups") or [menu] for o in g["options"]]
    assert offered == list(namespaces)
    assert menu["initial_option"]["value"] == namespaces[pick]


@pytest.mark.parametrize("state", [State.APPROVED, State.ACTIVE])
def test_an_approved_request_nobody_could_be_told_of_is_not_said_to_be_pending(
        state: State) -> None:
    """On call or break-glass, approved at once, and the approvers who must review it could
    not be told: neither the requester nor the admins read that it waits or that the
    approvers are told again, which no pass does for an approved request."""
    request = AccessRequest("U0ALICE01", "staging", "edit", timedelta(hours=1), "fix",
                            "alice", NOW, state=state, id=7, break_glass=True)
    reach = Reach(undelivered=(Undelivered("C0APPROVE", "not_in_channel"),))
    told = blocks.unreachable_message(request, reach)
    alert = blocks.unreachable_alert(request, reach)
    assert "pending" not in told and "cancel" not in told and "told again" not in told
    assert "told again" not in alert
    assert "review" in told and "review" in alert


def test_fitting_cuts_a_copy_and_leaves_the_builders_blocks_as_they_were() -> None:
    long = "x" * 5000
    content = [{"type": "section", "fields": [{"type": "mrkdwn", "text": long}],
                "accessory": {"type": "static_select", "options": ({"text": {
                    "type": "plain_text", "text": long}, "value": "v"},)}},
               {"type": "context", "elements": [{"type": "mrkdwn", "text": long}]}]
    view = {"type": "modal", "title": {"type": "plain_text", "text": long}, "blocks": content}
    _, fitted = blocks.fit_message(long, content)
    fitted_view = blocks.fit_view(view)

    assert len(fitted[0]["fields"][0]["text"]) == blocks.LIMITS["field_text"]
    assert len(fitted[0]["accessory"]["options"][0]["text"]["text"]) == \
        blocks.LIMITS["option_text"]
    assert len(fitted[1]["elements"][0]["text"]) == blocks.LIMITS["context_text"]
    assert len(fitted_view["title"]["text"]) == blocks.LIMITS["modal_title"]
    assert content[0]["fields"][0]["text"] == long
    assert content[0]["accessory"]["options"][0]["text"]["text"] == long
    assert content[1]["elements"][0]["text"] == long
    assert view["title"]["text"] == long
