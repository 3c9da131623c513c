"""The mistakes people make in their first hour, one row each: every one ends in a clear line
naming what is wrong and the fix, with a non-zero exit code, and never in a traceback."""

from __future__ import annotations

import os
import subprocess
import sys
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path

import pytest
import yaml
from click.testing import CliRunner
from sqlalchemy.engine import make_url

from bot.adapters.db import migrate
from bot.adapters.db.engine import make_engine
from bot.cli import main
from bot.fakes.slack import APP_TOKEN, BOT_TOKEN, SIGNING_SECRET, FakeSlack
from bot.fakes.socket_mode import FakeSocketMode
from tests.conftest import BASE_URL, ON_POSTGRES, create_database

BIN = Path(sys.executable).parent / "k8s-access-bot"
KUBECONFIG = {
    "apiVersion": "v1", "kind": "Config", "current-context": "bot",
    "clusters": [{"name": "dev", "cluster": {"server": "https://127.0.0.1:9"}}],
    "users": [{"name": "bot", "user": {"token": "not-a-real-token"}}],
    "contexts": [{"name": "bot", "context": {"cluster": "dev", "user": "bot"}}],
}


def cluster(kubeconfig: str, **extra: object) -> dict[str, object]:
    return {"backend": "rbac", "approvers": ["U0BOB0002"],
            "kubernetes": {"server": "https://127.0.0.1:9", "kubeconfig": kubeconfig},
            "roles": {"view": {"cluster_role": "view"}}, **extra}


@dataclass
class Setup:
    tmp: Path
    slack: FakeSlack
    env: dict[str, str] = field(default_factory=dict)
    cleanups: list[Callable[[], None]] = field(default_factory=list)

    @property
    def config(self) -> Path:
        return Path(self.env["K8S_ACCESS_CONFIG"])


@pytest.fixture
def setup(tmp_path: Path) -> Iterator[Setup]:
    """A valid file, a migrated database and a Slack that knows the tokens: each row spoils
    one thing."""
    socket_mode = FakeSocketMode()
    slack = FakeSlack(socket_url=socket_mode.url).start()
    kubeconfig = tmp_path / "kubeconfig"
    kubeconfig.write_text(yaml.safe_dump(KUBECONFIG))
    config = tmp_path / "k8s-access.yaml"
    config.write_text(yaml.safe_dump({"clusters": {"dev": cluster(str(kubeconfig))}}))
    url, drop = create_database(tmp_path)
    engine = make_engine(url)
    migrate.upgrade(engine)
    engine.dispose()
    env = {"DATABASE_URL": url, "K8S_ACCESS_CONFIG": str(config), "SLACK_BOT_TOKEN": BOT_TOKEN,
           "SLACK_APP_TOKEN": APP_TOKEN, "SLACK_SIGNING_SECRET": SIGNING_SECRET,
           "SLACK_API_URL": slack.api_url, "LOG_FORMAT": "console"}
    made = Setup(tmp_path, slack, env, [drop])
    try:
        yield made
    finally:
        slack.stop()
        socket_mode.stop()
        for cleanup in made.cleanups:
            cleanup()


def cli(env: dict[str, str], *args: str) -> tuple[int, str]:
    """The command in this process (click's runner): its exit code and everything it printed."""
    unset: dict[str, str | None] = {name: None for name in (
        "SLACK_BOT_TOKEN", "SLACK_APP_TOKEN", "SLACK_SIGNING_SECRET", "GITLAB_URL",
        "GITLAB_TOKEN", "DATABASE_URL", "K8S_ACCESS_CONFIG")}
    result = CliRunner().invoke(main, list(args), env={**unset, **env}, catch_exceptions=False)
    return result.exit_code, result.output


def process(env: dict[str, str], *args: str) -> tuple[int, str]:
    """The installed ``k8s-access-bot`` as a separate process (for ``serve``)."""
    clean = {k: v for k, v in os.environ.items()
             if not k.startswith(("SLACK_", "DATABASE_URL", "K8S_ACCESS", "GITLAB_"))}
    done = subprocess.run([str(BIN), *args], env={**clean, **env}, capture_output=True,
                          text=True, timeout=60)
    return done.returncode, done.stdout + done.stderr


def postgres(**parts: str) -> str:
    """The test server's URL with ``parts`` (username, database) changed."""
    return make_url(BASE_URL).set(**parts).render_as_string(hide_password=False)  # type: ignore[arg-type]


def spoil_config(text: str):  # type: ignore[no-untyped-def]
    def apply(s: Setup) -> None:
        s.config.write_text(text)
    return apply


