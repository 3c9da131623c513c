"""The audit log, exported for reviewers: JSON lines or CSV, optionally since a moment."""

from __future__ import annotations

import json
import re
from collections.abc import Iterator
from datetime import UTC, datetime
from typing import Any

from bot.domain.durations import LONGEST, parse_duration
from bot.domain.errors import InvalidInput, NotAuthorized
from bot.domain.exports import csv_line
from bot.domain.model import AuditEvent
from bot.domain.stream import audit_record
from bot.services import reviews
from bot.services.context import Context

FORMATS = ("jsonl", "csv")
_BACK = re.compile(r"(?:\d+[wdhm])+", re.ASCII)
"""A duration as typed, whatever its size: ``5000d`` is one, too long to read."""
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
            shown = text if len(text) <= 40 else text[:39] + "…"
            if _BACK.fullmatch(text.strip().lower()) and re.search(r"[1-9]", text):
                raise InvalidInput(
                    f"'{shown}' goes back further than {LONGEST.days} days, the longest "
                    "duration the bot reads: write the date instead, like 2016-01-01."
                ) from None
            raise InvalidInput(
                f"'{shown}' is not a time: write a date like 2026-11-01, an ISO timestamp, "
                "or a duration back from now like 7d."
            ) from None
    moment = moment if moment.tzinfo else moment.replace(tzinfo=UTC)
    try:
        return moment.astimezone(UTC)
    except OverflowError:  # 0001-01-01T00:00+01:00 is before the first instant a database keeps
        raise InvalidInput(f"'{text}' is out of range: write a date between the years 1 and "
                           "9999, or a duration back from now like 7d.") from None


ATTESTATION_COLUMNS = ["grant_id", "kept_by", "at", "period", "cluster", "role", "namespace",
                       "grantee", "subject", "event_id"]
"""What ``audit export --attestations`` writes for each Keep in an access review."""


def attestation_record(event: AuditEvent) -> dict[str, Any]:
    """One attestation (an ``attested`` audit event) as a flat row of
    :data:`ATTESTATION_COLUMNS`."""
    details = event.details
    return {"grant_id": event.request_id, "kept_by": event.actor, "at": event.at.isoformat(),
            "period": details.get("period"), "cluster": details.get("cluster"),
            "role": details.get("role"), "namespace": details.get("namespace"),
            "grantee": details.get("grantee"), "subject": details.get("subject"),
            "event_id": event.id}


def export(ctx: Context, *, since: str | None = None, fmt: str = "jsonl",
           user_id: str | None = None, attestations: bool = False) -> Iterator[str]:
    """Yield the export line by line. From Slack only admins may export (``user_id`` given).
    ``attestations``: only the access reviews' attestations, one flat line each
    (:func:`attestation_record`)."""
    if fmt not in FORMATS:
        raise InvalidInput(f"'{fmt}' is not an export format: use jsonl or csv.")
    if user_id is not None and not ctx.actor(user_id).is_admin:
        raise NotAuthorized("Only admins may export the audit log.")
    start = parse_since(since, ctx.clock())
    columns = ATTESTATION_COLUMNS if attestations else _COLUMNS
    with ctx.transaction() as uow:
        events = (e for e in uow.audit.events(start)
                  if not attestations or e.action == reviews.ATTESTED)
        rows = (attestation_record(e) if attestations else audit_record(e) for e in events)
        if fmt == "csv":
            yield csv_line(columns)
            for row in rows:
                if "details" in row:
                    row = {**row, "details": json.dumps(row["details"], sort_keys=True)}
                yield csv_line(row.get(column) for column in columns)
        else:
            for row in rows:
                yield json.dumps(row, sort_keys=True) + "\n"
