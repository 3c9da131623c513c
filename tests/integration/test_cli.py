"""The command line against a real database file and config file."""

from __future__ import annotations

import gc
import re
from collections.abc import Iterator
from pathlib import Path

import pytest
import yaml
from click.testing import CliRunner, Result

from bot.cli import main
from bot.fakes.slack import BOT_TOKEN, SIGNING_SECRET
from tests.conftest import TEST_CONFIG, create_database
from tests.integration.test_first_contact import KUBECONFIG

SLACK = {"SLACK_BOT_TOKEN": BOT_TOKEN, "SLACK_SIGNING_SECRET": SIGNING_SECRET,
         "SLACK_API_URL": "http://127.0.0.1:9/api/"}
"""What ``serve --http`` needs; the Web API at a closed port, in case a command called it."""


@pytest.fixture
def env(tmp_path: Path) -> Iterator[dict[str, str]]:
    url, drop = create_database(tmp_path)
    kubeconfig = tmp_path / "kubeconfig"
    kubeconfig.write_text(yaml.safe_dump(KUBECONFIG))
    data = yaml.safe_load(yaml.safe_dump(TEST_CONFIG, sort_keys=False))
    for cluster in data["clusters"].values():
        cluster["kubernetes"]["kubeconfig"] = str(kubeconfig)
    config = tmp_path / "k8s-access.yaml"
    config.write_text(yaml.safe_dump(data, sort_keys=False))
    yield {"DATABASE_URL": url, "K8S_ACCESS_CONFIG": str(config), **SLACK}
    drop()


def run(env: dict[str, str], *args: str) -> Result:
    return CliRunner().invoke(main, list(args), env=env, catch_exceptions=False)


def test_db_upgrade_and_current(env: dict[str, str]) -> None:
    from bot.adapters.db import migrate
    from bot.adapters.db.connection import sqlite_path
    from bot.adapters.db.engine import make_engine

    before = run(env, "db", "current")
    assert before.exit_code != 0
    assert "run `k8s-access-bot db upgrade`" in before.output
    path = sqlite_path(env["DATABASE_URL"])
    assert path is None or not path.exists(), "db current created the SQLite file"
    upgraded = run(env, "db", "upgrade")
    assert upgraded.exit_code == 0, upgraded.output
    current = run(env, "db", "current")
    assert current.exit_code == 0 and current.output == f"{migrate.head()} (at head)\n"
    engine = make_engine(env["DATABASE_URL"])
    migrate.downgrade(engine, "0001")
    engine.dispose()
    behind = run(env, "db", "current")
    assert behind.exit_code == 1
    steps = migrate.behind("0001")
    assert steps is not None and steps >= 2
    assert f"is {steps} migrations behind (at 0001, this version needs {migrate.head()})" \
        in behind.output


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
    from bot.adapters.db.engine import make_engine
    from bot.app import build_context
    from bot.config import Settings, load_config
    from bot.fakes.kubernetes import FakeKubernetes
    from bot.services import access
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
        granted = access.file_request(ctx, "U0ALICE01", "dev", "view",
                                      duration=timedelta(hours=1))
        assert "k8s-access-1" in kube.cluster_role_bindings

        checked = run({**env, **SLACK}, "config", "check", "--connect")
        assert checked.exit_code == 1  # Slack is "down": SLACK_API_URL is a closed port
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
                         "labels": {"app.kubernetes.io/managed-by": "k8s-access-bot",
                                    "k8s-access-bot/installation": "default",
                                    "k8s-access-bot/cluster": "dev"},
                         "annotations": {"k8s-access-bot/request-id": "77"},
                         "creationTimestamp": "2026-01-01T00:00:00Z"},
            "roleRef": {"apiGroup": "rbac.authorization.k8s.io", "kind": "ClusterRole",
                        "name": "view"},
            "subjects": [{"kind": "User", "name": "mallory"}]}
        found = run(env, "grants", "reconcile")
        assert "found: dev k8s-access-77 (User mallory)" in found.output
        assert "1 stray; run with --fix to remove them" in found.output
        assert re.fullmatch(r"expire: 0 handled in \d+\.\d{3} s \(CPU \d+\.\d{3} s\)\n",
                            run(env, "jobs", "run", "expire").stdout)
        assert "k8s-access-77" in kube.cluster_role_bindings  # expire only expires
        assert run(env, "jobs", "run", "reconcile").stdout.startswith("reconcile: 1 handled in ")
        assert "k8s-access-77" not in kube.cluster_role_bindings
        audit_lines = run(env, "audit", "export").stdout.splitlines()
        assert any('"actor": "cli:' in line and '"revoked"' in line for line in audit_lines)
        drop()
    finally:
        kube.stop()


