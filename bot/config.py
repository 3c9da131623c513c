"""Settings, read once: the environment and the YAML file, validated into frozen objects.

Everything else receives a :class:`Settings` and a :class:`Config`; nothing else reads the
environment or the file. A bad file raises :class:`ConfigError` naming the file, the field and
the reason, and start-up stops there.
"""

from __future__ import annotations

import dataclasses
import os
import random
import re
from collections.abc import Iterable, Iterator, Mapping
from dataclasses import dataclass
from datetime import timedelta
from functools import cached_property
from itertools import pairwise
from pathlib import Path
from typing import Annotated, Any, Literal
from urllib.parse import urlsplit
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

import yaml
from croniter import croniter
from pydantic import (
    BaseModel,
    BeforeValidator,
    ConfigDict,
    Field,
    SecretStr,
    ValidationError,
    ValidationInfo,
    field_validator,
    model_validator,
)
from pydantic_settings import BaseSettings, SettingsConfigDict

from bot import slack_ids
from bot.domain.durations import format_duration, parse_duration
from bot.domain.errors import InvalidInput, NotFound
from bot.domain.model import Actor
from bot.domain.oncall import (
    DEFAULT_MAX_DURATION,
    OnCallPolicy,
    OnCallTargets,
    OpsgenieTargets,
    PagerDutyTargets,
)
from bot.domain.policy import DEFAULT_MAX_SCHEDULE_AHEAD, EscalationStep, RolePolicy
from bot.domain.reasons import TICKET_FIELD, nested_repetition


class ConfigError(Exception):
    """The configuration cannot be used; the message names file, field and reason."""


@dataclass(frozen=True)
class Problem:
    """One thing wrong with the file or the environment, and how to put it right."""

    source: str
    """The file, or ``environment``."""
    field: str
    """Dotted path in the file (``clusters.dev.kubernetes.kubeconfig``), or a variable name."""
    value: str | None
    """The bad value as written (never a secret), or None when it is missing."""
    message: str
    """What is wrong and the fix."""

    def __str__(self) -> str:
        shown = f" = {self.value}" if self.value is not None else ""
        message = " ".join(self.message.split())  # one line, whatever a library said
        return f"{self.source}: {self.field}{shown}: {message}"


class ConfigProblems(ConfigError):
    """Every problem found at once (:class:`Problem`, one a line in the message)."""

    def __init__(self, problems: list[Problem], config: Config | None = None) -> None:
        super().__init__("\n".join(map(str, problems)))
        self.problems = problems
        self.config = config
        """The file as far as it could be read, for checks of what it asks of the
        environment; None when its structure is broken."""


# --- the database URL ---------------------------------------------------------------------

_DATABASE_DRIVERS = {
    "postgres": "postgresql+psycopg",  # Heroku's and many tools' spelling of PostgreSQL
    "postgresql": "postgresql+psycopg",
    "postgresql+psycopg": "postgresql+psycopg",
    "postgresql+psycopg2": "postgresql+psycopg",  # the same URL, the driver this bot ships
    "sqlite": "sqlite",
    "sqlite+pysqlite": "sqlite",
}


def _check_url(value: str | None) -> str | None:
    if value is not None and not value.startswith(("https://", "http://")):
        raise ValueError(f"'{value}' is not a URL: write it as https://…")
    return value


def normalise_database_url(value: str) -> str:
    """``value`` with the SQLAlchemy driver this bot uses: ``postgres://`` and
    ``postgresql://`` become ``postgresql+psycopg://``. Raises ``ValueError`` naming the scheme
    (never the whole URL, which may hold a password) when it is not PostgreSQL or SQLite."""
    scheme, separator, rest = value.strip().partition("://")
    if not separator:
        raise ValueError(
            "is not a database URL: write postgresql://USER:PASSWORD@HOST:5432/DATABASE "
            "or sqlite:///PATH"
        )
    driver = _DATABASE_DRIVERS.get(scheme.lower())
    if driver is None:
        raise ValueError(
            f"'{scheme}://' is not a database this bot supports: use "
            "postgresql://USER:PASSWORD@HOST:5432/DATABASE (PostgreSQL) or sqlite:///PATH"
        )
    escape = ("write postgresql://USER:PASSWORD@HOST:5432/DATABASE, with @ : / in the user or "
              "password written as %40 %3A %2F")
    try:
        parts = urlsplit(value.strip())
        _ = parts.port  # raises when it is not a number
    except ValueError:
        raise ValueError(f"has a port that is not a number from 0 to 65535: {escape}") \
            from None
    if "@" in parts.netloc.rpartition("@")[0]:
        raise ValueError(f"has an @ in its user or password: {escape}")
    return f"{driver}://{rest}"


# --- tuning: how hard and how often, read from the environment -----------------------------


@dataclass(frozen=True)
class RetryPolicy:
    """Backoff for backend calls that failed for a reason that may pass, and the leases that
    keep one worker on each backend operation (``OPERATION_*``, ``RETRY_*``,
    ``GRANT_ATTEMPTS``)."""

    first_delay: timedelta = timedelta(seconds=30)
    max_delay: timedelta = timedelta(hours=1)
    grant_attempts: int = 8
    """After this many failed attempts a grant is marked failed; revocations never give up."""
    lease: timedelta = timedelta(seconds=45)
    """How long one worker holds an operation before another may take it over, unless it
    renews it: a worker that died is noticed after this (and the next retry pass)."""
    heartbeat: timedelta = timedelta(seconds=15)
    """How often a worker renews its lease while the backend call runs; well under ``lease``,
    so that a slow call is not taken over while its worker is alive."""
    slow_after: timedelta = timedelta(seconds=30)
    """A grant still running after this is announced as slow to the approvers and the
    requester."""
    jitter: float = 0.2
    """Each delay is lengthened by up to this fraction, so that replicas spread out."""

    def delay(self, attempts: int, hint_seconds: float | None = None) -> timedelta:
        """The wait before attempt ``attempts + 1``: ``first_delay`` doubled per attempt, at
        least ``hint_seconds`` (a backend's Retry-After), at most ``max_delay``, plus jitter."""
        base = self.first_delay * (2 ** max(attempts - 1, 0))
        if hint_seconds is not None:  # capped first: a huge Retry-After overflows timedelta
            hint = min(hint_seconds, self.max_delay.total_seconds())
            base = max(base, timedelta(seconds=hint))
        base = min(base, self.max_delay)
        jittered: timedelta = base * (1 + random.uniform(0, self.jitter))
        return jittered


@dataclass(frozen=True)
class Concurrency:
    """How many things one process does at once (each a thread)."""

    backend_calls: int = 8
    """Backend operations one retry or expiry pass runs together (``BACKEND_CONCURRENCY``);
    an expiry pass adds each only while the calls under way wait
    (:func:`bot.services.fanout.fan_out`)."""
    messages: int = 8
    """Reminder messages one pass sends together (``SEND_CONCURRENCY``); also the most expiry
    notices sent together, each added only while those under way wait."""
    slack_requests: int = 8
    """Slack requests a worker process handles together (``WORKER_THREADS``)."""
    worker_processes: int = 1
    """Worker processes ``serve`` starts (``WORKER_PROCESSES``): one interpreter does the work
    of one core at most; where the pod has cores to spare, more answer a burst of approvals
    sooner, each for about 110 MiB. The first runs the scheduled jobs."""
    web_requests: int = 8
    """HTTP requests ``serve`` answers together (``WEB_THREADS``)."""


@dataclass(frozen=True)
class SlackTuning:
    """The Slack inbox and Web API client."""

    poll: timedelta = timedelta(seconds=1)
    """How often the worker looks for requests nobody woke it for: another replica's, or a
    dead worker's (``WORKER_POLL_SECONDS``)."""
    inbox_lease: timedelta = timedelta(minutes=10)
    """How long a worker holds a Slack request before another takes it again
    (``SLACK_INBOX_LEASE_SECONDS``)."""
    rate_limit_retries: int = 10
    """How many times one Web API call waits out a 429's Retry-After
    (``SLACK_RATE_LIMIT_RETRIES``)."""


