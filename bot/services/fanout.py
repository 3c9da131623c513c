"""Calls made together only as far as they wait.

A pass calls a backend or Slack once per grant, up to ``Concurrency`` at a time, so that a slow
API server or Slack's latency does not add up call after call. A call that is answered at once
gains nothing from company: threads taking turns on the interpreter cost more CPU than the
overlap saves. So :func:`fan_out` makes the calls one after another on one thread, and adds a
thread each time every worker waits, or waited on its last call, ``patience`` or longer (a slow
backend, the network), up to the most allowed: against Slack or a remote cluster all of them
are busy within a few of those moments; against a backend that answers at once, one thread does
the work.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Sequence
from typing import Generic, TypeVar

T = TypeVar("T")
R = TypeVar("R")

PATIENCE = 0.005
"""Seconds a call takes, every worker's, before one more thread starts calling."""


def fan_out(call: Callable[[T], R], items: Sequence[T], most: int, name: str,
            patience: float = PATIENCE) -> list[R]:
    """``call`` on each of ``items``, at most ``most`` at a time on threads named ``name``-N
    (see the module); the results in the items' order. A call that raises does not stop the
    others: the first exception is raised once every call has returned."""
    if len(items) <= 1 or most <= 1:
        return _one_after_another(call, items)
    fan = _Fan(call, items)
    threads: list[threading.Thread] = []

    def start() -> None:
        worker = len(threads)
        fan.enlist(worker)
        threads.append(threading.Thread(target=fan.work, args=(worker,),
                                        name=f"{name}-{worker}"))
        threads[-1].start()

    start()
    while not fan.finished.wait(patience):
        if len(threads) < most and fan.all_waiting(patience):
            start()
    for thread in threads:
        thread.join()
    return fan.results()


def _one_after_another(call: Callable[[T], R], items: Sequence[T]) -> list[R]:
    """``call`` on each of ``items`` on this thread; as :func:`fan_out`, one that raises does
    not stop the others, and the first exception is raised after the last call."""
    results: list[R] = []
    error: BaseException | None = None
    for item in items:
        try:
            results.append(call(item))
        except BaseException as raised:  # the other items are still called
            error = error or raised
    if error is not None:
        raise error
    return results


class _Fan(Generic[T, R]):
    """The items handed out one at a time to the workers, and what their calls returned."""

    def __init__(self, call: Callable[[T], R], items: Sequence[T]) -> None:
        self._call = call
        self._items = items
        self._lock = threading.Lock()
        self._next = 0
        self._workers = 0
        self._calling: dict[int, float] = {}
        """Worker → when its call under way began (monotonic seconds)."""
        self._took: dict[int, float] = {}
        """Worker → how long its last finished call took (seconds)."""
        self._results: dict[int, R] = {}
        self._error: BaseException | None = None
        self.finished = threading.Event()

    def enlist(self, worker: int) -> None:
        with self._lock:
            self._workers += 1
            self._calling[worker] = time.monotonic()

    def work(self, worker: int) -> None:
        while True:
            with self._lock:
                index = self._next
                if index >= len(self._items):
                    self._calling.pop(worker, None)
                    self._workers -= 1
                    if not self._workers:
                        self.finished.set()
                    return
                self._next += 1
                self._calling[worker] = time.monotonic()
            try:
                result = self._call(self._items[index])
            except BaseException as error:  # the other items are still called
                with self._lock:
                    self._error = self._error or error
                    self._finished_call(worker)
                continue
            with self._lock:
                self._results[index] = result
                self._finished_call(worker)

    def _finished_call(self, worker: int) -> None:
        """Under the lock: ``worker`` is between calls; how long its call took is kept."""
        began = self._calling.pop(worker, None)
        if began is not None:
            self._took[worker] = time.monotonic() - began

    def all_waiting(self, patience: float) -> bool:
        """Items are left, and every worker is in a call begun ``patience`` ago or earlier, or
        in one that follows a call that took that long (a worker that has just begun its next
        call waits as long again, most likely)."""
        now = time.monotonic()
        with self._lock:
            return self._next < len(self._items) and len(self._calling) == self._workers \
                and all(now - began >= patience or self._took.get(worker, 0.0) >= patience
                        for worker, began in self._calling.items())

    def results(self) -> list[R]:
        if self._error is not None:
            raise self._error
        return [self._results[index] for index in range(len(self._items))]