def unmigrated(s: Setup) -> None:
    url, drop = create_database(s.tmp)
    s.cleanups.append(drop)
    s.env["DATABASE_URL"] = url


@dataclass(frozen=True)
class Mistake:
    name: str
    env: dict[str, str | None]
    args: tuple[str, ...]
    says: str
    code: int = 2
    postgres_only: bool = False
    spoil: object = None

    def __str__(self) -> str:
        return self.name


UNWRITABLE = "/sys" if os.path.isdir("/sys") else "/proc"

MISTAKES = [
    Mistake("postgres:// is PostgreSQL", {"DATABASE_URL": "postgres://bot:s3cret@127.0.0.1:1/k8s"},
            ("db", "upgrade"),
            "cannot reach the database at postgresql+psycopg://bot:***@127.0.0.1:1/k8s "
            "(Connection refused): is PostgreSQL running there"),
    Mistake("an unknown scheme", {"DATABASE_URL": "mysql://bot:s3cret@db/k8s"}, ("db", "upgrade"),
            "DATABASE_URL: 'mysql://' is not a database this bot supports: use "
            "postgresql://USER:PASSWORD@HOST:5432/DATABASE (PostgreSQL) or sqlite:///PATH"),
    Mistake("not a URL", {"DATABASE_URL": "k8s-access.db"}, ("grants", "list"),
            "DATABASE_URL: is not a database URL: write postgresql://"),
    Mistake("an @ in the password", {"DATABASE_URL": "postgresql://bot:p@ss@db/k8s"},
            ("db", "upgrade"), "DATABASE_URL: has an @ in its user or password: write "
            "postgresql://USER:PASSWORD@HOST:5432/DATABASE, with @ : / in the user or password "
            "written as %40 %3A %2F"),
    Mistake("a port that is not a number", {"DATABASE_URL": "postgresql://bot@db:port/k8s"},
            ("db", "current"), "DATABASE_URL: has a port that is not a number"),
    Mistake("a port out of range", {"DATABASE_URL": "postgresql://bot@db:99999/k8s"},
            ("db", "current"), "DATABASE_URL: has a port that is not a number from 0 to 65535"),
    Mistake("an unreachable host", {"DATABASE_URL": "postgresql://bot@127.0.0.1:1/k8s"},
            ("grants", "list"), "cannot reach the database at postgresql+psycopg://bot@127.0.0.1:1/k8s"),
    Mistake("wrong credentials", {"DATABASE_URL": "@nobody"}, ("db", "upgrade"),
            "the database server refused the login for", postgres_only=True),
    Mistake("a missing database", {"DATABASE_URL": "@no_such_database"}, ("db", "upgrade"),
            "there is no database 'k8sab_no_such_database' on the server", postgres_only=True),
    Mistake("a SQLite folder that does not exist",
            {"DATABASE_URL": "sqlite:////nonexistent/folder/k8s-access.db"}, ("db", "upgrade"),
            "cannot open the SQLite file /nonexistent/folder/k8s-access.db: its folder "
            "/nonexistent/folder does not exist"),
    Mistake("a read-only SQLite path", {"DATABASE_URL": f"sqlite:///{UNWRITABLE}/k8s-access.db"},
            ("db", "upgrade"), f"cannot open the SQLite file {UNWRITABLE}/k8s-access.db: the bot "
            f"cannot write in {UNWRITABLE}"),
    Mistake("grants list on a database never migrated", {}, ("grants", "list"),
            "is not migrated (no tables yet): run `k8s-access-bot db upgrade`",
            spoil=unmigrated),
    Mistake("serve on a database never migrated", {}, ("serve", "--http"),
            "is not migrated (no tables yet): run `k8s-access-bot db upgrade`",
            spoil=unmigrated),
    Mistake("a refused bot token", {"SLACK_BOT_TOKEN": "xoxb-revoked-0000"}, ("serve", "--http"),
            "Slack refused SLACK_BOT_TOKEN (invalid_auth): copy the Bot User OAuth Token"),
    Mistake("a refused app token", {"SLACK_APP_TOKEN": "xapp-revoked-0000"},
            ("serve", "--socket-mode"), "Slack refused SLACK_APP_TOKEN (invalid_auth): create "
            "an app-level token (xapp-…) with the connections:write scope"),
    Mistake("the app token as bot token", {"SLACK_BOT_TOKEN": APP_TOKEN}, ("serve", "--http"),
            "SLACK_BOT_TOKEN: is an app-level token (swapped with SLACK_APP_TOKEN?), not the "
            "bot token"),
    Mistake("the bot token as app token", {"SLACK_APP_TOKEN": BOT_TOKEN},
            ("serve", "--socket-mode"),
            "SLACK_APP_TOKEN: is a bot token (swapped with SLACK_BOT_TOKEN?), not an app-level "
            "token"),
    Mistake("a user token as bot token", {"SLACK_BOT_TOKEN": "xoxp-1-2-3"}, ("serve", "--http"),
            "SLACK_BOT_TOKEN: is a user token, not the bot token"),
    Mistake("Socket Mode without an app token", {"SLACK_APP_TOKEN": None},
            ("serve", "--socket-mode"), "SLACK_APP_TOKEN: not set: Socket Mode needs an "
            "app-level token"),
    Mistake("HTTP mode without a signing secret",
            {"SLACK_APP_TOKEN": None, "SLACK_SIGNING_SECRET": None}, ("serve",),
            "SLACK_SIGNING_SECRET: not set: HTTP mode verifies every request with it"),
    Mistake("no bot token", {"SLACK_BOT_TOKEN": None}, ("config", "check"),
            "SLACK_BOT_TOKEN: not set: copy the Bot User OAuth Token (xoxb-…)"),
    Mistake("a token with a line break", {"SLACK_BOT_TOKEN": BOT_TOKEN + "\n"},
            ("config", "check"), "SLACK_BOT_TOKEN: has a space or a line break around it"),
    Mistake("a log level that is not one", {"LOG_LEVEL": "LOUD"}, ("config", "check"),
            "LOG_LEVEL: 'LOUD' is not a log level: write DEBUG, INFO, WARNING, ERROR or CRITICAL"),
    Mistake("a log level serve cannot use", {"LOG_LEVEL": "verbose"}, ("serve", "--http"),
            "LOG_LEVEL: 'verbose' is not a log level"),
    Mistake("a Slack API URL that is not one", {"SLACK_API_URL": "slack.example.com/api/"},
            ("serve", "--http"), "SLACK_API_URL: 'slack.example.com/api/' is not a URL: write "
            "it as https://…"),
    Mistake("a GitLab URL without its scheme", {"GITLAB_URL": "gitlab.example.com"},
            ("config", "check"), "GITLAB_URL: 'gitlab.example.com' is not a URL"),
    Mistake("a test DM to a name", {}, ("config", "check", "--send-test", "@alice"),
            "--send-test '@alice' is not a Slack member ID: give one like U0123ABCD"),
    Mistake("a kubeconfig that is not one", {}, ("config", "check"),
            ".yaml: clusters.dev: cluster dev: cannot load kubeconfig",
            spoil=lambda s: (s.tmp / "kubeconfig").write_text("just: [text\n")),
    Mistake("a missing config file", {"K8S_ACCESS_CONFIG": "/nonexistent/k8s-access.yaml"},
            ("config", "check"), "/nonexistent/k8s-access.yaml: no such file. Set "
            "K8S_ACCESS_CONFIG, or start from examples/quickstart.yaml"),
    Mistake("a config file that is not YAML", {}, ("serve", "--http"),
            "line 2, column 3: not valid YAML", spoil=spoil_config("clusters: {\n  - [\n")),
    Mistake("a config folder", {"K8S_ACCESS_CONFIG": "/tmp"}, ("config", "check"),
            "/tmp: is a folder, not a file"),
]


