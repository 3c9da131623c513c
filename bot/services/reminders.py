"""Reminders: the weekly DM and access review, the nudge before a grant ends, and the nudge to
approvers about requests still waiting.

Each message has a unique key (who, what, which week or which end) claimed in the database
before it is sent, so several replicas send it once; a waiting request counts the reminders of
its approvers instead, on its own row. A send that fails for a reason that may
pass (Slack rate-limiting or down) gives its key back so the next pass tries again; one that
Slack refused for good (the recipient cannot receive it, or the message itself is invalid)
keeps its key: it is logged and counted, never sent again unchanged every minute.
"""

from __future__ import annotations

import dataclasses
import logging
import threading
from collections import defaultdict
from collections.abc import Callable, Sequence
from concurrent.futures import Future, ThreadPoolExecutor
from datetime import datetime, timedelta
from functools import partial

from bot.domain import escalation
from bot.domain.errors import Undeliverable
from bot.domain.model import POLICY_ACTOR, AccessRequest, Kind, State
from bot.domain.policy import RolePolicy
from bot.domain.ports import Notice, NoticeKind
from bot.services import reviews
from bot.services.claims import check_reached, claim, deliver, sent
from bot.services.context import Context, audit
from bot.services.schedule import last_occurrence

log = logging.getLogger(__name__)

WEEKLY_HORIZON = timedelta(days=7)
"""The weekly DM lists the grants that end within this."""
CATCH_UP = timedelta(hours=12)
"""A replica that was down at the scheduled moment still sends within this; later, it skips
to the next week rather than send a stale reminder."""
KEY_MARGIN = timedelta(days=1)
CLAIM_CHUNK = 4
"""Keys claimed together, per sending thread."""


def _once(ctx: Context, key: str, send: Callable[[], object],
          released: Callable[[], None] = lambda: None) -> bool:
    """Send under a claimed key; False when another replica or an earlier pass sent it.
    ``released`` is called when the key was given back, for the next pass to send it."""
    with ctx.transaction() as uow:
        if not uow.once.claim_key(key, ctx.clock()):
            return False

    def release() -> None:
        _release(ctx, key)
        released()

    return sent(key, send, release)


def weekly(ctx: Context) -> int:
    """The weekly DMs and access reviews, if this week's are due and not yet sent.

    A week is its scheduled local time (see :mod:`bot.services.schedule`): the repeated hour
    of an autumn clock change is one week, not two."""
    schedules = ctx.config.schedules
    now = ctx.clock()
    occurrence = last_occurrence(schedules.reminders, schedules.timezone, now)
    if now - occurrence.at > CATCH_UP:
        return 0
    period = occurrence.key
    with ctx.transaction() as uow:
        found = uow.requests.find(states=[State.ACTIVE], kind=Kind.ACCESS, limit=None)
    # A grant whose end has passed is the expiry sweep's, whatever its state says right now.
    active = [g for g in found if g.ends_at is not None and g.ends_at > now]
    ending: dict[str, list[AccessRequest]] = defaultdict(list)
    for grant in active:
        if grant.ends_at is not None and grant.ends_at <= now + WEEKLY_HORIZON:
            ending[grant.grantee].append(grant)
    audiences = _review_audiences(ctx, active)
    admins = ctx.admins() if ending or audiences else ()
    # The reviews first: each is one message (and its file) with the most to store, which
    # then goes on while the DMs go, not after the last of them.
    tasks: list[tuple[str, Callable[[], object]]] = []
    for audience, grants in sorted(audiences.items()):
        tasks.append((f"review:{period}:{audience}",
                      lambda a=audience, g=grants: _review(  # type: ignore[misc]
                          ctx, period, a, g, admins)))
    for user_id, grants in sorted(ending.items()):
        ordered = sorted(grants, key=lambda g: g.ends_at or now)
        tasks.append((f"remind:{period}:{user_id}",
                      lambda u=user_id, g=ordered: ctx.notifier.remind(  # type: ignore[misc]
                          u, g, admins)))
    reviews.count_unreviewed(ctx, period, active)
    return _send_all(ctx, tasks)


