"""Table-driven: options in what people type. Each is read once wherever it stands, in its
``--opt VALUE`` and ``--opt=VALUE`` forms alike; one given twice, or one the verb does not
take, is refused with the usage line, never ignored and never the last one silently winning."""

from __future__ import annotations

from datetime import timedelta

import pytest

from bot.adapters.slack.commands import parse
from bot.domain.errors import InvalidInput

H = timedelta(hours=1)
BOB, CAROL = "<@U0BOB0002>", "<@U0CAROL03>"
TWICE = "is given twice: give it once, `/k8s-access "


@pytest.mark.parametrize(("text", "says"), [
    (f"request --for {BOB} --for {CAROL} staging view 2h x", "`--for` " + TWICE + "request"),
    (f"request --for {BOB} staging view 2h x --for={CAROL}", "`--for` " + TWICE + "request"),
    (f"request --for={BOB} --for={BOB} staging view 2h x", "`--for` " + TWICE + "request"),
    ("request staging view 2h --at 10:00 --at 11:00 x", "`--at` " + TWICE + "request"),
    ("request staging view 2h --at=10:00 x --at tomorrow 11:00", "`--at` " + TWICE),
    ("request -n shop -n payments staging deploy 1h x", "`--namespace` " + TWICE),
    ("request -n shop --namespace=payments staging deploy 1h x", "`--namespace` " + TWICE),
    ("request -n=shop -n payments staging deploy 1h x", "`--namespace` " + TWICE),
    ("request --break-glass prod admin 1h x --break-glass", "`--break-glass` " + TWICE),
    ("request --break-glass=yes prod admin 1h x", "`--break-glass` takes no value"),
    ("request --namespace= staging deploy 1h x", "`--namespace` needs a namespace"),
    ("request --for= staging view 2h x", "`--for` needs a person"),
    ("request staging view 2h --at= x", "`--at` needs a start"),
    ("request staging view 2h --when 10:00 x", "Unknown option `--when`"),
    ("approve 12 --for 1h --for 2h", "`--for` " + TWICE + "approve"),
    ("approve 12 --for=1h --for=2h", "`--for` " + TWICE + "approve"),
    ("approve 12 --for 1h ok --for=2h", "`--for` " + TWICE + "approve"),
    ("approve 12 --for=", "`--for` needs a duration"),
    ("approve 12 --for", "`--for` needs a duration"),
    ("approve 12 --for=soon", "'soon' is not a duration"),
    ("approve 12 --for soon", "'soon' is not a duration"),
    ("approve 12 --at 10:00", "Unknown option `--at`: `/k8s-access approve"),
    ("deny 12 --for 1h no", "Unknown option `--for`: `/k8s-access deny"),
    ("cancel 12 --force", "Unknown option `--force`: `/k8s-access cancel"),
    ("revoke 12 --reason=done", "Unknown option `--reason=done`: `/k8s-access revoke"),
    ("extend 12 2h --for 1h", "Unknown option `--for`: `/k8s-access extend"),
])
def test_options_given_twice_or_not_taken_are_refused(text: str, says: str) -> None:
    with pytest.raises(InvalidInput) as refused:
        parse(text)
    assert says in refused.value.message


@pytest.mark.parametrize(("text", "duration", "comment"), [
    ("approve 12 --for 1h lgtm", H, "lgtm"),
    ("approve 12 --for=1h lgtm", H, "lgtm"),
    ("approve 12 lgtm --for=1h", H, "lgtm"),
    ("approve 12 lgtm --for=1h30m", 1.5 * H, "lgtm"),
    ("approve 12 \u2014for 1h", H, ""),          # a keyboard's dash for "--"
    ("approve 12 ship it -- now", None, "ship it -- now"),
    ("approve 12 \u2014 looks good", None, "\u2014 looks good"),
])
def test_approve_for_in_each_form(text: str, duration: timedelta | None, comment: str) -> None:
    command = parse(text)
    assert (command.request_id, command.duration, command.text) == (12, duration, comment)


