"""``config check --connect``: every target reached with a short timeout, every failure named with
its URL and cause, every right asked of the API server by SelfSubjectAccessReview, the Slack
token and approvers channels checked, and ``--send-test`` seen in Slack."""

from __future__ import annotations

import base64
import socket
import threading
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest
import yaml
from click.testing import CliRunner

from bot.checks import Finding
from bot.checks.gitlab import check_gitlab
from bot.checks.kubernetes import check_cluster
from bot.checks.slack import check_slack
from bot.cli import main
from bot.config import Config, Settings, parse_config
from bot.fakes.gitlab import FakeGitLab, GitLabUser, Group
from bot.fakes.kubernetes import BOT_RULES, FakeKubernetes
from bot.fakes.pki import TestCA as CertificateAuthority
from bot.fakes.slack import BOT_TOKEN, SIGNING_SECRET, FakeSlack
from tests.conftest import ALICE, BOB

GITLAB_TOKEN = "glpat-bot-token-0123456789"
CHANNEL, PROD_CHANNEL = "C0APPR001", "C0PROD001"


class Recorder:
    """A reporter that keeps what it hears."""

    def __init__(self) -> None:
        self.targets: list[tuple[str, str, str]] = []
        self.findings: list[Finding] = []

    def target(self, name: str, url: str, what: str) -> None:
        self.targets.append((name, url, what))

    def finding(self, finding: Finding) -> None:
        self.findings.append(finding)

    def failed(self) -> list[Finding]:
        return [f for f in self.findings if not f.ok]


class SilentServer:
    """Accepts connections and never answers: a hung proxy, a firewall that swallows."""

    def __init__(self) -> None:
        self._socket = socket.socket()
        self._socket.bind(("127.0.0.1", 0))
        self._socket.listen(16)
        self.port = int(self._socket.getsockname()[1])
        self.accepted: list[socket.socket] = []
        threading.Thread(target=self._accept, daemon=True).start()

    def _accept(self) -> None:
        while True:
            try:
                connection, _ = self._socket.accept()
            except OSError:
                return
            self.accepted.append(connection)

    def stop(self) -> None:
        self._socket.close()
        for connection in self.accepted:
            connection.close()


def closed_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


@dataclass
class World:
    tmp: Path
    slack: FakeSlack
    gitlab: FakeGitLab
    kube: FakeKubernetes
    bot: GitLabUser
    view: Group
    edit: Group
    silent: SilentServer
    extra: dict[str, Any] = field(default_factory=dict)

    def kubeconfig(self, server: str | None = None, ca: bytes | None = None,
                   name: str = "bot") -> str:
        """The bot's kubeconfig, pointed at ``server`` or trusting ``ca`` if given."""
        document = yaml.safe_load(self.kube.kubeconfig("bot", "k8s-access-bot").read_text())
        cluster = document["clusters"][0]["cluster"]
        cluster["server"] = server or self.kube.url
        if ca is not None:
            cluster["certificate-authority-data"] = base64.b64encode(ca).decode()
        path = self.tmp / f"{name}.yaml"
        path.write_text(yaml.safe_dump(document))
        return str(path)

    def settings(self, **changes: Any) -> Settings:
        values: dict[str, Any] = {"slack_bot_token": BOT_TOKEN,
                                  "slack_api_url": self.slack.api_url,
                                  "gitlab_token": GITLAB_TOKEN}
        return Settings(**{**values, **changes})


@pytest.fixture
def world(tmp_path: Path) -> Iterator[World]:
    slack = FakeSlack(channels={CHANNEL, PROD_CHANNEL}).start()
    gitlab = FakeGitLab().start()
    bot = gitlab.add_user("k8s-access-bot", "bot@example.com", token=GITLAB_TOKEN)
    platform = gitlab.add_group("platform")
    view = gitlab.add_group("platform/k8s-view", platform)
    edit = gitlab.add_group("platform/k8s-edit", platform)
    view.members[bot.id] = {"access_level": 50}
    edit.members[bot.id] = {"access_level": 50}
    kube = FakeKubernetes(tmp_path).start()
    kube.allow_bot()
    silent = SilentServer()
    yield World(tmp_path, slack, gitlab, kube, bot, view, edit, silent)
    silent.stop()
    kube.stop()
    gitlab.stop()
    slack.stop()