def _send_all(ctx: Context, tasks: list[tuple[str, Callable[[], object]]]) -> int:
    """Send many messages a few at a time, each under its key (as :func:`_once` does). The
    keys are claimed a chunk at a time, one statement for the chunk, just before its messages
    go: the next chunk is claimed once every message of the one before it has started on its
    way, so that a pass that dies leaves at most two chunks claimed and unsent (each key at
    most once, as with one). Started, not finished: one slow message (a review, with its
    file) holds up only its own thread, never the claims."""
    if len(tasks) <= 1:
        return sum(_once(ctx, key, send) for key, send in tasks)
    threads = ctx.tuning.concurrency.messages
    size = threads * CLAIM_CHUNK
    started = threading.Semaphore(0)

    def send_one(key: str, send: Callable[[], object]) -> bool:
        started.release()
        return sent(key, send, partial(_release, ctx, key))

    futures: list[Future[bool]] = []
    with ThreadPoolExecutor(max_workers=threads, thread_name_prefix="reminders") as pool:
        before = 0  # messages of the chunk before this one, to see started
        for start in range(0, len(tasks), size):
            chunk = tasks[start:start + size]
            with ctx.transaction() as uow:
                mine = uow.once.claim_keys([key for key, _ in chunk], ctx.clock())
            coming = [pool.submit(send_one, key, send) for key, send in chunk if key in mine]
            for _ in range(before):  # the pool starts them in the order they came
                started.acquire()
            futures.extend(coming)
            before = len(coming)
    return sum(future.result() for future in futures)


def _release(ctx: Context, key: str) -> None:
    with ctx.transaction() as uow:
        uow.once.release_key(key)


def _in_parallel(ctx: Context, sends: list[Callable[[], bool]]) -> int:
    """Run sends a few at a time: Slack answers in parallel, and rate limits are the
    notifier's to respect. How many sent."""
    if len(sends) <= 1:
        return sum(send() for send in sends)
    with ThreadPoolExecutor(max_workers=ctx.tuning.concurrency.messages,
                            thread_name_prefix="reminders") as pool:
        return sum(pool.map(lambda send: send(), sends))


def _review_audiences(ctx: Context, active: list[AccessRequest]) -> dict[str, list[AccessRequest]]:
    """Each approvers channel, or each approver where a role has no channel, with its grants."""
    audiences: dict[str, list[AccessRequest]] = defaultdict(list)
    unchannelled: list[AccessRequest] = []
    for grant in active:
        if (grant.cluster, grant.role) not in ctx.config.policies:
            continue
        channel = ctx.config.approvers_channel(grant.cluster, grant.role)
        if channel:
            audiences[channel].append(grant)
        else:
            unchannelled.append(grant)
    for person, grants in _by_approver(ctx, unchannelled).items():
        audiences[person].extend(grants)
    return audiences


def _by_approver(ctx: Context, grants: list[AccessRequest]) -> dict[str, list[AccessRequest]]:
    """Each approver (user groups expanded) of ``grants``' roles, with the grants they
    approve."""
    found: dict[str, list[AccessRequest]] = defaultdict(list)
    for grant in grants:
        policy = ctx.config.policies.get((grant.cluster, grant.role))
        if policy is None:
            continue
        people = ctx.directory.users(policy.approvers)
        for group in people.unlisted:  # the other audiences still get theirs
            log.error("the access review skips user group %s", group)
        for person in people.users:
            found[person].append(grant)
    return found


def _review(ctx: Context, period: str, audience: str, grants: list[AccessRequest],
            admins: Sequence[str]) -> None:
    """Post ``audience``'s review. An approvers channel that refuses the message (the bot not
    invited, the channel archived or gone) falls back to DMs: each approver of its grants'
    roles gets the review, each under a key of their own, and the channel's refusal is raised
    (kept: not tried again); while one of them could not be reached for now, the channel's
    review fails as temporary instead, so that the next pass sends what is missing."""

    def by_dm(error: Undeliverable) -> None:
        log.error("the approvers channel %s refused the access review (%s); it goes to the "
                  "approvers by DM", audience, error.error)
        missing: list[str] = []
        for person, theirs in sorted(_by_approver(ctx, grants).items()):
            _once(ctx, f"review:{period}:{audience}:{person}",
                  lambda p=person, g=theirs: reviews.post(  # type: ignore[misc]
                      ctx, period, p, g, admins),
                  lambda p=person: missing.append(p))  # type: ignore[misc]
        if missing:
            raise Undeliverable(
                f"the access review for {audience} reached no DM yet of "
                f"{', '.join(missing)}", recipient=audience, error=error.error,
                kind=Undeliverable.TEMPORARY)
        raise error  # the channel's own review stays undelivered, and is not tried again

    reviews.post(ctx, period, audience, grants, admins, refused=by_dm)


