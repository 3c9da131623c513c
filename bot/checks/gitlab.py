"""A ``gitlab`` cluster, checked: GitLab answers, the bot's token is accepted, and its user is
Owner (or an admin) of each role's group, which adding and removing members needs."""

from __future__ import annotations

from typing import Any

from gitlab.exceptions import GitlabAuthenticationError, GitlabError

from bot.adapters.gitlab import OWNER, GitLabMembershipGranter
from bot.checks.findings import Findings, Reporter, cause
from bot.config import ACCESS_LEVELS, Config, Settings
from bot.domain.errors import DomainError

_LEVEL_NAMES = {level: name.capitalize() for name, level in ACCESS_LEVELS.items()}


def _failure(error: Exception, timeout: float) -> str:
    if isinstance(error, GitlabError) and error.response_code:
        return f"{error.response_code}: {error.error_message}"
    return cause(error, timeout)


def check_gitlab(settings: Settings, config: Config, cluster: str, reporter: Reporter, *,
                 timeout: float) -> Findings:
    """The GitLab of ``cluster`` (``gitlab.url`` or GITLAB_URL) with GITLAB_TOKEN: the token,
    then each role's group (once per group). A failure of the token or the network stops the
    target; a group's failure does not stop the next group. ``timeout`` in seconds per call."""
    target = f"cluster {cluster}"
    gitlab_settings = config.cluster(cluster).gitlab
    assert gitlab_settings is not None  # the config requires it for this backend
    token = settings.gitlab_token.get_secret_value() if settings.gitlab_token else None
    try:
        granter = GitLabMembershipGranter.connect(config, cluster, settings.gitlab_url, token,
                                                  timeout=timeout)
    except DomainError as error:
        findings = Findings(reporter, target, gitlab_settings.url or settings.gitlab_url or "")
        reporter.target(target, findings.url, "GitLab")
        findings.failed("GitLab token", error.message)
        return findings
    gl = granter.gl
    groups: dict[str, list[str]] = {}
    for role_name, role in config.cluster(cluster).roles.items():
        groups.setdefault(str(role.group), []).append(role_name)
    findings = Findings(reporter, target, gl.url)
    reporter.target(target, gl.url, f"GitLab: the token and Owner of {len(groups)} group"
                                    f"{'' if len(groups) == 1 else 's'}")
    try:
        gl.auth()
    except GitlabAuthenticationError as error:
        findings.failed("GitLab token", _failure(error, timeout),
                        "set GITLAB_TOKEN to a valid token with the api scope")
        return findings
    except Exception as error:
        findings.failed("GitLab token", _failure(error, timeout),
                        "check GITLAB_URL (or gitlab.url) and the network path to it")
        return findings
    me = gl.user
    if me is None or "username" not in me.attributes:
        findings.failed("GitLab token", "the server's answer to GET /api/v4/user is not "
                        "GitLab's", "check GITLAB_URL (or gitlab.url): GitLab's own address")
        return findings
    admin = bool(me.attributes.get("is_admin"))
    findings.ok("GitLab token", f"accepted: user {me.username}" + (" (admin)" if admin else ""))
    for reference, roles in groups.items():
        check = f"Owner of group {reference} (role{'s' if len(roles) > 1 else ''} " \
                f"{', '.join(roles)})"
        try:
            group: Any = gl.groups.get(reference)
            if admin:
                findings.ok(check, f"{group.full_path}: an admin token manages every group")
                continue
            level = _level(group, int(me.id))
        except GitlabError as error:
            if error.response_code == 404:
                findings.failed(check, f"404: {error.error_message}: the group does not exist "
                                "or the token's user cannot see it",
                                f"check the role's group, or add {me.username} to it as Owner")
            else:
                findings.failed(check, _failure(error, timeout))
            continue
        except Exception as error:
            findings.failed(check, _failure(error, timeout))
            return findings
        if level >= OWNER:
            findings.ok(check, f"{group.full_path}: {me.username} is Owner")
        else:
            held = _LEVEL_NAMES.get(level, f"level {level}") if level else "not a member"
            findings.failed(check, f"{group.full_path}: {me.username} is {held}",
                            f"make {me.username} Owner of {group.full_path}, so that the bot "
                            "can add and remove members")
    return findings


def _level(group: Any, user_id: int) -> int:
    """The user's effective access level in the group (inherited included); 0 if none."""
    try:
        return int(group.members_all.get(user_id).access_level)
    except GitlabError as error:
        if error.response_code == 404:
            return 0
        raise
