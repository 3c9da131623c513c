"""Every backend's handed-out kubeconfig, read by the real kubectl as the person would use it.

Each backend grants through its real adapter against the local GitLab or Kubernetes server; the
kubeconfig from the "active" message goes through ``kubectl config view --minify --raw``, and
the exec entries are run by kubectl itself: once with the plugin installed (it must receive the
environment the entry names) and once without (kubectl must print the entry's install hint).
"""

from __future__ import annotations

import base64
import json
import os
import subprocess
import sys
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import timedelta
from pathlib import Path
from typing import Any

import pytest
import yaml
from cryptography import x509
from cryptography.hazmat.primitives import serialization
from cryptography.x509.oid import NameOID
from sqlalchemy import Engine

from bot.adapters.gitlab import GitLabMembershipGranter
from bot.adapters.kubeconfig import gitlab_host, glab_exec, glab_login_command, kubeconfig
from bot.adapters.kubernetes.api import KubernetesApi
from bot.adapters.kubernetes.granters import KubernetesCertificateGranter, KubernetesRbacGranter
from bot.app import build_context
from bot.config import Config, Settings, parse_config
from bot.domain.lifecycle import MIN_DURATION
from bot.domain.model import State
from bot.domain.ports import Granter, NoticeKind
from bot.fakes.gitlab import FakeGitLab
from bot.fakes.kubernetes import FakeKubernetes
from bot.services import access
from tests.conftest import ALICE, BOB
from tests.fakes.ports import RecordingNotifier, StaticDirectory

KUBECTL = str(Path(sys.executable).parent / "kubectl")
BOT_TOKEN = "glpat-bot-token"
KAS = "https://127.0.0.1:9/k8s-proxy"  # nothing answers there: kubectl runs the plugin first
ISSUER = "https://sso.example.com/realms/k8s"
EXEC_CREDENTIAL = ('{"apiVersion":"client.authentication.k8s.io/v1",'
                   '"kind":"ExecCredential","status":{"token":"demo-token"}}')


@dataclass
class Servers:
    kube: FakeKubernetes
    gitlab: FakeGitLab


@pytest.fixture
def servers(tmp_path: Path) -> Iterator[Servers]:
    kube = FakeKubernetes(tmp_path).start()
    kube.allow_bot()
    gitlab = FakeGitLab().start()
    gitlab.add_user("access-bot", "bot@example.com", admin=True, token=BOT_TOKEN)
    gitlab.add_user("alice", "u0alice01@example.com")
    gitlab.add_group("platform/k8s-view")
    yield Servers(kube, gitlab)
    gitlab.stop()
    kube.stop()


def config_for(servers: Servers) -> Config:
    bot = str(servers.kube.kubeconfig("bot", "k8s-access-bot"))
    kubernetes = {"server": servers.kube.url, "kubeconfig": bot,
                  "csr_timeout": timedelta(seconds=5)}
    return parse_config({"clusters": {
        "certificate": {"backend": "certificate", "kubernetes": kubernetes, "approvers": [BOB],
                        "roles": {"view": {"cluster_role": "view"}}},
        "rbac": {"backend": "rbac", "approvers": [BOB],
                 "kubernetes": {**kubernetes, "username_template": "oidc:{email}",
                                "oidc_issuer_url": ISSUER, "oidc_client_id": "kubernetes"},
                 "roles": {"view": {"cluster_role": "view"}}},
        "gitlab": {"backend": "gitlab", "approvers": [BOB],
                   "gitlab": {"agent_id": 42, "kas_proxy_url": KAS, "url": servers.gitlab.url},
                   "roles": {"view": {"group": "platform/k8s-view"}}},
    }}, Path("kubeconfigs.yaml"))


def granter_for(config: Config, backend: str) -> Granter:
    if backend == "gitlab":
        return GitLabMembershipGranter.connect(config, backend, None, BOT_TOKEN)
    settings = config.cluster(backend).kubernetes
    assert settings is not None
    kind = KubernetesCertificateGranter if backend == "certificate" else KubernetesRbacGranter
    return kind(config, backend, KubernetesApi.from_config(backend, settings))


def handed_out(engine: Engine, servers: Servers, backend: str, folder: Path,
               duration: timedelta = timedelta(hours=1)) -> Path:
    """Alice asks for view on the backend's cluster, Bob approves: her kubeconfig, saved."""
    config = config_for(servers)
    notifier = RecordingNotifier()
    ctx = build_context(Settings(), config, engine=engine,
                        granters={backend: granter_for(config, backend)}, notifier=notifier,
                        directory=StaticDirectory(emails={ALICE: "u0alice01@example.com"}))
    request = access.file_request(ctx, ALICE, backend, "view", duration=duration,
                                  reason="kubeconfig check")
    assert request.id is not None
    assert access.approve(ctx, request.id, BOB).state is State.ACTIVE
    [delivery] = [n.delivery for n in notifier.notices if n.kind is NoticeKind.ACTIVE]
    assert delivery is not None and delivery.content is not None, delivery
    assert delivery.filename == f"{backend}.kubeconfig"
    path = folder / f"{backend}.kubeconfig"
    path.write_bytes(delivery.content)
    return path