def kubernetes_cluster(kubeconfig: str, backend: str = "certificate") -> dict[str, Any]:
    return {"backend": backend, "approvers": [BOB],
            "kubernetes": {"server": "https://users.example", "kubeconfig": kubeconfig},
            "roles": {"view": {"cluster_role": "view"},
                      "deploy": {"role": "edit", "namespaces": ["shop"]},
                      "tools": {"role": "edit", "role_kind": "ClusterRole",
                                "namespaces": ["payments"]}}}


def gitlab_cluster(world: World) -> dict[str, Any]:
    return {"backend": "gitlab", "approvers": [BOB],
            "gitlab": {"agent_id": 42, "kas_proxy_url": "https://kas.example.com/k8s-proxy",
                       "url": world.gitlab.url},
            "roles": {"view": {"group": "platform/k8s-view"},
                      "edit": {"group": world.edit.id, "access_level": "maintainer"}},
            "approvers_channel": PROD_CHANNEL}


def make_config(clusters: dict[str, Any], channel: str | None = CHANNEL) -> Config:
    data: dict[str, Any] = {"clusters": clusters}
    if channel is not None:
        data["defaults"] = {"approvers_channel": channel}
    return parse_config(data, Path("connect.yaml"))


def write_config(world: World, clusters: dict[str, Any]) -> dict[str, str]:
    path = world.tmp / "k8s-access.yaml"
    path.write_text(yaml.safe_dump({"defaults": {"approvers_channel": CHANNEL},
                                    "clusters": clusters}, sort_keys=False))
    return {"K8S_ACCESS_CONFIG": str(path), "SLACK_BOT_TOKEN": BOT_TOKEN,
            "SLACK_SIGNING_SECRET": SIGNING_SECRET, "SLACK_API_URL": world.slack.api_url,
            "GITLAB_TOKEN": GITLAB_TOKEN,
            "DATABASE_URL": f"sqlite:///{world.tmp / 'unused.db'}"}


def cli(env: dict[str, str], *args: str) -> Any:
    return CliRunner().invoke(main, ["config", "check", *args], env=env,
                              catch_exceptions=False)


# --- the whole command ----------------------------------------------------------------------


def test_everything_reachable_passes_with_a_line_per_check(world: World) -> None:
    env = write_config(world, {"staging": kubernetes_cluster(world.kubeconfig()),
                               "oidc": kubernetes_cluster(world.kubeconfig(), "rbac"),
                               "dev": gitlab_cluster(world)})
    result = cli(env, "--connect", "--timeout", "3")
    assert result.exit_code == 0, result.output
    out = result.output
    headings = [line for line in out.splitlines() if ": checking " in line]
    assert [h.split(" ", 2)[:2] for h in headings] == [
        ["Slack", world.slack.api_url + ":"], ["cluster", "staging"], ["cluster", "oidc"],
        ["cluster", "dev"]]
    assert f"cluster staging {world.kube.url}: checking backend certificate" in out
    assert "(timeout 3s)" in headings[0]
    assert "ok      bot token: workspace Test (T0TEAM), bot user @k8s-access (U0BOT)" in out
    assert f"ok      approvers channel #{CHANNEL.lower()} ({CHANNEL}), used by defaults: " \
           "exists and the bot is a member" in out
    assert "ok      credentials: authenticated as k8s-access-bot" in out
    assert "ok      approve signers kubernetes.io/kube-apiserver-client (cluster-wide)" in out
    assert "ok      bind roles edit in namespace shop: allowed (needed for role deploy)" in out
    assert "ok      Owner of group platform/k8s-view (role view): platform/k8s-view: " \
           "k8s-access-bot is Owner" in out
    assert "FAILED" not in out
    # the file passed first; the network checks come after it and end the output
    assert out.index("k8s-access.yaml: ok") < out.index("Slack ")
    assert out.rstrip().endswith("connection checks passed")
    reviews = [r for r in world.kube.requests if r[2].endswith("/selfsubjectaccessreviews")]
    assert len(reviews) >= 2 * 13  # every right of both clusters, asked of the API server
    # The rbac cluster needs no CSR rights; the certificate cluster does.
    oidc = out.split("cluster oidc")[1].split("cluster dev")[0]
    assert "certificatesigningrequests" not in oidc


