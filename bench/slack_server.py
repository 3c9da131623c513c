"""The local Slack of the acknowledgement benchmark, in a process of its own: the answers the
bot's worker posts must not take the load generator's interpreter lock.

``python -m bench.slack_server``: prints its base URL, serves until its stdin closes, then
prints how many answers (``response_url`` posts) it received.
"""

from __future__ import annotations

import sys

from bot.fakes.slack import FakeSlack

if __name__ == "__main__":
    slack = FakeSlack(users={"U0BENCHME": {"email": "me@example.com"}},
                      channels={"C0REVIEW"}).start()
    print(slack.url, flush=True)
    sys.stdin.read()
    slack.stop()
    print(len(slack.responses), flush=True)
