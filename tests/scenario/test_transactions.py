"""How many database transactions one Approve click costs, end to end.

One click (a quorum of one, the in-memory backend) is followed from the signed request into the
acknowledging app until the inbox has marked it done, the grant is active and the kubeconfig is
uploaded. Counted: every transaction any thread begins on the bot's engine, and the
acknowledgement's insert (on PostgreSQL it goes through a driver connection of its own, in
autocommit: its checkout is counted instead). The worker's polls that claim nothing are not the
click's and are left out.

Before the work was split this click took 10 transactions: the acknowledgement's insert, then in
the worker the inbox claim, the decision, a read of the approval messages, the operation's
claim, a lease renewal before the backend call, the completion (renewal and state), a second
read of the approval messages, a re-read of the request, and the inbox's done. Now it takes 5:
the insert, the inbox claim, the decision (which owes the grant and takes its lease), the
record of what the backend held before the grant (this backend, like GitLab, has something to
record; the Kubernetes backends do not, and save the transaction), and the completion (the
request as it ends, the notices prepared, the inbox's done).

The statements sent in those transactions are counted too (the ``BEGIN`` that SQLite is sent
as a statement left out, as PostgreSQL's driver sends it by itself): 23 before an operation
was owed without a savepoint (INSERT … ON CONFLICT DO NOTHING) and saved without being read
first; 19 before the completion marked the operation done in the one UPDATE that checks its
lease (it renewed the lease first, then wrote the operation again); 18 now.
"""

from __future__ import annotations

import threading
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any

import pytest
from sqlalchemy import Engine, event
from sqlalchemy.pool import Pool

from bot.app import SlackRuntime
from bot.config import Settings
from bot.domain.errors import ConcurrentModification
from bot.domain.model import State
from bot.domain.ports import UnitOfWork
from bot.fakes.slack import BOT_TOKEN, SIGNING_SECRET, FakeSlack
from bot.services import grants
from bot.services.context import Context, receipt
from tests.conftest import ALICE, BOB
from tests.scenario.conftest import APPROVALS_CHANNEL, Driver, wait_for

MOST = 5
BEFORE = 10
MOST_STATEMENTS = 18


@pytest.fixture
def settings(slack: FakeSlack) -> Settings:
    # No timed polls: the worker claims when the acknowledgement wakes it, so every claim
    # between the click and its done is the click's own.
    return Settings(slack_bot_token=BOT_TOKEN, slack_signing_secret=SIGNING_SECRET,
                    slack_api_url=slack.api_url, worker_poll_seconds=3600)


@dataclass
class Transactions:
    """The transactions begun while counting, each as (thread, first statement)."""

    engine: Engine
    seen: list[tuple[str, str]] = field(default_factory=list)
    statements: list[tuple[str, str]] = field(default_factory=list)
    """The statements sent on the bot's engine while counting, as (thread, statement)."""
    counting: bool = False
    ignored_thread: str | None = None
    """The test's own thread once the acknowledgement has returned: its reads are not the
    click's."""
    lock: threading.Lock = field(default_factory=threading.Lock)
    _idle: threading.local = field(default_factory=threading.local)

    def begun(self, connection: Any) -> None:
        self._record("begin")

    def checked_out(self, dbapi_connection: Any, record: Any, proxy: Any) -> None:
        if proxy._pool is not self.engine.pool:  # the acknowledgement's own autocommit pool
            self._record("driver checkout")

    def executed(self, statement: str) -> None:
        if statement.split(None, 1)[:1] != ["BEGIN"]:
            self._record(statement, self.statements)

    def _record(self, what: str, into: list[tuple[str, str]] | None = None) -> None:
        into = self.seen if into is None else into
        held = getattr(self._idle, "held", None)
        entry = (threading.current_thread().name, what)
        if entry[0] == self.ignored_thread:
            return
        if held is not None:
            held.append((entry, into))
            return
        with self.lock:
            if self.counting:
                into.append(entry)

    def claims_counted_when_they_find_work(self, runtime: SlackRuntime) -> None:
        inbox = runtime.inbox
        claim = inbox.claim

        def counted_claim(worker: str, limit: int) -> Any:
            held: list[tuple[tuple[str, str], list[tuple[str, str]]]] = []
            self._idle.held = held
            try:
                found = claim(worker, limit)
            finally:
                self._idle.held = None
            if found:
                with self.lock:
                    if self.counting:
                        for entry, into in held:
                            into.append(entry)
            return found

        inbox.claim = counted_claim  # type: ignore[method-assign]


