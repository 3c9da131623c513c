"""Who a Slack user is on each backend: what ``whoami`` shows and what approvers see."""

from __future__ import annotations

from dataclasses import dataclass

from bot.domain.errors import DomainError
from bot.services.context import Context


@dataclass(frozen=True)
class Identities:
    slack_user_id: str
    email: str | None
    links: dict[str, str]
    subjects: dict[str, str]
    """Cluster → the identity a grant there carries, or why none could be found."""
    is_admin: bool


def whoami(ctx: Context, user_id: str) -> Identities:
    with ctx.transaction() as store:
        user = ctx.user_info(user_id, store)
    subjects: dict[str, str] = {}
    for cluster in ctx.config.clusters:
        try:
            subjects[cluster] = f"`{ctx.granter(cluster).resolve_subject(user)}`"
        except DomainError as error:
            subjects[cluster] = f"unresolved: {error.message}"
    return Identities(
        slack_user_id=user_id,
        email=user.email,
        links=dict(user.links),
        subjects=subjects,
        is_admin=ctx.actor(user_id).is_admin,
    )
