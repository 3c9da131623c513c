"""The ``gitlab`` backend: access through the GitLab agent for Kubernetes, granted as
membership of a group that the agent's ``user_access`` authorizes.

The agent impersonates ``gitlab:user:<username>`` with groups
``gitlab:group_role:<group_id>:<role>``, which the cluster's RBAC binds. Granting adds the user to
the role's group (``expires_at`` the day after the grant ends, GitLab's daily backstop);
revoking removes exactly what the bot added. A membership the bot did not create is never
removed or lowered: an equal or higher one is left alone, a lower one is raised and restored.

What the bot created is proven, never assumed: before its first attempt it records what the user
held (``prepare``), and a membership counts as its own only when that record shows none and
GitLab's ``created_by`` is the bot's user. A 409 on adding is resolved by reading the membership
that is there. The stray sweep (``managed``) lists the memberships the bot's user created; the
bot's records decide which of them it may remove.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import UTC, date, datetime, timedelta
from typing import Any

import gitlab
import requests
from gitlab.exceptions import GitlabAuthenticationError, GitlabError

from bot.adapters.kubeconfig import (
    GLAB_INSTALL_URL,
    glab_exec,
    glab_login_command,
    kubeconfig,
)
from bot.adapters.waits import asked_wait
from bot.config import ACCESS_LEVELS, Config, GitLabClusterConfig
from bot.domain.errors import (
    PermanentBackendError,
    PolicyViolation,
    TemporaryBackendError,
)
from bot.domain.model import AccessRequest
from bot.domain.ports import (
    Delivery,
    ExternalAccount,
    GrantResult,
    GrantSpec,
    ManagedGrant,
    UserInfo,
)

log = logging.getLogger(__name__)
OWNER = ACCESS_LEVELS["owner"]


class _NotFound(Exception):
    """404: the group, user or membership is not there."""


class _Conflict(PermanentBackendError):
    """409: the membership exists already (a refusal wherever nobody resolves it)."""


_asked = threading.local()
"""The wait the last 429 this thread met asked for (``seconds``), for :func:`_translated`."""


def _note_rate_limit(response: requests.Response, *args: Any, **kwargs: Any) -> None:
    """A response hook: remembers a 429's ``Retry-After``, which python-gitlab's errors drop."""
    if response.status_code == 429:
        _asked.seconds = asked_wait(response.headers)


class _Client(gitlab.Gitlab):
    """A python-gitlab client that never waits inside a call: by default each request sleeps
    out a 429's ``Retry-After`` up to ten times, holding a grant (and its lease) for minutes
    past every timeout. Here a 429 fails the call at once, as a temporary error that the
    operation engine retries no sooner than GitLab asked."""

    def http_request(self, *args: Any, **kwargs: Any) -> requests.Response:
        kwargs.update(obey_rate_limit=False, retry_transient_errors=False)
        return super().http_request(*args, **kwargs)


def client(url: str, token: str, timeout: float) -> gitlab.Gitlab:
    session = requests.Session()
    session.hooks["response"].append(_note_rate_limit)
    return _Client(url, private_token=token, timeout=timeout, session=session)


@contextmanager
def _translated(what: str) -> Iterator[None]:
    """GitLab's failures as the bot's errors: 429, 5xx and network trouble pass, the rest not
    (a 429 carries the wait GitLab asked for)."""
    _asked.seconds = None
    try:
        yield
    except GitlabAuthenticationError:
        raise PermanentBackendError(
            "GitLab rejected the bot's token (401): set a valid GITLAB_TOKEN (api scope)."
        ) from None
    except GitlabError as error:
        code = error.response_code or 0
        message = error.error_message
        if code == 404:
            raise _NotFound(message) from None
        if code == 409:
            raise _Conflict(f"GitLab refused to {what} (409): {message}") from None
        if code == 403:
            raise PermanentBackendError(
                f"GitLab refused to {what} (403): the bot's token needs the Owner role on the "
                "group (or an admin token).") from None
        if code == 429:
            wait = getattr(_asked, "seconds", None)
            said = f"; it asks for {wait:.0f} s" if wait is not None else ""
            raise TemporaryBackendError(
                f"GitLab is rate-limiting the bot (429) while it tries to {what}{said}",
                delay_seconds=wait) from None
        if code >= 500:
            raise TemporaryBackendError(f"GitLab answered {code} while trying to {what}: "
                                        f"{message}") from None
        raise PermanentBackendError(f"GitLab refused to {what} ({code}): {message}") from None
    except requests.RequestException as error:
        raise TemporaryBackendError(
            f"GitLab unreachable or too slow while trying to {what}: {type(error).__name__}"
        ) from None


class GitLabMembershipGranter:
    def __init__(self, config: Config, cluster: str, client: gitlab.Gitlab) -> None:
        self.config = config
        self.cluster = cluster
        settings = config.cluster(cluster).gitlab
        assert settings is not None
        self.settings: GitLabClusterConfig = settings
        self.gl = client
        self._bot_user_id: int | None = None

    @classmethod
    def connect(cls, config: Config, cluster: str, url: str | None, token: str | None,
                timeout: float = 10) -> GitLabMembershipGranter:
        settings = config.cluster(cluster).gitlab
        assert settings is not None
        base = settings.url or url
        if not base:
            raise PermanentBackendError("backend gitlab needs GITLAB_URL (or gitlab.url)")
        if not token:
            raise PermanentBackendError(
                "backend gitlab needs GITLAB_TOKEN: a token with the api scope whose user is "
                "Owner of each configured group")
        return cls(config, cluster, client(base, token, timeout))

    # --- identities ---------------------------------------------------------------------

    def account(self, username: str) -> ExternalAccount | None:
        """A GitLab account by username, with the email GitLab shows the bot (if any)."""
        with _translated(f"look up user {username}"):
            found = self.gl.users.list(username=username, get_all=False)
        if not found:
            return None
        attributes = found[0].attributes
        return ExternalAccount(attributes["username"],
                       attributes.get("email") or attributes.get("public_email") or None)

    def _user_id(self, username: str) -> int:
        with _translated(f"look up user {username}"):
            found = self.gl.users.list(username=username, get_all=False)
        if not found:
            raise PermanentBackendError(f"GitLab has no user {username}")
        return int(found[0].id)

    def resolve_subject(self, user: UserInfo) -> str:
        linked = user.links.get("gitlab")
        if linked:
            return linked
        if not user.email:
            raise PolicyViolation(
                "Slack shows no email for you, so the bot cannot find your GitLab account: "
                "link it with `/k8s-access link gitlab USERNAME`.")
        try:
            with _translated("search users by email"):
                found = self.gl.users.list(search=user.email, get_all=False)
        except PermanentBackendError as error:
            raise PolicyViolation(
                f"The bot could not look you up in GitLab by email ({error.message}; email "
                "lookup needs an admin token). Link your account with "
                "`/k8s-access link gitlab USERNAME`.") from None
        matches = [u for u in found if user.email.lower() in {
            str(u.attributes.get("email") or "").lower(),
            str(u.attributes.get("public_email") or "").lower()}]
        if len(matches) != 1:
            raise PolicyViolation(
                f"No single GitLab account shows the email {user.email} to the bot (finding "
                "accounts by a private email needs an admin token). Link yours with "
                "`/k8s-access link gitlab USERNAME`.")
        return str(matches[0].username)

    def check_user_csr(self, csr_pem: str, subject: str) -> None:
        raise PolicyViolation(f"Cluster {self.cluster} grants through GitLab: no CSR needed.")

    # --- grant and revoke ---------------------------------------------------------------

    def _group(self, role: str) -> Any:
        reference = self.config.role(self.cluster, role).group
        assert reference is not None  # the config requires a group for gitlab roles
        try:
            with _translated(f"read group {reference}"):
                return self.gl.groups.get(reference)
        except _NotFound:
            raise PermanentBackendError(
                f"GitLab group {reference} (role {role} of {self.cluster}) does not exist "
                "or the bot's token cannot see it") from None

    def _level(self, spec: GrantSpec) -> int:
        return ACCESS_LEVELS[self.config.role(spec.cluster, spec.role).access_level]

    @staticmethod
    def _membership(manager: Any, user_id: int, what: str) -> dict[str, Any] | None:
        try:
            with _translated(what):
                member = manager.get(user_id)
        except _NotFound:
            return None
        return _membership_of(member.attributes)

    def _bot_id(self) -> int:
        """The GitLab user behind the bot's token: what ``created_by`` shows for its work."""
        if self._bot_user_id is None:
            with _translated("check the bot's token"):
                self.gl.auth()
            assert self.gl.user is not None
            self._bot_user_id = int(self.gl.user.id)
        return self._bot_user_id

    def prepare(self, spec: GrantSpec) -> dict[str, Any]:
        """What the user had in the group before the bot did anything."""
        group = self._group(spec.role)
        user_id = self._user_id(spec.subject)
        return {
            "group_id": int(group.id),
            "group_path": group.attributes.get("full_path"),
            "user_id": user_id,
            "direct": self._membership(group.members, user_id, "read the membership"),
            "effective": self._membership(group.members_all, user_id,
                                          "read the inherited membership"),
        }

    def grant(self, spec: GrantSpec, prepared: dict[str, Any]) -> GrantResult:
        level = self._level(spec)
        expires = _expiry(spec.ends_at)
        group = self._group(spec.role)
        user_id = int(prepared["user_id"])
        direct, effective = prepared.get("direct"), prepared.get("effective")
        if direct is not None and direct.get("created_by") is not None and \
                direct["created_by"] == self._bot_id() and self._membership(
                    group.members, user_id, "read the membership") is None:
            # another grant's membership, which ended since ``prepare``: added again
            direct = effective = None
        if effective is not None and effective["access_level"] >= level and (
                direct is None or direct["access_level"] >= level):
            action = "pre_existing"
        elif direct is not None:
            action = "raised"
            self._update(group, user_id, level, expires)
        else:
            action, found = self._create(group, user_id, level, expires)
            if found is not None:
                direct = _previous(found)
        reference = {"group_id": int(group.id), "group_path": prepared.get("group_path"),
                     "user_id": user_id, "username": spec.subject, "action": action,
                     "access_level": level, "previous": direct}
        log.info("gitlab membership for request %s: %s", spec.request_id, action)
        return GrantResult(reference=reference, delivery=self._how_to_connect(spec, group))

    def _create(self, group: Any, user_id: int, level: int,
                expires: str) -> tuple[str, dict[str, Any] | None]:
        """Add the member (``prepare`` recorded none). On 409, read what is there: the bot's
        own earlier attempt (its user created it) is finished; anything else was made by
        someone else after ``prepare`` and is kept (``pre_existing``) or raised, as if
        ``prepare`` had seen it. Returns the action and the membership found on a 409."""
        try:
            with _translated("add the member"):
                group.members.create({"user_id": user_id, "access_level": level,
                                      "expires_at": expires})
            return "created", None
        except _Conflict:
            pass
        found = self._membership(group.members, user_id, "read the existing membership")
        if found is None:
            raise TemporaryBackendError(
                "GitLab said the membership exists (409) but it is gone; trying again")
        if found.get("created_by") == self._bot_id():
            self._update(group, user_id, level, expires)
            return "created", None
        log.warning("user %s was added to group %s by GitLab user %s meanwhile; the bot keeps "
                    "that membership", user_id, group.id, found.get("created_by"))
        if found["access_level"] >= level:
            return "pre_existing", found
        self._update(group, user_id, level, expires)
        return "raised", found

    def _update(self, group: Any, user_id: int, level: int, expires: str | None) -> None:
        try:
            with _translated("change the membership"):
                member = group.members.get(user_id)
                member.access_level = level
                member.expires_at = _no_earlier_than_today(expires)
                member.save()
        except _NotFound:
            raise TemporaryBackendError("the membership vanished while it was being changed") \
                from None

    def extend(self, spec: GrantSpec, reference: dict[str, Any]) -> GrantResult:
        group = self._group(spec.role)
        if reference.get("action") in ("created", "raised"):
            self._update(group, int(reference["user_id"]), int(reference["access_level"]),
                         _expiry(spec.ends_at))
        return GrantResult(reference=reference,
                           delivery=Delivery("Your GitLab access lasts until the new end."))

    def revoke(self, spec: GrantSpec, reference: dict[str, Any]) -> None:
        action = reference.get("action")
        if action not in ("created", "raised"):
            return  # nothing of the bot's to undo (pre-existing, or never granted)
        group_id, user_id = reference["group_id"], int(reference["user_id"])
        try:
            with _translated(f"read group {group_id}"):
                group = self.gl.groups.get(group_id)
        except _NotFound:
            return  # the group is gone, and the membership with it
        if action == "created":
            try:
                with _translated("remove the member"):
                    group.members.delete(user_id)
            except _NotFound:
                pass
            return
        previous = reference.get("previous") or {}
        try:
            self._update(group, user_id, int(previous["access_level"]),
                         previous.get("expires_at"))
        except TemporaryBackendError:
            log.info("raised membership of request %s is gone; nothing to restore",
                     spec.request_id)

    # --- the stray sweep ------------------------------------------------------------------

    def managed(self) -> list[ManagedGrant]:
        """Direct memberships of this cluster's role groups that the bot's user created
        (``created_by``); whether this installation made them is for its records to say."""
        bot = self._bot_id()
        found: list[ManagedGrant] = []
        seen: set[int] = set()
        for role_name in self.config.cluster(self.cluster).roles:
            group = self._group(role_name)
            if int(group.id) in seen:
                continue
            seen.add(int(group.id))
            with _translated(f"list the members of group {group.id}"):
                members = group.members.list(get_all=True)
            for member in members:
                membership = _membership_of(member.attributes)
                if membership["created_by"] != bot:
                    continue
                found.append(ManagedGrant(
                    name=str(member.attributes["username"]),
                    namespace=str(group.attributes.get("full_path") or group.id),
                    request_id=None, subject=str(member.attributes["username"]),
                    created_at=_created_at(membership["created_at"]), owned=False,
                    key=(int(group.id), int(member.id))))
        return found

    def explained_by(self, grant: ManagedGrant, request: AccessRequest) -> bool:
        """The request's grant is (or would be) a membership of the same group."""
        if request.backend_ref.get("group_id") is not None:
            return int(request.backend_ref["group_id"]) == grant.key[0]
        role = self.config.cluster(self.cluster).roles.get(request.role)
        if role is None or role.group is None:
            return False
        return str(role.group) in {str(grant.key[0]), grant.namespace}

    def remove(self, grant: ManagedGrant) -> None:
        """Remove the membership if it is still the one the bot's user created."""
        group_id, user_id = grant.key
        try:
            with _translated(f"read group {group_id}"):
                group = self.gl.groups.get(group_id)
        except _NotFound:
            return
        now = self._membership(group.members, user_id, "read the membership")
        if now is None:
            return
        if now["created_by"] != self._bot_id() or \
                _created_at(now["created_at"]) != grant.created_at:
            raise PermanentBackendError(
                f"the membership of {grant.subject} in {grant.namespace} changed since it was "
                "listed; left alone")
        try:
            with _translated("remove the member"):
                group.members.delete(user_id)
        except _NotFound:
            pass

    def shared_object(self, reference: dict[str, Any]) -> str | None:
        """One membership per GitLab, group and user, whichever cluster's role asked for it."""
        if "group_id" not in reference or "user_id" not in reference:
            return None
        return f"gitlab {self.gl.url} group {reference['group_id']} user {reference['user_id']}"

    def share(self, holders: list[tuple[GrantSpec, dict[str, Any]]],
              known: list[dict[str, Any]]) -> list[dict[str, Any]]:
        """One membership held by several grants (see :class:`SharedObjects`): it ends up as
        the live grants explain, whatever order they end in. Before the bot touched it, the
        user had :meth:`_origin`; with holders left it stands at their highest level (never
        below the origin) until the day after the latest end; with none it is the origin
        again, or gone when the origin was none and no other user made it (an older GitLab
        that does not show ``created_by`` leaves the bot's records to prove it)."""
        first = known[0] if known else holders[0][1]
        group_id, user_id = first["group_id"], int(first["user_id"])
        origin = self._origin([*known, *(reference for _, reference in holders)])
        levels = [self._level(spec) for spec, _ in holders]
        try:
            with _translated(f"read group {group_id}"):
                group = self.gl.groups.get(group_id)
        except _NotFound:
            group = None  # the group is gone, and the membership with it
        now = None if group is None else self._membership(group.members, user_id,
                                                          "read the membership")
        if group is None or now is None:
            log.info("membership of user %s in group %s is gone; nothing to change",
                     user_id, group_id)
        elif holders and (origin is None or origin["access_level"] < max(levels)):
            wanted = (max(levels), _expiry(max(spec.ends_at for spec, _ in holders)))
            if (now["access_level"], now["expires_at"]) != wanted:
                self._update(group, user_id, *wanted)
        elif origin is not None:
            if (now["access_level"], now["expires_at"]) != \
                    (origin["access_level"], origin.get("expires_at")):
                self._update(group, user_id, int(origin["access_level"]),
                             origin.get("expires_at"))
        elif not holders and now["created_by"] in (None, self._bot_id()):  # None: not shown
            try:
                with _translated("remove the member"):
                    group.members.delete(user_id)
            except _NotFound:
                pass
        elif not holders:
            log.warning("the membership of user %s in group %s was not made by the bot; "
                        "left alone", user_id, group_id)
        return [_holding(reference, level, origin)
                for (_, reference), level in zip(holders, levels, strict=True)]

    def _origin(self, references: list[dict[str, Any]]) -> dict[str, Any] | None:
        """The direct membership the user had before the bot touched it, from the references
        of the grants on it: each recorded what it found, and the bot only ever adds or
        raises, so the lowest of those is the origin; a grant that created the membership, or
        found one the bot's user made, proves there was none."""
        found: list[dict[str, Any]] = []
        for reference in references:
            action, previous = reference.get("action"), reference.get("previous")
            if action not in ("created", "raised", "pre_existing"):
                continue
            if action == "created" or previous is None or (
                    previous.get("created_by") is not None
                    and previous["created_by"] == self._bot_id()):
                return None
            found.append(previous)
        if not found:
            return None
        lowest = min(found, key=lambda previous: int(previous["access_level"]))
        return _previous(lowest)

    def describe(self, spec: GrantSpec, reference: dict[str, Any]) -> str:
        return (f"GitLab membership of {reference.get('username')} in "
                f"{reference.get('group_path') or reference.get('group_id')}: "
                f"{reference.get('action')}")

    def check(self) -> str:
        """For ``config check --connect``: the token works and may manage every role's group."""
        with _translated("check the bot's token"):
            self.gl.auth()
        me = self.gl.user
        assert me is not None
        admin = bool(me.attributes.get("is_admin"))
        for role_name in self.config.cluster(self.cluster).roles:
            group = self._group(role_name)
            if admin:
                continue
            mine = self._membership(group.members_all, int(me.id), "read the bot's membership")
            if mine is None or mine["access_level"] < OWNER:
                raise PermanentBackendError(
                    f"the bot's GitLab user {me.username} is not Owner of group "
                    f"{group.attributes.get('full_path')} (role {role_name}); make it Owner "
                    "there so that it can add and remove members")
        return f"GitLab token of {me.username} may manage every role's group"

    def _how_to_connect(self, spec: GrantSpec, group: Any) -> Delivery:
        agent = self.settings.agent_id
        exec_plugin = glab_exec(agent_id=agent, gitlab_url=self.gl.url)
        content = kubeconfig(cluster=spec.cluster, server=self.settings.kas_proxy_url,
                             ca_pem=None, user=spec.subject, namespace=spec.namespace,
                             exec_plugin=exec_plugin)
        text = (f"You are in GitLab group {group.attributes.get('full_path')} until the grant "
                f"ends; the agent lets you in as `gitlab:user:{spec.subject}`. The attached "
                f"kubeconfig gets a token with the GitLab CLI, glab ({GLAB_INSTALL_URL}): log "
                f"in once with `{glab_login_command(self.gl.url)}`, then run "
                f"`kubectl --kubeconfig {spec.cluster}.kubeconfig auth whoami`. Without "
                "glab, use a personal access token with the k8s_proxy scope instead: "
                f"`kubectl config set-credentials {spec.subject}@{spec.cluster} "
                f"--token=pat:{agent}:<your token>`.")
        return Delivery(text, f"{spec.cluster}.kubeconfig", content)


