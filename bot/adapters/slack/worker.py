"""The worker: does what each acknowledged Slack request asks, from the inbox.

It hands every waiting request to the Bolt app that routes it to its handler
(:class:`~bot.adapters.slack.handling.Handling`), on a pool of threads, so that a slow GitLab or
cluster holds one thread and not the queue. ``serve`` runs it in a process of its own: the
process that acknowledges Slack shares no interpreter lock with the work.

A request is marked done in the last transaction of the use case it ran, where that use case
says which one is last (:meth:`Context.settle <bot.services.context.Context.settle>`): what it
committed and the request's being done commit together. Otherwise, and for what only reads or
is refused, it is marked done after its handler returned.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor

from slack_bolt import App
from slack_bolt.request import BoltRequest

from bot.adapters.slack.inbox import MAX_ATTEMPTS, Received, SlackInbox
from bot.services.context import receipt

log = logging.getLogger(__name__)
POLL_SECONDS = 1.0
"""How often to look for work nobody woke us for (another replica's, or a dead worker's)."""


class SlackWorker:
    def __init__(self, app: App, inbox: SlackInbox, worker_id: str, threads: int = 8, *,
                 poll: float = POLL_SECONDS) -> None:
        self._app = app
        self._poll = poll
        self._inbox = inbox
        self._worker_id = worker_id
        self._threads = threads
        self._pool = ThreadPoolExecutor(max_workers=threads, thread_name_prefix="slack-work")
        self._busy = 0
        self._lock = threading.Lock()
        self._wake = threading.Event()
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self.run, name="slack-worker", daemon=True)

    def wake(self) -> None:
        self._wake.set()

    def start(self) -> SlackWorker:
        self._thread.start()
        return self

    def stop(self, timeout: float = 30) -> None:
        """Stop claiming, and let what is running finish."""
        self._stop.set()
        self._wake.set()
        if self._thread.is_alive():
            self._thread.join(timeout)
        self._pool.shutdown(wait=True)

    def run(self) -> None:
        while not self._stop.is_set():
            self._wake.clear()
            with self._lock:
                free = self._threads - self._busy
            claimed: Sequence[Received] = ()
            if free:
                try:
                    claimed = self._inbox.claim(self._worker_id, free)
                except Exception:
                    log.exception("cannot read the Slack inbox; trying again")
            for received in claimed:
                with self._lock:
                    self._busy += 1
                self._pool.submit(self._handle, received)
            if len(claimed) < free or not free:
                self._wake.wait(self._poll)

    def _handle(self, received: Received) -> None:
        try:
            if received.attempts > MAX_ATTEMPTS:
                log.error("gave up on a Slack request after %s attempts (%s)", MAX_ATTEMPTS,
                          received.key[:24])
            else:
                key = received.key
                with receipt(lambda uow: self._inbox.done_in(uow, key)) as handled:
                    self.handle(received)
                if handled.done:  # marked in the use case's last transaction
                    return
            self._inbox.done(received.key)
        except Exception:  # the database went away: the lease runs out and it runs again
            log.exception("the work for a Slack request failed")
        finally:
            with self._lock:
                self._busy -= 1
            self._wake.set()

    def handle(self, received: Received) -> None:
        """Dispatch one request to its handler, in this thread."""
        request = BoltRequest(body=received.body, headers={"content-type": "application/json"})
        response = self._app.dispatch(request)
        if response.status >= 400:  # no listener for it (404) or one that raised (500)
            log.error("the work for a Slack request ended with status %s: %s", response.status,
                      response.body[:200])
