"""Errors that carry meaning for the people and jobs that meet them.

Every message is written for the person who caused it: it says what was wrong and, where it
can, how to do it right. Adapters translate library errors into these at their boundary.
Messages are plain text that may quote what a person typed: an edge that renders markup
escapes them whole, so they carry no markup of their own (no ``<@U…>`` mentions).
"""

from __future__ import annotations


class DomainError(Exception):
    """Base of every error the bot explains to a person."""

    def __init__(self, message: str) -> None:
        super().__init__(message)
        self.message = message


class InvalidInput(DomainError):
    """Something typed or configured cannot be understood (a bad duration, an unknown role)."""


class NotFound(DomainError):
    """The request, cluster or role named does not exist."""


class NotAuthorized(DomainError):
    """The actor may not do this (not an approver, not the requester, own request)."""


class InvalidTransition(DomainError):
    """The request is not in a state that allows this action."""


class PolicyViolation(DomainError):
    """The request breaks the cluster's or role's policy (too long, no reason, ...)."""


class ConcurrentModification(DomainError):
    """Somebody else changed the same request at the same time; the action may be retried."""


class BackendError(DomainError):
    """A granting backend (GitLab, Kubernetes) failed."""


class TemporaryBackendError(BackendError):
    """The backend failed in a way that may pass: retry later, with backoff."""

    def __init__(self, message: str, *, delay_seconds: float | None = None) -> None:
        super().__init__(message)
        self.delay_seconds = delay_seconds


class PermanentBackendError(BackendError):
    """The backend refused in a way retrying will not fix: stop and tell a human."""


class Undeliverable(DomainError):
    """A message did not reach ``recipient`` (a channel or user ID). ``error`` is the
    messaging service's reason (``not_in_channel``, ``user_disabled``, ``invalid_blocks``…);
    ``kind`` what to do about it:

    - ``temporary``: the service was rate-limiting or down; sending again later may work;
    - ``recipient``: this recipient cannot receive (deactivated, bot not in the channel,
      archived…); skip them, tell someone, do not retry;
    - ``invalid``: the service refused the content itself (too many blocks, too long); sending
      it again unchanged never works.
    """

    TEMPORARY, RECIPIENT, INVALID = "temporary", "recipient", "invalid"

    def __init__(self, message: str, *, recipient: str, error: str, kind: str) -> None:
        super().__init__(message)
        self.recipient = recipient
        self.error = error
        self.kind = kind

    @property
    def retryable(self) -> bool:
        return self.kind == self.TEMPORARY


class DatabaseUnavailable(Exception):
    """The database cannot be reached (stopped, restarting, its file unreadable): nothing was
    kept or changed. Not a person's mistake, so not a :class:`DomainError`; whoever is waiting
    is told :data:`MESSAGE`."""

    MESSAGE = "The bot cannot reach its database right now; try again in a minute."
