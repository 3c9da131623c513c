"""The Bolt app: one per process, in Socket Mode or behind ``POST /slack/events``."""

from __future__ import annotations

from concurrent.futures import Executor, ThreadPoolExecutor
from urllib.error import URLError

from slack_bolt import App
from slack_bolt.error import BoltError
from slack_sdk import WebClient

from bot.adapters.slack.listeners import Listeners
from bot.config import ConfigError, Settings
from bot.services.context import Context


def build_bolt_app(settings: Settings, ctx: Context, client: WebClient, *,
                   http: bool, executor: Executor | None = None) -> App:
    """The app with every listener registered. HTTP mode needs the signing secret."""
    secret = settings.slack_signing_secret.get_secret_value() \
        if settings.slack_signing_secret else None
    if http and not secret:
        raise ConfigError(
            "SLACK_SIGNING_SECRET is not set: HTTP mode verifies every request with it. Copy "
            "the Signing Secret from your Slack app's Basic Information page, or run "
            "`serve --socket-mode` with SLACK_APP_TOKEN instead."
        )
    try:
        app = App(client=client, signing_secret=secret or "",
                  request_verification_enabled=http, process_before_response=False,
                  name="k8s-access-bot",
                  listener_executor=executor or ThreadPoolExecutor(
                      max_workers=16, thread_name_prefix="slack-listener"))
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
    Listeners(ctx, client, executor).register(app)
    return app
