"""The periodic passes, and the scheduler that runs them inside ``serve``.

Every pass is a use case that is safe to run on several replicas at once: the database decides
who does each piece of work. ``k8s-access-bot jobs run NAME`` runs one pass from a CronJob.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime, timedelta

from bot.domain.errors import DomainError
from bot.services import access, audit_stream, escalations, grants, operations, reminders
from bot.services.context import Context

log = logging.getLogger(__name__)

@dataclass(frozen=True)
class Job:
    name: str
    run: Callable[[Context], int]
    every: timedelta
    """The longest wait between two passes."""
    next_due: Callable[[Context], datetime | None] | None = None
    """When the job's next work comes due (UTC), or ``None`` when none is in sight; a job that
    can tell waits only until then after a pass (see :meth:`Scheduler.wait_after`)."""


WAKE_FLOOR = timedelta(seconds=1)
"""The shortest wait after a pass of a job that can tell when its next work is due. Grants
ending within this of each other are revoked together, in one batch, rather than one pass
each; and a grant due but not this replica's to end at the moment (another replica holds its
row) does not make the loop spin."""


JOBS: dict[str, Callable[[Context], int]] = {
    "expire": grants.expire_due,
    "reconcile": grants.reconcile_and_fix,
    "retry": operations.run_due,
    "timeout": access.time_out_pending,
    "remind": reminders.remind,
    "stream": audit_stream.deliver,
    "escalate": escalations.escalate_pending,
}
"""Every periodic pass by name; each does only what it names. ``reconcile`` removes the
backend objects no grant explains (see :func:`bot.services.grants.reconcile`); ``escalate``
adds the approvers of escalation steps due on waiting requests."""
EVERY = {"stream": timedelta(seconds=5)}
"""Jobs that run at a fixed interval instead: the audit stream keeps up within seconds."""
NEXT_DUE: dict[str, Callable[[Context], datetime | None]] = {
    "expire": grants.next_expiry,
    "retry": operations.next_due,
}
"""Jobs that wake when their next work is due, within their interval: a grant ends on time,
and a scheduled window's grant starts on time, not up to a sweep late (a window would be cut
short: it ends on time); a retry comes when its back-off ends."""


def default_jobs(ctx: Context) -> list[Job]:
    """Every job of :data:`JOBS`, each at least every ``expiry_sweep`` but ``reconcile`` (see
    :class:`bot.config.Schedules`) and those of :data:`EVERY`; those of :data:`NEXT_DUE` also
    as soon as their next work is due."""
    schedules = ctx.config.schedules
    every = {"reconcile": schedules.reconcile_every, **EVERY}
    return [Job(name, run, every.get(name, schedules.expiry_sweep), NEXT_DUE.get(name))
            for name, run in JOBS.items()]


def run_job(ctx: Context, name: str, run: Callable[[Context], int]) -> int | None:
    """One pass of a job, timed and counted; its failure is logged, never raised."""
    started = time.monotonic()
    try:
        handled = run(ctx)
    except DomainError as error:  # explained already: no traceback needed
        log.error("job %s failed, it runs again at its next turn: %s", name, error.message)
        ctx.metrics.job_run(name, time.monotonic() - started, 0, ok=False)
        return None
    except Exception:
        log.exception("job %s failed; it runs again at its next turn", name)
        ctx.metrics.job_run(name, time.monotonic() - started, 0, ok=False)
        return None
    ctx.metrics.job_run(name, time.monotonic() - started, handled, ok=True)
    if handled:
        log.info("job %s handled %s", name, handled)
    return handled


class Scheduler:
    """Runs each job every so often, each on its own daemon thread, until :meth:`stop`: a job
    that waits on something slow (a webhook receiver that takes its time, a backend) never
    delays another (the expiry of grants).

    ``wait(seconds)`` waits between passes and says whether the scheduler is stopping; by
    default it waits on :meth:`stop` (a test may advance a fake clock instead)."""

    def __init__(self, ctx: Context, jobs: list[Job],
                 wait: Callable[[float], bool] | None = None) -> None:
        self._ctx = ctx
        self._jobs = jobs
        self._stop = threading.Event()
        self._wait = wait or self._stop.wait
        self._threads = [threading.Thread(target=self._loop, args=(job,),
                                          name=f"job-{job.name}", daemon=True)
                         for job in jobs]

    def start(self) -> None:
        for thread in self._threads:
            thread.start()

    def stop(self, timeout: float = 10) -> None:
        self._stop.set()
        ends = time.monotonic() + timeout
        for thread in self._threads:
            thread.join(max(ends - time.monotonic(), 0))

    def run_once(self, job: Job) -> int | None:
        return run_job(self._ctx, job.name, job.run)

    def wait_after(self, job: Job, failed: bool = False) -> timedelta:
        """How long ``job`` waits after a pass: until its next work is due, when it can tell
        (:attr:`Job.next_due`), but at least :data:`WAKE_FLOOR` and at most ``job.every`` (work
        added meanwhile, a grant approved or extended, is seen at the next wake at the
        latest); ``job.every`` when it cannot tell, nothing is due, or the pass ``failed``
        (a database that is down is not asked again every second)."""
        if job.next_due is None or failed:
            return job.every
        try:
            due = job.next_due(self._ctx)
        except Exception:
            log.exception("job %s could not tell when its next work is due; it runs again in %s",
                          job.name, job.every)
            return job.every
        if due is None:
            return job.every
        return min(max(due - self._ctx.clock(), WAKE_FLOOR), job.every)

    def _loop(self, job: Job) -> None:
        while not self._stop.is_set():
            failed = self.run_once(job) is None
            if self._wait(self.wait_after(job, failed).total_seconds()):
                return
