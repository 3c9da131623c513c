"""Slack, checked: the bot token (``auth.test``) and every approvers channel
(``conversations.info``: it exists, is not archived, and the bot is a member), and on request a
test message to each channel and a DM to one person.

The channel check also runs once at ``serve`` start (:class:`ApproversChannelWatch`), so that a
channel the bot was never invited to shows in the log, in ``/metrics`` and in ``/readyz`` before
the first request goes unheard.
"""

from __future__ import annotations

import contextlib
import logging
import threading
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from slack_sdk import WebClient
from slack_sdk.errors import SlackApiError

from bot.adapters.slack.client import DEFAULT_API_URL, make_client
from bot.checks.findings import Findings, Reporter, cause
from bot.config import Config, ConfigError, Settings

log = logging.getLogger(__name__)
TARGET = "Slack"
TEST_MESSAGE = ("Test message from `k8s-access-bot config check --send-test`: the bot can post "
                "here{where}.")

_TOKEN_FIXES = {
    "invalid_auth": "SLACK_BOT_TOKEN was refused: copy the Bot User OAuth Token (xoxb-…) again "
                    "from the app's OAuth & Permissions page",
    "not_authed": "set SLACK_BOT_TOKEN to the Bot User OAuth Token (xoxb-…)",
    "token_revoked": "the token was revoked: reinstall the app and copy its new Bot User OAuth "
                     "Token (xoxb-…)",
    "token_expired": "the token expired: turn off token rotation or refresh the token",
    "account_inactive": "the app was uninstalled or its bot user deactivated: reinstall the app",
    "not_allowed_token_type": "SLACK_BOT_TOKEN must be the Bot User OAuth Token (xoxb-…), not "
                              "an app-level (xapp-…) or user (xoxp-…) token",
}


def _error_code(error: SlackApiError) -> str:
    """Slack's error code, or the HTTP status when the answer was not Slack's (a wrong
    SLACK_API_URL, a proxy's error page)."""
    code = error.response.get("error") if isinstance(error.response.data, dict) else None
    if code:
        return str(code)
    body = error.response.data if isinstance(error.response.data, str) else ""
    return f"HTTP {error.response.status_code} {body[:120]}".strip()


@dataclass(frozen=True)
class ApproversChannel:
    id: str
    used_by: tuple[str, ...]
    """Where the config names it: ``defaults``, ``clusters.prod``, ``clusters.prod.roles.edit``."""

    @property
    def where(self) -> str:
        return ", ".join(self.used_by)


def approvers_channels(config: Config) -> list[ApproversChannel]:
    """Every approvers channel the config names, once each, with the places that name it."""
    places: dict[str, list[str]] = {}
    if config.file.defaults.approvers_channel:
        places.setdefault(config.file.defaults.approvers_channel, []).append("defaults")
    for name, cluster in config.clusters.items():
        if cluster.approvers_channel:
            places.setdefault(cluster.approvers_channel, []).append(f"clusters.{name}")
        for role_name, role in cluster.roles.items():
            if role.approvers_channel:
                places.setdefault(role.approvers_channel, []).append(
                    f"clusters.{name}.roles.{role_name}")
    return [ApproversChannel(channel, tuple(used)) for channel, used in places.items()]


@dataclass(frozen=True)
class ChannelState:
    """What ``conversations.info`` says of one approvers channel."""

    channel: ApproversChannel
    ok: bool
    name: str | None
    detail: str
    fix: str = ""

    @property
    def label(self) -> str:
        return f"#{self.name} ({self.channel.id})" if self.name else self.channel.id


def channel_state(client: WebClient, channel: ApproversChannel, bot: str,
                  timeout: float) -> ChannelState:
    """Whether the bot can post approval requests to ``channel``; ``bot`` names the bot user
    for the fix (``/invite @bot``). Never raises: a failed call is a state with its cause."""
    invite = f"/invite @{bot}"
    try:
        info: dict[str, Any] = client.conversations_info(channel=channel.id)["channel"]
    except SlackApiError as error:
        code = _error_code(error)
        if code == "channel_not_found":
            return ChannelState(
                channel, False, None,
                "channel_not_found: no such channel, or a private one the bot is not in",
                f"check the ID (channel details → copy channel ID); for a private channel, "
                f"type {invite} in it")
        if code == "missing_scope":
            needed = error.response.get("needed") or "channels:read, groups:read"
            return ChannelState(channel, False, None, f"missing_scope: the app lacks {needed}",
                                "add channels:read and groups:read to the app (as in "
                                "app-manifest.yaml) and reinstall it")
        return ChannelState(channel, False, None, code, _TOKEN_FIXES.get(code, ""))
    except Exception as error:  # the network: refused, timeout, TLS
        return ChannelState(channel, False, None, cause(error, timeout))
    name = str(info.get("name") or "") or None
    shown = f"#{name}" if name else channel.id
    if info.get("is_archived"):
        return ChannelState(channel, False, name, f"{shown} is archived",
                            f"unarchive {shown}, or set another approvers_channel in "
                            f"{channel.where}")
    if not info.get("is_member"):
        return ChannelState(channel, False, name, f"the bot is not a member of {shown}",
                            f"type {invite} in {shown}")
    return ChannelState(channel, True, name, "exists and the bot is a member")


