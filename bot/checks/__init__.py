"""``config check --connect``: reach every target the bot depends on, as the bot, and say what
works and what does not, before anyone asks for access.

Slack (the token, each approvers channel, and with ``--send-test`` a real message), each
Kubernetes cluster (every right the bot needs, by SelfSubjectAccessReview), each GitLab
cluster (the token, Owner of each group) and the on-call services the roles name (PagerDuty,
Opsgenie: the key, each escalation policy and schedule). Every call has a short timeout and
is tried once; a target that fails does not stop the others; each failure names the URL and
the cause.
This package sits beside the composition root: it uses the Slack, Kubernetes and GitLab
adapters, which never use each other.
"""

from __future__ import annotations

from collections.abc import Callable
from functools import partial

from bot.checks.findings import Finding, Findings, Reporter
from bot.config import Config, Settings

__all__ = ["ConsoleReporter", "Finding", "Reporter", "connect"]

DEFAULT_TIMEOUT = 5.0


def connect(settings: Settings, config: Config, reporter: Reporter, *,
            timeout: float = DEFAULT_TIMEOUT, send_test_to: str | None = None) -> list[Finding]:
    """Check every target in turn (Slack, each cluster in the config's order, then the on-call
    services the roles use); the findings of all, as the reporter heard them one by one."""
    # Imported here: serve uses the Slack check alone, without the GitLab and Kubernetes clients.
    from bot.checks.gitlab import check_gitlab
    from bot.checks.kubernetes import check_cluster
    from bot.checks.oncall import check_opsgenie, check_pagerduty, uses
    from bot.checks.slack import check_slack

    made: list[Finding] = []

    def guarded(target: str, check: Callable[[], Findings]) -> None:
        try:
            made.extend(check().made)
        except Exception as error:  # a fault in one check never hides the other targets
            finding = Finding(target, "", "check", False,
                              f"the check itself failed: {type(error).__name__}: {error}")
            reporter.finding(finding)
            made.append(finding)

    guarded("Slack", partial(check_slack, settings, config, reporter, timeout=timeout,
                             send_test_to=send_test_to))
    for name, cluster in config.clusters.items():
        if cluster.backend == "gitlab":
            guarded(f"cluster {name}", partial(check_gitlab, settings, config, name, reporter,
                                               timeout=timeout))
        else:
            guarded(f"cluster {name}", partial(check_cluster, config, name, reporter,
                                               timeout=timeout))
    for target, service, check in (("PagerDuty", "pagerduty", check_pagerduty),
                                   ("Opsgenie", "opsgenie", check_opsgenie)):
        if uses(config, service):
            guarded(target, partial(check, settings, config, reporter, timeout=timeout))
    return made


class ConsoleReporter:
    """Lines for a terminal: a heading per target as it is reached, a line per finding (with
    the fix under a failure), and a summary listing every failure again at the end."""

    def __init__(self, echo: Callable[[str], None], timeout: float) -> None:
        self._echo = echo
        self._timeout = timeout

    def target(self, name: str, url: str, what: str) -> None:
        at = f" {url}" if url else ""
        self._echo(f"{name}{at}: checking {what} (timeout {self._timeout:g}s)")

    def finding(self, finding: Finding) -> None:
        mark = "ok     " if finding.ok else "FAILED "
        self._echo(f"  {mark} {finding.check}: {finding.detail}")
        if finding.fix and not finding.ok:
            self._echo(f"          fix: {finding.fix}")

    def summary(self, findings: list[Finding]) -> bool:
        """Print the summary; whether anything failed."""
        failed = [f for f in findings if not f.ok]
        if not failed:
            self._echo(f"all {len(findings)} connection checks passed")
            return False
        self._echo(f"{len(failed)} of {len(findings)} connection checks failed:")
        for finding in failed:
            at = f" {finding.url}" if finding.url else ""
            self._echo(f"  {finding.target}{at}: {finding.check}: {finding.detail}")
        return True
