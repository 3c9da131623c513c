"""The local Slack of the benchmarks, in a process of its own: the answers the bot's worker
posts must not take the load generator's interpreter lock.

``python -m bench.slack_server [--users N] [--rate R] [--per-channel S] [--events FILE]``:
prints its base URL and serves until its stdin closes, then prints one line of JSON with what
it counted (:class:`bench.processes.SlackCounts`). It knows ME, the approver and ``N`` more
people; ``--rate`` and ``--per-channel`` turn on Slack's posting limits (429 with
``Retry-After``). Each form opened (``views.open``), file shared and message posted is
appended to ``FILE`` as it arrives, with the moment on the machine's monotonic clock.

While it runs it answers commands, one line of JSON each on its stdin, with one line of JSON:
``{"post": {"channel": C, "count": n}}`` puts ``n`` messages in channel ``C`` as if the bot had
posted them, without a call counted (``{"ts": [...]}``); ``{"calls": true}`` says the calls
received so far by method (``{"chat.update": n, ...}``).
"""

from __future__ import annotations

import argparse
import json
import sys
import threading
import time
from collections import Counter
from typing import Any

from bench.processes import APPROVER, ME, requester
from bot.fakes.slack import FakeSlack

TIMED = {"views.open", "files.completeUploadExternal", "chat.postMessage"}


def posted(slack: FakeSlack, channel: str, count: int) -> list[str]:
    """``count`` messages in ``channel``, as the bot's approval messages: their ``ts``."""
    with slack._lock:
        stamps = [slack._ts_now() for _ in range(count)]
        for ts in stamps:
            slack.messages[(channel, ts)] = {"text": "Access request", "blocks": [],
                                             "thread_ts": None}
    return stamps


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--users", type=int, default=0)
    parser.add_argument("--rate", type=int, default=0)
    parser.add_argument("--per-channel", type=float, default=0.0)
    parser.add_argument("--events")
    args = parser.parse_args()
    users = {ME: {"email": "me@example.com", "name": "me"},
             APPROVER: {"email": "approver@example.com", "name": "approver"}}
    users.update({requester(n): {"email": f"req{n}@example.com", "name": f"req{n}"}
                  for n in range(args.users)})
    lock = threading.Lock()
    events = open(args.events, "a") if args.events else None  # noqa: SIM115

    def record(method: str, params: dict[str, Any]) -> None:
        if events is None or method not in TIMED:
            return
        entry = {"method": method, "at": time.monotonic(),
                 "trigger_id": params.get("trigger_id"),
                 "channel": params.get("channel_id") or params.get("channel")}
        if method == "views.open":
            entry["view"] = params.get("view")
        with lock:
            events.write(json.dumps(entry) + "\n")
            events.flush()

    slack = FakeSlack(users=users, channels={"C0REVIEW"}, on_call=record,
                      per_channel_interval=args.per_channel,
                      global_per_second=args.rate).start()
    print(slack.url, flush=True)
    for line in sys.stdin:
        command = json.loads(line)
        if "post" in command:
            answer: Any = {"ts": posted(slack, command["post"]["channel"],
                                        command["post"]["count"])}
        else:
            with slack._lock:
                answer = Counter(call.method for call in slack.calls)
        print(json.dumps(answer), flush=True)
    slack.stop()
    answers = Counter(response["_url"] for response in slack.responses)
    posts = [params.get("channel", "") for params in slack.called("chat.postMessage")]
    ok = Counter(channel for channel, _ in list(slack.messages))
    print(json.dumps({
        "answers": sum(answers.values()),
        "answered_twice": sum(count - 1 for count in answers.values()),
        "limited": slack.limited,
        "dms": {channel: count for channel, count in ok.items() if channel.startswith("D")},
        "posts": len(posts),
        "channel_posts": {channel: count for channel, count in ok.items()
                          if not channel.startswith("D")},
    }), flush=True)


if __name__ == "__main__":
    main()