def nudge_expiring(ctx: Context, limit: int | None = None) -> int:
    """Tell grantees their access ends soon (grants longer than the nudge only)."""
    before = ctx.config.schedules.nudge_before
    now = ctx.clock()
    tasks: list[tuple[str, Callable[[], object]]] = []
    with ctx.transaction() as uow:
        for grant in uow.requests.active_ending_before(
                now + before, ctx.tuning.batches.nudges if limit is None else limit):
            assert grant.ends_at is not None and grant.activated_at is not None
            if grant.ends_at <= now or grant.ends_at - grant.activated_at <= before:
                continue
            nudge = ctx.prepared(uow, Notice(NoticeKind.EXPIRING, grant))
            tasks.append((f"nudge:{grant.id}:{grant.ends_at.isoformat()}",
                          lambda n=nudge: ctx.notifier.notify(n)))  # type: ignore[misc]
    return _send_all(ctx, tasks)


def renotify_pending(ctx: Context, limit: int | None = None) -> int:
    """Remind the approvers of requests still waiting: after ``renotify_after``, then after
    twice as long again each time (4 h, 12 h, 28 h…), until the request's deadline (its
    timeout, or its scheduled window's end). Each reminder goes once: the request counts the
    reminders sent (:func:`bot.domain.escalation.renotify_due`), claimed with its row locked
    before it is sent, so replicas and restarts never send one twice. One that reached nobody
    leaves the next to try again; one Slack could not take yet is given back."""
    after = ctx.config.schedules.renotify_after
    now = ctx.clock()
    policies = ctx.config.policies
    with ctx.transaction() as uow:
        waiting = uow.requests.pending_created_before(
            now - after, ctx.tuning.batches.renotify if limit is None else limit)
    due = [r.id for r in waiting if r.id is not None
           and (policy := policies.get((r.cluster, r.role))) is not None
           and escalation.renotify_due(r, policy, after, now)]
    return _in_parallel(ctx, [lambda i=request_id: _renotify_once(ctx, i, after)  # type: ignore[misc]
                              for request_id in due])


def _renotify_once(ctx: Context, request_id: int, after: timedelta) -> bool:
    """Claim the reminder due on one request, send it, and give the claim back when the send
    may work later; False when nothing was sent (another replica claimed it, or it failed)."""

    def advance(request: AccessRequest, policy: RolePolicy, now: datetime) -> None:
        escalation.mark_renotified(request, escalation.renotify_due(request, policy, after, now))

    claimed = claim(ctx, request_id, "renotified", NoticeKind.STILL_PENDING, advance)
    if claimed is None:
        return False
    reminder, step = claimed.notice, claimed.after
    if not deliver(ctx, f"reminder {step} of request {request_id}",
                   claimed, lambda: _renotify(ctx, reminder)):
        return False
    with ctx.transaction() as uow:
        audit(uow.audit, ctx.clock(), POLICY_ACTOR, "renotified", reminder.request,
              reminder=step)
    return True


def renotify_step(waited: timedelta, after: timedelta) -> int:
    """Which re-notification a request that has ``waited`` is due (the rule lives in
    :func:`bot.domain.escalation.renotify_step`)."""
    return escalation.renotify_step(waited, after)


def _renotify(ctx: Context, notice: Notice) -> None:
    """Remind the approvers in the threads of the request's approval messages, or announce it
    to them anew where it has none or none of them takes a reply any more (the approvers
    channel falls back to DMs); a reminder that still reached nobody is undeliverable."""
    reach = ctx.shown(notice, ctx.notifier.notify(notice)) if notice.messages else None
    if not notice.messages or (reach is not None and not reach.reached
                               and not reach.may_reach_later):
        # Where the approval messages were takes nothing now (the bot was removed from the
        # channel, or it was archived or deleted): the approvers are asked anew, by DM
        # where the channel still refuses.
        reach = ctx.tell_approvers(dataclasses.replace(notice, messages=()),
                                   ctx.notifier.notify)
    check_reached(notice.request, reach)


def remind(ctx: Context) -> int:
    """One reminder pass: weekly messages when due, nudges, waiting requests. Returns how many
    messages went out."""
    sent = weekly(ctx) + nudge_expiring(ctx) + renotify_pending(ctx)
    forget_spent_keys(ctx)
    return sent


def forget_spent_keys(ctx: Context) -> int:
    """Delete the keys no pass can ask for again, so that the table holds weeks, not years.

    A weekly key matters for :data:`CATCH_UP` after its moment, a nudge's until its grant ends
    (``nudge_before`` after it was sent; an extension makes a new key). Keys older than the
    longest of these and the pending timeouts (keys of earlier versions), and a day, are
    spent.
    """
    config = ctx.config
    longest = max([CATCH_UP, config.schedules.nudge_before,
                   *(policy.pending_timeout for policy in config.policies.values())])
    with ctx.transaction() as uow:
        return uow.once.forget_keys(ctx.clock() - longest - KEY_MARGIN)
