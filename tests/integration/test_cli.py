"""The command line against a real database file and config file."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
import yaml
from click.testing import CliRunner, Result

from bot.cli import main
from tests.conftest import TEST_CONFIG, create_database


@pytest.fixture
def env(tmp_path: Path) -> Iterator[dict[str, str]]:
    url, drop = create_database(tmp_path)
    config = tmp_path / "k8s-access.yaml"
    config.write_text(yaml.safe_dump(TEST_CONFIG, sort_keys=False))
    yield {"DATABASE_URL": url, "K8S_ACCESS_CONFIG": str(config)}
    drop()


def run(env: dict[str, str], *args: str) -> Result:
    return CliRunner().invoke(main, list(args), env=env, catch_exceptions=False)


def test_db_upgrade_and_current(env: dict[str, str]) -> None:
    assert "empty (no migrations applied)" in run(env, "db", "current").output
    upgraded = run(env, "db", "upgrade")
    assert upgraded.exit_code == 0, upgraded.output
    current = run(env, "db", "current")
    assert "(at head)" in current.output


def test_config_check_ok(env: dict[str, str]) -> None:
    result = run(env, "config", "check")
    assert result.exit_code == 0
    assert "cluster staging: backend rbac; roles view, edit, deploy" in result.output
    assert result.output.rstrip().endswith(": ok")


def test_config_check_broken_file(env: dict[str, str], tmp_path: Path) -> None:
    broken = tmp_path / "broken.yaml"
    broken.write_text("clusters:\n  staging:\n    backend: rbac\n    roles: {}\n")
    result = run({**env, "K8S_ACCESS_CONFIG": str(broken)}, "config", "check")
    assert result.exit_code == 2
    assert f"{broken}: clusters.staging: a cluster needs at least one role" in result.output


def test_config_check_missing_file(env: dict[str, str], tmp_path: Path) -> None:
    result = run({**env, "K8S_ACCESS_CONFIG": str(tmp_path / "none.yaml")}, "config", "check")
    assert result.exit_code == 2
    assert "no such file. Set K8S_ACCESS_CONFIG" in result.output


def test_bad_environment_is_named(env: dict[str, str]) -> None:
    result = run({**env, "LOG_FORMAT": "xml"}, "config", "check")
    assert result.exit_code == 2
    assert "LOG_FORMAT" in result.output


def test_grants_list_and_audit_export_on_an_empty_database(env: dict[str, str]) -> None:
    run(env, "db", "upgrade")
    listed = run(env, "grants", "list", "--active")
    assert listed.exit_code == 0 and listed.output.startswith("    ID  STATE")
    exported = run(env, "audit", "export", "--format", "csv")
    assert exported.output == "id,at,actor,action,request_id,details\n"
    bad = run(env, "audit", "export", "--since", "yesterday-ish")
    assert bad.exit_code == 1 and "is not a time" in bad.output