@pytest.mark.parametrize("mistake", MISTAKES, ids=str)
def test_each_first_contact_mistake_is_one_clear_line(setup: Setup, mistake: Mistake) -> None:
    if mistake.postgres_only and not ON_POSTGRES:
        pytest.skip("needs the PostgreSQL server (DATABASE_URL=postgresql://…)")
    for name, value in mistake.env.items():
        if value is None:
            setup.env.pop(name, None)
        elif value.startswith("@"):  # a spoiled part of the test server's URL
            part = value[1:]
            setup.env[name] = postgres(username=part) if part == "nobody" \
                else postgres(database=f"k8sab_{part}")
        else:
            setup.env[name] = value
    if callable(mistake.spoil):
        mistake.spoil(setup)
    run = process if mistake.args[0] == "serve" else cli
    code, output = run(setup.env, *mistake.args)
    assert mistake.says in output, output
    assert code == mistake.code, output
    assert "Traceback" not in output and "sqlalchemy" not in output.lower(), output
    assert "s3cret" not in output and BOT_TOKEN not in output and APP_TOKEN not in output
    lines = output.strip().splitlines()
    if lines[0].startswith("configuration: "):  # the file and the environment: one a problem
        assert lines[0] == f"configuration: {len(lines) - 1} problem" \
            f"{'s' if len(lines) > 2 else ''}:" and all(line.startswith("  ") for line in lines[1:])
    else:
        assert len(lines) == 1 and lines[0].startswith("error: "), output
    if mistake.args[0] == "serve":  # nothing else was started: no worker, no listener
        assert "serving" not in output and "working" not in output, output