@dataclass(frozen=True)
class Batches:
    """How many rows one pass of a job reads at most; the next pass takes the rest."""

    expire: int = 500
    operations: int = 100
    timeouts: int = 500
    nudges: int = 1000
    renotify: int = 1000


@dataclass(frozen=True)
class Tuning:
    """Everything about how hard and how often the bot works, besides :class:`RetryPolicy`;
    none of it changes what the bot does, only how fast and with how much at once."""

    concurrency: Concurrency = Concurrency()
    slack: SlackTuning = SlackTuning()
    batches: Batches = Batches()


# --- environment --------------------------------------------------------------------------

_LOG_LEVELS = ("DEBUG", "INFO", "WARNING", "ERROR", "CRITICAL")
_DEFAULT_RETRY = RetryPolicy()
_DEFAULT_CONCURRENCY = Concurrency()
_DEFAULT_SLACK = SlackTuning()


class Settings(BaseSettings):
    """The environment variables of the bot (see README, Configuration)."""

    # An empty variable (a manifest's `value: ""`) counts as unset.
    model_config = SettingsConfigDict(frozen=True, extra="ignore", env_ignore_empty=True)

    slack_bot_token: SecretStr | None = None
    slack_app_token: SecretStr | None = None
    slack_signing_secret: SecretStr | None = None
    slack_api_url: str | None = None
    database_url: str = "sqlite:///k8s-access.db"
    k8s_access_config: Path = Path("k8s-access.yaml")
    gitlab_url: str | None = None
    gitlab_token: SecretStr | None = None
    pagerduty_token: SecretStr | None = None
    """A PagerDuty REST API key (read-only is enough), for ``auto_approve_on_call``."""
    pagerduty_api_url: str | None = None
    """PagerDuty's REST API; ``https://api.pagerduty.com`` when unset (EU accounts too)."""
    opsgenie_api_key: SecretStr | None = None
    """An Opsgenie API integration key that may read the schedules."""
    opsgenie_api_url: str | None = None
    """Opsgenie's API; ``https://api.opsgenie.com`` when unset (``https://api.eu.opsgenie.com``
    for the EU instance)."""
    on_call_timeout_seconds: float = Field(default=3, gt=0)
    """How long each call to PagerDuty or Opsgenie may take while a request is filed; a slower
    service counts as doubt (ordinary approval)."""
    log_level: str = "INFO"
    log_format: Literal["json", "console"] = "console"
    operation_lease_seconds: float = Field(default=45, gt=0)
    """How long a worker holds a backend operation without renewing it: a worker that died
    is replaced after this."""
    operation_heartbeat_seconds: float = Field(default=15, gt=0)
    """How often a working worker renews its lease; at most half the lease."""
    operation_slow_after_seconds: float = Field(default=30, gt=0)
    """A grant still running after this is announced as slow."""
    retry_first_delay_seconds: float = Field(
        default=_DEFAULT_RETRY.first_delay.total_seconds(), gt=0)
    """The wait after a backend call's first transient failure; doubled after each next."""
    retry_max_delay_seconds: float = Field(
        default=_DEFAULT_RETRY.max_delay.total_seconds(), gt=0)
    """The longest wait between two attempts."""
    grant_attempts: int = Field(default=_DEFAULT_RETRY.grant_attempts, ge=1)
    """Attempts before a grant is marked failed."""
    backend_concurrency: int = Field(default=_DEFAULT_CONCURRENCY.backend_calls, ge=1)
    send_concurrency: int = Field(default=_DEFAULT_CONCURRENCY.messages, ge=1)
    worker_threads: int = Field(default=_DEFAULT_CONCURRENCY.slack_requests, ge=1)
    worker_processes: int = Field(default=_DEFAULT_CONCURRENCY.worker_processes, ge=1)
    web_threads: int = Field(default=_DEFAULT_CONCURRENCY.web_requests, ge=1)
    worker_poll_seconds: float = Field(default=_DEFAULT_SLACK.poll.total_seconds(), gt=0)
    slack_inbox_lease_seconds: float = Field(
        default=_DEFAULT_SLACK.inbox_lease.total_seconds(), gt=0)
    slack_rate_limit_retries: int = Field(default=_DEFAULT_SLACK.rate_limit_retries, ge=0)

    @field_validator("operation_heartbeat_seconds")
    @classmethod
    def _heartbeat_within_lease(cls, value: float, info: ValidationInfo) -> float:
        lease = info.data.get("operation_lease_seconds")
        if lease is not None and value * 2 > lease:
            raise ValueError(f"renew at most every half lease (OPERATION_LEASE_SECONDS={lease:g}"
                             f"), so that one late renewal does not lose it; got {value:g}")
        return value

    @field_validator("retry_max_delay_seconds")
    @classmethod
    def _max_after_first(cls, value: float, info: ValidationInfo) -> float:
        first = info.data.get("retry_first_delay_seconds")
        if first is not None and value < first:
            raise ValueError("the longest wait cannot be shorter than the first "
                             f"(RETRY_FIRST_DELAY_SECONDS={first:g})")
        return value

    @cached_property
    def retry(self) -> RetryPolicy:
        """The backoff and the operation leases, from the ``OPERATION_*``, ``RETRY_*`` and
        ``GRANT_ATTEMPTS`` variables."""
        return RetryPolicy(first_delay=timedelta(seconds=self.retry_first_delay_seconds),
                           max_delay=timedelta(seconds=self.retry_max_delay_seconds),
                           grant_attempts=self.grant_attempts,
                           lease=timedelta(seconds=self.operation_lease_seconds),
                           heartbeat=timedelta(seconds=self.operation_heartbeat_seconds),
                           slow_after=timedelta(seconds=self.operation_slow_after_seconds))

    @cached_property
    def tuning(self) -> Tuning:
        """Concurrency, polling and the Slack client's patience, from the environment."""
        return Tuning(
            concurrency=Concurrency(backend_calls=self.backend_concurrency,
                                    messages=self.send_concurrency,
                                    slack_requests=self.worker_threads,
                                    worker_processes=self.worker_processes,
                                    web_requests=self.web_threads),
            slack=SlackTuning(poll=timedelta(seconds=self.worker_poll_seconds),
                              inbox_lease=timedelta(seconds=self.slack_inbox_lease_seconds),
                              rate_limit_retries=self.slack_rate_limit_retries))

    _database_url = field_validator("database_url")(normalise_database_url)

    _a_url = field_validator("slack_api_url", "gitlab_url", "pagerduty_api_url",
                             "opsgenie_api_url")(_check_url)

    @field_validator("pagerduty_api_url")
    @classmethod
    def _https(cls, value: str | None) -> str | None:
        if value is not None and not value.startswith("https://"):
            raise ValueError(f"'{value}' is not an https:// URL: PagerDuty's API is reached "
                             "over HTTPS only (https://api.pagerduty.com)")
        return value

    @field_validator("k8s_access_config")
    @classmethod
    def _home_expanded(cls, value: Path) -> Path:
        return value.expanduser()  # as for the kubeconfig paths in the file: ~ is home

    @field_validator("log_level")
    @classmethod
    def _known_log_level(cls, value: str) -> str:
        level = value.strip().upper()
        if level not in _LOG_LEVELS:
            raise ValueError(f"{value!r} is not a log level: write "
                             f"{', '.join(_LOG_LEVELS[:-1])} or {_LOG_LEVELS[-1]}")
        return level

    def secret_values(self) -> list[str]:
        """Every secret in the environment, for the log redactor."""
        values = (self.slack_bot_token, self.slack_app_token, self.slack_signing_secret,
                  self.gitlab_token, self.pagerduty_token, self.opsgenie_api_key)
        return [v.get_secret_value() for v in values if v is not None]


