"""The quick start as a newcomer follows it: the example files through the real parser, the
README's first request through the use cases, and the README's commands as it types them.

The person setting up is the file's admin, alone: every role of every example must be
grantable without anybody approving their own request, and the request the README suggests
first must become active with nobody else around.
"""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

import pytest
from sqlalchemy import Engine

from bot.adapters.slack.commands import parse
from bot.app import build_context
from bot.config import Config, Settings, load_config
from bot.domain.errors import NotAuthorized
from bot.domain.model import State
from bot.services import access
from bot.services.context import Context
from tests.fakes.ports import FakeClock, InMemoryGranter, RecordingNotifier, StaticDirectory

ROOT = Path(__file__).resolve().parents[2]
QUICKSTART = ROOT / "examples" / "quickstart.yaml"
EXAMPLES = [QUICKSTART, ROOT / "examples" / "k8s-access.yaml"]
GROUP_MEMBER = "U0GROUPMATE1"
"""Someone in each approvers user group besides the admin (who is in them too)."""


def readme_section(title: str) -> str:
    readme = (ROOT / "README.md").read_text()
    match = re.search(rf"^## {re.escape(title)}\n(.*?)(?=^## )", readme, re.S | re.M)
    assert match is not None, f"README has no section '{title}'"
    return match.group(1)


def context_for(engine: Engine, config: Config) -> Context:
    people = set(config.file.admins) | {GROUP_MEMBER}
    for policy in config.policies.values():
        people |= policy.approvers
    groups = {g: set(config.file.admins) | {GROUP_MEMBER} for g in people if g.startswith("S")}
    directory = StaticDirectory(emails={p: f"{p.lower()}@example.com" for p in people},
                                groups=groups)
    return build_context(Settings(), config, engine=engine,
                         granters={name: InMemoryGranter() for name in config.clusters},
                         notifier=RecordingNotifier(), directory=directory, clock=FakeClock())


def approvers_besides(config: Config, cluster: str, role: str, requester: str) -> list[str]:
    """The people who may approve, as the directory resolves user groups, minus the asker."""
    people: list[str] = []
    for approver in sorted(config.policy(cluster, role).approvers):
        members = [approver] if not approver.startswith("S") else \
            sorted(set(config.file.admins) | {GROUP_MEMBER})
        people += [p for p in members if p != requester and p not in people]
    return people


@pytest.mark.parametrize("example", EXAMPLES, ids=lambda p: p.name)
def test_every_role_can_be_granted_to_the_admin_without_self_approval(
        engine: Engine, example: Path) -> None:
    config = load_config(example)
    ctx = context_for(engine, config)
    admin = config.file.admins[0]
    for cluster, role in config.policies:
        policy = config.policy(cluster, role)
        request = access.file_request(
            ctx, admin, cluster, role, duration=policy.default_duration,
            reason="first try", namespace=(policy.namespaces or (None,))[0],
            break_glass=policy.break_glass and not policy.approvers)
        assert request.id is not None
        if request.state is State.PENDING:
            with pytest.raises(NotAuthorized):
                access.approve(ctx, request.id, admin)
        for approver in approvers_besides(config, cluster, role, admin):
            if request.state is not State.PENDING:
                break
            request = access.approve(ctx, request.id, approver)
        assert request.state is State.ACTIVE, (
            f"{example.name}: {cluster}/{role} asked by the admin {admin} stays "
            f"{request.state.value}: nobody else may approve it")


def test_the_readme_first_request_is_granted_to_the_person_alone(engine: Engine) -> None:
    quick_start = readme_section("Five-minute quick start")
    assert "examples/quickstart.yaml" in quick_start
    typed = re.findall(r"`/k8s-access (request [^`]+)`", quick_start)
    assert typed, "the quick start suggests no first request"
    command = parse(typed[0])
    config = load_config(QUICKSTART)
    # The same suggestion stands in the file, beside the role to try first.
    assert f"/k8s-access {typed[0]}" in QUICKSTART.read_text()
    ctx = context_for(engine, config)
    person = config.file.admins[0]
    assert command.cluster is not None and command.role is not None
    request = access.file_request(ctx, person, command.cluster, command.role,
                                  duration=command.duration, reason=command.text,
                                  namespace=command.namespace)
    assert request.state is State.ACTIVE
    assert request.id is not None
    granter = ctx.granter(command.cluster)
    assert isinstance(granter, InMemoryGranter) and request.id in granter.active
    with ctx.transaction() as uow:
        actors = [(e.actor, e.action) for e in uow.audit.events()]
    assert actors == [(person, "requested"), ("policy", "approved"), ("policy", "activated")]

    # The README's second request goes to the colleague the file names, not to the person.
    assert len(typed) > 1, "the quick start shows no request that needs a colleague"
    command = parse(typed[1])
    assert command.cluster is not None and command.role is not None
    second = access.file_request(ctx, person, command.cluster, command.role,
                                 duration=command.duration, reason=command.text,
                                 namespace=command.namespace)
    assert second.state is State.PENDING and second.id is not None
    with pytest.raises(NotAuthorized):
        access.approve(ctx, second.id, person)
    [colleague] = config.policy(command.cluster, command.role).approvers
    assert colleague in quick_start
    assert access.approve(ctx, second.id, colleague).state is State.ACTIVE


def shell_lines(section: str) -> list[str]:
    blocks = re.findall(r"```sh\n(.*?)```", section, re.S)
    text = "\n".join(blocks).replace("\\\n", " ")
    return [line.strip() for line in text.splitlines() if line.strip()]


@pytest.mark.parametrize("title", ["Set up", "Five-minute quick start"])
def test_readme_commands_work_as_typed_after_the_set_up_line(title: str) -> None:
    """The set-up line installs into .venv and puts nothing on the PATH: every call of the bot
    names .venv/bin/, and every step runs under `&&` or on its own line."""
    for line in shell_lines(readme_section(title)):
        for step in re.split(r"\s*&&\s*", line):
            words = step.split()
            if "k8s-access-bot" in step:
                assert words[0] == ".venv/bin/k8s-access-bot", step
            if words[0] == "pip":
                pytest.fail(f"bare pip in: {step}")


def test_the_quick_start_migrates_before_it_serves() -> None:
    steps = [s for line in shell_lines(readme_section("Five-minute quick start"))
             for s in re.split(r"\s*&&\s*", line)]
    calls = [s.split()[1] for s in steps if s.startswith(".venv/bin/k8s-access-bot")]
    assert "db" in calls and "serve" in calls
    assert calls.index("db") < calls.index("serve")


def test_the_quick_start_lists_its_prerequisites() -> None:
    section = readme_section("Five-minute quick start")
    for needed in ("install apps", "kube-apiserver-client", "PostgreSQL", "Premium",
                   "OIDC"):
        assert needed in section, needed


def test_db_upgrade_as_the_quick_start_types_it(tmp_path: Path) -> None:
    """`db upgrade` from the venv, in a fresh directory, with the default SQLite URL."""
    binary = Path(sys.executable).parent / "k8s-access-bot"
    environment = {"PATH": "/usr/bin:/bin", "HOME": str(tmp_path)}
    done = subprocess.run([str(binary), "db", "upgrade"], cwd=tmp_path, env=environment,
                          capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stdout + done.stderr
    assert (tmp_path / "k8s-access.db").exists()
