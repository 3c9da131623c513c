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
from datetime import timedelta

from bot.domain.errors import DomainError
from bot.services import access, audit_stream, escalations, grants, operations, reminders
from bot.services.context import Context

log = logging.getLogger(__name__)

@dataclass(frozen=True)
class Job:
    name: str
    run: Callable[[Context], int]
    every: timedelta


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


def default_jobs(ctx: Context) -> list[Job]:
    """Every job of :data:`JOBS`, each every ``expiry_sweep`` but ``reconcile`` (see
    :class:`bot.config.Schedules`) and those of :data:`EVERY`."""
    schedules = ctx.config.schedules
    every = {"reconcile": schedules.reconcile_every, **EVERY}
    return [Job(name, run, every.get(name, schedules.expiry_sweep))
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
    delays another (the expiry of grants)."""

    def __init__(self, ctx: Context, jobs: list[Job]) -> None:
        self._ctx = ctx
        self._jobs = jobs
        self._stop = threading.Event()
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

    def run_once(self, job: Job) -> None:
        run_job(self._ctx, job.name, job.run)

    def _loop(self, job: Job) -> None:
        while not self._stop.is_set():
            self.run_once(job)
            self._stop.wait(job.every.total_seconds())