_NEVER_SHOWN = frozenset({"slack_bot_token", "slack_app_token", "slack_signing_secret",
                          "gitlab_token", "pagerduty_token", "opsgenie_api_key",
                          "database_url"})
"""Variables whose value is never repeated in a problem: secrets, and a URL that may hold
one."""


def load_settings() -> Settings:
    """The environment, validated. Raises :class:`ConfigProblems` with one problem for each bad
    variable: its name, its value (unless secret) and the fix."""
    try:
        return Settings()
    except ValidationError as error:
        problems = []
        for e in error.errors():
            field = _location(e["loc"])
            message = _environment_reason(field, e)
            value = e.get("input")
            shown = None if field in _NEVER_SHOWN or not isinstance(value, str) \
                or repr(value) in message or len(value) > 80 else value
            problems.append(Problem("environment", field.upper(), shown, message))
        raise ConfigProblems(problems) from None


def _environment_reason(field: str, error: Any) -> str:
    """pydantic's complaint about a variable, said with the fix."""
    unit = "a number of seconds, like 30" if field.endswith("_seconds") else "a whole number"
    limits = error.get("ctx") or {}
    if error["type"] in ("float_parsing", "float_type", "int_parsing", "int_type",
                         "int_from_float"):
        return f"must be {unit}"
    if error["type"] == "literal_error":
        return f"must be {limits['expected']}"
    if error["type"] == "greater_than":
        return f"must be more than {limits['gt']:g}: write {unit}"
    if error["type"] == "greater_than_equal":
        return f"must be at least {limits['ge']:g}: write {unit}"
    return _reason(error)


# --- the YAML file ------------------------------------------------------------------------


def _duration(value: Any) -> Any:
    if isinstance(value, str):
        try:
            return parse_duration(value)
        except InvalidInput as error:
            raise ValueError(error.message) from None
    if isinstance(value, int) and not isinstance(value, bool):
        raise ValueError(f"write durations with a unit, like '{value}m' or '{value}h'")
    if value is None or isinstance(value, timedelta):
        return value
    if isinstance(value, float):  # YAML's 1.5 would be read as seconds
        raise ValueError("write durations with a unit and whole numbers, like 90m or 1h30m")
    raise ValueError("is not a duration: write it like 90m, 4h, 2d, 1w or 1h30m")


Duration = Annotated[timedelta, BeforeValidator(_duration)]
_NAME = re.compile(r"^[a-z0-9]([a-z0-9-]{0,61}[a-z0-9])?$")


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


def _check_slack_ids(values: list[str] | None) -> list[str] | None:
    for value in values or []:
        if not slack_ids.is_principal_id(value):
            raise ValueError(
                f"'{value}' is not a Slack user ID (U…/W…) or user group ID (S…); "
                "copy it from the person's or group's profile"
            )
    return values


def _channel_problems(data: dict[Any, Any], source: str) -> Iterator[Problem]:
    """Channel names where a channel ID belongs, found in the parsed YAML before the rest is
    validated, so that they are listed with every other problem."""
    places: list[tuple[str, Any]] = [("defaults", data.get("defaults"))]
    clusters = data.get("clusters")
    for name, cluster in (clusters if isinstance(clusters, dict) else {}).items():
        places.append((f"clusters.{name}", cluster))
        roles = cluster.get("roles") if isinstance(cluster, dict) else None
        places += [(f"clusters.{name}.roles.{role_name}", role)
                   for role_name, role in (roles if isinstance(roles, dict) else {}).items()]
    for where, fields in places:
        value = fields.get("approvers_channel") if isinstance(fields, dict) else None
        if isinstance(value, str) and not slack_ids.is_conversation_id(value):
            yield Problem(source, f"{where}.approvers_channel", value,
                          "not a Slack channel ID: write the channel's ID (C…), not its name; "
                          "it is at the bottom of the channel's details (click its name, then "
                          "About)")


def _check_principals(values: list[str] | None) -> list[str] | None:
    if values is not None and not values:
        raise ValueError("is empty, so nobody may ask: leave it out to let everyone ask, or "
                         "list Slack user IDs (U…/W…) and user group IDs (S…)")
    return _check_slack_ids(values)


class EscalationStepConfig(_Strict):
    """``{after: 30m, approvers: [...]}``: approvers added to a request still pending after."""

    after: Duration
    approvers: list[str] = Field(min_length=1)

    _approvers = field_validator("approvers")(_check_slack_ids)


def _check_escalation(
    steps: list[EscalationStepConfig] | None,
) -> list[EscalationStepConfig] | None:
    for index, (before, step) in enumerate(pairwise(steps or []), start=1):
        if step.after <= before.after:
            raise ValueError(
                f"step {index} (after {format_duration(step.after)}) does not come after step "
                f"{index - 1} (after {format_duration(before.after)}): list the steps in the "
                "order they happen, each later than the one before"
            )
    return steps


def _check_reason_pattern(value: str | None) -> str | None:
    if not value:
        return value  # "" clears a pattern set on a wider layer
    try:
        pattern = re.compile(value)
    except re.error as error:
        raise ValueError(
            f"is not a regular expression ({error.msg} at position {error.pos}): write one "
            r"like '[A-Z]+-[0-9]+', with \. \( \[ for those characters themselves"
        ) from None
    if pattern.search(""):
        raise ValueError("matches an empty reason too, so every reason passes: write what a "
                         "ticket looks like, e.g. '[A-Z]+-[0-9]+'")
    if nested_repetition(value):
        raise ValueError("repeats a part that itself repeats (like '(a+)+'), which can take "
                         "minutes on a reason that almost matches and stop the bot: write each "
                         "part once, e.g. '[A-Z]+-[0-9]+', or make the inner repetition "
                         "possessive ('[A-Z]++') or atomic ('(?>…)')")
    return value


def _check_ticket_url(value: str | None) -> str | None:
    if not value:
        return value  # "" clears a link template set on a wider layer
    if not value.startswith(("https://", "http://")):
        raise ValueError("is not a link: write it as https://…/{ticket}, e.g. "
                         "'https://tracker.example.com/issue/{ticket}'")
    if re.search(r"[\s|<>]", value):
        raise ValueError("holds a space, '|', '<' or '>', which would cut the link in Slack's "
                         "<url|text> markup: percent-encode them (%20, %7C, %3C, %3E), e.g. "
                         "'https://tracker.example.com/issue/{ticket}'")
    fields = set(re.findall(r"{([^{}]*)}", value))
    if fields != {TICKET_FIELD.strip("{}")}:
        raise ValueError("must hold {ticket} once, where the ticket goes, and no other {…}: "
                         "e.g. 'https://tracker.example.com/issue/{ticket}'")
    return value
_PAGERDUTY_ID = re.compile(r"^[A-Z0-9]{5,20}$")


class PagerDutyOnCallConfig(_Strict):
    """``auto_approve_on_call.pagerduty``: at least one escalation policy or schedule."""

    escalation_policies: list[str] = Field(default_factory=list)
    schedules: list[str] = Field(default_factory=list)
    levels: list[Annotated[int, Field(ge=1, le=20)]] = Field(default_factory=lambda: [1])
    """Escalation levels that count for ``escalation_policies`` (1 = the first)."""

    @field_validator("escalation_policies", "schedules")
    @classmethod
    def _ids(cls, values: list[str]) -> list[str]:
        for value in values:
            if not _PAGERDUTY_ID.match(value):
                raise ValueError(f"'{value}' is not a PagerDuty ID (like PABC123): copy it from "
                                 "the end of the escalation policy's or schedule's address")
        return values

    @model_validator(mode="after")
    def _something(self) -> PagerDutyOnCallConfig:
        if not self.escalation_policies and not self.schedules:
            raise ValueError("name escalation_policies or schedules (PagerDuty IDs)")
        if not self.levels:
            raise ValueError("levels is empty: list the escalation levels that count, like [1]")
        return self


