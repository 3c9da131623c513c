"""one pending request per grantee, cluster, role and namespace, kept by the database

Revision ID: 0007
Revises: 0006
Create Date: 2026-12-03 10:00:00
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0007"
down_revision: str | None = "0006"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

INDEX = "uq_access_requests_one_pending"
WHERE = "state = 'pending' AND kind = 'access'"


def upgrade() -> None:
    # Pending duplicates filed before the index existed (a race the bot lost) would stop it
    # being made: all but the first of each are cancelled, as their requesters would have.
    op.execute(sa.text(f"""
        UPDATE access_requests SET state = 'cancelled', ended_by = 'bot',
               end_reason = 'a duplicate of an earlier pending request'
        WHERE {WHERE} AND id NOT IN (
            SELECT MIN(id) FROM access_requests WHERE {WHERE}
            GROUP BY COALESCE(grantee_id, requester_id), cluster, role, COALESCE(namespace, '')
        )"""))
    # Not in batch mode: SQLite makes an index without copying the table. (SQLite cannot
    # reflect an expression index, so a later migration that copies access_requests in batch
    # mode must create this index again.)
    op.create_index(
        INDEX, "access_requests",
        [sa.text("coalesce(grantee_id, requester_id)"), "cluster", "role",
         sa.text("coalesce(namespace, '')")],
        unique=True, sqlite_where=sa.text(WHERE), postgresql_where=sa.text(WHERE))


def downgrade() -> None:
    op.drop_index(INDEX, table_name="access_requests")
