"""The app manifest asks for exactly what the code uses: its command, events and scopes."""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

import yaml

from bot.adapters.slack.commands import SLASH_COMMAND
from bot.adapters.slack.receiving import Receiver

ROOT = Path(__file__).resolve().parents[2]

# Every Web API method the code calls, with the bot scopes Slack requires for it.
SCOPES_OF_METHOD: dict[str, set[str]] = {
    "chat_postMessage": {"chat:write"},
    "chat_update": {"chat:write"},
    "chat_postEphemeral": {"chat:write"},
    "conversations_open": {"im:write"},
    # Approvers channels, public and private (config check --connect, serve's start check).
    "conversations_info": {"channels:read", "groups:read"},
    "users_info": {"users:read"},
    "usergroups_users_list": {"usergroups:read"},
    "files_upload_v2": {"files:write"},
    "views_open": set(),
    "views_update": set(),
    "views_publish": set(),
    "auth_test": set(),
}


class RecordingApp:
    """Stands in for the Bolt app only to see what the listeners register."""

    def __init__(self) -> None:
        self.registered: dict[str, set[str]] = {"command": set(), "action": set(),
                                                "view": set(), "event": set()}

    def middleware(self, function: Any) -> Any:
        return function

    def __getattr__(self, kind: str) -> Any:
        def register(name: str, **options: Any) -> Any:
            self.registered[kind].add(name)
            return lambda *functions, **listeners: None
        return register


def manifest() -> dict[str, Any]:
    return dict(yaml.safe_load((ROOT / "app-manifest.yaml").read_text()))


def slack_modules() -> list[Path]:
    """The Slack adapter, and every other module of the bot that talks to Slack's Web API."""
    adapter = ROOT / "bot" / "adapters" / "slack"
    others = [p for p in (ROOT / "bot").rglob("*.py")
              if adapter not in p.parents and "fakes" not in p.parts
              and re.search(r"^from slack_sdk\b|^import slack_sdk\b", p.read_text(), re.M)]
    return sorted(adapter.rglob("*.py")) + sorted(others)


def called_methods() -> set[str]:
    source = "\n".join(p.read_text() for p in slack_modules())
    return set(re.findall(r"client\.([a-z]+_[A-Za-z_0-9]+)\(", source))


def test_manifest_matches_the_registered_handlers() -> None:
    app = RecordingApp()
    Receiver(ctx=None).register(app)  # type: ignore[arg-type]
    data = manifest()
    assert [c["command"] for c in data["features"]["slash_commands"]] == [SLASH_COMMAND]
    assert app.registered["command"] == {SLASH_COMMAND}
    assert set(data["settings"]["event_subscriptions"]["bot_events"]) == app.registered["event"]
    assert data["settings"]["interactivity"]["is_enabled"] is bool(app.registered["action"])
    assert data["features"]["app_home"]["home_tab_enabled"] is (
        "app_home_opened" in app.registered["event"])
    assert data["settings"]["socket_mode_enabled"] is True


def test_the_checks_and_serve_are_among_the_modules_read() -> None:
    read = {p.relative_to(ROOT).as_posix() for p in slack_modules()}
    assert {"bot/checks/slack.py", "bot/serve.py"} <= read


def test_manifest_scopes_are_exactly_the_ones_used() -> None:
    methods = called_methods()
    assert "conversations_info" in methods
    unknown = methods - set(SCOPES_OF_METHOD)
    assert not unknown, f"add the scopes of {unknown} to SCOPES_OF_METHOD and the manifest"
    needed = set().union(*(SCOPES_OF_METHOD[m] for m in methods))
    needed |= {"commands", "users:read.email"}  # the slash command; emails in users.info
    assert set(manifest()["oauth_config"]["scopes"]["bot"]) == needed