class OpsgenieOnCallConfig(_Strict):
    """``auto_approve_on_call.opsgenie``: schedule names or IDs."""

    schedules: list[str] = Field(min_length=1)

    @field_validator("schedules")
    @classmethod
    def _names(cls, values: list[str]) -> list[str]:
        for value in values:
            if not value.strip() or "/" in value:
                raise ValueError(f"'{value}' is not an Opsgenie schedule name or ID")
        return values


class AutoApproveOnCallConfig(_Strict):
    """``auto_approve_on_call``: who is on call here is approved by policy (SPEC.md,
    Integrations)."""

    pagerduty: PagerDutyOnCallConfig | None = None
    opsgenie: OpsgenieOnCallConfig | None = None

    @model_validator(mode="after")
    def _a_service(self) -> AutoApproveOnCallConfig:
        if self.pagerduty is None and self.opsgenie is None:
            raise ValueError("name the on-call service: a 'pagerduty:' or 'opsgenie:' section")
        return self

    def targets(self) -> OnCallTargets:
        pagerduty = self.pagerduty
        return OnCallTargets(
            pagerduty=PagerDutyTargets(tuple(pagerduty.escalation_policies),
                                       tuple(pagerduty.schedules), frozenset(pagerduty.levels))
            if pagerduty is not None else None,
            opsgenie=OpsgenieTargets(tuple(self.opsgenie.schedules))
            if self.opsgenie is not None else None)


class PolicyFields(_Strict):
    """Policy that a cluster sets for its roles and a role may override."""

    approvers: list[str] | None = None
    approvers_channel: str | None = None
    approvals_required: int | None = Field(default=None, ge=1, le=10)
    max_duration: Duration | None = None
    default_duration: Duration | None = None
    require_reason: bool | None = None
    timeout: Duration | None = None
    break_glass: bool | None = None
    auto_approve_up_to: Duration | None = None
    self_extend: bool | None = None
    requesters: list[str] | None = None
    request_for_others: bool | None = None
    max_schedule_ahead: Duration | None = None
    escalation: list[EscalationStepConfig] | None = None
    reason_pattern: str | None = None
    reason_hint: str | None = None
    ticket_url: str | None = None
    auto_approve_on_call: AutoApproveOnCallConfig | None = None
    on_call_max_duration: Duration | None = None

    _approvers = field_validator("approvers")(_check_slack_ids)
    _requesters = field_validator("requesters")(_check_principals)
    _escalation = field_validator("escalation")(_check_escalation)
    _reason_pattern = field_validator("reason_pattern")(_check_reason_pattern)
    _ticket_url = field_validator("ticket_url")(_check_ticket_url)


ACCESS_LEVELS = {"guest": 10, "reporter": 20, "developer": 30, "maintainer": 40, "owner": 50}


class RoleConfig(PolicyFields):
    description: str = ""
    group: str | int | None = None
    """gitlab: the group authorized in the agent's ``user_access`` (numeric ID or full path)."""
    access_level: Literal["developer", "maintainer", "owner"] = "developer"
    cluster_role: str | None = None
    """certificate/rbac: bind this ClusterRole cluster-wide …"""
    role: str | None = None
    """… or this Role (or ClusterRole, with ``role_kind``) in each of ``namespaces``."""
    role_kind: Literal["Role", "ClusterRole"] = "Role"
    namespaces: list[str] = Field(default_factory=list)
    allow_own_csr: bool = False

    @field_validator("namespaces")
    @classmethod
    def _namespaces(cls, values: list[str]) -> list[str]:
        for value in values:
            if not _NAME.match(value):
                raise ValueError(f"'{value}' is not a valid namespace name")
        return values


class GitLabClusterConfig(_Strict):
    agent_id: int = Field(ge=1)
    kas_proxy_url: str
    url: str | None = None
    """GitLab's URL; ``GITLAB_URL`` when left out."""

    _https = field_validator("kas_proxy_url", "url")(_check_url)


class KubernetesClusterConfig(_Strict):
    server: str
    """The API server URL that users' kubeconfigs point at."""
    ca_file: str | None = None
    """The cluster CA that users' kubeconfigs carry; the bot's kubeconfig CA when left out."""
    kubeconfig: str | None = None
    context: str | None = None
    in_cluster: bool = False
    username_template: str = "{email}"
    key_algorithm: Literal["ecdsa-p256", "rsa-2048", "rsa-4096"] = "ecdsa-p256"
    csr_timeout: Duration = timedelta(minutes=1)
    oidc_issuer_url: str | None = None
    oidc_client_id: str | None = None

    @field_validator("username_template")
    @classmethod
    def _template(cls, value: str) -> str:
        fields = set(re.findall(r"{(\w*)}", value))
        unknown = fields - {"email", "slack_id", "name", "local"}
        if not fields or unknown:
            raise ValueError(
                "use {email}, {local} (the part before @), {name} or {slack_id}, "
                f"for example 'oidc:{{email}}'; found {value!r}"
            )
        return value

    @model_validator(mode="after")
    def _credentials(self) -> KubernetesClusterConfig:
        if self.in_cluster and self.kubeconfig:
            raise ValueError("set either kubeconfig or in_cluster: true, not both")
        if not self.in_cluster and not self.kubeconfig:
            raise ValueError("the bot needs credentials: set kubeconfig (a path) or in_cluster")
        return self


class ClusterConfig(PolicyFields):
    backend: Literal["gitlab", "certificate", "rbac"]
    description: str = ""
    gitlab: GitLabClusterConfig | None = None
    kubernetes: KubernetesClusterConfig | None = None
    roles: dict[str, RoleConfig]

    @model_validator(mode="after")
    def _backend_settings(self) -> ClusterConfig:
        problems = list(self._backend_problems())
        if problems:
            raise ValueError("\n".join(problems))
        return self

    def _backend_problems(self) -> Iterator[str]:
        if not self.roles:
            yield "a cluster needs at least one role"
        if self.backend == "gitlab":
            if self.gitlab is None:
                yield "backend gitlab needs a 'gitlab:' section (agent_id, kas_proxy_url)"
            for name, role in self.roles.items():
                if role.group is None:
                    yield f"role {name}: backend gitlab needs 'group' (ID or full path)"
            return
        if self.kubernetes is None:
            yield f"backend {self.backend} needs a 'kubernetes:' section (server, kubeconfig)"
        for name, role in self.roles.items():
            if (role.cluster_role is None) == (role.role is None):
                yield (f"role {name}: set exactly one of 'cluster_role' "
                       "or 'role' (with namespaces)")
            if role.role is not None and not role.namespaces:
                yield f"role {name}: a namespaced 'role' needs 'namespaces'"
            if role.cluster_role is not None and role.namespaces:
                yield f"role {name}: 'cluster_role' is cluster-wide; use 'role' for namespaces"
            if role.allow_own_csr and self.backend != "certificate":
                yield f"role {name}: allow_own_csr needs backend certificate"


class Schedules(_Strict):
    """When the periodic passes run and what they look ahead to (``schedules:`` in the file)."""

    timezone: str = "UTC"
    """The zone ``reminders`` is read in (an IANA name, validated)."""
    reminders: str = "0 9 * * MON"
    """A cron expression: when the weekly DMs and access reviews go out."""
    expiry_sweep: Duration = timedelta(minutes=1)
    """The longest wait between two passes of each job inside ``serve`` (expiry, retries,
    timeouts, reminders); the expiry and retry jobs also wake as soon as their next work is
    due (:data:`bot.jobs.NEXT_DUE`)."""
    nudge_before: Duration = timedelta(hours=1)
    """How long before a grant ends its grantee is told."""
    renotify_after: Duration = timedelta(hours=4)
    """How long a request waits before its approvers are reminded (then doubled each time)."""

    @property
    def reconcile_every(self) -> timedelta:
        """How often ``serve`` looks for backend objects no grant explains: ten sweeps."""
        return self.expiry_sweep * 10

    @property
    def inbox_forget_every(self) -> timedelta:
        """How often ``work`` forgets Slack signatures too old to replay: five sweeps."""
        return self.expiry_sweep * 5

    @field_validator("timezone")
    @classmethod
    def _timezone(cls, value: str) -> str:
        try:
            ZoneInfo(value)
        except (ZoneInfoNotFoundError, ValueError):
            raise ValueError(
                f"'{value}' is not a time zone, like 'UTC' or 'Europe/Berlin'"
            ) from None
        return value

    @field_validator("reminders")
    @classmethod
    def _cron(cls, value: str) -> str:
        if not croniter.is_valid(value):
            raise ValueError(f"'{value}' is not a cron expression, like '0 9 * * MON'")
        return value


