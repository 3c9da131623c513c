"""Alembic environment: the models' metadata, the URL from the bot's settings.

A connection passed in ``config.attributes["connection"]`` (tests, the CLI) is used as is.
"""

from __future__ import annotations

import warnings

from alembic import context
from sqlalchemy import Connection

from bot.adapters.db.engine import make_engine
from bot.adapters.db.models import ONE_PENDING_INDEX, Base
from bot.config import Settings

target_metadata = Base.metadata
# SQLite cannot reflect the one-pending index (an expression index), so the drift check skips
# it there, saying so each time; PostgreSQL compares it. Its migration test checks it on both.
warnings.filterwarnings("ignore", message=rf".*expression-based index '?{ONE_PENDING_INDEX}")


def _run(connection: Connection) -> None:
    context.configure(
        connection=connection,
        target_metadata=target_metadata,
        render_as_batch=connection.dialect.name == "sqlite",
        compare_type=True,
    )
    with context.begin_transaction():
        context.run_migrations()


def run_online() -> None:
    connection = context.config.attributes.get("connection")
    if connection is not None:
        _run(connection)
        return
    url = context.config.attributes.get("url") or Settings().database_url
    engine = make_engine(url)
    try:
        with engine.connect() as connection:
            _run(connection)
    finally:
        engine.dispose()


def run_offline() -> None:
    url = context.config.attributes.get("url") or Settings().database_url
    context.configure(url=url, target_metadata=target_metadata, literal_binds=True,
                      render_as_batch=url.startswith("sqlite"))
    with context.begin_transaction():
        context.run_migrations()


if context.is_offline_mode():
    run_offline()
else:
    run_online()