def kubectl(kubeconfig: Path, *args: str, path: str = os.defpath,
            home: Path | None = None) -> subprocess.CompletedProcess[str]:
    environment = {"PATH": path, "HOME": str(home or kubeconfig.parent)}
    return subprocess.run([KUBECTL, "--kubeconfig", str(kubeconfig), *args],
                          capture_output=True, text=True, timeout=60, env=environment)


def minified(kubeconfig: Path) -> dict[str, Any]:
    done = kubectl(kubeconfig, "config", "view", "--minify", "--raw", "-o", "json")
    assert done.returncode == 0, done.stderr
    document: dict[str, Any] = json.loads(done.stdout)
    assert [c["name"] for c in document["contexts"]] == [document["current-context"]]
    assert len(document["clusters"]) == len(document["users"]) == 1
    return document


def stub_plugin(folder: Path, command: str) -> Path:
    """An executable named ``command`` that records its arguments and environment and answers
    like a credential plugin; only shell built-ins, so it runs with any PATH."""
    folder.mkdir(exist_ok=True)
    record = folder / f"{command}.seen"
    script = folder / command
    script.write_text(
        "#!/bin/sh\n"
        f'printf "%s\\n" "$@" > "{record}"\n'
        f'printf "GITLAB_HOST=%s\\n" "${{GITLAB_HOST-<unset>}}" >> "{record}"\n'
        f"printf '%s' '{EXEC_CREDENTIAL}'\n")
    script.chmod(0o755)
    return record


def test_certificate_kubeconfig_validates_and_authenticates(
        engine: Engine, servers: Servers, tmp_path: Path) -> None:
    path = handed_out(engine, servers, "certificate", tmp_path)
    document = minified(path)
    [cluster], [user] = document["clusters"], document["users"]
    assert cluster["cluster"]["server"] == servers.kube.url
    assert base64.b64decode(cluster["cluster"]["certificate-authority-data"]) == \
        servers.kube.ca.pem
    certificate = x509.load_pem_x509_certificate(
        base64.b64decode(user["user"]["client-certificate-data"]))
    key = serialization.load_pem_private_key(
        base64.b64decode(user["user"]["client-key-data"]), password=None)
    assert certificate.public_key() == key.public_key()
    assert certificate.subject.get_attributes_for_oid(NameOID.COMMON_NAME)[0].value == \
        "u0alice01@example.com"
    assert "exec" not in user["user"]
    whoami = kubectl(path, "auth", "whoami", "-o", "json")
    assert whoami.returncode == 0, whoami.stderr
    assert json.loads(whoami.stdout)["status"]["userInfo"]["username"] == "u0alice01@example.com"


@pytest.mark.parametrize("backend", ["certificate", "rbac", "gitlab"])
def test_the_shortest_grant_a_person_may_ask_for_is_handed_out(
        engine: Engine, servers: Servers, tmp_path: Path, backend: str) -> None:
    """The clock starts at activation, so the signer sees a moment less than the request."""
    path = handed_out(engine, servers, backend, tmp_path, duration=MIN_DURATION)
    user = minified(path)["users"][0]["user"]
    if backend == "certificate":
        certificate = x509.load_pem_x509_certificate(
            base64.b64decode(user["client-certificate-data"]))
        lifetime = certificate.not_valid_after_utc - certificate.not_valid_before_utc
        # the local signer dates notBefore five minutes back
        assert lifetime - timedelta(minutes=5) == MIN_DURATION


@pytest.mark.parametrize(("backend", "command", "args", "hint"), [
    ("gitlab", "glab", ["cluster", "agent", "get-token", "--agent", "42"], "glab auth login"),
    ("rbac", "kubectl-oidc_login",
     ["get-token", f"--oidc-issuer-url={ISSUER}", "--oidc-client-id=kubernetes"],
     "kubectl krew install oidc-login"),
])
def test_exec_kubeconfigs_carry_what_the_plugin_needs(
        engine: Engine, servers: Servers, tmp_path: Path, backend: str, command: str,
        args: list[str], hint: str) -> None:
    path = handed_out(engine, servers, backend, tmp_path)
    document = minified(path)
    [cluster], [user] = document["clusters"], document["users"]
    expected_server = KAS if backend == "gitlab" else servers.kube.url
    assert cluster["cluster"]["server"] == expected_server
    run = user["user"]["exec"]
    assert run["apiVersion"] == "client.authentication.k8s.io/v1"
    assert run["interactiveMode"] == "Never"
    assert (run["command"], run["args"]) == (command, args)
    assert hint in run["installHint"]
    expected_env = [{"name": "GITLAB_HOST", "value": gitlab_host(servers.gitlab.url)}] \
        if backend == "gitlab" else None
    assert run.get("env") == expected_env

    # Without the plugin kubectl says how to get it, in the entry's own words.
    missing = kubectl(path, "auth", "whoami", path=str(tmp_path / "empty"))
    assert missing.returncode != 0
    assert f"executable {command} not found" in missing.stderr
    assert run["installHint"].strip().splitlines()[-1].strip() in missing.stderr

    # With it, kubectl runs it with the entry's arguments and environment.
    record = stub_plugin(tmp_path / "bin", command)
    kubectl(path, "auth", "whoami", path=str(tmp_path / "bin"))
    seen = record.read_text().splitlines()
    assert seen[:-1] == args
    host = gitlab_host(servers.gitlab.url) if backend == "gitlab" else "<unset>"
    assert seen[-1] == f"GITLAB_HOST={host}"