class UserMapping(_Strict):
    """Identities the file gives a person outright (``users:``), over what is looked up."""

    gitlab: str | None = None
    kubernetes: str | None = None
    email: str | None = None


_ENV_NAME = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*$")
_LOCAL_HOSTS = ("localhost", "127.0.0.1", "::1")


class AuditSinkConfig(_Strict):
    """Where the audit stream goes (``audit_sinks:``): ``webhook`` (``url``, ``secret_env``),
    ``file`` (``path``) or ``stdout``. ``name`` tells two sinks of one type apart; it defaults
    to the type, and the outbox keeps each sink's progress under it."""

    type: Literal["webhook", "file", "stdout"]
    name: str | None = None
    url: str | None = None
    secret_env: str | None = None
    """The environment variable holding the webhook's signing secret (never the secret)."""
    path: str | None = None

    @property
    def sink_name(self) -> str:
        return self.name or self.type

    @field_validator("name")
    @classmethod
    def _sink_name(cls, value: str | None) -> str | None:
        if value is not None and not _NAME.match(value):
            raise ValueError(f"'{value}' is not a valid sink name (lowercase, digits, -)")
        return value

    @field_validator("url")
    @classmethod
    def _https(cls, value: str | None) -> str | None:
        if value is None:
            return value
        parts = urlsplit(value)
        try:
            port = parts.port
        except ValueError:  # not a number, or past 65535
            port = 0
        if port is not None and port <= 0:
            raise ValueError(f"'{value}' has no valid port: write https://host/path, or a "
                             "port from 1 to 65535 (https://host:8443/path)")
        if parts.scheme == "https" and parts.hostname:
            return value
        if parts.scheme == "http" and parts.hostname in _LOCAL_HOSTS:
            return value
        if parts.scheme == "http":
            raise ValueError("audit events leave the machine signed but readable: write "
                             "https://… (plain http:// only to localhost)")
        raise ValueError(f"'{value}' is not a URL: write it as https://…")

    @field_validator("secret_env")
    @classmethod
    def _env_name(cls, value: str | None) -> str | None:
        if value is not None and not _ENV_NAME.match(value):
            raise ValueError(f"'{value}' is not an environment variable name: name the "
                             "variable that holds the secret (like AUDIT_WEBHOOK_SECRET), not "
                             "the secret")
        return value

    @model_validator(mode="after")
    def _fields_of_type(self) -> AuditSinkConfig:
        needed = {"webhook": ("url", "secret_env"), "file": ("path",), "stdout": ()}[self.type]
        missing = [f for f in needed if getattr(self, f) is None]
        extra = [f for f in ("url", "secret_env", "path")
                 if f not in needed and getattr(self, f) is not None]
        problems = [f"a {self.type} sink needs '{f}'" for f in missing]
        problems += [f"'{f}' is not a field of a {self.type} sink" for f in extra]
        if problems:
            raise ValueError("; ".join(problems) + " (see audit_sinks in "
                             "examples/k8s-access.yaml)")
        return self


class FileConfig(_Strict):
    installation: str = "default"
    """Names this bot installation on every object it creates (label
    ``k8s-access-bot/installation``); give each installation that shares an API server or a
    GitLab group its own name."""
    admins: list[str] = Field(default_factory=list)
    defaults: PolicyFields = PolicyFields()
    schedules: Schedules = Schedules()
    users: dict[str, UserMapping] = Field(default_factory=dict)
    audit_sinks: list[AuditSinkConfig] = Field(default_factory=list)
    """Where every audit event is also delivered (the audit stream)."""
    clusters: dict[str, ClusterConfig]

    _admins = field_validator("admins")(_check_slack_ids)

    @field_validator("installation")
    @classmethod
    def _installation_name(cls, value: str) -> str:
        if not _NAME.match(value):
            raise ValueError(f"'{value}' is not a valid installation name (lowercase, digits, -, "
                             "at most 63 characters)")
        return value

    @field_validator("audit_sinks")
    @classmethod
    def _sink_names(cls, value: list[AuditSinkConfig]) -> list[AuditSinkConfig]:
        names = [sink.sink_name for sink in value]
        twice = sorted({name for name in names if names.count(name) > 1})
        if twice:
            raise ValueError(f"two sinks are called {', '.join(twice)}: give each a distinct "
                             "'name'")
        # Two sinks writing to one place would write every event there twice.
        places = [os.path.abspath(os.path.expanduser(sink.path)) if sink.path else sink.type
                  for sink in value if sink.type != "webhook"]
        again = sorted({place for place in places if places.count(place) > 1})
        if again:
            raise ValueError(f"two sinks write to {', '.join(again)}, so each event would be "
                             "written there twice: keep one of them")
        return value

    @field_validator("clusters")
    @classmethod
    def _cluster_names(cls, value: dict[str, ClusterConfig]) -> dict[str, ClusterConfig]:
        if not value:
            raise ValueError("configure at least one cluster")
        for name in value:
            if not _NAME.match(name):
                raise ValueError(f"'{name}' is not a valid cluster name (lowercase, digits, -)")
        return value


# --- the validated result -----------------------------------------------------------------

_BUILTIN = {
    "approvals_required": 1,
    "max_duration": timedelta(hours=8),
    "default_duration": timedelta(hours=1),
    "require_reason": True,
    "timeout": timedelta(hours=24),
    "break_glass": False,
    "auto_approve_up_to": None,
    "self_extend": False,
    "requesters": None,
    "request_for_others": False,
    "max_schedule_ahead": DEFAULT_MAX_SCHEDULE_AHEAD,
    "escalation": None,
    "reason_pattern": None,
    "reason_hint": None,
    "ticket_url": None,
    "on_call_max_duration": DEFAULT_MAX_DURATION,
}


@dataclass(frozen=True)
class Config:
    """The validated file, with each role's effective policy worked out once."""

    source: Path
    file: FileConfig
    policies: Mapping[tuple[str, str], RolePolicy]

    @classmethod
    def without_file(cls, source: Path) -> Config:
        """No clusters, admins or users: for the commands that only read the database
        (``grants list``, ``audit export``), which work without the file."""
        empty = FileConfig.model_construct(clusters={})
        return cls(source=source, file=empty, policies={})

    @property
    def clusters(self) -> Mapping[str, ClusterConfig]:
        return self.file.clusters

    @property
    def schedules(self) -> Schedules:
        """When the periodic passes run (the file's ``schedules:``, defaults filled in)."""
        return self.file.schedules

    def user(self, slack_id: str) -> UserMapping | None:
        """The file's explicit identities for a person (``users:``), or None."""
        return self.file.users.get(slack_id)

    def cluster(self, name: str) -> ClusterConfig:
        try:
            return self.file.clusters[name]
        except KeyError:
            raise NotFound(
                f"There is no cluster '{name}'. Clusters: {', '.join(self.file.clusters)}."
            ) from None

    def role(self, cluster: str, role: str) -> RoleConfig:
        roles = self.cluster(cluster).roles
        try:
            return roles[role]
        except KeyError:
            raise NotFound(
                f"Cluster {cluster} has no role '{role}'. Roles: {', '.join(roles)}."
            ) from None

    def policy(self, cluster: str, role: str) -> RolePolicy:
        self.role(cluster, role)
        return self.policies[(cluster, role)]

    def approvers_channel(self, cluster: str, role: str) -> str | None:
        cluster_config = self.cluster(cluster)
        return (
            self.role(cluster, role).approvers_channel
            or cluster_config.approvers_channel
            or self.file.defaults.approvers_channel
        )

    def all_approver_groups(self) -> frozenset[str]:
        """Every Slack user group named anywhere: as approvers (escalation steps included),
        requesters or admins; the groups whose membership decides what a person may do."""
        admins = frozenset(filter(slack_ids.is_user_group, self.file.admins))
        return admins.union(*(p.user_groups for p in self.policies.values()))

    def is_admin(self, actor_id: str, groups: frozenset[str] = frozenset()) -> bool:
        return Actor(actor_id, groups).among(frozenset(self.file.admins))

    def actor(self, user_id: str, groups: frozenset[str] = frozenset()) -> Actor:
        return Actor(user_id=user_id, groups=groups, is_admin=self.is_admin(user_id, groups))


