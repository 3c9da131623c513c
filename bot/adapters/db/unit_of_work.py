"""The unit of work on SQLAlchemy: one session, one transaction, shared by every store.

Unique keys make approvals, owed operations and sent notifications count once however often
they are attempted; a commit that loses such a race says so as
:class:`ConcurrentModification`, which the use cases retry.
"""

from __future__ import annotations

from sqlalchemy import Engine
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session, sessionmaker
from sqlalchemy.orm.exc import StaleDataError

from bot.adapters.db.access_requests import SqlAlchemyAccessRequests
from bot.adapters.db.audit import SqlAlchemyAuditTrail
from bot.adapters.db.links import SqlAlchemyIdentityLinks
from bot.adapters.db.messages import SqlAlchemyMessageReferences
from bot.adapters.db.once import SqlAlchemyOnceKeys
from bot.adapters.db.operations import SqlAlchemyOperationQueue
from bot.adapters.db.reachability import unavailable, unreachable
from bot.adapters.db.reviews import SqlAlchemyAccessReviews
from bot.domain.errors import ConcurrentModification


class SqlAlchemyUnitOfWork:
    """One transaction over the stores; leaving without :meth:`commit` rolls back."""

    def __init__(self, session_factory: sessionmaker[Session]) -> None:
        self._session_factory = session_factory

    def __enter__(self) -> SqlAlchemyUnitOfWork:
        self.session = session = self._session_factory()
        self.requests = SqlAlchemyAccessRequests(session)
        self.audit = SqlAlchemyAuditTrail(session)
        self.operations = SqlAlchemyOperationQueue(session)
        self.links = SqlAlchemyIdentityLinks(session)
        self.once = SqlAlchemyOnceKeys(session)
        self.messages = SqlAlchemyMessageReferences(session)
        self.reviews = SqlAlchemyAccessReviews(session)
        return self

    def __exit__(self, *exc: object) -> None:
        """Roll back what was not committed. A database that cannot be reached is
        :class:`~bot.domain.errors.DatabaseUnavailable` to the caller."""
        error = exc[1] if len(exc) > 1 and isinstance(exc[1], BaseException) else None
        try:
            self.session.rollback()
            self.session.close()
        except Exception as failed:
            if error is None or not unreachable(failed):
                raise
        if error is not None and unreachable(error):
            raise unavailable(error) from error

    def commit(self) -> None:
        try:
            self.audit.write()
            self.session.commit()
        except (StaleDataError, IntegrityError):
            self.session.rollback()
            raise ConcurrentModification(
                "Someone else changed the same request meanwhile; try again."
            ) from None
        except Exception as error:
            if unreachable(error):
                raise unavailable(error) from error
            raise


def unit_of_work_factory(engine: Engine) -> sessionmaker[Session]:
    return sessionmaker(bind=engine, expire_on_commit=False)
