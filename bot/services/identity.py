"""Who a Slack user is on each backend: what ``whoami`` shows and what approvers see."""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass

from bot.domain.errors import DomainError, InvalidInput, NotAuthorized, NotFound
from bot.domain.model import IdentityLink
from bot.domain.ports import AccountDirectory
from bot.services.context import Context, audit


@dataclass(frozen=True)
class Identities:
    slack_user_id: str
    email: str | None
    links: dict[str, str]
    subjects: dict[str, str]
    """Cluster → the identity a grant there carries, or why none could be found."""
    is_admin: bool


def link_gitlab(ctx: Context, user_id: str, username: str) -> IdentityLink:
    """Tie a Slack user to a GitLab account: at once when GitLab shows the bot the same email
    as Slack does, else pending until an admin confirms."""
    directory = next((g for g in ctx.granters.values() if isinstance(g, AccountDirectory)), None)
    if directory is None:
        raise InvalidInput("No cluster grants through GitLab, so there is nothing to link.")
    account = directory.account(username.strip().lstrip("@"))
    if account is None:
        raise NotFound(f"GitLab has no user '{username}'.")
    email = ctx.directory.user_info(user_id).email
    same = bool(account.email and email and account.email.lower() == email.lower())
    now = ctx.clock()
    link = IdentityLink(slack_user_id=user_id, provider="gitlab", username=account.username,
                        confirmed=same, created_at=now,
                        confirmed_by="email match" if same else None)
    with ctx.transaction() as uow:
        uow.links.save(link)
        audit(uow.audit, now, user_id, "gitlab linked" if same else "gitlab link requested",
              username=account.username)
    return link


def confirm_link(ctx: Context, admin_id: str, user_id: str) -> IdentityLink:
    """An admin vouches for a pending link."""
    if not ctx.actor(admin_id).is_admin:
        raise NotAuthorized("Only admins may confirm a GitLab link.")
    now = ctx.clock()
    with ctx.transaction() as uow:
        pending = uow.links.get(user_id, "gitlab")
        if pending is None:
            raise NotFound(f"Slack user {user_id} has asked for no GitLab link.")
        link = dataclasses.replace(pending, confirmed=True, confirmed_by=admin_id)
        uow.links.save(link)
        audit(uow.audit, now, admin_id, "gitlab link confirmed", user=user_id,
              username=link.username)
    return link


def whoami(ctx: Context, user_id: str) -> Identities:
    with ctx.transaction() as uow:
        user = ctx.user_info(user_id, uow.links)
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
