"""The app manifest asks for exactly what the code uses: its command, events and scopes."""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

import yaml

from bot.adapters.slack.listeners import SLASH_COMMAND, Listeners

ROOT = Path(__file__).resolve().parents[2]

# Every Web API method the code calls, with the bot scope Slack requires for it.
SCOPE_OF_METHOD = {
    "chat_postMessage": "chat:write",
    "chat_update": "chat:write",
    "chat_postEphemeral": "chat:write",
    "conversations_open": "im:write",
    "users_info": "users:read",
    "usergroups_users_list": "usergroups:read",
    "files_upload_v2": "files:write",
    "views_open": None,
    "views_update": None,
    "views_publish": None,
    "auth_test": None,
}


class RecordingApp:
    """Stands in for the Bolt app only to see what the listeners register."""

    def __init__(self) -> None:
        self.registered: dict[str, set[str]] = {"command": set(), "action": set(),
                                                "view": set(), "event": set()}

    def middleware(self, function: Any) -> Any:
        return function

    def __getattr__(self, kind: str) -> Any:
        def register(name: str) -> Any:
            self.registered[kind].add(name)
            return lambda function: function
        return register


def manifest() -> dict[str, Any]:
    return dict(yaml.safe_load((ROOT / "app-manifest.yaml").read_text()))


def called_methods() -> set[str]:
    slack_code = ROOT / "bot" / "adapters" / "slack"
    source = "\n".join(p.read_text() for p in slack_code.rglob("*.py"))
    return set(re.findall(r"client\.([a-z]+_[A-Za-z_0-9]+)\(", source))


def test_manifest_matches_the_registered_handlers() -> None:
    app = RecordingApp()
    Listeners(ctx=None).register(app)  # type: ignore[arg-type]
    data = manifest()
    assert [c["command"] for c in data["features"]["slash_commands"]] == [SLASH_COMMAND]
    assert app.registered["command"] == {SLASH_COMMAND}
    assert set(data["settings"]["event_subscriptions"]["bot_events"]) == app.registered["event"]
    assert data["settings"]["interactivity"]["is_enabled"] is bool(app.registered["action"])
    assert data["features"]["app_home"]["home_tab_enabled"] is (
        "app_home_opened" in app.registered["event"])
    assert data["settings"]["socket_mode_enabled"] is True


def test_manifest_scopes_are_exactly_the_ones_used() -> None:
    methods = called_methods()
    unknown = methods - set(SCOPE_OF_METHOD)
    assert not unknown, f"add the scope of {unknown} to SCOPE_OF_METHOD and the manifest"
    needed = {SCOPE_OF_METHOD[m] for m in methods} - {None}
    needed |= {"commands", "users:read.email"}  # the slash command; emails in users.info
    assert set(manifest()["oauth_config"]["scopes"]["bot"]) == needed