def _effective_policies(
    file: FileConfig, source: str
) -> tuple[dict[tuple[str, str], RolePolicy], list[Problem]]:
    """Each role's policy, its layers merged, and what is wrong with the merged result."""
    policies: dict[tuple[str, str], RolePolicy] = {}
    problems: list[Problem] = []
    for cluster_name, cluster in file.clusters.items():
        layers: list[PolicyFields] = [file.defaults, cluster]
        named = {"defaults": file.defaults, f"clusters.{cluster_name}": cluster}
        every_approver: set[str] = set()
        for role_name, role in cluster.roles.items():
            merged: dict[str, Any] = dict(_BUILTIN)
            for layer in [*layers, role]:
                merged.update({k: v for k, v in layer.model_dump().items()
                               if k in _BUILTIN and v is not None})
            approvers = role.approvers or cluster.approvers or file.defaults.approvers or []
            every_approver |= set(approvers)
            where = f"clusters.{cluster_name}.roles.{role_name}"
            if merged["default_duration"] > merged["max_duration"]:
                problems.append(Problem(source, where, None,
                                        "default_duration is longer than max_duration"))
            if not approvers and not (merged["auto_approve_up_to"] or merged["break_glass"]):
                problems.append(Problem(source, where, None,
                                        "nobody can approve it: set approvers"))
            if approvers and len(approvers) < merged["approvals_required"] and not any(
                slack_ids.is_user_group(a) for a in approvers
            ):
                problems.append(Problem(
                    source, where, None,
                    f"approvals_required is {merged['approvals_required']} "
                    f"but only {len(approvers)} approvers are listed"))
            layered = {**named, where: role}
            problems += _merged_policy_problems(merged, layered, where, source)
            policies[(cluster_name, role_name)] = RolePolicy(
                cluster=cluster_name,
                role=role_name,
                approvers=frozenset(approvers),
                cluster_approvers=frozenset(),
                max_duration=merged["max_duration"],
                default_duration=merged["default_duration"],
                approvals_required=merged["approvals_required"],
                require_reason=merged["require_reason"],
                pending_timeout=merged["timeout"],
                break_glass=merged["break_glass"],
                auto_approve_up_to=merged["auto_approve_up_to"],
                self_extend=merged["self_extend"],
                allow_own_csr=role.allow_own_csr,
                namespaces=tuple(role.namespaces),
                requesters=(None if merged["requesters"] is None
                            else frozenset(merged["requesters"])),
                request_for_others=merged["request_for_others"],
                max_schedule_ahead=merged["max_schedule_ahead"],
                escalation=tuple(EscalationStep(step["after"], frozenset(step["approvers"]))
                                 for step in merged["escalation"] or ()),
                reason_pattern=merged["reason_pattern"] or None,
                reason_hint=merged["reason_hint"] or None,
                ticket_url=merged["ticket_url"] or None,
                on_call=_on_call_policy([*layers, role], merged["on_call_max_duration"]),
            )
        for role_name in cluster.roles:
            key = (cluster_name, role_name)
            policy = dataclasses.replace(policies[key], cluster_approvers=frozenset(every_approver))
            policies[key] = dataclasses.replace(policy, user_groups=_user_groups(policy))
    return policies, list(dict.fromkeys(problems))  # a layer's problem once, not per role


def _user_groups(policy: RolePolicy) -> frozenset[str]:
    """The user groups among the principals ``policy`` names."""
    named = policy.approvers | policy.cluster_approvers | (policy.requesters or frozenset())
    named = named.union(*(step.approvers for step in policy.escalation))
    return frozenset(filter(slack_ids.is_user_group, named))


def _merged_policy_problems(merged: Mapping[str, Any], layers: Mapping[str, PolicyFields],
                            role: str, source: str) -> Iterator[Problem]:
    """What the new policy keys get wrong once the layers are merged, named in the layer
    (``defaults``, a cluster, a role) that set the key."""

    def setter(key: str) -> str:
        return next(path for path, layer in reversed(list(layers.items()))
                    if getattr(layer, key) is not None)

    timeout = merged["timeout"]
    for index, step in enumerate(merged["escalation"] or ()):
        if step["after"] >= timeout:
            yield Problem(source, f"{setter('escalation')}.escalation.{index}.after",
                          format_duration(step["after"]),
                          f"is not before the timeout of {role} ({format_duration(timeout)}), "
                          "so the step never happens: make it shorter than timeout, or raise "
                          "timeout")
    if merged["ticket_url"] and not merged["reason_pattern"]:
        yield Problem(source, f"{setter('ticket_url')}.ticket_url", repr(merged["ticket_url"]),
                      f"{role} has no reason_pattern to find the ticket in a reason: set "
                      "reason_pattern (e.g. '[A-Z]+-[0-9]+') beside it")
    # A key that only qualifies another, set on the role itself while that other is unset:
    # it would do nothing (on a wider layer it may serve the roles that set the other).
    own = layers[role]
    if own.reason_hint and not merged["reason_pattern"]:
        yield Problem(source, f"{role}.reason_hint", repr(own.reason_hint),
                      "is said when a reason does not match reason_pattern, and the role has "
                      "none: set reason_pattern (e.g. '[A-Z]+-[0-9]+') beside it, or leave "
                      "reason_hint out")
    if own.on_call_max_duration is not None and not any(
            layer.auto_approve_on_call is not None for layer in layers.values()):
        yield Problem(source, f"{role}.on_call_max_duration",
                      format_duration(own.on_call_max_duration),
                      "limits auto_approve_on_call, which the role does not have: add an "
                      "auto_approve_on_call section (pagerduty: or opsgenie:) beside it, or "
                      "leave on_call_max_duration out")
    elif (own.on_call_max_duration is not None
          and own.on_call_max_duration > merged["max_duration"]):
        limit = format_duration(merged["max_duration"])
        yield Problem(source, f"{role}.on_call_max_duration",
                      format_duration(own.on_call_max_duration),
                      f"is longer than max_duration ({limit}), which refuses a longer request "
                      f"before on-call is asked: make it {limit} or less, or raise "
                      "max_duration")


def _on_call_policy(layers: list[PolicyFields], max_duration: timedelta) -> OnCallPolicy | None:
    """The nearest layer's ``auto_approve_on_call`` (a role's replaces its cluster's, whole),
    with the effective ``on_call_max_duration``."""
    section = next((layer.auto_approve_on_call for layer in reversed(layers)
                    if layer.auto_approve_on_call is not None), None)
    return OnCallPolicy(section.targets(), max_duration) if section is not None else None


def _location(loc: tuple[int | str, ...]) -> str:
    return ".".join(str(part) for part in loc if not str(part).startswith("function-"))