def test_the_gitlab_install_hint_logs_in_to_the_configured_instance(
        engine: Engine, servers: Servers, tmp_path: Path) -> None:
    path = handed_out(engine, servers, "gitlab", tmp_path)
    hint = minified(path)["users"][0]["user"]["exec"]["installHint"]
    port = servers.gitlab.url.rsplit(":", 1)[1].rstrip("/")
    assert f"glab auth login --hostname 127.0.0.1:{port} --api-protocol http" in hint
    assert "https://gitlab.com/gitlab-org/cli#installation" in hint


@pytest.mark.parametrize(("url", "host", "login"), [
    ("https://gitlab.example.com", "gitlab.example.com",
     "glab auth login --hostname gitlab.example.com"),
    ("https://gitlab.example.com/", "gitlab.example.com",
     "glab auth login --hostname gitlab.example.com"),
    ("https://gitlab.example.com:8443", "gitlab.example.com:8443",
     "glab auth login --hostname gitlab.example.com:8443"),
    ("https://example.com/gitlab/", "example.com/gitlab",
     "glab auth login --hostname example.com/gitlab"),
    ("http://gitlab.lan:8080", "http://gitlab.lan:8080",
     "glab auth login --hostname gitlab.lan:8080 --api-protocol http"),
])
def test_gitlab_host_as_glab_takes_it(url: str, host: str, login: str) -> None:
    assert gitlab_host(url) == host
    assert glab_login_command(url) == login


@pytest.mark.parametrize("url", ["gitlab.example.com", "ftp://gitlab.example.com", ""])
def test_gitlab_host_refuses_what_is_not_a_url(url: str) -> None:
    with pytest.raises(ValueError, match="is not a GitLab URL"):
        gitlab_host(url)


def test_rbac_without_oidc_settings_says_how_to_sign_in(
        engine: Engine, servers: Servers) -> None:
    config = config_for(servers)
    raw = config.file.model_dump()
    raw["clusters"]["rbac"]["kubernetes"].update(oidc_issuer_url=None, oidc_client_id=None)
    config = parse_config(raw, Path("kubeconfigs.yaml"))
    notifier = RecordingNotifier()
    ctx = build_context(Settings(), config, engine=engine,
                        granters={"rbac": granter_for(config, "rbac")}, notifier=notifier,
                        directory=StaticDirectory(emails={ALICE: "u0alice01@example.com"}))
    request = access.file_request(ctx, ALICE, "rbac", "view", duration=timedelta(hours=1),
                                  reason="x")
    assert request.id is not None
    access.approve(ctx, request.id, BOB)
    [delivery] = [n.delivery for n in notifier.notices if n.kind is NoticeKind.ACTIVE]
    assert delivery is not None and delivery.content is None
    text = delivery.instructions
    for needed in (servers.kube.url, "`oidc:u0alice01@example.com`", "kubectl auth whoami",
                   "kubectl krew install oidc-login", "kubectl oidc-login setup"):
        assert needed in text, (needed, text)


def test_libyaml_writes_the_kubeconfig_the_python_emitter_writes() -> None:
    """The file handed out is the same, byte for byte, whichever emitter PyYAML has."""
    from bot.adapters import kubeconfig as module

    class PythonDumper(yaml.SafeDumper):
        pass

    PythonDumper.add_representer(str, module._text)
    arguments: dict[str, Any] = {
        "cluster": "prod", "server": "https://k8s.example:6443", "ca_pem": os.urandom(1200),
        "user": "alice@example.com", "certificate_pem": os.urandom(1100),
        "key": os.urandom(240), "namespace": "team-a",
        "exec_plugin": glab_exec(agent_id=7, gitlab_url="https://gitlab.example.com")}
    assert module._Dumper.__mro__[1] is getattr(yaml, "CSafeDumper", yaml.SafeDumper)
    written = kubeconfig(**arguments)
    original = module._Dumper
    try:
        module._Dumper = PythonDumper  # type: ignore[misc]
        assert kubeconfig(**arguments) == written
    finally:
        module._Dumper = original  # type: ignore[misc]
