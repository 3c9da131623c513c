"""``k8s-access-bot demo`` shows the promise, readably, and leaves nothing behind."""

from __future__ import annotations

import re
import tempfile
from pathlib import Path

import pytest
from click.testing import CliRunner

from bot.cli import main
from bot.demo import readable


@pytest.fixture(scope="module")
def demo_output(tmp_path_factory: pytest.TempPathFactory) -> tuple[str, Path, Path]:
    """One run of the demo with its own temporary directory and home: what it printed."""
    scratch, home = tmp_path_factory.mktemp("tmp"), tmp_path_factory.mktemp("home")
    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(tempfile, "tempdir", str(scratch))
        patch.setenv("HOME", str(home))
        result = CliRunner().invoke(main, ["demo"], catch_exceptions=False)
    assert result.exit_code == 0, result.output
    return result.output, scratch, home


def test_demo_shows_request_approval_kubectl_expiry_denial_and_revocation(
        demo_output: tuple[str, Path, Path]) -> None:
    output = demo_output[0]
    before, _, after = output.partition("Access #1 ended on time")
    assert after, output
    # the kubeconfig works with the real kubectl while the grant lasts …
    assert "Username    alice@example.com" in before
    assert "$ kubectl auth can-i list pods\n      yes" in before
    assert "$ kubectl auth can-i delete pods\n      no" in before
    # … the grant ends at its end, by the expiry sweep, and the pretend is said out loud …
    assert "moves the bot's clock forward" in before
    assert "state expired" in after.splitlines()[0]
    assert "alice's DM: 🏁 Your access #1 (production/view) has expired." in before
    # … after which kubectl is refused
    assert "$ kubectl auth can-i list pods\n      no" in after
    assert "was denied by @bob: not during the release freeze" in after
    assert "GITLAB_HOST=http://127.0.0.1:" in after
    assert "Revoked: the membership the bot created is removed." in after
    assert re.search(r"^  \d{4}-\d\d-\d\d \d\d:\d\d:\d\d UTC  the policy expired +#1$", after,
                     re.M)


def test_demo_speaks_names_and_dates_not_slack_markup(
        demo_output: tuple[str, Path, Path]) -> None:
    output = demo_output[0]
    for markup in ("<@", "<#", "<!", "U0DEMO", "C0APPROVALS", "DU0", "&lt;", "&gt;"):
        assert markup not in output, markup
    assert not re.findall(r"(?:^|\s):[a-z_]+:(?=\s|$)", output, re.M)  # emoji codes
    assert "bob clicks Approve on request #1 in #k8s-approvals" in output
    assert re.search(r"is active until \d{4}-\d\d-\d\d \d\d:\d\d UTC", output)


def test_demo_cleans_up_and_ends_with_the_next_step(
        demo_output: tuple[str, Path, Path]) -> None:
    output, scratch, home = demo_output
    folders = re.findall(r"Cleaned up: (\S+) is gone", output)
    assert folders and folders[0].startswith(str(scratch))
    assert list(scratch.iterdir()) == []  # keys, certificates, kubeconfigs, database, cache
    assert list(home.iterdir()) == []  # kubectl left nothing in ~/.kube either
    ending = output.rstrip().rsplit("Next: run it for real", 1)[1]
    assert "examples/quickstart.yaml" in ending
    assert ".venv/bin/k8s-access-bot db upgrade" in ending
    assert "/k8s-access request dev view 30m trying it out" in ending


@pytest.mark.parametrize(("markup", "text"), [
    ("<@U0DEMOALICE> asks", "@alice asks"),
    ("<@U0SOMEONE|carol> asks", "@carol asks"),
    ("in <#C0APPROVALS>", "in #k8s-approvals"),
    ("until <!date^1796094144^{date_short_pretty} {time}|2026-12-01 03:02 UTC>.",
     "until 2026-12-01 03:02 UTC."),
    ("<!here> break-glass", "@here break-glass"),
    ("see <https://example.com/T-1|T-1>", "see T-1 (https://example.com/T-1)"),
    ("*production/view*: :white_check_mark: ok", "production/view: ✅ ok"),
    ("typed &lt;@U0X&gt; &amp; more", "typed <@U0X> & more"),
])
def test_readable_turns_slack_markup_into_text(markup: str, text: str) -> None:
    assert readable(markup) == text
