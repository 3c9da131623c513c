"""The Bolt apps: the one that faces Slack (in Socket Mode or behind ``POST /slack/events``) and
the worker's, which does the work of the requests the first one acknowledged."""

from __future__ import annotations

import logging
import re
from typing import Any
from urllib.error import URLError

from slack_bolt import App, BoltRequest, BoltResponse
from slack_bolt.adapter.wsgi import SlackRequestHandler
from slack_bolt.adapter.wsgi.http_request import WsgiHttpRequest
from slack_bolt.error import BoltError
from slack_bolt.logger.messages import warning_client_prioritized_and_token_skipped
from slack_sdk import WebClient
from slack_sdk.signature import SignatureVerifier

from bot.adapters.slack import payloads
from bot.adapters.slack.handling import Handling
from bot.adapters.slack.inbox import SlackInbox
from bot.adapters.slack.receiving import Receiver
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
    # Each listener only keeps, checks and acknowledges (see receiving): it answers at once;
    # a form opens right after, on a thread of the receiver's.
    app = _app(client, secret or "", verify=http)
    Receiver(ctx, inbox, client).register(app)
    return app


def build_work_app(ctx: Context, client: WebClient) -> App:
    """The worker's app. Its requests come from the inbox, verified when they were received."""
    app = _app(client, "", verify=False)
    Handling(ctx, client).register(app)
    return app


log = logging.getLogger(__name__)


class BotApp(App):
    """A Bolt app that keeps its signing secret at hand for :class:`SlackHttpHandler`."""

    def __init__(self, *, signing_secret: str, **kwargs: Any) -> None:
        super().__init__(signing_secret=signing_secret, **kwargs)
        self.signing_secret = signing_secret


class SlackHttpHandler(SlackRequestHandler):
    """Bolt's WSGI handler for ``POST /slack/events`` with the door checked first.

    A body Bolt cannot parse (not UTF-8, a ``payload`` that is not JSON, not an object) or a
    payload whose shape the handlers cannot read (:func:`payloads.check`) is answered 400 when
    it is signed, 401 when it is not, and never reaches the inbox or the handlers. Everything
    else goes to Bolt as it is, signature check included.
    """

    def dispatch(self, request: WsgiHttpRequest) -> BoltResponse:
        environ = request.environ
        length = int(environ.get("CONTENT_LENGTH") or 0)
        raw: bytes = environ["wsgi.input"].read(length) if "wsgi.input" in environ else b""
        headers = request.get_headers()
        problem = "the body is not UTF-8"
        try:
            body = raw.decode("utf-8")
            bolt_request = BoltRequest(body=body, query=request.query_string, headers=headers)
            payloads.check(bolt_request.body)
        except (ValueError, TypeError, AttributeError, KeyError, IndexError) as error:
            problem = str(error) if isinstance(error, payloads.MalformedPayload) else \
                f"the body cannot be read ({type(error).__name__})"
        else:
            return self.app.dispatch(bolt_request)
        secret = getattr(self.app, "signing_secret", "")
        flat = {k: v if isinstance(v, str) else next(iter(v), "") for k, v in headers.items()}
        # Slack signs UTF-8 text; a body that is not cannot be checked, and nothing is read
        # from it either: it is refused as malformed.
        if _utf8(raw) and not (secret and SignatureVerifier(secret).is_valid_request(raw, flat)):
            return BoltResponse(status=401, body="")
        log.warning("refused a malformed Slack request: %s", problem)
        return BoltResponse(status=400, body="malformed payload")


def _utf8(raw: bytes) -> bool:
    try:
        raw.decode("utf-8")
    except UnicodeDecodeError:
        return False
    return True
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
        return BotApp(client=client, signing_secret=signing_secret,
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