def test_a_database_that_never_was_is_not_created(setup: Setup) -> None:
    missing = setup.tmp / "typo.db"
    code, output = cli({**setup.env, "DATABASE_URL": f"sqlite:///{missing}"}, "db", "current")
    assert code == 2 and f"there is no SQLite file {missing}" in output
    assert not missing.exists()
    code, output = cli({**setup.env, "DATABASE_URL": f"sqlite:///{missing}"}, "grants", "list")
    assert code == 2 and "is not migrated" in output
    assert not missing.exists()  # a command that needs the tables creates no empty file either


@pytest.mark.skipif(not ON_POSTGRES, reason="needs the PostgreSQL server")
def test_postgres_scheme_is_accepted(setup: Setup) -> None:
    spelled = setup.env["DATABASE_URL"].replace("postgresql+psycopg://", "postgres://", 1)
    code, output = cli({**setup.env, "DATABASE_URL": spelled}, "db", "current")
    assert code == 0 and "(at head)" in output, output


def test_a_config_path_with_a_tilde_is_in_home(setup: Setup,
                                               monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("HOME", str(setup.config.parent))
    code, output = cli({**setup.env, "K8S_ACCESS_CONFIG": f"~/{setup.config.name}"},
                       "config", "check")
    assert code == 0 and f"{setup.config}: ok" in output, output


def test_version() -> None:
    from importlib.metadata import version

    code, output = cli({}, "--version")
    assert code == 0 and output == f"k8s-access-bot {version('k8s-access-bot')}\n"


def test_database_commands_need_no_config_file(setup: Setup) -> None:
    env = {**setup.env, "K8S_ACCESS_CONFIG": str(setup.tmp / "absent.yaml")}
    code, output = cli(env, "grants", "list")
    assert code == 0 and output.startswith("    ID  STATE"), output
    code, output = cli(env, "audit", "export", "--format", "csv")
    assert code == 0 and output == "id,at,actor,action,request_id,details\n", output
    code, output = cli(env, "jobs", "run", "expire")  # this one needs the clusters
    assert code == 2 and "absent.yaml: no such file" in output


def test_metrics_answer_while_the_database_is_not_migrated(setup: Setup) -> None:
    from bot.adapters.web import WebApp
    from bot.app import build_metrics

    unmigrated(setup)
    engine = make_engine(setup.env["DATABASE_URL"])
    web = WebApp(None, lambda: {}, build_metrics(engine).render)
    statuses: list[str] = []
    body = b"".join(web({"PATH_INFO": "/metrics", "REQUEST_METHOD": "GET"},
                        lambda status, headers: statuses.append(status)))  # type: ignore[arg-type,return-value]
    assert statuses == ["200 OK"]
    assert b"k8s_access_database_up 0.0" in body
    migrate.upgrade(engine)
    body = b"".join(web({"PATH_INFO": "/metrics", "REQUEST_METHOD": "GET"},
                        lambda status, headers: None))  # type: ignore[arg-type,return-value]
    assert b"k8s_access_database_up 1.0" in body
    engine.dispose()


SEVERAL_MISTAKES = """\
defaults:
  approvers_channel: #k8s-approvals
clusters:
  dev:
    backend: rbac
    approvers:
      - U0BOB0002
      - #platform-leads
    approvers_channel: "#k8s-approvals"
    kubernetes:
      server: https://127.0.0.1:9
      kubeconfig: ~/no-such-folder/kubeconfig
    roles:
      view: {cluster_role: view}
  code:
    backend: gitlab
    approvers: [U0BOB0002]
    gitlab: {agent_id: 42, kas_proxy_url: "https://kas.example/k8s-proxy"}
    roles:
      dev: {group: platform/dev}
"""


def test_config_check_lists_every_problem_with_file_field_value_and_fix(setup: Setup) -> None:
    """What ``serve`` refuses, ``config check`` finds, all at once; and both say the same."""
    setup.config.write_text(SEVERAL_MISTAKES)
    env = {k: v for k, v in setup.env.items() if k != "SLACK_SIGNING_SECRET"}
    env["SLACK_APP_TOKEN"] = BOT_TOKEN
    code, output = cli(env, "config", "check")
    where = str(setup.config)
    home = Path("~/no-such-folder/kubeconfig").expanduser()
    comment = ("YAML reads an unquoted value starting with # as a comment, so this is empty: "
               "quote it, and write Slack IDs (C…, U…, S…) rather than names")
    assert output.splitlines() == [
        "configuration: 7 problems:",
        f"  {where}: defaults.approvers_channel = #k8s-approvals: {comment}",
        f"  {where}: clusters.dev.approvers.1 = #platform-leads: {comment}",
        f"  {where}: clusters.dev.approvers_channel = #k8s-approvals: not a Slack channel ID: "
        "write the channel's ID (C…), not its name; it is at the bottom of the channel's "
        "details (click its name, then About)",
        f"  {where}: clusters.dev.kubernetes.kubeconfig = ~/no-such-folder/kubeconfig: no such "
        f"file ({home}); give the path of the file as the bot sees it (in a pod: where its "
        "Secret is mounted)",
        "  environment: GITLAB_URL: cluster code uses backend gitlab: set GITLAB_URL to your "
        "GitLab (https://gitlab.example.com), or gitlab.url in the file",
        "  environment: GITLAB_TOKEN: cluster code uses backend gitlab: set GITLAB_TOKEN to a "
        "token with the api scope whose user is Owner of each configured group",
        "  environment: SLACK_APP_TOKEN: is a bot token (swapped with SLACK_BOT_TOKEN?), not an "
        "app-level token: create one (xapp-…) with the connections:write scope on your Slack "
        "app's Basic Information page",
    ]
    assert code == 2
    served_code, served = process(env, "serve")
    assert served_code == 2
    assert served.splitlines()[-8:] == output.splitlines(), served


@pytest.mark.parametrize(("example", "placeholders"), [
    ("examples/quickstart.yaml", {"admins.0": "U0YOURSLACKID",
                                  "clusters.dev.approvers.0": "U0COLLEAGUE1"}),
    ("deploy/base/k8s-access.yaml", {
        "admins.0": "U0CHANGEME1", "clusters.main.approvers.0": "U0CHANGEME2",
        "clusters.main.description": "CHANGE-ME, client certificates",
        "clusters.main.kubernetes.server": "https://CHANGE-ME.example.com:6443"}),
])
def test_an_example_copied_unchanged_names_each_placeholder(
        setup: Setup, example: str, placeholders: dict[str, str]) -> None:
    """A copied example still holding its placeholders does not pass for a working file:
    the admin and approver IDs it names are nobody, and its server is not yours."""
    setup.config.write_text((Path(__file__).resolve().parents[2] / example).read_text())
    fix = ("a placeholder from the example: replace it with your own value (Slack IDs: a "
           "profile's ⋮ → Copy member ID, a channel's details)")
    code, output = cli(setup.env, "config", "check")
    for field_, value in placeholders.items():
        assert f"  {setup.config}: {field_} = {value}: {fix}" in output.splitlines(), output
    assert code == 2
    served_code, served = process(setup.env, "serve")
    assert served_code == 2 and output.splitlines()[0] in served, served


def test_in_cluster_credentials_outside_a_pod_say_where_to_check(setup: Setup) -> None:
    """deploy/base/k8s-access.yaml checked on a workstation, as its README step says."""
    setup.config.write_text(yaml.safe_dump({"clusters": {"dev": cluster(
        "", kubernetes={"server": "https://127.0.0.1:9", "in_cluster": True})}}))
    code, output = process(setup.env, "config", "check")  # here, as on a workstation
    assert output.splitlines()[-1] == (
        f"  {setup.config}: clusters.dev: cluster dev: cannot load the in-cluster service "
        "account: Service host/port is not set; in_cluster: true works only inside a pod: run "
        "the check there (kubectl -n k8s-access exec deploy/k8s-access-bot -- k8s-access-bot "
        "config check)")
    assert code == 2


def test_a_port_in_use_is_one_line(setup: Setup) -> None:
    import socket

    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        code, output = process(setup.env, "serve", "--http", "--host", "127.0.0.1",
                               "--port", str(port))
    assert code == 2, output
    assert output.strip().splitlines() == [
        f"error: cannot listen on 127.0.0.1:{port} (Address already in use): is another serve "
        "running? Stop it, or choose another --port"], output