def test_failures_are_all_listed_with_url_and_cause_and_the_exit_code_says_so(
        world: World) -> None:
    refused = f"https://127.0.0.1:{closed_port()}"
    silent = f"https://127.0.0.1:{world.silent.port}"
    world.slack.channel_info[CHANNEL] = {"name": "k8s-approvals", "is_member": False}
    env = write_config(world, {
        "down": kubernetes_cluster(world.kubeconfig(refused, name="down")),
        "hung": kubernetes_cluster(world.kubeconfig(silent, name="hung")),
        "staging": kubernetes_cluster(world.kubeconfig()),
        "dev": gitlab_cluster(world)})
    world.edit.members[world.bot.id] = {"access_level": 40}
    result = cli({**env, "GITLAB_TOKEN": GITLAB_TOKEN}, "--connect", "--timeout", "0.5")
    assert result.exit_code == 1, result.output
    out = result.output
    # Each target was reached, in order, though the ones before it failed.
    for heading in ("Slack ", f"cluster down {refused}", f"cluster hung {silent}",
                    f"cluster staging {world.kube.url}", f"cluster dev {world.gitlab.url}"):
        assert heading in out
    summary = out.split("connection checks failed:")[1]
    assert f"cluster down {refused}: credentials: connection refused" in summary
    assert f"cluster hung {silent}: credentials: no answer within 0.5s (timeout)" in summary
    assert "Slack" in summary and "the bot is not a member of #k8s-approvals" in summary
    assert f"cluster dev {world.gitlab.url}: Owner of group {world.edit.id} (role edit): " \
           "platform/k8s-edit: k8s-access-bot is Maintainer" in summary
    assert "fix: type /invite @k8s-access in #k8s-approvals" in out
    assert "cluster staging" not in summary
    assert not out.rstrip().endswith(": ok")
    assert len(world.silent.accepted) == 1  # one attempt, no retries multiplying the wait


def test_a_server_answering_404_is_named_not_a_traceback(world: World) -> None:
    env = write_config(world, {"odd": kubernetes_cluster(
        world.kubeconfig(world.kube.url + "/not-kubernetes"))})
    result = cli(env, "--connect")
    assert result.exit_code == 1
    assert f"cluster odd {world.kube.url}/not-kubernetes: " in result.output
    assert "SelfSubjectAccessReview failed: 404 Not Found: the server could not find the " \
           "requested resource" in result.output
    assert "is https://" in result.output and "a Kubernetes API server" in result.output
    assert "FAILED  rights: SelfSubjectAccessReview failed" in result.output
    assert "; 18 rights not checked" in result.output


def test_send_test_posts_to_each_approvers_channel_and_dms_the_user(world: World) -> None:
    world.slack.channel_info[PROD_CHANNEL] = {"is_archived": True, "name": "prod-approvals"}
    env = write_config(world, {"dev": gitlab_cluster(world)})
    result = cli(env, "--send-test", ALICE)
    assert result.exit_code == 1, result.output  # the archived channel
    posted = world.slack.called("chat.postMessage")
    assert [p["channel"] for p in posted] == [CHANNEL, world.slack.dm_channel(ALICE)]
    assert "approval requests for defaults come here" in posted[0]["text"]
    assert f"ok      test message to #{CHANNEL.lower()} ({CHANNEL}): sent" in result.output
    assert f"FAILED  test message to {PROD_CHANNEL}: not sent: the channel check above " \
           "failed" in result.output
    assert f"ok      test DM to {ALICE}: sent" in result.output
    assert "#prod-approvals is archived" in result.output


# --- Kubernetes: each right, each cause -------------------------------------------------------


