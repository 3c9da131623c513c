"""The audit log, exported for reviewers: JSON lines or CSV, optionally since a moment."""

from __future__ import annotations

import csv
import io
import json
from collections.abc import Iterator
from datetime import UTC, datetime

from bot.domain.durations import parse_duration
from bot.domain.errors import InvalidInput, NotAuthorized
from bot.domain.stream import audit_record
from bot.services.context import Context

FORMATS = ("jsonl", "csv")
_COLUMNS = ["id", "at", "actor", "action", "request_id", "details"]


def parse_since(text: str | None, now: datetime) -> datetime | None:
    """``2026-11-01``, ``2026-11-01T09:00:00+01:00`` or a duration back from now (``7d``)."""
    if text is None or not text.strip():
        return None
    try:
        moment = datetime.fromisoformat(text.strip())
    except ValueError:
        try:
            return now - parse_duration(text)
        except InvalidInput:
            raise InvalidInput(
                f"'{text}' is not a time: write a date like 2026-11-01, an ISO timestamp, "
                "or a duration back from now like 7d."
            ) from None
    moment = moment if moment.tzinfo else moment.replace(tzinfo=UTC)
    try:
        return moment.astimezone(UTC)
    except OverflowError:  # 0001-01-01T00:00+01:00 is before the first instant a database keeps
        raise InvalidInput(f"'{text}' is out of range: write a date between the years 1 and "
                           "9999, or a duration back from now like 7d.") from None


def export(ctx: Context, *, since: str | None = None, fmt: str = "jsonl",
           user_id: str | None = None) -> Iterator[str]:
    """Yield the export line by line. From Slack only admins may export (``user_id`` given)."""
    if fmt not in FORMATS:
        raise InvalidInput(f"'{fmt}' is not an export format: use jsonl or csv.")
    if user_id is not None and not ctx.actor(user_id).is_admin:
        raise NotAuthorized("Only admins may export the audit log.")
    start = parse_since(since, ctx.clock())
    with ctx.transaction() as uow:
        if fmt == "csv":
            buffer = io.StringIO()
            writer = csv.DictWriter(buffer, fieldnames=_COLUMNS, lineterminator="\n")
            writer.writeheader()
            yield buffer.getvalue()
            for event in uow.audit.events(start):
                buffer.seek(0)
                buffer.truncate()
                row = audit_record(event)
                writer.writerow({**row, "details": json.dumps(row["details"], sort_keys=True)})
                yield buffer.getvalue()
        else:
            for event in uow.audit.events(start):
                yield json.dumps(audit_record(event), sort_keys=True) + "\n"
