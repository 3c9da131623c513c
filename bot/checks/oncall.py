"""The on-call services, checked: the key is accepted and every escalation policy, schedule
(PagerDuty) and schedule (Opsgenie) the file names exists and can be read with it."""

from __future__ import annotations

from collections.abc import Iterator

from bot.adapters.oncall.opsgenie import OpsgenieOnCall
from bot.adapters.oncall.pagerduty import PagerDutyOnCall
from bot.adapters.oncall.service import OnCallServiceError
from bot.checks.findings import Findings, Reporter
from bot.config import Config, Settings
from bot.domain.oncall import OnCallPolicy


def _policies(config: Config) -> Iterator[OnCallPolicy]:
    for policy in config.policies.values():
        if policy.on_call is not None:
            yield policy.on_call


def uses(config: Config, service: str) -> bool:
    """Whether any role counts being on call in ``service`` (``pagerduty``, ``opsgenie``)."""
    return any(getattr(p.targets, service) is not None for p in _policies(config))


def _counted(things: dict[str, None], one: str) -> str:
    """``1 schedule``, ``2 schedules``, ``1 escalation policy``, ``0 escalation policies``."""
    many = one[:-1] + "ies" if one.endswith("y") else one + "s"
    return f"{len(things)} {one if len(things) == 1 else many}"


def check_pagerduty(settings: Settings, config: Config, reporter: Reporter, *,
                    timeout: float) -> Findings:
    """PAGERDUTY_TOKEN against PagerDuty (or PAGERDUTY_API_URL): each escalation policy and
    schedule the roles name, once. A refused token stops the target."""
    policies: dict[str, None] = {}
    schedules: dict[str, None] = {}
    for on_call in _policies(config):
        if on_call.targets.pagerduty is not None:
            policies.update(dict.fromkeys(on_call.targets.pagerduty.escalation_policies))
            schedules.update(dict.fromkeys(on_call.targets.pagerduty.schedules))
    token = settings.pagerduty_token
    url = settings.pagerduty_api_url or "https://api.pagerduty.com"
    findings = Findings(reporter, "PagerDuty", url)
    reporter.target("PagerDuty", url, f"the token, {_counted(policies, 'escalation policy')} "
                                      f"and {_counted(schedules, 'schedule')}")
    if token is None:
        findings.failed("PagerDuty token", "PAGERDUTY_TOKEN is not set",
                        "create a read-only REST API key (Integrations → API Access Keys)")
        return findings
    client = PagerDutyOnCall(token.get_secret_value(), settings.pagerduty_api_url,
                             timeout=timeout)
    for kind, label, identifiers in (("escalation_policies", "escalation policy", policies),
                                     ("schedules", "schedule", schedules)):
        for identifier in identifiers:
            check = f"{label} {identifier}"
            try:
                found = client.resource(kind, identifier)
            except OnCallServiceError as error:
                if error.status == 401:
                    findings.failed("PagerDuty token", error.reason,
                                    "set PAGERDUTY_TOKEN to a valid REST API key (a user "
                                    "token or an account key)")
                    return findings
                if error.status == 404:
                    findings.failed(check, f"{error.reason}: no such {label}, or the token "
                                    "cannot see it", f"check the {label}'s ID in the file")
                    continue
                findings.failed(check, error.reason, "check PAGERDUTY_API_URL and the network "
                                                     "path to it" if error.status is None
                                else "")
                if error.status is None:
                    return findings
                continue
            findings.ok(check, f"{found.get('name') or found.get('summary')}")
    return findings


def check_opsgenie(settings: Settings, config: Config, reporter: Reporter, *,
                   timeout: float) -> Findings:
    """OPSGENIE_API_KEY against Opsgenie (or OPSGENIE_API_URL): who is on call in each
    schedule the roles name, as the bot will ask. A refused key stops the target."""
    schedules: dict[str, None] = {}
    for on_call in _policies(config):
        if on_call.targets.opsgenie is not None:
            schedules.update(dict.fromkeys(on_call.targets.opsgenie.schedules))
    key = settings.opsgenie_api_key
    client = OpsgenieOnCall(key.get_secret_value() if key else "", settings.opsgenie_api_url,
                            timeout=timeout)
    findings = Findings(reporter, "Opsgenie", client.url)
    reporter.target("Opsgenie", client.url, f"the key and {_counted(schedules, 'schedule')}")
    if key is None:
        findings.failed("Opsgenie key", "OPSGENIE_API_KEY is not set",
                        "create an API integration (Settings → Integrations → API) and set "
                        "its key")
        return findings
    for schedule in schedules:
        check = f"schedule {schedule}"
        try:
            name, recipients = client.on_call(schedule)
        except OnCallServiceError as error:
            if error.status == 401:
                findings.failed("Opsgenie key", error.reason,
                                "set OPSGENIE_API_KEY to the key of an enabled API "
                                "integration (EU accounts: OPSGENIE_API_URL="
                                "https://api.eu.opsgenie.com)")
                return findings
            fix = {403: "let the integration's team read this schedule, or use an "
                        "account-wide integration",
                   404: "check the schedule's name or ID in the file"}.get(error.status or 0,
                                                                         "")
            if error.status is None:
                findings.failed(check, error.reason, "check OPSGENIE_API_URL and the network "
                                                     "path to it")
                return findings
            findings.failed(check, error.reason, fix)
            continue
        findings.ok(check, f"{name}: {len(recipients)} on call now")
    return findings