_counting: list[Transactions] = []
"""The counter of the test running now. The listeners stay (removing one while the worker's
threads run races SQLAlchemy's own iteration over them) and count for it alone."""


def _begun(connection: Any) -> None:
    for counter in _counting:
        counter.begun(connection)


def _checked_out(dbapi_connection: Any, record: Any, proxy: Any) -> None:
    for counter in _counting:
        counter.checked_out(dbapi_connection, record, proxy)


def _executed(connection: Any, cursor: Any, statement: str, *args: Any) -> None:
    for counter in _counting:
        counter.executed(statement)


@pytest.fixture
def transactions(engine: Engine) -> Iterator[Transactions]:
    """Listening begins before the bot's threads start (a listener added while they run races
    SQLAlchemy's iteration over the listeners)."""
    counter = Transactions(engine)
    if not event.contains(engine, "begin", _begun):
        event.listen(engine, "begin", _begun)
    if not event.contains(Pool, "checkout", _checked_out):
        event.listen(Pool, "checkout", _checked_out)
    if not event.contains(engine, "before_cursor_execute", _executed):
        event.listen(engine, "before_cursor_execute", _executed)
    _counting.append(counter)
    yield counter
    _counting.remove(counter)


def inbox_settled(engine: Engine) -> bool:
    from sqlalchemy import text

    with engine.connect() as connection:
        return connection.execute(
            text("SELECT count(*) FROM slack_inbox WHERE done_at IS NULL")).scalar_one() == 0


def test_one_approve_click_takes_at_most_half_the_transactions_it_took(
        transactions: Transactions, driver: Driver, slack: FakeSlack, runtime: SlackRuntime,
        engine: Engine) -> None:
    transactions.claims_counted_when_they_find_work(runtime)
    driver.ask(ALICE, "request staging edit 2h deploy hotfix")
    ts = wait_for(lambda: [ts for (c, ts) in slack.messages if c == APPROVALS_CHANNEL])[0]
    wait_for(lambda: inbox_settled(engine))

    slack_calls = len(slack.calls)
    transactions.counting = True
    assert driver.click(BOB, "approve", "1", ts=ts).status == 200
    transactions.ignored_thread = threading.current_thread().name
    wait_for(lambda: inbox_settled(engine)
             and grants.get(runtime.ctx, 1).state is State.ACTIVE
             and slack.uploaded_to(slack.dm_channel(ALICE)))
    transactions.counting = False

    click = transactions.seen
    print(f"{len(click)} transactions for one Approve click: {click}; Slack calls: "
          f"{[c.method for c in slack.calls[slack_calls:]]}")
    assert len(click) <= MOST == BEFORE // 2, click
    statements = transactions.statements
    print(f"{len(statements)} statements: " + "; ".join(s[:60] for _, s in statements))
    assert len(statements) <= MOST_STATEMENTS, statements


def test_a_refused_click_is_marked_done_after_its_answer(
        driver: Driver, slack: FakeSlack, engine: Engine) -> None:
    driver.ask(ALICE, "request staging edit 2h deploy hotfix")
    ts = wait_for(lambda: [ts for (c, ts) in slack.messages if c == APPROVALS_CHANNEL])[0]
    assert "cannot approve your own" in driver.press(ALICE, "approve", "1", ts=ts)
    wait_for(lambda: inbox_settled(engine))


def test_a_receipt_is_done_once_the_transaction_that_marked_it_commits(ctx: Context) -> None:
    marked: list[UnitOfWork] = []
    with receipt(marked.append) as held:
        with pytest.raises(ConcurrentModification), ctx.transaction() as uow:
            ctx.settle(uow)
            raise ConcurrentModification("a writer won the race")  # rolled back: not done
        assert not held.done and len(marked) == 1
        with ctx.transaction() as uow:  # the use case's retry marks it again
            ctx.settle(uow)
        assert held.done and len(marked) == 2
        with ctx.transaction() as uow:
            ctx.settle(uow)
        assert len(marked) == 2
    with ctx.transaction() as uow:  # no receipt outside the block
        ctx.settle(uow)
    assert len(marked) == 2
