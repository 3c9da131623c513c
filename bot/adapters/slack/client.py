"""The Slack Web API client, configured once: base URL, retries on 429s and dropped connections."""

from __future__ import annotations

from slack_sdk import WebClient
from slack_sdk.http_retry.builtin_handlers import (
    ConnectionErrorRetryHandler,
    RateLimitErrorRetryHandler,
    ServerErrorRetryHandler,
)

from bot.config import ConfigError, Settings

DEFAULT_API_URL = "https://slack.com/api/"


def make_client(settings: Settings, *, rate_limit_retries: int = 10) -> WebClient:
    """A client that waits out ``Retry-After`` on 429s and retries connection and 5xx errors."""
    if settings.slack_bot_token is None:
        raise ConfigError(
            "SLACK_BOT_TOKEN is not set: copy the Bot User OAuth Token (xoxb-…) from your Slack "
            "app's OAuth & Permissions page (create the app from app-manifest.yaml)."
        )
    base_url = settings.slack_api_url or DEFAULT_API_URL
    return WebClient(
        token=settings.slack_bot_token.get_secret_value(),
        base_url=base_url if base_url.endswith("/") else base_url + "/",
        timeout=15,
        retry_handlers=[
            RateLimitErrorRetryHandler(max_retry_count=rate_limit_retries),
            ConnectionErrorRetryHandler(max_retry_count=3),
            ServerErrorRetryHandler(max_retry_count=2),
        ],
    )
