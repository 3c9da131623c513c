"""The real ``k8s-access-bot serve`` process: it starts, answers Slack over HTTP and through
Socket Mode, reports health, readiness and metrics, and stops cleanly on SIGTERM."""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import time
import urllib.request
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest
import yaml
from sqlalchemy import Engine

from bot.adapters.db import migrate
from bot.adapters.db.engine import make_engine
from bot.fakes.kubernetes import FakeKubernetes
from bot.fakes.slack import APP_TOKEN, BOT_TOKEN, SIGNING_SECRET, FakeSlack, signed_headers
from bot.fakes.socket_mode import FakeSocketMode
from bot.serve import WORKER_NICENESS
from tests.conftest import ON_POSTGRES
from tests.scenario.conftest import command_body, wait_for

BIN = Path(sys.executable).parent


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


@contextmanager
def bot(tmp_path: Path, slack: FakeSlack, *args: str,
        approvers_channel: str | None = None, database: str | None = None,
        env: dict[str, str] | None = None) -> Iterator[tuple[str, FakeKubernetes, int]]:
    """``serve ARGS`` over a fresh SQLite file (or ``database``, migrated) and one rbac cluster
    on a local API server; yields its base URL, the cluster and its process ID once it answers
    /healthz, and checks it stops cleanly."""
    kube = FakeKubernetes(tmp_path).start()
    kube.allow_bot("bot")
    config = tmp_path / "k8s-access.yaml"
    defaults = {"approvers_channel": approvers_channel} if approvers_channel else {}
    config.write_text(yaml.safe_dump({"defaults": defaults, "clusters": {"dev": {
        "backend": "rbac", "approvers": ["U0BOB0002"],
        "kubernetes": {"server": kube.url, "kubeconfig": str(kube.kubeconfig("bot", "bot"))},
        "roles": {"view": {"cluster_role": "view", "auto_approve_up_to": "1h",
                           "require_reason": False}}}}}))
    if database is None:
        database = f"sqlite:///{tmp_path / 'bot.db'}"
        migrate.upgrade(make_engine(database))
    port = free_port()
    environment = {**os.environ, "SLACK_BOT_TOKEN": BOT_TOKEN,
                   "SLACK_SIGNING_SECRET": SIGNING_SECRET, "SLACK_APP_TOKEN": APP_TOKEN,
                   "SLACK_API_URL": slack.api_url, "DATABASE_URL": database,
                   "K8S_ACCESS_CONFIG": str(config), "LOG_FORMAT": "json", **(env or {})}
    process = subprocess.Popen([str(BIN / "k8s-access-bot"), "serve", *args, "--host",
                                "127.0.0.1", "--port", str(port)], env=environment,
                               stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    base = f"http://127.0.0.1:{port}"

    def up() -> bool:
        try:
            return urllib.request.urlopen(base + "/healthz", timeout=1).status == 200
        except OSError:
            assert process.poll() is None, process.stdout.read() if process.stdout else ""
            return False

    try:
        wait_for(up, timeout=30)
        yield base, kube, process.pid
    finally:
        process.send_signal(signal.SIGTERM)
        try:
            output, _ = process.communicate(timeout=30)
        except subprocess.TimeoutExpired:
            process.kill()  # its worker ends with it: its stdin closes
            output = process.communicate()[0] + "\n(killed: serve did not stop on SIGTERM)"
        kube.stop()
    assert process.returncode == 0, output
    for secret in (BOT_TOKEN, APP_TOKEN, SIGNING_SECRET):
        assert secret not in output
    # A quiet start: no warning from Bolt about the token we gave it twice, and no Alembic
    # lines each time /readyz asks for the revision.
    assert "will be unused" not in output, output
    assert "alembic" not in output, output


def test_serve_answers_slack_and_its_probes(tmp_path: Path) -> None:
    slack = FakeSlack(users={"U0ALICE01": {"email": "alice@example.com"}}).start()
    try:
        with bot(tmp_path, slack, "--http") as (base, _, _):
            assert urllib.request.urlopen(base + "/readyz", timeout=5).status == 200
            url = slack.response_url()
            body = command_body(slack, "U0ALICE01", "clusters", url)
            request = urllib.request.Request(base + "/slack/events", data=body.encode(),
                                             headers=signed_headers(body), method="POST")
            assert urllib.request.urlopen(request, timeout=5).status == 200
            # The worker takes only the CPU serve leaves: on a busy machine it answers late.
            answer = wait_for(lambda: slack.responses_to(url), timeout=30)[0]
            assert "*dev* (rbac)" in answer["text"]
            time.sleep(0.2)
            metrics = urllib.request.urlopen(base + "/metrics", timeout=5).read().decode()
            assert "k8s_access_job_runs_total" in metrics
    finally:
        slack.stop()


def test_serve_in_socket_mode(tmp_path: Path) -> None:
    socket_mode = FakeSocketMode()
    slack = FakeSlack(users={"U0ALICE01": {"email": "alice@example.com"}},
                      socket_url=socket_mode.url).start()
    try:
        with bot(tmp_path, slack, "--socket-mode") as (_, kube, _):
            assert socket_mode.connected.wait(30), "the bot never opened its Socket Mode link"
            url = slack.response_url()
            envelope = socket_mode.push("slash_commands", {
                "command": "/k8s-access", "text": "request dev view 30m",
                "user_id": "U0ALICE01", "team_id": "T0TEAM", "channel_id": "C0GENERAL",
                "response_url": url, "trigger_id": "t"})
            wait_for(lambda: socket_mode.acked(envelope), timeout=10)
            answer = wait_for(lambda: slack.responses_to(url), timeout=30)[0]
            assert "Active until" in answer["text"]
            assert "k8s-access-1" in kube.cluster_role_bindings
    finally:
        socket_mode.stop()
        slack.stop()


def workers_of(serve: int) -> dict[int, bytes]:
    """The workers ``serve`` started: process ID → command line."""
    found = {}
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            fields = stat.read_text().rsplit(")", 1)[1].split()
            cmdline = (stat.parent / "cmdline").read_bytes()
        except OSError:
            continue
        if int(fields[1]) == serve and b"--wake-on-stdin" in cmdline:
            found[int(stat.parent.name)] = cmdline
    return found


def niceness(pid: int) -> int:
    return os.getpriority(os.PRIO_PROCESS, pid)


def worker_of(serve: int) -> int:
    """The process ID of the worker ``serve`` started."""
    found = workers_of(serve)
    assert found, "serve has no worker"
    return min(found)


def test_a_killed_worker_is_restarted_and_nothing_acknowledged_is_lost(tmp_path: Path) -> None:
    slack = FakeSlack(users={"U0ALICE01": {"email": "alice@example.com"}}).start()
    try:
        with bot(tmp_path, slack, "--http") as (base, _, serve):
            first = wait_for(lambda: worker_of(serve), timeout=10)
            # It runs at a lower priority than the acknowledgements.
            wait_for(lambda: niceness(first) == min(19, niceness(serve) + WORKER_NICENESS),
                     timeout=20)
            os.kill(first, signal.SIGKILL)
            url = slack.response_url()
            body = command_body(slack, "U0ALICE01", "clusters", url)
            request = urllib.request.Request(base + "/slack/events", data=body.encode(),
                                             headers=signed_headers(body), method="POST")
            assert urllib.request.urlopen(request, timeout=5).status == 200  # while it is down
            answer = wait_for(lambda: slack.responses_to(url), timeout=30)[0]
            assert "*dev* (rbac)" in answer["text"]
            assert worker_of(serve) != first
            assert urllib.request.urlopen(base + "/readyz", timeout=5).status == 200
    finally:
        slack.stop()


@pytest.mark.skipif(not ON_POSTGRES, reason="needs the PostgreSQL server")
def test_on_postgresql_serve_runs_several_workers_and_each_request_once(
        tmp_path: Path, engine: Engine) -> None:
    """WORKER_PROCESSES workers share the inbox; only the first runs the jobs; one killed is
    restarted, and every request is answered once, whichever worker took it."""
    slack = FakeSlack(users={"U0ALICE01": {"email": "alice@example.com"}}).start()
    url = engine.url.render_as_string(hide_password=False)
    try:
        with bot(tmp_path, slack, "--http", database=url,
                 env={"WORKER_PROCESSES": "3"}) as (base, _, serve):
            workers = wait_for(lambda: len(workers_of(serve)) == 3 and workers_of(serve),
                               timeout=20)
            assert sorted(b"--jobs" in cmdline.split(b"\0") for cmdline in workers.values()) \
                == [False, False, True]
            os.kill(min(workers), signal.SIGKILL)
            urls = [slack.response_url() for _ in range(12)]
            for response_url in urls:
                body = command_body(slack, "U0ALICE01", "clusters", response_url)
                request = urllib.request.Request(base + "/slack/events", data=body.encode(),
                                                 headers=signed_headers(body), method="POST")
                assert urllib.request.urlopen(request, timeout=5).status == 200
            wait_for(lambda: all(slack.responses_to(u) for u in urls), timeout=30)
            wait_for(lambda: len(workers_of(serve)) == 3, timeout=20)
            time.sleep(1.5)  # a second answer would have arrived by now
            assert [len(slack.responses_to(u)) for u in urls] == [1] * 12
    finally:
        slack.stop()


def test_serve_on_sqlite_runs_one_worker(tmp_path: Path) -> None:
    slack = FakeSlack(users={"U0ALICE01": {"email": "alice@example.com"}}).start()
    try:
        with bot(tmp_path, slack, "--http", env={"WORKER_PROCESSES": "3"}) as (_, _, serve):
            wait_for(lambda: workers_of(serve), timeout=10)
            time.sleep(1)
            assert len(workers_of(serve)) == 1
    finally:
        slack.stop()


def test_serve_names_an_approvers_channel_it_cannot_post_to(tmp_path: Path) -> None:
    """Checked once at start: /readyz stays 200 but names the channel, /metrics counts it."""
    slack = FakeSlack(channels={"C0APPR001"},
                      channel_info={"C0APPR001": {"name": "k8s-approvals", "is_member": False}})
    slack.start()
    try:
        with bot(tmp_path, slack, "--http", approvers_channel="C0APPR001") as (base, _, _):
            def warned() -> dict[str, object]:
                with urllib.request.urlopen(base + "/readyz", timeout=5) as answer:
                    assert answer.status == 200
                    warnings: dict[str, object] = json.load(answer).get("warnings", {})
                    return warnings
            assert "/invite @k8s-access in #k8s-approvals" in str(
                wait_for(warned, timeout=10)["approvers_channel C0APPR001"])
            metrics = urllib.request.urlopen(base + "/metrics", timeout=5).read().decode()
            assert 'k8s_access_approvers_channel_ok{channel="C0APPR001"} 0.0' in metrics
    finally:
        slack.stop()