def atoms(rules: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """The rules, one verb on one resource (and one name) each."""
    found = []
    for rule in rules:
        for group in rule["apiGroups"]:
            for resource in rule["resources"]:
                for verb in rule["verbs"]:
                    for name in rule.get("resourceNames") or [None]:
                        atom: dict[str, Any] = {"apiGroups": [group], "resources": [resource],
                                                "verbs": [verb]}
                        if name is not None:
                            atom["resourceNames"] = [name]
                        found.append(atom)
    return found


def without(verb: str, resource: str, name: str | None = None) -> list[dict[str, Any]]:
    kept = [a for a in atoms(BOT_RULES)
            if not (a["verbs"] == [verb] and a["resources"] == [resource]
                    and a.get("resourceNames", [None]) == [name])]
    assert len(kept) == len(atoms(BOT_RULES)) - 1
    return kept


MISSING_RIGHTS = [
    ("create", "clusterrolebindings", None, ["create clusterrolebindings (cluster-wide)"]),
    ("get", "clusterrolebindings", None, ["get clusterrolebindings (cluster-wide)"]),
    ("delete", "clusterrolebindings", None, ["delete clusterrolebindings (cluster-wide)"]),
    ("list", "clusterrolebindings", None, ["list clusterrolebindings (cluster-wide)"]),
    ("list", "rolebindings", None, ["list rolebindings (cluster-wide)"]),
    ("create", "rolebindings", None, ["create rolebindings in namespace shop",
                                      "create rolebindings in namespace payments"]),
    ("get", "rolebindings", None, ["get rolebindings in namespace shop",
                                   "get rolebindings in namespace payments"]),
    ("delete", "rolebindings", None, ["delete rolebindings in namespace shop",
                                      "delete rolebindings in namespace payments"]),
    ("bind", "clusterroles", "view", ["bind clusterroles view (cluster-wide)"]),
    ("bind", "clusterroles", "edit", ["bind clusterroles edit in namespace payments"]),
    ("bind", "roles", "edit", ["bind roles edit in namespace shop"]),
    ("create", "certificatesigningrequests", None,
     ["create certificatesigningrequests (cluster-wide)"]),
    ("get", "certificatesigningrequests", None,
     ["get certificatesigningrequests (cluster-wide)"]),
    ("update", "certificatesigningrequests/approval", None,
     ["update certificatesigningrequests/approval (cluster-wide)"]),
    ("approve", "signers", "kubernetes.io/kube-apiserver-client",
     ["approve signers kubernetes.io/kube-apiserver-client (cluster-wide)"]),
    ("watch", "certificatesigningrequests", None, []),  # the bot never watches
]


@pytest.mark.parametrize(("verb", "resource", "name", "expected"), MISSING_RIGHTS,
                         ids=[f"{v}-{r}-{n or ''}" for v, r, n, _ in MISSING_RIGHTS])
def test_each_missing_right_is_named_with_the_rule_that_grants_it(
        world: World, verb: str, resource: str, name: str | None,
        expected: list[str]) -> None:
    world.kube.allow_bot(rules=without(verb, resource, name))
    config = make_config({"staging": kubernetes_cluster(world.kubeconfig())})
    recorder = Recorder()
    check_cluster(config, "staging", recorder, timeout=5)
    failed = recorder.failed()
    assert [f.check for f in failed] == expected
    for finding in failed:
        assert finding.url == world.kube.url and finding.target == "cluster staging"
        assert finding.detail.startswith("not allowed; needed for ")
        assert f"resources: [{resource}]" in finding.fix and f"verbs: [{verb}]" in finding.fix
        if name:
            assert f"resourceNames: [{name}]" in finding.fix
    checked = {f.check for f in recorder.findings}
    assert "approve signers kubernetes.io/kube-apiserver-client (cluster-wide)" in checked


def test_approving_for_the_whole_signer_domain_is_enough(world: World) -> None:
    rules = [a if a["resources"] != ["signers"] else {**a, "resourceNames": ["kubernetes.io/*"]}
             for a in atoms(BOT_RULES)]
    world.kube.allow_bot(rules=rules)
    recorder = Recorder()
    check_cluster(make_config({"staging": kubernetes_cluster(world.kubeconfig())}), "staging",
                  recorder, timeout=5)
    assert recorder.failed() == []
    # … as the API server agrees: the bot approves, and the signer signs.
    from bot.adapters.kubernetes import certificates
    from bot.adapters.kubernetes.api import KubernetesApi
    from bot.adapters.kubernetes.granters import CSR_PATH, SIGNER
    from bot.config import KubernetesClusterConfig

    api = KubernetesApi.from_config("staging", KubernetesClusterConfig(
        server="https://users.example", kubeconfig=world.kubeconfig()))
    csr = certificates.build_csr(certificates.generate_key("ecdsa-p256"), "alice")
    api.request("POST", CSR_PATH, {
        "apiVersion": "certificates.k8s.io/v1", "kind": "CertificateSigningRequest",
        "metadata": {"name": "wildcard"},
        "spec": {"request": base64.b64encode(csr).decode(), "signerName": SIGNER,
                 "usages": ["client auth"], "expirationSeconds": 600}})
    stored = api.request("GET", f"{CSR_PATH}/wildcard")
    stored["status"] = {"conditions": [{"type": "Approved", "status": "True",
                                        "reason": "Test", "message": "test"}]}
    api.request("PUT", f"{CSR_PATH}/wildcard/approval", stored)
    assert api.request("GET", f"{CSR_PATH}/wildcard")["status"]["certificate"]


def unreachable_cases(world: World) -> dict[str, tuple[str, str, str]]:
    """name → (kubeconfig, the URL reported, the cause reported)."""
    refused = f"https://127.0.0.1:{closed_port()}"
    silent = f"https://127.0.0.1:{world.silent.port}"
    return {
        "refused": (world.kubeconfig(refused, name="refused"), refused, "connection refused"),
        "silent": (world.kubeconfig(silent, name="silent"), silent,
                   "no answer within 0.5s (timeout)"),
        "wrong-ca": (world.kubeconfig(ca=CertificateAuthority().pem, name="ca"), world.kube.url,
                     "TLS error: certificate signature failure"),
        "not-kubernetes": (world.kubeconfig(world.kube.url + "/x", name="x"),
                           world.kube.url + "/x",
                           "404 Not Found: the server could not find the requested resource"),
        "no-kubeconfig": (str(world.tmp / "missing.kubeconfig"), "https://users.example",
                          "cannot load kubeconfig"),
        "server-error": (world.kubeconfig(name="500"), world.kube.url,
                         "API server answered 500: etcdserver: request timed out"),
    }


@pytest.mark.parametrize("case", ["refused", "silent", "wrong-ca", "not-kubernetes",
                                  "no-kubeconfig", "server-error"])
def test_an_unreachable_cluster_is_reported_with_url_and_cause(world: World,
                                                               case: str) -> None:
    kubeconfig, url, reason = unreachable_cases(world)[case]
    if case == "server-error":
        world.kube.fail_next = [500]
    recorder = Recorder()
    check_cluster(make_config({"far": kubernetes_cluster(kubeconfig)}), "far", recorder,
                  timeout=0.5)
    [failure] = recorder.failed()
    assert failure.url == url and reason in failure.detail, failure
    assert recorder.targets[0][1] == url
    if case == "silent":
        assert len(world.silent.accepted) == 1


def test_the_fake_api_server_answers_reviews_like_kubernetes(world: World) -> None:
    from bot.adapters.kubernetes.api import KubernetesApi, Missing
    from bot.config import KubernetesClusterConfig
    from bot.domain.errors import PermanentBackendError

    api = KubernetesApi.from_config("staging", KubernetesClusterConfig(
        server="https://users.example", kubeconfig=world.kubeconfig()))
    path = "/apis/authorization.k8s.io/v1/selfsubjectaccessreviews"
    review = {"apiVersion": "authorization.k8s.io/v1", "kind": "SelfSubjectAccessReview",
              "spec": {"resourceAttributes": {"verb": "bind", "group": "rbac.authorization.k8s.io",
                                              "resource": "clusterroles", "name": "view"}}}
    assert api.request("POST", path, review)["status"] == {"allowed": True}
    review["spec"]["resourceAttributes"]["name"] = "secret-admin"
    assert api.request("POST", path, review)["status"] == {"allowed": False}
    with pytest.raises(PermanentBackendError, match="exactly one of nonResourceAttributes"):
        api.request("POST", path, {"apiVersion": "authorization.k8s.io/v1",
                                   "kind": "SelfSubjectAccessReview", "spec": {}})
    with pytest.raises(PermanentBackendError, match=r"\(405\)"):
        api.request("GET", path)
    with pytest.raises(Missing, match="could not find the requested resource"):
        api.request("POST", "/apis/authorization.k8s.io/v9/nothing", review)


# --- Slack ------------------------------------------------------------------------------------


CHANNEL_CASES = {
    "member": ({}, True, "exists and the bot is a member", ""),
    "not-member": ({"name": "k8s-approvals", "is_member": False}, False,
                   "the bot is not a member of #k8s-approvals",
                   "type /invite @k8s-access in #k8s-approvals"),
    "archived": ({"name": "old-approvals", "is_archived": True}, False,
                 "#old-approvals is archived", "unarchive #old-approvals"),
    "private-without-the-bot": ({"is_private": True, "is_member": False}, False,
                                "channel_not_found", "for a private channel, type /invite"),
    "unknown": (None, False, "channel_not_found", "copy channel ID"),
}


@pytest.mark.parametrize("case", list(CHANNEL_CASES))
def test_each_approvers_channel_is_checked(world: World, case: str) -> None:
    info, ok, detail, fix = CHANNEL_CASES[case]
    channel = CHANNEL if info is not None else "C0GONE0001"
    if info:
        world.slack.channel_info[channel] = info
    recorder = Recorder()
    config = make_config({"staging": kubernetes_cluster(world.kubeconfig())}, channel=channel)
    check_slack(world.settings(), config, recorder, timeout=5)
    [token, checked] = recorder.findings
    assert token.ok and token.check == "bot token"
    assert checked.ok is ok and detail in checked.detail and fix in checked.fix, checked
    assert "used by defaults" in checked.check and channel in checked.check


@pytest.mark.parametrize(("token", "reason", "fix"), [
    ("xoxb-wrong", "auth.test answered invalid_auth", "SLACK_BOT_TOKEN was refused"),
    (None, "SLACK_BOT_TOKEN is not set", ""),
])
def test_a_refused_or_missing_slack_token_is_reported(world: World, token: str | None,
                                                      reason: str, fix: str) -> None:
    recorder = Recorder()
    config = make_config({"staging": kubernetes_cluster(world.kubeconfig())})
    check_slack(world.settings(slack_bot_token=token), config, recorder, timeout=5)
    [failure] = recorder.findings
    assert not failure.ok and reason in failure.detail and fix in failure.fix
    assert world.slack.called("conversations.info") == []


@pytest.mark.parametrize("case", ["silent", "refused", "not-slack"])
def test_an_unreachable_slack_is_reported_with_url_and_cause(world: World, case: str) -> None:
    url, reason = {
        "silent": (f"http://127.0.0.1:{world.silent.port}/api/",
                   "no answer within 0.5s (timeout)"),
        "refused": (f"http://127.0.0.1:{closed_port()}/api/", "connection refused"),
        "not-slack": (world.gitlab.url + "/api/", "auth.test answered HTTP 401"),
    }[case]
    recorder = Recorder()
    config = make_config({"staging": kubernetes_cluster(world.kubeconfig())})
    check_slack(world.settings(slack_api_url=url), config, recorder, timeout=0.5)
    [failure] = recorder.failed()
    assert failure.url == url and failure.check == "bot token"
    assert reason in failure.detail, failure
    if case == "not-slack":
        assert "check SLACK_API_URL" in failure.fix


# --- GitLab -----------------------------------------------------------------------------------


def test_gitlab_owner_of_each_group_directly_inherited_or_as_admin(world: World) -> None:
    config = make_config({"dev": gitlab_cluster(world)})
    del world.view.members[world.bot.id]
    world.gitlab.groups[world.view.parent_id or 0].members[world.bot.id] = {"access_level": 50}
    recorder = Recorder()
    check_gitlab(world.settings(), config, "dev", recorder, timeout=5)
    assert recorder.failed() == []
    assert [f.check for f in recorder.findings] == [
        "GitLab token", "Owner of group platform/k8s-view (role view)",
        f"Owner of group {world.edit.id} (role edit)"]


@pytest.mark.parametrize(("change", "check", "reason"), [
    ("maintainer", "Owner of group platform/k8s-view (role view)",
     "k8s-access-bot is Maintainer"),
    ("not-member", "Owner of group platform/k8s-view (role view)",
     "k8s-access-bot is not a member"),
    ("no-group", "Owner of group platform/k8s-view (role view)",
     "404: 404 Group Not Found: the group does not exist"),
    ("bad-token", "GitLab token", "401: 401 Unauthorized"),
    ("no-token", "GitLab token", "needs GITLAB_TOKEN"),
])
def test_each_gitlab_problem_is_named(world: World, change: str, check: str,
                                      reason: str) -> None:
    settings = world.settings()
    if change == "maintainer":
        world.view.members[world.bot.id] = {"access_level": 40}
    elif change == "not-member":
        del world.view.members[world.bot.id]
    elif change == "no-group":
        del world.gitlab.groups[world.view.id]
    elif change == "bad-token":
        settings = world.settings(gitlab_token="glpat-wrong")
    else:
        settings = world.settings(gitlab_token=None)
    recorder = Recorder()
    check_gitlab(settings, make_config({"dev": gitlab_cluster(world)}), "dev", recorder,
                 timeout=5)
    [failure] = recorder.failed()
    assert failure.check == check and reason in failure.detail, failure
    assert failure.url == world.gitlab.url
    if change == "maintainer":  # the other group is still checked
        assert any(f.ok and "role edit" in f.check for f in recorder.findings)


@pytest.mark.parametrize("case", ["silent", "refused", "not-found", "not-gitlab"])
def test_an_unreachable_gitlab_is_reported_with_url_and_cause(world: World,
                                                              case: str) -> None:
    url, reason = {
        "silent": (f"http://127.0.0.1:{world.silent.port}", "no answer within 0.5s (timeout)"),
        "refused": (f"http://127.0.0.1:{closed_port()}", "connection refused"),
        "not-found": (world.gitlab.url + "/elsewhere", "404: 404 Not found"),
        "not-gitlab": (world.slack.url, "the server's answer to GET /api/v4/user is not "
                                        "GitLab's"),
    }[case]
    cluster = gitlab_cluster(world)
    cluster["gitlab"]["url"] = url
    recorder = Recorder()
    check_gitlab(world.settings(), make_config({"dev": cluster}), "dev", recorder, timeout=0.5)
    [failure] = recorder.failed()
    assert failure.url == url and failure.check == "GitLab token"
    assert reason in failure.detail and "GITLAB_URL" in failure.fix


# --- at serve start ---------------------------------------------------------------------------


def readyz(web: Any) -> tuple[str, dict[str, Any]]:
    import json
    from wsgiref.util import setup_testing_defaults

    environ: dict[str, Any] = {"PATH_INFO": "/readyz", "REQUEST_METHOD": "GET"}
    setup_testing_defaults(environ)
    seen: list[str] = []
    body = b"".join(web(environ, lambda status, headers: seen.append(status)))
    return seen[0], json.loads(body)


def test_at_serve_start_a_channel_problem_is_logged_counted_and_named_in_readyz(
        world: World, caplog: pytest.LogCaptureFixture) -> None:
    from bot.adapters.metrics import PrometheusMetrics
    from bot.adapters.slack.client import make_client
    from bot.adapters.web import WebApp
    from bot.checks.slack import ApproversChannelWatch

    world.slack.channel_info[CHANNEL] = {"name": "k8s-approvals", "is_member": False}
    config = make_config({"dev": gitlab_cluster(world)})
    metrics = PrometheusMetrics()
    watch = ApproversChannelWatch(make_client(world.settings()), config,
                                  metrics.approvers_channel)
    web = WebApp(None, lambda: {}, metrics.render, warnings=watch.problems)
    assert readyz(web) == ("200 OK", {"status": "ready", "failed": {}})
    watch.start()
    assert watch.done.wait(10)
    rendered = metrics.render()[0].decode()
    assert f'k8s_access_approvers_channel_ok{{channel="{CHANNEL}"}} 0.0' in rendered
    assert f'k8s_access_approvers_channel_ok{{channel="{PROD_CHANNEL}"}} 1.0' in rendered
    status, answer = readyz(web)
    assert status == "200 OK" and answer["status"] == "ready"  # not a reason to pull the pod
    assert answer["warnings"] == {f"approvers_channel {CHANNEL}": (
        "the bot is not a member of #k8s-approvals; type /invite @k8s-access in "
        "#k8s-approvals (used by defaults; checked at start)")}
    [line] = [r.getMessage() for r in caplog.records if r.name == "bot.checks.slack"]
    assert line == ("approvers channel #k8s-approvals (C0APPR001) (used by defaults): the bot "
                    "is not a member of #k8s-approvals; type /invite @k8s-access in "
                    "#k8s-approvals")


@pytest.mark.parametrize(("retries", "attempts"), [(False, 1), (True, 4)])
def test_the_checks_ask_a_silent_server_once_where_the_bot_would_try_four_times(
        world: World, retries: bool, attempts: int) -> None:
    """urllib3 retries idempotent requests that time out three times: four timeouts in all,
    the 61 s ``--connect`` used to take. The checks' client tries once."""
    from bot.adapters.kubernetes.api import KubernetesApi
    from bot.config import KubernetesClusterConfig
    from bot.domain.errors import TemporaryBackendError

    kubeconfig = world.kubeconfig(f"https://127.0.0.1:{world.silent.port}", name="silent")
    api = KubernetesApi.from_config("far", KubernetesClusterConfig(
        server="https://users.example", kubeconfig=kubeconfig), timeout=0.2, retries=retries)
    with pytest.raises(TemporaryBackendError):
        api.request("GET", "/apis/rbac.authorization.k8s.io/v1/clusterrolebindings")
    assert len(world.silent.accepted) == attempts