def parse_config(data: Any, source: Path,
                 commented: Mapping[str, str] | None = None) -> Config:
    """Validate already-parsed YAML. Raises :class:`ConfigProblems` listing every problem.

    ``commented`` maps the dotted fields that YAML read as empty because their value began with
    ``#`` (a comment) to that text.
    """
    where = str(source)
    problems = [
        Problem(where, field, text,
                "YAML reads an unquoted value starting with # as a comment, so this is empty: "
                "quote it, and write Slack IDs (C…, U…, S…) rather than names")
        for field, text in (commented or {}).items()
    ]
    if not isinstance(data, dict):
        problems.append(Problem(where, "(top)", None,
                                "the file must be a mapping with 'clusters:' at the top"))
        raise ConfigProblems(problems)
    data = _without(data, commented or {})  # reported above; the rest is checked without them
    problems += _channel_problems(data, where)
    reported = {p.field for p in problems}
    try:
        file = FileConfig.model_validate(data)
    except ValidationError as error:
        for e in error.errors():
            field = _location(e["loc"]) or "(top)"
            if field not in reported:
                shown = _shown(e.get("input"))
                problems += [Problem(where, field, None if shown is None or shown in line
                                     or shown.strip("'") in line else shown, line)
                             for line in _reason(e).splitlines()]
        raise ConfigProblems(problems) from None
    policies, merge_problems = _effective_policies(file, where)
    if merge_problems:
        raise ConfigProblems(problems + merge_problems)
    config = Config(source=source, file=file, policies=policies)
    if problems:
        raise ConfigProblems(problems, config)
    return config


_TYPE_FIXES = {
    "list_type": "must be a list: write [item, …], or one '- item' a line below the key",
    "dict_type": "must be a mapping of keys to values, as in examples/k8s-access.yaml",
    "model_type": "must be a mapping of keys to values, as in examples/k8s-access.yaml",
    "string_type": "must be text: quote it",
    "int_type": "must be a whole number",
    "int_parsing": "must be a whole number",
    "int_from_float": "must be a whole number",
    "bool_type": "must be true or false",
    "bool_parsing": "must be true or false",
    "missing": "is required: add it (see examples/k8s-access.yaml)",
    "too_short": "is empty: list at least 1 item",
}
"""pydantic's type errors (its ``type`` codes), said with the fix."""


def _reason(error: Any) -> str:
    message = str(error["msg"])
    if error["type"] == "extra_forbidden":
        return "unknown field (check the spelling against examples/k8s-access.yaml)"
    return _TYPE_FIXES.get(error["type"], message.removeprefix("Value error, "))


def _shown(value: object) -> str | None:
    """A scalar the file held, as it is shown beside its field; None for what is missing or
    too large to show (a mapping, a list)."""
    if isinstance(value, bool | int | float):
        return str(value).lower() if isinstance(value, bool) else str(value)
    if isinstance(value, str):
        return repr(value) if len(value) <= 80 else repr(value[:77] + "...")
    return None


def _without(data: Any, paths: Mapping[str, str]) -> Any:
    """``data`` with the values at the dotted ``paths`` left out (list items and keys)."""
    if not paths:
        return data

    def copy(node: Any, path: tuple[str, ...]) -> Any:
        if isinstance(node, dict):
            return {k: copy(v, (*path, str(k))) for k, v in node.items()
                    if ".".join((*path, str(k))) not in paths}
        if isinstance(node, list):
            return [copy(v, (*path, str(i))) for i, v in enumerate(node)
                    if ".".join((*path, str(i))) not in paths]
        return node

    return copy(data, ())


def _commented_out(text: str) -> dict[str, str]:
    """Fields whose value YAML read as empty because it began with ``#``, with that text."""
    lines = text.splitlines()
    found: dict[str, str] = {}

    def walk(node: yaml.Node, path: tuple[str, ...]) -> None:
        if isinstance(node, yaml.MappingNode):
            for key, value in node.value:
                walk(value, (*path, str(key.value)))
        elif isinstance(node, yaml.SequenceNode):
            for index, value in enumerate(node.value):
                walk(value, (*path, str(index)))
        elif node.tag == "tag:yaml.org,2002:null" and node.value == "":
            mark = node.start_mark
            rest = lines[mark.line][mark.column:].strip() if mark.line < len(lines) else ""
            if rest.startswith("#"):  # its first word: what was meant as the value
                found[".".join(path)] = rest.split(maxsplit=1)[0]

    root = yaml.compose(text, Loader=yaml.SafeLoader)
    if root is not None:
        walk(root, ())
    return found


def load_config(path: Path) -> Config:
    """Read and validate the YAML file at ``path``. Raises :class:`ConfigError`
    (:class:`ConfigProblems` when the file was read: every problem in it at once)."""
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise ConfigError(
            f"{path}: no such file. Set K8S_ACCESS_CONFIG, or start from "
            "examples/quickstart.yaml"
        ) from None
    except IsADirectoryError:
        raise ConfigError(f"{path}: is a folder, not a file; set K8S_ACCESS_CONFIG to the "
                          "YAML file") from None
    except UnicodeDecodeError:
        raise ConfigError(f"{path}: not a text file (not UTF-8); K8S_ACCESS_CONFIG must name "
                          "the YAML file") from None
    except OSError as error:
        raise ConfigError(f"{path}: cannot be read: {error.strerror or error}") from None
    try:
        data = yaml.safe_load(text)
        commented = _commented_out(text)
    except yaml.YAMLError as error:
        mark = getattr(error, "problem_mark", None)
        where = f"line {mark.line + 1}, column {mark.column + 1}: " if mark else ""
        problem = getattr(error, "problem", None) or str(error)
        raise ConfigError(f"{path}: {where}not valid YAML: {problem}") from None
    return parse_config(data, path, commented)


# --- what the file needs from the machine and the environment -----------------------------

SlackMode = Literal["socket", "http"]


def slack_mode(settings: Settings, *, socket_mode: bool = False, http: bool = False) -> SlackMode:
    """How ``serve`` meets Slack: the flag given, else Socket Mode when SLACK_APP_TOKEN is set,
    else HTTP."""
    if socket_mode and http:
        raise ConfigError("choose one of --socket-mode and --http")
    if socket_mode or http:
        return "socket" if socket_mode else "http"
    return "socket" if settings.slack_app_token is not None else "http"


def environment_problems(settings: Settings, config: Config) -> list[Problem]:
    """What the file asks of the environment and the machine, checked without a network: the
    files it names exist, GitLab has a URL and a token."""
    problems: list[Problem] = []
    where = str(config.source)
    gitlab_clusters = []
    for name, cluster in config.clusters.items():
        kubernetes = cluster.kubernetes
        if kubernetes is not None:
            for attribute in ("kubeconfig", "ca_file"):
                value = getattr(kubernetes, attribute)
                path = Path(value).expanduser() if value is not None else None
                if path is not None and (not path.exists() or path.is_dir()):
                    problems.append(Problem(
                        where, f"clusters.{name}.kubernetes.{attribute}", value,
                        f"no such file ({path}); give the path of the file "
                        "as the bot sees it (in a pod: where its Secret is mounted)"))
        if cluster.gitlab is not None and cluster.backend == "gitlab":
            if cluster.gitlab.url is None and not settings.gitlab_url:
                problems.append(Problem(
                    "environment", "GITLAB_URL", None,
                    f"cluster {name} uses backend gitlab: set GITLAB_URL to your GitLab "
                    "(https://gitlab.example.com), or gitlab.url in the file"))
            gitlab_clusters.append(name)
    problems += _placeholders(config.file.model_dump(mode="json", exclude_none=True), where)
    problems += _on_call_token_problems(settings, config)
    problems += _padded_secrets(settings, ("GITLAB_TOKEN", "PAGERDUTY_TOKEN", "OPSGENIE_API_KEY"))
    problems += audit_sink_problems(config)
    if gitlab_clusters and settings.gitlab_token is None:
        which = (f"clusters {', '.join(gitlab_clusters)} use" if len(gitlab_clusters) > 1
                 else f"cluster {gitlab_clusters[0]} uses")
        problems.append(Problem(
            "environment", "GITLAB_TOKEN", None,
            f"{which} backend gitlab: set GITLAB_TOKEN to a token with the api scope whose "
            "user is Owner of each configured group"))
    return problems


