"""The request a log line is about, carried through every step without passing it around.

Use cases bind the request ID with :func:`request_scope`; the log formatter (``bot.logs``) adds
it to every line written inside that scope, in this thread.
"""

from __future__ import annotations

import inspect
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from contextvars import ContextVar
from functools import wraps
from typing import ParamSpec, TypeVar

P = ParamSpec("P")
R = TypeVar("R")

current_request: ContextVar[int | None] = ContextVar("current_request", default=None)


@contextmanager
def request_scope(request_id: int | None) -> Iterator[None]:
    token = current_request.set(request_id)
    try:
        yield
    finally:
        current_request.reset(token)


def scoped(function: Callable[P, R]) -> Callable[P, R]:
    """Bind the use case's request (its ``request_id`` or ``grant_id`` argument) to its logs."""
    names = list(inspect.signature(function).parameters)

    @wraps(function)
    def wrapper(*args: P.args, **kwargs: P.kwargs) -> R:
        bound = dict(zip(names, args, strict=False)) | kwargs
        request_id = bound.get("request_id", bound.get("grant_id"))
        with request_scope(request_id if isinstance(request_id, int) else None):
            return function(*args, **kwargs)

    return wrapper
