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


def test_operator_commands_against_a_cluster(tmp_path: Path) -> None:
    """While Slack is down: list, revoke, reconcile and run jobs from the shell."""
    from datetime import timedelta

    from bot.adapters.db import migrate
    from bot.adapters.db.store import make_engine
    from bot.app import build_context
    from bot.config import Settings, load_config
    from bot.fakes.kubernetes import FakeKubernetes
    from bot.services import requests
    from tests.fakes.ports import StaticDirectory

    kube = FakeKubernetes(tmp_path).start()
    kube.allow_bot()
    try:
        url, drop = create_database(tmp_path)
        config_path = tmp_path / "k8s-access.yaml"
        config_path.write_text(yaml.safe_dump({
            "admins": ["U0ADMIN05"],
            "clusters": {"dev": {
                "backend": "rbac", "approvers": ["U0BOB0002"],
                "kubernetes": {"server": kube.url,
                               "kubeconfig": str(kube.kubeconfig("bot", "k8s-access-bot"))},
                "roles": {"view": {"cluster_role": "view", "auto_approve_up_to": "1h",
                                   "require_reason": False}}}}}))
        env = {"DATABASE_URL": url, "K8S_ACCESS_CONFIG": str(config_path)}
        migrate.upgrade(make_engine(url))
        ctx = build_context(Settings(database_url=url), load_config(config_path),
                            directory=StaticDirectory(emails={"U0ALICE01": "alice@example.com"}))
        granted = requests.file_request(ctx, "U0ALICE01", "dev", "view",
                                        duration=timedelta(hours=1))
        assert "k8s-access-1" in kube.cluster_role_bindings

        checked = run(env, "config", "check", "--connect")
        assert checked.exit_code == 1  # Slack is "down": no SLACK_BOT_TOKEN here
        assert "FAILED  bot token: SLACK_BOT_TOKEN is not set" in checked.output
        assert "ok      bind clusterroles view (cluster-wide)" in checked.output
        assert "1 of 8 connection checks failed" in checked.output, checked.output
        listed = run(env, "grants", "list", "--active")
        assert f"{granted.id:>6}  active     dev/view" in listed.output
        revoked = run(env, "grants", "revoke", str(granted.id), "--reason", "slack is down")
        assert revoked.exit_code == 0, revoked.output
        assert "revoked (ClusterRoleBinding k8s-access-1 for User alice@example.com)" \
            in revoked.output
        assert "k8s-access-1" not in kube.cluster_role_bindings
        again = run(env, "grants", "revoke", str(granted.id), "--reason", "twice")
        assert again.exit_code == 1 and "cannot be revoked any more" in again.output

        kube.cluster_role_bindings["k8s-access-77"] = {
            "metadata": {"name": "k8s-access-77",
                         "labels": {"app.kubernetes.io/managed-by": "k8s-access-bot"},
                         "annotations": {"k8s-access-bot/request-id": "77"}},
            "roleRef": {"apiGroup": "rbac.authorization.k8s.io", "kind": "ClusterRole",
                        "name": "view"},
            "subjects": [{"kind": "User", "name": "mallory"}]}
        found = run(env, "grants", "reconcile")
        assert "found: dev k8s-access-77 (User mallory)" in found.output
        assert "1 stray; run with --fix to remove them" in found.output
        assert run(env, "jobs", "run", "expire").stdout == "expire: 1 handled\n"
        assert "k8s-access-77" not in kube.cluster_role_bindings
        audit_lines = run(env, "audit", "export").stdout.splitlines()
        assert any('"actor": "cli:' in line and '"revoked"' in line for line in audit_lines)
        drop()
    finally:
        kube.stop()