@pytest.mark.parametrize("args", [
    ("grants", "revoke", "99999999999999999999", "--reason", "typo"),
    ("grants", "revoke", "0", "--reason", "typo"),
    ("grants", "list", "--limit", "99999999999999999999"),
    ("grants", "list", "--limit", "-1"),
    ("serve", "--http", "--no-jobs", "--port", "99999999999999999999"),
])
def test_numbers_out_of_range_are_refused_before_they_reach_anything(
        env: dict[str, str], args: tuple[str, ...]) -> None:
    assert run(env, "db", "upgrade").exit_code == 0
    result = CliRunner().invoke(main, list(args), env=env)
    assert result.exit_code == 2 and isinstance(result.exception, SystemExit), result.output
    assert "is not in the range" in result.output
    assert "database" not in result.output


@pytest.mark.parametrize("since", ["0001-01-01T00:00:00+01:00", "9999-12-31T23:59:59-01:00"])
def test_an_audit_start_past_the_calendar_is_the_typists_not_the_databases(
        env: dict[str, str], since: str) -> None:
    assert run(env, "db", "upgrade").exit_code == 0
    result = run(env, "audit", "export", "--since", since)
    assert result.exit_code == 1
    assert f"error: '{since}' is out of range" in result.output
    assert "database" not in result.output


def test_jobs_run_stream_leaves_standard_output_to_a_stdout_sink(
        env: dict[str, str]) -> None:
    """A log shipper reads every line of standard output as an event: the pass's summary goes
    to standard error instead."""
    import json

    from bot.adapters.db import migrate
    from bot.adapters.db.engine import make_engine
    from bot.app import build_context
    from bot.config import Settings, load_config
    from bot.services.context import audit

    config_path = Path(env["K8S_ACCESS_CONFIG"])
    data = yaml.safe_load(config_path.read_text())
    config_path.write_text(yaml.safe_dump({**data, "audit_sinks": [{"type": "stdout"}]}))
    migrate.upgrade(make_engine(env["DATABASE_URL"]))
    ctx = build_context(Settings(database_url=env["DATABASE_URL"]), load_config(config_path),
                        granters={})
    with ctx.transaction() as uow:
        audit(uow.audit, ctx.clock(), "U0ADMIN05", "stray removed", None, note="Grüße")
    gc.unfreeze()
    try:
        result = CliRunner().invoke(main, ["jobs", "run", "stream"], env=env,
                                    catch_exceptions=False)
        # what the start-up made is left out of the pass's garbage collections
        assert gc.get_freeze_count() > 0
    finally:
        gc.unfreeze()
    assert result.exit_code == 0, result.output
    events = [json.loads(line) for line in result.stdout.splitlines()]
    assert [(e["type"], e["data"]["details"]) for e in events] == [
        ("com.k8s-access-bot.stray-removed", {"note": "Grüße"})]
    assert re.search(r"(^|\n)stream: 1 handled in \d+\.\d{3} s \(CPU \d+\.\d{3} s\)\n$",
                     result.stderr), result.stderr


@pytest.mark.parametrize("args", [
    ("audit", "export", "--attestations", "--since", "7d", "--since=2026-01-01"),
    ("audit", "export", "--format", "csv", "--format", "jsonl"),
    ("grants", "revoke", "1", "--reason", "left", "--reason", "moved on"),
    ("db", "upgrade", "--revision", "head", "--revision", "0001"),
])
def test_an_option_given_twice_is_refused_and_nothing_runs(env: dict[str, str],
                                                            args: tuple[str, ...]) -> None:
    result = run(env, *args)
    assert result.exit_code == 2, result.output
    assert "is given twice: give it once." in result.output
    assert "Traceback" not in result.output


def test_jobs_run_names_each_job_in_its_help() -> None:
    result = CliRunner().invoke(main, ["jobs", "run", "--help"])
    assert "jobs run [OPTIONS] JOB\n" in result.output
    assert "escalate, expire, reconcile, remind, retry, stream or\n  timeout" in result.output
