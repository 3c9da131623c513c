"""The Bolt apps: the one that faces Slack (in Socket Mode or behind ``POST /slack/events``) and
the worker's, which does the work of the requests the first one acknowledged."""

from __future__ import annotations

from urllib.error import URLError

from slack_bolt import App
from slack_bolt.error import BoltError
from slack_sdk import WebClient

from bot.adapters.slack.inbox import SlackInbox
from bot.adapters.slack.listeners import Listeners
from bot.config import ConfigError, Settings
from bot.services.context import Context


def build_bolt_app(settings: Settings, ctx: Context, client: WebClient, inbox: SlackInbox, *,
                   http: bool) -> App:
    """The app that acknowledges. HTTP mode needs the signing secret."""
    secret = settings.slack_signing_secret.get_secret_value() \
        if settings.slack_signing_secret else None
    if http and not secret:
        raise ConfigError(
            "SLACK_SIGNING_SECRET is not set: HTTP mode verifies every request with it. Copy "
            "the Signing Secret from your Slack app's Basic Information page, or run "
            "`serve --socket-mode` with SLACK_APP_TOKEN instead."
        )
    # Each listener only keeps, checks and acknowledges: it can answer before returning.
    app = _app(client, secret or "", verify=http)
    Listeners(ctx, client, inbox).register(app)
    return app


def build_work_app(ctx: Context, client: WebClient) -> App:
    """The worker's app. Its requests come from the inbox, verified when they were received."""
    app = _app(client, "", verify=False)
    Listeners(ctx, client).register_work(app)
    return app


def _app(client: WebClient, signing_secret: str, *, verify: bool) -> App:
    try:
        return App(client=client, signing_secret=signing_secret,
                   request_verification_enabled=verify, process_before_response=True,
                   name="k8s-access-bot")
    except BoltError as error:
        raise ConfigError(
            f"Slack refused SLACK_BOT_TOKEN ({error}); copy the Bot User OAuth Token again "
            "from the app's OAuth & Permissions page."
        ) from None
    except (URLError, OSError) as error:
        reason = getattr(error, "reason", error)
        raise ConfigError(
            f"cannot reach Slack at {client.base_url} ({reason}); check the network, a proxy "
            "(HTTPS_PROXY) or SLACK_API_URL."
        ) from None
