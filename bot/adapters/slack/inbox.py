"""The Slack inbox: every request the bot acknowledges, kept until a worker has done what it
asks (in the database: :class:`bot.adapters.db.inbox.SqlAlchemyInbox`, given by the
composition root).

The acknowledging app keeps each request under its signature, so that a replay finds the key
taken on any replica; the worker claims what is waiting with a lease of :data:`LEASE`, and gives
up on a request after :data:`MAX_ATTEMPTS` claims. Done requests keep their key for
:data:`REPLAY_WINDOW`, until Slack's own timestamp check has made the signature useless.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from datetime import timedelta
from typing import Protocol

from bot.domain.ports import UnitOfWork

MAX_ATTEMPTS = 3
LEASE = timedelta(minutes=10)
REPLAY_WINDOW = timedelta(minutes=10)
"""Slack refuses requests older than five minutes: after ten, a signature cannot be replayed."""


class Received(Protocol):
    """A request claimed from the inbox."""

    @property
    def key(self) -> str: ...

    @property
    def body(self) -> str:
        """The request's JSON body, as received."""
        ...

    @property
    def attempts(self) -> int:
        """How many times it was claimed, this time included."""
        ...


class SlackInbox(Protocol):
    def notify(self, on_receive: Callable[[], None]) -> None:
        """Call ``on_receive`` after each request is kept: it wakes the worker."""
        ...

    def receive(self, key: str, body: str) -> bool:
        """Keep a request's body under ``key``; False when the key was taken (a replay);
        :class:`~bot.domain.errors.DatabaseUnavailable` when it cannot be kept."""
        ...

    def remember(self, key: str) -> bool:
        """Keep only ``key``, already done, for a request answered on receipt (no worker runs
        it; a replay of it is refused); False when the key was taken;
        :class:`~bot.domain.errors.DatabaseUnavailable` when it cannot be kept."""
        ...

    def claim(self, worker: str, limit: int) -> Sequence[Received]:
        """Up to ``limit`` waiting requests, oldest first, leased to ``worker``."""
        ...

    def done(self, key: str) -> None:
        """Finished (or given up): drop the body, keep the key until it cannot be replayed."""
        ...

    def done_in(self, uow: UnitOfWork, key: str) -> None:
        """:meth:`done`, inside ``uow``'s transaction: the inbox's database is the use cases'."""
        ...

    def waiting(self) -> int:
        """How many requests wait for a worker."""
        ...

    def forget(self) -> int:
        """Delete the done requests whose signatures Slack's timestamp check now refuses;
        how many."""
        ...

    def close(self) -> None: ...