def check_slack(settings: Settings, config: Config, reporter: Reporter, *, timeout: float,
                send_test_to: str | None = None) -> Findings:
    """The bot token, each approvers channel and, with ``send_test_to`` (a Slack user ID), a
    test message to each channel that passed and a DM to that person."""
    try:
        client = make_client(settings)
    except ConfigError as error:
        findings = Findings(reporter, TARGET, settings.slack_api_url or DEFAULT_API_URL)
        reporter.target(TARGET, findings.url, "the bot token")
        findings.failed("bot token", str(error))
        return findings
    client.timeout = timeout  # type: ignore[assignment]  # urllib takes fractions of seconds
    client.retry_handlers = []  # one attempt each: a check reports, it does not wait
    findings = Findings(reporter, TARGET, client.base_url)
    channels = approvers_channels(config)
    reporter.target(TARGET, client.base_url,
                    f"the bot token and {len(channels)} approvers channel"
                    f"{'' if len(channels) == 1 else 's'}")
    try:
        identity = client.auth_test()
    except SlackApiError as error:
        code = _error_code(error)
        fix = _TOKEN_FIXES.get(code, "")
        if code.startswith("HTTP "):
            fix = f"check SLACK_API_URL: leave it unset for Slack's own ({DEFAULT_API_URL})"
        findings.failed("bot token", f"auth.test answered {code}", fix)
        return findings
    except Exception as error:
        findings.failed("bot token", cause(error, timeout),
                        "check SLACK_API_URL and the network path to Slack")
        return findings
    bot = str(identity.get("user") or identity.get("user_id") or "k8s-access")
    findings.ok("bot token", f"workspace {identity.get('team')} ({identity.get('team_id')}), "
                             f"bot user @{bot} ({identity.get('user_id')})")
    passed = []
    for channel in channels:
        state = channel_state(client, channel, bot, timeout)
        check = f"approvers channel {state.label}, used by {channel.where}"
        if state.ok:
            findings.ok(check, state.detail)
            passed.append(state)
        else:
            findings.failed(check, state.detail, state.fix)
    if send_test_to is not None:
        _send_tests(client, findings, channels, passed, send_test_to, timeout)
    return findings


def _send_tests(client: WebClient, findings: Findings, channels: list[ApproversChannel],
                passed: list[ChannelState], user: str, timeout: float) -> None:
    postable = {state.channel.id: state for state in passed}
    for channel in channels:
        state = postable.get(channel.id)
        if state is None:
            findings.failed(f"test message to {channel.id}",
                            "not sent: the channel check above failed")
            continue
        text = TEST_MESSAGE.format(where=f"; approval requests for {channel.where} come here")
        _post(client, findings, f"test message to {state.label}", channel.id, text, timeout)
    try:
        opened = client.conversations_open(users=user)
        dm = str(opened["channel"]["id"])
    except SlackApiError as error:
        code = _error_code(error)
        fix = "give a Slack user ID (U…): profile → ⋮ → Copy member ID" \
            if code in ("user_not_found", "users_not_found", "invalid_arguments") else ""
        findings.failed(f"test DM to {user}", f"conversations.open answered {code}", fix)
        return
    except Exception as error:
        findings.failed(f"test DM to {user}", cause(error, timeout))
        return
    _post(client, findings, f"test DM to {user}", dm, TEST_MESSAGE.format(where=" to you"),
          timeout)


def _post(client: WebClient, findings: Findings, check: str, channel: str, text: str,
          timeout: float) -> None:
    try:
        posted = client.chat_postMessage(channel=channel, text=text)
    except SlackApiError as error:
        code = _error_code(error)
        findings.failed(check, f"chat.postMessage answered {code}")
        return
    except Exception as error:
        findings.failed(check, cause(error, timeout))
        return
    findings.ok(check, f"sent (ts {posted.get('ts')})")


class ApproversChannelWatch:
    """The approvers-channel check, once, in the background at ``serve`` start.

    Each channel's state goes to ``record`` (the ``k8s_access_approvers_channel_ok`` gauge),
    each problem to the log, and :meth:`problems` to ``/readyz``'s detail: a channel the bot
    cannot post to is a fact to fix, not a reason to take the pod out of service.
    """

    def __init__(self, client: WebClient, config: Config,
                 record: Callable[[str, bool], None] | None = None, *,
                 timeout: float = 15) -> None:
        self._client = client
        self._config = config
        self._record = record
        self._timeout = timeout
        self._problems: dict[str, str] = {}
        self._lock = threading.Lock()
        self.done = threading.Event()

    def start(self) -> None:
        threading.Thread(target=self.run, name="approvers-channels", daemon=True).start()

    def run(self) -> None:
        try:
            channels = approvers_channels(self._config)
            bot = "k8s-access"
            if channels:
                with contextlib.suppress(Exception):  # /readyz reports the token itself
                    bot = str(self._client.auth_test().get("user") or bot)
            for channel in channels:
                state = channel_state(self._client, channel, bot, self._timeout)
                if self._record is not None:
                    self._record(channel.id, state.ok)
                if state.ok:
                    continue
                message = f"{state.detail}" + (f"; {state.fix}" if state.fix else "")
                with self._lock:
                    self._problems[f"approvers_channel {channel.id}"] = \
                        f"{message} (used by {channel.where}; checked at start)"
                log.warning("approvers channel %s (used by %s): %s", state.label, channel.where,
                            message)
        finally:
            self.done.set()

    def problems(self) -> dict[str, str]:
        with self._lock:
            return dict(self._problems)
