"""Opening the database, with one clear line for each way it goes wrong on first contact.

A wrong host, a refused user, a database that does not exist, a SQLite file in a folder the bot
cannot write, a schema that was never migrated: each becomes a :class:`DatabaseProblem` that
names the database (its URL without the password) and the fix, never a driver traceback.
"""

from __future__ import annotations

import tempfile
from pathlib import Path

from sqlalchemy import Engine, text
from sqlalchemy.engine import make_url
from sqlalchemy.exc import ArgumentError, NoSuchModuleError, SQLAlchemyError

from bot.adapters.db import migrate
from bot.adapters.db.engine import make_engine
from bot.config import ConfigError

UPGRADE = "run `k8s-access-bot db upgrade` (with the same DATABASE_URL)"


class DatabaseProblem(ConfigError):
    """The database cannot be used as it is; the message is one line with the fix."""


def shown(url: str) -> str:
    """The URL with its password hidden, for messages and logs."""
    try:
        return make_url(url).render_as_string(hide_password=True)
    except (ArgumentError, ValueError):
        return "(an unreadable URL)"


def sqlite_path(url: str) -> Path | None:
    """The file a ``sqlite:///`` URL names (None for in-memory or other databases)."""
    parsed = make_url(url)
    if parsed.get_backend_name() != "sqlite" or parsed.database in (None, "", ":memory:"):
        return None
    return Path(parsed.database)


def explain(error: Exception, url: str) -> str:
    """One line: what went wrong with the database at ``url`` and what to do about it."""
    where = shown(url)
    message = str(getattr(error, "orig", None) or error).strip()
    first = message.splitlines()[0] if message else type(error).__name__
    lowered = message.lower()
    path = _safe_sqlite_path(url)
    if isinstance(error, NoSuchModuleError | ArgumentError | ValueError):
        return (f"DATABASE_URL {where} cannot be used ({first}): write "
                "postgresql://USER:PASSWORD@HOST:5432/DATABASE or sqlite:///PATH")
    if "no such table" in lowered or "undefinedtable" in type(
            getattr(error, "orig", error)).__name__.lower() or (
            "relation" in lowered and "does not exist" in lowered):
        return f"the database {where} has no tables yet: {UPGRADE}"
    if path is not None:
        if "readonly" in lowered or "read-only" in lowered:
            return (f"the SQLite file {path} is read-only: give the bot a writable path in "
                    "DATABASE_URL (in a pod, a volume), or use PostgreSQL")
        if "unable to open" in lowered:
            return f"cannot open the SQLite file {path}: {_folder_trouble(path)}"
        return f"SQLite file {path}: {first}"
    if "password authentication failed" in lowered or (
            "role" in lowered and "does not exist" in lowered) or "no password supplied" in \
            lowered or "authentication" in lowered:
        return (f"the database server refused the login for {where} ({_fatal(message)}): check "
                "the user and password in DATABASE_URL")
    if "database" in lowered and "does not exist" in lowered:
        name = make_url(url).database
        return (f"there is no database '{name}' on the server of {where}: create it (createdb "
                f"{name}, or CREATE DATABASE {name}) or correct DATABASE_URL")
    if any(words in lowered for words in (
            "connection refused", "could not translate host name", "name or service not known",
            "timeout expired", "timed out", "no route to host", "network is unreachable",
            "could not connect", "connection failed")):
        return (f"cannot reach the database at {where} ({_fatal(message)}): is PostgreSQL "
                "running there, and do the host and port in DATABASE_URL name it?")
    return f"the database at {where} answered: {first}"


def open_database(url: str, *, migrated: bool = True, existing: bool = False) -> Engine:
    """An engine for ``url`` that has connected once.

    ``migrated``: the schema is at the migrations' head (else: run ``db upgrade``).
    ``existing``: a SQLite file must already be there; nothing is created.
    Raises :class:`DatabaseProblem`.
    """
    path = _safe_sqlite_path(url)
    if existing and path is not None and not path.is_file():
        raise DatabaseProblem(f"there is no SQLite file {path} (DATABASE_URL {shown(url)}): "
                              f"{UPGRADE} to create it, or correct the path")
    if migrated and path is not None and not path.is_file():  # connecting would create it
        raise DatabaseProblem(not_at_head(url, None, migrate.head()))
    try:
        engine = make_engine(url)
    except (SQLAlchemyError, ValueError) as error:
        raise DatabaseProblem(explain(error, url)) from None
    try:
        with engine.connect() as connection:
            connection.execute(text("SELECT 1"))
        if not migrated:
            return engine
        current, head = migrate.current(engine), migrate.head()
    except SQLAlchemyError as error:
        engine.dispose()
        raise DatabaseProblem(explain(error, url)) from None
    if current != head:
        engine.dispose()
        raise DatabaseProblem(not_at_head(url, current, head))
    return engine


def not_at_head(url: str, current: str | None, head: str | None) -> str:
    """The line for a schema that is not the one this code needs."""
    if current is None:
        return f"the database {shown(url)} is not migrated (no tables yet): {UPGRADE}"
    behind = migrate.behind(current)
    if behind is None:
        return (f"the database {shown(url)} is at revision {current}, which this version does "
                f"not know (it expects {head}): run the version that migrated it, or a newer one")
    return (f"the database {shown(url)} is {behind} migration{'s' if behind != 1 else ''} "
            f"behind (at {current}, this version needs {head}): {UPGRADE}")


def _safe_sqlite_path(url: str) -> Path | None:
    try:
        return sqlite_path(url)
    except (ArgumentError, ValueError):
        return None


def _folder_trouble(path: Path) -> str:
    folder = path.parent
    if not folder.is_dir():
        return (f"its folder {folder} does not exist; create it or set DATABASE_URL to a "
                "path that exists")
    try:
        with tempfile.TemporaryFile(dir=folder):
            pass
    except OSError as error:
        return (f"the bot cannot write in {folder} ({error.strerror}); give it a writable "
                "path in DATABASE_URL (in a pod, a volume), or use PostgreSQL")
    return "check that it is an SQLite database the bot may read and write"


def _fatal(message: str) -> str:
    """The driver's reason without its connection preamble."""
    for line in message.splitlines():
        if "FATAL:" in line:
            return line.split("FATAL:", 1)[1].strip()
    last = message.splitlines()[0]
    return last.rsplit("failed: ", 1)[-1].strip()
