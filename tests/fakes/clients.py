"""A Slack client whose chosen methods fail as given (after what would be the client's own
retries): Slack not answering, or answering an error, without a server."""

from __future__ import annotations

from typing import Any

from slack_sdk import WebClient


class Failing(WebClient):
    """``methods`` (``views_open``, ``users_info``…) raise ``error``; the rest are the SDK's."""

    def __init__(self, error: Exception, *methods: str) -> None:
        super().__init__(token="xoxb-test")
        self._error = error
        for method in methods:
            setattr(self, method, self._fail)

    def _fail(self, *args: Any, **kwargs: Any) -> Any:
        raise self._error