def _policy_layers(config: Config) -> Iterator[tuple[str, PolicyFields]]:
    """Each place policy is written in the file, with its dotted field path."""
    yield "defaults", config.file.defaults
    for name, cluster in config.clusters.items():
        yield f"clusters.{name}", cluster
        for role_name, role in cluster.roles.items():
            yield f"clusters.{name}.roles.{role_name}", role


def _on_call_token_problems(settings: Settings, config: Config) -> Iterator[Problem]:
    """An ``auto_approve_on_call`` section whose service has no credentials in the
    environment: every request of its roles would go to the approvers."""
    where = str(config.source)
    for place, layer in _policy_layers(config):
        section = layer.auto_approve_on_call
        if section is None:
            continue
        if section.pagerduty is not None and settings.pagerduty_token is None:
            yield Problem(where, f"{place}.auto_approve_on_call.pagerduty", None,
                          "needs PAGERDUTY_TOKEN in the environment: create a read-only REST "
                          "API key (PagerDuty → Integrations → API Access Keys) and set it, "
                          "or remove the section")
        if section.opsgenie is not None and settings.opsgenie_api_key is None:
            yield Problem(where, f"{place}.auto_approve_on_call.opsgenie", None,
                          "needs OPSGENIE_API_KEY in the environment: create an API "
                          "integration (Opsgenie → Settings → Integrations → API) that may "
                          "read the schedules and set its key, or remove the section")
def audit_sink_secret(sink: AuditSinkConfig) -> SecretStr | None:
    """The signing secret of a webhook sink, from the variable its ``secret_env`` names; None
    when that is unset or empty."""
    value = os.environ.get(sink.secret_env or "", "").strip()
    return SecretStr(value) if value else None


def audit_sink_problems(config: Config) -> list[Problem]:
    """What the audit sinks need from the machine: each webhook's secret in the environment,
    each file where the bot may append to it."""
    problems: list[Problem] = []
    for index, sink in enumerate(config.file.audit_sinks):
        where = f"audit_sinks.{index}"
        if sink.type == "webhook" and sink.secret_env and audit_sink_secret(sink) is None:
            problems.append(Problem(
                "environment", sink.secret_env, None,
                f"not set: {where} (webhook {sink.url}) signs each event with it; set it to "
                "a long random secret shared with the receiver (openssl rand -hex 32)"))
        if sink.type == "file" and sink.path:
            trouble = _unwritable(Path(sink.path).expanduser())
            if trouble:
                problems.append(Problem(str(config.source), f"{where}.path", sink.path,
                                        trouble))
    return problems


def _unwritable(path: Path) -> str | None:
    """Why the bot cannot append to ``path``; None when it can."""
    if path.is_dir():
        return "is a folder: give the path of a file (it is created when missing)"
    if path.exists():
        return None if os.access(path, os.W_OK) else (
            "the bot may not write this file: give it write permission, or another path")
    folder = path.parent
    if not folder.is_dir():
        return (f"its folder {folder} does not exist: create it (in a pod, mount a volume "
                "there), or give another path")
    if not os.access(folder, os.W_OK | os.X_OK):
        return (f"the bot may not create files in {folder}: give it write permission (in a "
                "pod, a writable volume), or another path")
    return None


_PLACEHOLDERS = ("CHANGE-ME", "CHANGEME", "U0YOURSLACKID", "U0COLLEAGUE1")
"""What the shipped examples (examples/quickstart.yaml, deploy/base/k8s-access.yaml) ask to
replace."""


def _placeholders(node: Any, where: str, path: tuple[str, ...] = ()) -> list[Problem]:
    """A problem for each value still holding one of :data:`_PLACEHOLDERS`."""
    if isinstance(node, dict):
        return [p for k, v in node.items() for p in _placeholders(v, where, (*path, str(k)))]
    if isinstance(node, list):
        return [p for i, v in enumerate(node) for p in _placeholders(v, where, (*path, str(i)))]
    if isinstance(node, str) and any(mark in node.upper() for mark in _PLACEHOLDERS):
        return [Problem(where, ".".join(path), node,
                        "a placeholder from the example: replace it with your own value "
                        "(Slack IDs: a profile's ⋮ → Copy member ID, a channel's details)")]
    return []


_TOKEN_KINDS = {"xoxb-": "a bot token", "xapp-": "an app-level token", "xoxp-": "a user token",
                "xoxe": "a refresh or configuration token"}


def _token_kind(token: SecretStr) -> str:
    value = token.get_secret_value()
    return next((kind for prefix, kind in _TOKEN_KINDS.items() if value.startswith(prefix)),
                "not a Slack token")


def _padded_secrets(settings: Settings, names: Iterable[str]) -> Iterator[Problem]:
    """The secrets among the variables ``names`` that are set with a space or a line break
    around them, which every service would refuse."""
    for name in names:
        secret: SecretStr | None = getattr(settings, name.lower())
        if secret is not None and secret.get_secret_value() != secret.get_secret_value().strip():
            yield Problem("environment", name, None,
                          "has a space or a line break around it (a Secret made from a file "
                          "keeps the file's last line break): set it without")


def slack_problems(settings: Settings, mode: SlackMode) -> Iterator[Problem]:
    """The Slack credentials ``serve`` needs in ``mode``: there, and the right kind of token."""
    bot, app = settings.slack_bot_token, settings.slack_app_token
    yield from _padded_secrets(settings, ("SLACK_BOT_TOKEN", "SLACK_APP_TOKEN",
                                          "SLACK_SIGNING_SECRET"))
    if bot is None:
        yield Problem("environment", "SLACK_BOT_TOKEN", None,
                      "not set: copy the Bot User OAuth Token (xoxb-…) from your Slack app's "
                      "OAuth & Permissions page")
    elif not bot.get_secret_value().startswith("xoxb-"):
        swapped = " (swapped with SLACK_APP_TOKEN?)" if bot.get_secret_value().startswith(
            "xapp-") else ""
        yield Problem("environment", "SLACK_BOT_TOKEN", None,
                      f"is {_token_kind(bot)}{swapped}, not the bot token: copy the Bot User "
                      "OAuth Token (xoxb-…) from your Slack app's OAuth & Permissions page")
    if mode == "socket":
        if app is None:
            yield Problem("environment", "SLACK_APP_TOKEN", None,
                          "not set: Socket Mode needs an app-level token (xapp-…) with the "
                          "connections:write scope, from your Slack app's Basic Information "
                          "page; or run `serve --http` with SLACK_SIGNING_SECRET")
        elif not app.get_secret_value().startswith("xapp-"):
            swapped = " (swapped with SLACK_BOT_TOKEN?)" if app.get_secret_value().startswith(
                "xoxb-") else ""
            yield Problem("environment", "SLACK_APP_TOKEN", None,
                          f"is {_token_kind(app)}{swapped}, not an app-level token: create one "
                          "(xapp-…) with the connections:write scope on your Slack app's Basic "
                          "Information page")
    elif settings.slack_signing_secret is None:
        yield Problem("environment", "SLACK_SIGNING_SECRET", None,
                      "not set: HTTP mode verifies every request with it; copy the Signing "
                      "Secret from your Slack app's Basic Information page, or set "
                      "SLACK_APP_TOKEN to use Socket Mode")


def check(settings: Settings, slack: SlackMode | None) -> Config:
    """The file at K8S_ACCESS_CONFIG, validated, and everything it needs from the environment:
    what ``serve`` (with ``slack``, the mode it runs in) and ``config check`` both rely on.
    Raises :class:`ConfigError` when the file cannot be read, else :class:`ConfigProblems`
    with every problem in the file and the environment at once."""
    problems: list[Problem] = []
    config: Config | None = None
    try:
        config = load_config(settings.k8s_access_config)
    except ConfigProblems as error:
        problems += error.problems
        config = error.config
    if config is not None:
        problems += environment_problems(settings, config)
    if slack is not None:
        problems += slack_problems(settings, slack)
    if problems or config is None:
        raise ConfigProblems(problems)
    return config
