"""The Bolt apps: the one that faces Slack (in Socket Mode or behind ``POST /slack/events``) and
the worker's, which does the work of the requests the first one acknowledged."""

from __future__ import annotations

import logging
import re
from urllib.error import URLError

from slack_bolt import App
from slack_bolt.error import BoltError
from slack_bolt.logger.messages import warning_client_prioritized_and_token_skipped
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


class _SameToken(logging.Filter):
    """Bolt reads SLACK_BOT_TOKEN itself and warns, for each app, that the client given to it
    wins; that client carries the very same token, so the warning only adds noise at start."""

    def filter(self, record: logging.LogRecord) -> bool:
        return record.getMessage() != warning_client_prioritized_and_token_skipped()


def _app(client: WebClient, signing_secret: str, *, verify: bool) -> App:
    bolt_log = logging.getLogger("slack_bolt.App")
    if not any(isinstance(f, _SameToken) for f in bolt_log.filters):
        bolt_log.addFilter(_SameToken())
    try:
        return App(client=client, signing_secret=signing_secret,
                   request_verification_enabled=verify, process_before_response=True,
                   name="k8s-access-bot")
    except BoltError as error:
        code = re.search(r"'error': '([a-z_]+)'", str(error))
        raise ConfigError(
            f"Slack refused SLACK_BOT_TOKEN ({code.group(1) if code else error}): copy the Bot "
            "User OAuth Token (xoxb-…) again from your Slack app's OAuth & Permissions page, "
            "and reinstall the app if it was removed."
        ) from None
    except (URLError, OSError) as error:
        reason = getattr(error, "reason", error)
        raise ConfigError(
            f"cannot reach Slack at {client.base_url} ({reason}); check the network, a proxy "
            "(HTTPS_PROXY) or SLACK_API_URL."
        ) from None