@pytest.mark.parametrize(("text", "grantee", "namespace", "at", "reason"), [
    (f"request --for={BOB} staging deploy 1h x", "U0BOB0002", None, None, "x"),
    (f"request \u2014for {BOB} staging deploy 1h x", "U0BOB0002", None, None, "x"),
    ("request -n=shop staging deploy 1h x", None, "shop", None, "x"),
    ("request --namespace=shop staging deploy 1h x", None, "shop", None, "x"),
    ("request staging deploy 1h --at=22:00 x", None, None, "22:00", "x"),
    ("request staging deploy 1h --at=tomorrow 22:00 x", None, None, "tomorrow 22:00", "x"),
    ("request staging deploy 1h --at=2026-12-02 22:00 x", None, None, "2026-12-02 22:00", "x"),
    ("request staging deploy 1h db \u2014urgent", None, None, None, "db \u2014urgent"),
])
def test_request_options_in_each_form(text: str, grantee: str | None, namespace: str | None,
                                      at: str | None, reason: str) -> None:
    command = parse(text)
    assert (command.cluster, command.role, command.duration) == ("staging", "deploy", H)
    assert (command.grantee_id, command.namespace, command.at, command.text) == (
        grantee, namespace, at, reason)


@pytest.mark.parametrize("text", ["deny 12 no -- not now", "revoke 12 done - bye",
                                  "extend 12 2h still -- debugging"])
def test_a_lone_dash_in_a_reason_is_text(text: str) -> None:
    assert "--" in parse(text).text or "-" in parse(text).text


@pytest.mark.parametrize(("text", "said"), [
    ("deny 12 breaks --force-push policy", "breaks --force-push policy"),
    ("deny 12 breaks \u2014force-push policy", "breaks \u2014force-push policy"),
    ("revoke 12 done, ran --dry-run first", "done, ran --dry-run first"),
    ("extend 12 2h still running --watch", "still running --watch"),
    ("cancel 12 wrong --context", "wrong --context"),
    ("approve 12 ok, but no --force-push", "ok, but no --force-push"),
    ("approve 12 --for 1h ok, no --force", "ok, no --force"),
    ("deny 12 use `--for` next time", "use `--for` next time"),
    ("request staging deploy 1h fix --no-verify hook", "fix --no-verify hook"),
])
def test_a_word_that_names_no_option_is_text_after_the_first_word(text: str, said: str) -> None:
    assert parse(text).text == said


@pytest.mark.parametrize(("text", "says"), [
    ("deny 12 breaks policy --for 1h", "Unknown option `--for`: `/k8s-access deny"),
    ("deny 12 breaks policy \u2014for 1h", "Unknown option `--for`: `/k8s-access deny"),
    ("revoke 12 done --reason=x", "Unknown option `--reason=x`: `/k8s-access revoke"),
    ("extend 12 2h more --at 10:00", "Unknown option `--at`: `/k8s-access extend"),
    ("cancel 12 oops -n shop", "Unknown option `-n`: `/k8s-access cancel"),
    ("approve 12 ok --break-glass", "Unknown option `--break-glass`: `/k8s-access approve"),
    ("deny 12 --force-push breaks policy", "Unknown option `--force-push`: `/k8s-access deny"),
    ("approve 12 --force ok", "Unknown option `--force`: `/k8s-access approve"),
    ("request staging --force deploy 1h x", "Unknown option `--force`: `/k8s-access request"),
    ("request --force staging deploy 1h x", "Unknown option `--force`: `/k8s-access request"),
])
def test_an_option_where_it_is_not_taken_says_how_to_write_it_as_text(text: str,
                                                                       says: str) -> None:
    with pytest.raises(InvalidInput) as refused:
        parse(text)
    assert says in refused.value.message
    assert "wrap it in backticks" in refused.value.message
