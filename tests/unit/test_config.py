from __future__ import annotations

from datetime import timedelta
from pathlib import Path
from typing import Any

import pytest
import yaml

from bot.config import ConfigError, Settings, load_config, parse_config
from bot.domain.errors import NotFound
from tests.conftest import TEST_CONFIG

EXAMPLE = Path(__file__).resolve().parents[2] / "examples" / "k8s-access.yaml"


def test_example_loads_with_every_backend() -> None:
    config = load_config(EXAMPLE)
    assert {c.backend for c in config.clusters.values()} == {"gitlab", "certificate", "rbac"}
    edit = config.policy("staging", "edit")
    assert edit.max_duration == timedelta(days=1)
    assert edit.default_duration == timedelta(hours=4)
    assert edit.approvers == frozenset({"S0PLATFORM1"})
    assert edit.self_extend
    prod = config.policy("production", "deploy")
    assert prod.approvals_required == 2
    assert prod.namespaces == ("shop", "payments")
    assert config.policy("staging", "view").auto_approve_up_to == timedelta(hours=8)
    assert config.policy("production", "admin").break_glass
    assert config.approvers_channel("staging", "view") == "C0APPROVALS"
    assert config.approvers_channel("production", "view") is None
    assert config.all_approver_groups() == frozenset({"S0PLATFORM1"})


def test_unknown_cluster_and_role_list_the_valid_ones() -> None:
    config = load_config(EXAMPLE)
    with pytest.raises(NotFound, match="Clusters: staging, production, analytics"):
        config.policy("qa", "view")
    with pytest.raises(NotFound, match="Roles: view, deploy, admin"):
        config.policy("production", "owner")


def broken(tmp_path: Path, text: str) -> str:
    path = tmp_path / "k8s-access.yaml"
    path.write_text(text)
    with pytest.raises(ConfigError) as error:
        load_config(path)
    message = str(error.value)
    assert message.startswith(str(path))
    return message


def test_an_unquoted_channel_name_is_shown_without_the_comment_after_it(tmp_path: Path) -> None:
    message = broken(tmp_path, yaml.safe_dump(TEST_CONFIG).replace(
        "clusters:\n", "defaults:\n  approvers_channel: #k8s-approvals   # approvals go here\n"
        "clusters:\n", 1))
    assert message.splitlines()[0] == (
        f"{tmp_path / 'k8s-access.yaml'}: defaults.approvers_channel = #k8s-approvals: YAML "
        "reads an unquoted value starting with # as a comment, so this is empty: quote it, and "
        "write Slack IDs (C…, U…, S…) rather than names")


def test_missing_file(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match=r"no such file\. Set K8S_ACCESS_CONFIG"):
        load_config(tmp_path / "nope.yaml")


def test_yaml_syntax_error_names_the_line(tmp_path: Path) -> None:
    message = broken(tmp_path, "clusters:\n  a:\n    backend: rbac\n   roles: x\n")
    assert "line 4, column 4: not valid YAML" in message


def test_not_a_mapping(tmp_path: Path) -> None:
    assert "must be a mapping" in broken(tmp_path, "- just\n- a list\n")


def with_changes(**changes: Any) -> dict[str, Any]:
    data: dict[str, Any] = yaml.safe_load(yaml.safe_dump(TEST_CONFIG, sort_keys=False))
    for dotted, value in changes.items():
        node = data
        *path, last = dotted.split("__")
        for part in path:
            node = node[part]
        if value is None:
            del node[last]
        else:
            node[last] = value
    return data


@pytest.mark.parametrize(
    ("changes", "says"),
    [
        ({"clusters__staging__roles__view__max_duration": "4x"},
         "clusters.staging.roles.view.max_duration: '4x' is not a duration"),
        ({"clusters__staging__roles__view__max_duration": 4},
         "clusters.staging.roles.view.max_duration: write durations with a unit"),
        ({"clusters__staging__roles__view__max_duration": 1.5},
         "clusters.staging.roles.view.max_duration = 1.5: write durations with a unit and "
         "whole numbers"),
        ({"clusters__staging__roles__view__max_duration": ["1h"]},
         "clusters.staging.roles.view.max_duration: is not a duration: write it like 90m"),
        ({"clusters__staging__roles__view__default_duration": True},
         "clusters.staging.roles.view.default_duration = true: is not a duration"),
        ({"clusters__staging__roles__view__colour": "blue"},
         "clusters.staging.roles.view.colour = 'blue': unknown field"),
        ({"clusters__staging__backend": "ldap"},
         "clusters.staging.backend = 'ldap': Input should be"),
        ({"clusters__staging__approvers": "U0BOB0002"},
         "clusters.staging.approvers = 'U0BOB0002': must be a list: write [item, …]"),
        ({"clusters__staging__approvals_required": "two"},
         "clusters.staging.approvals_required = 'two': must be a whole number"),
        ({"clusters__staging__require_reason": "sometimes"},
         "clusters.staging.require_reason = 'sometimes': must be true or false"),
        ({"clusters__staging__approvers": ["bob"]},
         "clusters.staging.approvers: 'bob' is not a Slack user ID"),
        ({"clusters__staging__roles__edit__role": "edit"},
         "role edit: set exactly one of 'cluster_role' or 'role'"),
        ({"clusters__staging__roles__deploy__namespaces": []},
         "role deploy: a namespaced 'role' needs 'namespaces'"),
        ({"clusters__staging__kubernetes": None}, "backend rbac needs a 'kubernetes:' section"),
        ({"clusters__prod__roles__view__default_duration": "5h"},
         "clusters.prod.roles.view: default_duration is longer than max_duration"),
        ({"clusters__prod__approvals_required": 4},
         "approvals_required is 4 but only 3 approvers"),
        ({"clusters__staging__approvers": None},
         "nobody can approve it: set approvers"),
        ({"schedules": {"reminders": "every monday"}},
         "schedules.reminders: 'every monday' is not a cron expression"),
        ({"schedules": {"timezone": "Mars/Olympus"}},
         "schedules.timezone: 'Mars/Olympus' is not a time zone"),
        ({"clusters": {}}, "clusters: configure at least one cluster"),
        ({"clusters__prod__roles__admin__allow_own_csr": True},
         "allow_own_csr needs backend certificate"),
    ],
)
def test_bad_fields_are_named_with_their_reason(changes: dict[str, Any], says: str) -> None:
    with pytest.raises(ConfigError) as error:
        parse_config(with_changes(**changes), Path("k8s-access.yaml"))
    assert says in str(error.value)
    assert str(error.value).startswith("k8s-access.yaml: ")