def _membership_of(attributes: dict[str, Any]) -> dict[str, Any]:
    """The parts of GitLab's member entity the bot records and judges by."""
    creator = attributes.get("created_by") or {}
    return {"access_level": int(attributes["access_level"]),
            "expires_at": attributes.get("expires_at"),
            "created_at": attributes.get("created_at"),
            "created_by": int(creator["id"]) if creator.get("id") is not None else None}


def _previous(membership: dict[str, Any]) -> dict[str, Any]:
    """What a revocation restores: the level and expiry that were there."""
    return {"access_level": membership["access_level"],
            "expires_at": membership.get("expires_at")}


def _holding(reference: dict[str, Any], level: int,
             origin: dict[str, Any] | None) -> dict[str, Any]:
    """A live grant's reference after a :meth:`GitLabMembershipGranter.share`: what it holds
    measured against the origin, which it now carries for whoever ends last."""
    action = "created" if origin is None else \
        "raised" if int(origin["access_level"]) < level else "pre_existing"
    return {**reference, "action": action, "previous": origin, "access_level": level}


def _created_at(raw: object) -> datetime | None:
    if not isinstance(raw, str) or not raw:
        return None
    try:
        return datetime.fromisoformat(raw.replace("Z", "+00:00"))
    except ValueError:
        return None


def _no_earlier_than_today(expires: str | None) -> str | None:
    """An expiry GitLab takes: it refuses a day before today (400). A membership restored
    after its own expiry passed (GitLab would have removed it meanwhile, had the bot not
    raised it) gets today: lapsed, for GitLab's daily job to remove, as its owner meant."""
    if not expires:
        return expires
    today = datetime.now(UTC).date()
    try:
        return max(date.fromisoformat(expires[:10]), today).isoformat()
    except ValueError:
        return expires


def _expiry(ends_at: datetime) -> str:
    """GitLab expires memberships by date, in a daily job: the day after the grant ends."""
    day: date = (ends_at + timedelta(days=1)).date()
    return day.isoformat()