def test_settings_defaults(monkeypatch: pytest.MonkeyPatch) -> None:
    for name in ("DATABASE_URL", "K8S_ACCESS_CONFIG", "LOG_FORMAT"):
        monkeypatch.delenv(name, raising=False)
    settings = Settings()
    assert settings.database_url == "sqlite:///k8s-access.db"
    assert settings.k8s_access_config == Path("k8s-access.yaml")
    assert settings.log_format == "console"


def test_secrets_never_print(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("SLACK_BOT_TOKEN", "xoxb-very-secret")
    monkeypatch.setenv("GITLAB_TOKEN", "glpat-very-secret")
    text = repr(Settings()) + str(Settings())
    assert "very-secret" not in text


@pytest.mark.parametrize(("written", "used"), [
    ("postgres://bot:pw@db:5432/k8s", "postgresql+psycopg://bot:pw@db:5432/k8s"),
    ("postgresql://bot:pw@db/k8s", "postgresql+psycopg://bot:pw@db/k8s"),
    ("POSTGRESQL+psycopg://bot@db/k8s", "postgresql+psycopg://bot@db/k8s"),
    ("postgresql+psycopg2://bot@db/k8s", "postgresql+psycopg://bot@db/k8s"),
    ("sqlite:///k8s-access.db", "sqlite:///k8s-access.db"),
    ("sqlite+pysqlite:////data/k8s.db", "sqlite:////data/k8s.db"),
])
def test_database_urls_people_write(written: str, used: str) -> None:
    assert Settings(database_url=written).database_url == used


@pytest.mark.parametrize(("written", "says"), [
    ("mysql://bot:secret@db/k8s", "'mysql://' is not a database this bot supports"),
    ("oracle+cx_oracle://bot:secret@db/k8s",
     "'oracle+cx_oracle://' is not a database this bot supports"),
    ("k8s-access.db", "is not a database URL"),
])
def test_other_database_urls_are_refused_without_the_password(written: str, says: str) -> None:
    from pydantic import ValidationError

    with pytest.raises(ValidationError) as error:
        Settings(database_url=written)
    message = error.value.errors()[0]["msg"]
    assert says in message and "secret" not in message


def test_every_problem_of_the_file_is_listed_at_once() -> None:
    from bot.config import ConfigProblems

    data = with_changes(clusters__staging__roles__edit__role="edit",
                        clusters__staging__roles__deploy__namespaces=[],
                        clusters__prod__roles__view__default_duration="5h",
                        clusters__prod__approvals_required=4)
    with pytest.raises(ConfigProblems) as error:
        parse_config(data, Path("k8s-access.yaml"))
    assert [str(p) for p in error.value.problems] == [
        "k8s-access.yaml: clusters.staging: role edit: set exactly one of 'cluster_role' or "
        "'role' (with namespaces)",
        "k8s-access.yaml: clusters.staging: role edit: a namespaced 'role' needs 'namespaces'",
        "k8s-access.yaml: clusters.staging: role deploy: a namespaced 'role' needs 'namespaces'",
    ]
    data = with_changes(clusters__prod__roles__view__default_duration="5h",
                        clusters__prod__approvals_required=4)
    with pytest.raises(ConfigProblems) as error:
        parse_config(data, Path("k8s-access.yaml"))
    assert [str(p) for p in error.value.problems] == [
        "k8s-access.yaml: clusters.prod.roles.view: default_duration is longer than "
        "max_duration",
        "k8s-access.yaml: clusters.prod.roles.view: approvals_required is 4 but only 3 "
        "approvers are listed",
        "k8s-access.yaml: clusters.prod.roles.admin: approvals_required is 4 but only 3 "
        "approvers are listed",
    ]
