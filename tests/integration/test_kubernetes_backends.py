"""The certificate and rbac backends against a local TLS Kubernetes API server, proven with the
real kubectl: after a grant the issued kubeconfig works, after revocation it authorizes nothing."""

from __future__ import annotations

import base64
import copy
import dataclasses
import json
import logging
import subprocess
import sys
import time
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
import requests
import yaml
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID
from sqlalchemy import Engine, MetaData, select

from bot.adapters.kubernetes.api import KubernetesApi
from bot.adapters.kubernetes.bindings import BindingRef, Bindings
from bot.adapters.kubernetes.granters import KubernetesCertificateGranter, KubernetesRbacGranter
from bot.app import build_context
from bot.config import Config, Settings, parse_config
from bot.domain.errors import (
    InvalidInput,
    PermanentBackendError,
    PolicyViolation,
    TemporaryBackendError,
)
from bot.domain.model import OperationKind, State
from bot.domain.ports import Granter, NoticeKind
from bot.fakes.kubernetes import BOT_RULES, FakeKubernetes
from bot.services import access, grants, operations
from bot.services.context import Context, RetryPolicy
from tests.conftest import ADMIN, ALICE, BOB, CAROL, DAVE
from tests.fakes.ports import RecordingNotifier, StaticDirectory

KUBECTL = str(Path(sys.executable).parent / "kubectl")
H = timedelta(hours=1)


@pytest.fixture
def kube(tmp_path: Path) -> Iterator[FakeKubernetes]:
    server = FakeKubernetes(tmp_path).start()
    server.allow_bot()
    yield server
    server.stop()


def cluster_config(kube: FakeKubernetes, backend: str) -> dict[str, Any]:
    bot_kubeconfig = str(kube.kubeconfig("bot", "k8s-access-bot"))
    return {
        "backend": backend,
        "kubernetes": {"server": kube.url, "kubeconfig": bot_kubeconfig,
                       "username_template": "{email}" if backend == "certificate"
                       else "oidc:{email}",
                       "csr_timeout": timedelta(seconds=2)},
        "approvers": [BOB, CAROL],
        "roles": {
            "view": {"cluster_role": "view"},
            "deploy": {"role": "edit", "role_kind": "ClusterRole",
                       "namespaces": ["shop", "payments"],
                       "allow_own_csr": backend == "certificate"},
            "admin": {"cluster_role": "cluster-admin"},
        },
    }


@pytest.fixture
def k8s_config(kube: FakeKubernetes) -> Config:
    return parse_config({"clusters": {"prod": cluster_config(kube, "certificate"),
                                      "oidc": cluster_config(kube, "rbac")}},
                        Path("k8s.yaml"))


def granters_for(config: Config, timeout: float = 5) -> dict[str, Granter]:
    made: dict[str, Granter] = {}
    for name, cls in (("prod", KubernetesCertificateGranter), ("oidc", KubernetesRbacGranter)):
        settings = config.cluster(name).kubernetes
        assert settings is not None
        api = KubernetesApi.from_config(name, settings)
        made[name] = cls(config, name, KubernetesApi(name, api._client, timeout=timeout))
    return made


@pytest.fixture
def notifier() -> RecordingNotifier:
    return RecordingNotifier()


@pytest.fixture
def kctx(engine: Engine, k8s_config: Config, notifier: RecordingNotifier,
         directory: StaticDirectory) -> Context:
    context = build_context(Settings(), k8s_config, engine=engine,
                            granters=granters_for(k8s_config), notifier=notifier,
                            directory=directory)
    return dataclasses.replace(context, retry=RetryPolicy(jitter=0, first_delay=timedelta(0)))


def kubectl(kubeconfig: Path, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([KUBECTL, "--kubeconfig", str(kubeconfig), *args],
                          capture_output=True, text=True, timeout=60)


def issued_kubeconfig(notifier: RecordingNotifier, folder: Path, request_id: int) -> Path:
    delivered = [n.delivery for n in notifier.notices
                 if n.kind is NoticeKind.ACTIVE and n.request.id == request_id]
    assert delivered and delivered[0] is not None and delivered[0].content is not None
    path = folder / f"issued-{request_id}.kubeconfig"
    path.write_bytes(delivered[0].content)
    return path


def grant(ctx: Context, cluster: str, role: str, namespace: str | None = None,
          duration: timedelta = H) -> int:
    request = access.file_request(ctx, ALICE, cluster, role, duration=duration,
                                  reason="incident", namespace=namespace)
    assert request.id is not None
    access.approve(ctx, request.id, BOB)
    return request.id


def test_certificate_grant_works_with_kubectl_and_revocation_ends_it(
        kctx: Context, kube: FakeKubernetes, notifier: RecordingNotifier, tmp_path: Path) -> None:
    request_id = grant(kctx, "prod", "view")
    granted = grants.get(kctx, request_id)
    assert granted.state is State.ACTIVE
    kubeconfig = issued_kubeconfig(notifier, tmp_path, request_id)

    whoami = kubectl(kubeconfig, "auth", "whoami")
    assert whoami.returncode == 0, whoami.stderr
    assert "u0alice01@example.com" in whoami.stdout
    assert kubectl(kubeconfig, "auth", "can-i", "get", "pods").stdout.strip() == "yes"
    assert kubectl(kubeconfig, "auth", "can-i", "delete", "pods").stdout.strip() == "no"

    binding = kube.cluster_role_bindings[f"k8s-access-{request_id}"]
    assert binding["subjects"] == [{"kind": "User", "apiGroup": "rbac.authorization.k8s.io",
                                    "name": "u0alice01@example.com"}]
    assert binding["metadata"]["labels"] == {"app.kubernetes.io/managed-by": "k8s-access-bot",
                                             "k8s-access-bot/installation": "default",
                                             "k8s-access-bot/cluster": "prod"}
    assert binding["metadata"]["annotations"]["k8s-access-bot/request-id"] == str(request_id)
    csr = next(iter(kube.csrs.values()))
    assert csr["metadata"]["labels"] == binding["metadata"]["labels"]
    assert csr["spec"]["signerName"] == "kubernetes.io/kube-apiserver-client"
    assert csr["spec"]["usages"] == ["client auth"]
    assert 3590 <= csr["spec"]["expirationSeconds"] <= 3600

    grants.revoke(kctx, request_id, ALICE, "done")
    assert grants.get(kctx, request_id).state is State.REVOKED
    assert f"k8s-access-{request_id}" not in kube.cluster_role_bindings
    assert kubectl(kubeconfig, "auth", "can-i", "get", "pods").stdout.strip() == "no"
    assert kubectl(kubeconfig, "auth", "whoami").returncode == 0  # still authenticates
    # Revoking twice is harmless in the backend: the binding is gone, which counts as revoked.
    kctx.granter("prod").revoke(operations.spec_for(granted, datetime.now(UTC)),
                                granted.backend_ref)


def test_issued_certificate(kctx: Context, kube: FakeKubernetes, notifier: RecordingNotifier,
                            tmp_path: Path) -> None:
    request_id = grant(kctx, "prod", "view", duration=2 * H)
    document = yaml.safe_load(issued_kubeconfig(notifier, tmp_path, request_id).read_text())
    user = document["users"][0]["user"]
    certificate = x509.load_pem_x509_certificate(base64.b64decode(
        user["client-certificate-data"]))
    certificate.verify_directly_issued_by(kube.ca.certificate)
    assert certificate.subject.rfc4514_string() == "CN=u0alice01@example.com"
    assert not certificate.subject.get_attributes_for_oid(NameOID.ORGANIZATION_NAME)
    usages = certificate.extensions.get_extension_for_class(x509.ExtendedKeyUsage).value
    assert list(usages) == [ExtendedKeyUsageOID.CLIENT_AUTH]
    ends_at = grants.get(kctx, request_id).ends_at
    assert ends_at is not None
    assert abs(certificate.not_valid_after_utc - ends_at) < timedelta(minutes=1)
    key = serialization.load_pem_private_key(base64.b64decode(user["client-key-data"]), None)
    assert isinstance(key, ec.EllipticCurvePrivateKey)
    assert document["clusters"][0]["cluster"]["server"] == kube.url
    assert base64.b64decode(document["clusters"][0]["cluster"]["certificate-authority-data"]) \
        == kube.ca.pem
    assert document["current-context"] == "prod"


def test_no_key_material_in_the_database_or_logs(kctx: Context, engine: Engine,
                                                 notifier: RecordingNotifier, tmp_path: Path,
                                                 caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.DEBUG)
    request_id = grant(kctx, "prod", "view")
    key_b64 = yaml.safe_load(issued_kubeconfig(notifier, tmp_path, request_id).read_text())[
        "users"][0]["user"]["client-key-data"]
    key_pem = base64.b64decode(key_b64).decode()
    key_body = "".join(key_pem.splitlines()[1:-1])
    metadata = MetaData()
    metadata.reflect(engine)
    with engine.connect() as connection:
        dump = "\n".join(str(row) for table in metadata.sorted_tables
                         for row in connection.execute(select(table)))
    assert f"k8s-access-{request_id}" in dump  # the scan does see the grant's rows
    for haystack in (dump, caplog.text):
        assert "PRIVATE KEY" not in haystack
        assert key_body[:40] not in haystack and key_b64[:40] not in haystack


def test_namespaced_role(kctx: Context, kube: FakeKubernetes, notifier: RecordingNotifier,
                         tmp_path: Path) -> None:
    request_id = grant(kctx, "prod", "deploy", namespace="shop")
    kubeconfig = issued_kubeconfig(notifier, tmp_path, request_id)
    assert ("shop", f"k8s-access-{request_id}") in kube.role_bindings
    assert kubectl(kubeconfig, "auth", "can-i", "delete", "pods", "-n", "shop").stdout.strip() \
        == "yes"
    assert kubectl(kubeconfig, "auth", "can-i", "get", "pods", "-n", "payments").stdout.strip() \
        == "no"


def test_api_server_failure_is_retried(kctx: Context, kube: FakeKubernetes) -> None:
    kube.fail_next = [500]
    request = access.file_request(kctx, ALICE, "prod", "view", duration=H, reason="x")
    assert request.id is not None
    waiting = access.approve(kctx, request.id, BOB)
    assert waiting.state is State.APPROVED
    assert "API server answered 500" in (waiting.last_error or "")
    assert operations.run_due(kctx) == 1
    assert grants.get(kctx, request.id).state is State.ACTIVE


def test_api_server_hanging_is_retried(engine: Engine, k8s_config: Config,
                                       kube: FakeKubernetes, directory: StaticDirectory) -> None:
    ctx = dataclasses.replace(
        build_context(Settings(), k8s_config, engine=engine,
                      granters=granters_for(k8s_config, timeout=0.5),
                      notifier=RecordingNotifier(), directory=directory),
        retry=RetryPolicy(jitter=0, first_delay=timedelta(0)))
    kube.hang_next, kube.hang_seconds = 1, 2.0
    request = access.file_request(ctx, ALICE, "prod", "view", duration=H, reason="x")
    assert request.id is not None
    waiting = access.approve(ctx, request.id, BOB)
    assert waiting.state is State.APPROVED
    assert "unreachable or too slow" in (waiting.last_error or "")
    operations.run_due(ctx)
    assert grants.get(ctx, request.id).state is State.ACTIVE


def test_unsigned_csr_fails_for_good(kctx: Context, kube: FakeKubernetes,
                                     notifier: RecordingNotifier) -> None:
    kube.signing = False
    request = access.file_request(kctx, ALICE, "prod", "view", duration=H, reason="x")
    assert request.id is not None
    failed = access.approve(kctx, request.id, BOB)
    assert failed.state is State.FAILED
    assert "approved but not signed within 2s" in (failed.end_reason or "")
    assert NoticeKind.FAILED in notifier.kinds(request.id)
    assert not kube.cluster_role_bindings.keys() - {"k8s-access-bot"}


@pytest.mark.parametrize(("missing", "says"), [
    ("bind", "no bind permission on ClusterRole cluster-admin"),
    ("approve", "user not permitted to approve requests with signerName"),
])
def test_missing_rights_fail_with_an_operator_message(kctx: Context, kube: FakeKubernetes,
                                                      missing: str, says: str) -> None:
    rules = copy.deepcopy(BOT_RULES)
    rules = [r for r in rules if missing not in r["verbs"]] if missing == "approve" else [
        {**r, "resourceNames": ["view", "edit"]} if "bind" in r["verbs"] else r for r in rules]
    kube.allow_bot(rules=rules)
    request = access.file_request(kctx, ALICE, "prod", "admin", duration=H, reason="x")
    assert request.id is not None
    failed = access.approve(kctx, request.id, BOB)
    assert failed.state is State.FAILED
    assert "the bot lacks rights" in (failed.end_reason or "")
    assert says in (failed.end_reason or "")


def make_csr(common_name: str, organizations: tuple[str, ...] = ()) -> tuple[str, Any]:
    key = ec.generate_private_key(ec.SECP256R1())
    names = [x509.NameAttribute(NameOID.COMMON_NAME, common_name)]
    names += [x509.NameAttribute(NameOID.ORGANIZATION_NAME, o) for o in organizations]
    csr = x509.CertificateSigningRequestBuilder().subject_name(x509.Name(names)).sign(
        key, hashes.SHA256())
    return csr.public_bytes(serialization.Encoding.PEM).decode(), key


def test_bring_your_own_csr(kctx: Context, kube: FakeKubernetes, notifier: RecordingNotifier,
                            tmp_path: Path) -> None:
    pem, key = make_csr("u0alice01@example.com")
    request = access.file_request(kctx, ALICE, "prod", "deploy", duration=H, reason="x",
                                  namespace="shop", user_csr=pem)
    assert request.id is not None
    access.approve(kctx, request.id, BOB)
    path = issued_kubeconfig(notifier, tmp_path, request.id)
    document = yaml.safe_load(path.read_text())
    assert "client-key-data" not in document["users"][0]["user"]
    document["users"][0]["user"]["client-key-data"] = base64.b64encode(key.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption())).decode()
    path.write_text(yaml.safe_dump(document))
    assert kubectl(path, "auth", "can-i", "create", "deployments", "-n", "shop").stdout.strip() \
        == "yes"


def tampered(pem: str) -> str:
    der = bytearray(x509.load_pem_x509_csr(pem.encode()).public_bytes(serialization.Encoding.DER))
    der[-5] ^= 0x01  # flip a bit of the signature
    body = base64.encodebytes(bytes(der)).decode()
    return f"-----BEGIN CERTIFICATE REQUEST-----\n{body}-----END CERTIFICATE REQUEST-----\n"


@pytest.mark.parametrize(("csr", "says"), [
    (make_csr("u0bob0002@example.com")[0], "common name must be exactly"),
    (make_csr("u0alice01@example.com", ("system:masters",))[0], "must carry no organization"),
    (tampered(make_csr("u0alice01@example.com")[0]), "signature does not verify"),
    ("hello", "not a PEM certificate signing request"),
], ids=["other-user", "system-masters", "bad-signature", "garbage"])
def test_forged_csrs_are_rejected_before_anyone_is_asked(kctx: Context, kube: FakeKubernetes,
                                                         notifier: RecordingNotifier, csr: str,
                                                         says: str) -> None:
    with pytest.raises(InvalidInput, match=says):
        access.file_request(kctx, ALICE, "prod", "deploy", duration=H, reason="x",
                            namespace="shop", user_csr=csr)
    assert notifier.notices == [] and kube.csrs == {}
    with kctx.transaction() as uow:
        assert uow.requests.find() == []


def test_own_csr_only_where_the_role_allows(kctx: Context) -> None:
    with pytest.raises(PolicyViolation, match="issues its own keys"):
        access.file_request(kctx, ALICE, "prod", "view", duration=H, reason="x",
                            user_csr=make_csr("u0alice01@example.com")[0])


def test_system_usernames_are_refused(kctx: Context, directory: StaticDirectory) -> None:
    directory.emails[ALICE] = "system:masters"
    with pytest.raises(PolicyViolation, match="reserved for Kubernetes itself"):
        access.file_request(kctx, ALICE, "prod", "view", duration=H, reason="x")


# --- rbac ---------------------------------------------------------------------------------


def test_rbac_grant_and_revoke(kctx: Context, kube: FakeKubernetes, notifier: RecordingNotifier,
                               tmp_path: Path) -> None:
    request_id = grant(kctx, "oidc", "view")
    binding = kube.cluster_role_bindings[f"k8s-access-{request_id}"]
    assert binding["subjects"][0]["name"] == "oidc:u0alice01@example.com"
    delivery = next(n.delivery for n in notifier.notices if n.kind is NoticeKind.ACTIVE)
    assert delivery is not None and "Sign in to oidc as usual" in delivery.instructions
    as_user = kube.kubeconfig("oidc-alice", "oidc:u0alice01@example.com")  # stands in for OIDC
    assert kubectl(as_user, "auth", "can-i", "list", "pods").stdout.strip() == "yes"
    grants.revoke(kctx, request_id, BOB, "over")
    assert kubectl(as_user, "auth", "can-i", "list", "pods").stdout.strip() == "no"


LONG_AGO = "2026-01-01T00:00:00Z"


def labelled_binding(name: str, request_id: int | None, subject: str, *,
                     cluster: str | None = None, installation: str = "default",
                     created: str = LONG_AGO) -> dict[str, Any]:
    """A ClusterRoleBinding as the bot labels it (only ``managed-by`` when ``cluster`` is None,
    as older versions did)."""
    labels = {"app.kubernetes.io/managed-by": "k8s-access-bot"}
    if cluster is not None:
        labels |= {"k8s-access-bot/installation": installation, "k8s-access-bot/cluster": cluster}
    annotations = {} if request_id is None else {"k8s-access-bot/request-id": str(request_id)}
    return {"apiVersion": "rbac.authorization.k8s.io/v1", "kind": "ClusterRoleBinding",
            "metadata": {"name": name, "labels": labels, "annotations": annotations,
                         "creationTimestamp": created},
            "roleRef": {"apiGroup": "rbac.authorization.k8s.io", "kind": "ClusterRole",
                        "name": "view"},
            "subjects": [{"kind": "User", "apiGroup": "rbac.authorization.k8s.io",
                          "name": subject}]}


def only(ctx: Context, cluster: str) -> Context:
    return dataclasses.replace(ctx, granters={cluster: ctx.granter(cluster)})


@pytest.mark.parametrize("cluster", ["prod", "oidc"])
def test_reconcile_removes_only_provable_strays(kctx: Context, kube: FakeKubernetes,
                                               cluster: str) -> None:
    ctx = only(kctx, cluster)
    live = grant(ctx, cluster, "view")
    ended = grant(ctx, cluster, "admin")
    ended_body = copy.deepcopy(kube.cluster_role_bindings[f"k8s-access-{ended}"])
    subject = ended_body["subjects"][0]["name"]
    grants.revoke(ctx, ended, ALICE, "done")
    ended_body["metadata"]["creationTimestamp"] = LONG_AGO
    bindings = kube.cluster_role_bindings
    bindings[f"k8s-access-{ended}"] = ended_body  # the revocation's delete was lost
    bindings["k8s-access-9999"] = labelled_binding("k8s-access-9999", 9999, "mallory",
                                                   cluster=cluster)
    bindings["k8s-access-9998"] = labelled_binding("k8s-access-9998", 9998, "mallory",
                                                   cluster=cluster,
                                                   created=datetime.now(UTC).isoformat())
    bindings["old-unknown"] = labelled_binding("old-unknown", 9997, "mallory")
    bindings["old-ended"] = labelled_binding("old-ended", ended, subject)
    bindings["old-other-subject"] = labelled_binding("old-other-subject", ended, "mallory")
    bindings["hand-made"] = {**labelled_binding("hand-made", 9996, "mallory"),
                             "metadata": {"name": "hand-made"}}

    found = {s.grant.name: (s.removed, s.why) for s in grants.reconcile(ctx)}
    assert found == {
        f"k8s-access-{ended}": (False, f"request #{ended} is revoked"),
        "k8s-access-9999": (False, "no request of this bot has this ID"),
        "old-unknown": (False, "labelled as the bot's by an older version, but no request of "
                               "this bot has this ID; left alone"),
        "old-ended": (False, f"request #{ended} is revoked"),
        "old-other-subject": (False, f"request #{ended} is for {subject}, not mallory; an older "
                                     "version's label alone does not prove it the bot's, left "
                                     "alone"),
    }
    fixed = {s.grant.name for s in grants.reconcile(ctx, fix=True) if s.removed}
    assert fixed == {f"k8s-access-{ended}", "k8s-access-9999", "old-ended"}
    assert set(bindings) == {f"k8s-access-{live}", "k8s-access-9998", "old-unknown",
                             "old-other-subject", "hand-made", "k8s-access-bot"}
    assert grants.get(ctx, live).state is State.ACTIVE
    with ctx.transaction() as uow:
        assert [e.action for e in uow.audit.events()].count("stray removed") == 3


@pytest.mark.parametrize("cluster", ["prod", "oidc"])
def test_a_grant_approved_while_reconcile_lists_keeps_its_binding(
        kctx: Context, kube: FakeKubernetes, cluster: str) -> None:
    ctx = only(kctx, cluster)
    approved: list[int] = []
    kube.before_list = lambda: approved.append(grant(ctx, cluster, "view"))
    # No grace period: the judgement in the removal's transaction alone must spare it.
    strays = grants.reconcile(ctx, fix=True, grace=timedelta(0))
    assert approved and strays == []
    assert f"k8s-access-{approved[0]}" in kube.cluster_role_bindings
    assert grants.get(ctx, approved[0]).state is State.ACTIVE


@pytest.mark.parametrize("cluster", ["prod", "oidc"])
def test_reconcile_never_removes_what_was_just_made(kctx: Context, kube: FakeKubernetes,
                                                   cluster: str) -> None:
    ctx = only(kctx, cluster)
    kube.cluster_role_bindings["k8s-access-9999"] = labelled_binding(
        "k8s-access-9999", 9999, "mallory", cluster=cluster,
        created=(datetime.now(UTC) - timedelta(minutes=4)).strftime("%Y-%m-%dT%H:%M:%SZ"))
    assert grants.reconcile(ctx, fix=True) == []
    assert "k8s-access-9999" in kube.cluster_role_bindings
    assert [s.removed for s in grants.reconcile(ctx, fix=True, grace=timedelta(minutes=3))] \
        == [True]


@pytest.mark.parametrize("cluster", ["prod", "oidc"])
@pytest.mark.parametrize("labels", [{"cluster": "elsewhere"}, {"installation": "blue"}, {}])
def test_a_binding_of_the_same_name_made_by_another_is_not_taken_over(
        kctx: Context, kube: FakeKubernetes, directory: StaticDirectory, cluster: str,
        labels: dict[str, str]) -> None:
    request = access.file_request(kctx, ALICE, cluster, "view", duration=H, reason="x")
    assert request.id is not None
    name = f"k8s-access-{request.id}"
    theirs = labelled_binding(name, request.id, request.subject,
                              cluster=labels.get("cluster", cluster) if labels else None,
                              installation=labels.get("installation", "default"))
    kube.cluster_role_bindings[name] = theirs
    failed = access.approve(kctx, request.id, BOB)
    assert failed.state is State.FAILED
    assert "exists and was not made by this bot" in (failed.end_reason or "")
    assert kube.cluster_role_bindings[name] == theirs


def bindings_of(ctx: Context, cluster: str) -> Bindings:
    bindings = ctx.granter(cluster).bindings  # type: ignore[attr-defined]
    assert isinstance(bindings, Bindings)
    return bindings


@pytest.mark.parametrize("cluster", ["prod", "oidc"])
def test_a_revocation_deletes_the_bots_bindings_beside_one_it_does_not_own(
        kctx: Context, kube: FakeKubernetes, cluster: str) -> None:
    """The grant's own record: the binding unchanged since its creation goes in one DELETE,
    the one relabelled since (through the API: a new resourceVersion) is read, judged
    another's, left alone and named."""
    request_id = grant(kctx, cluster, "deploy", namespace="shop")
    name = f"k8s-access-{request_id}"
    granted = grants.get(kctx, request_id)
    # A grant over several namespaces, as a role's grant without one was planned before: the
    # second binding made through the API and recorded as the bot records what it makes.
    body = copy.deepcopy(kube.role_bindings[("shop", name)])
    body["metadata"] = {key: value for key, value in body["metadata"].items()
                        if key in ("name", "labels", "annotations")}
    made = as_admin(kube, "POST", "/apis/rbac.authorization.k8s.io/v1/namespaces/payments/"
                    "rolebindings", body)
    assert made.status_code == 201, made.text
    reference = {**granted.backend_ref, "bindings": [
        *granted.backend_ref["bindings"],
        BindingRef(name, "payments", made.json()["metadata"]["uid"],
                   made.json()["metadata"]["resourceVersion"]).as_dict()]}
    relabelled = kubectl(kube.kubeconfig("admin", "admin"), "label", "rolebinding", name,
                         "-n", "shop", "k8s-access-bot/installation=blue", "--overwrite")
    assert relabelled.returncode == 0, relabelled.stderr
    theirs = copy.deepcopy(kube.role_bindings[("shop", name)])
    spec = operations.spec_for(granted, datetime.now(UTC))
    before = len(kube.requests)
    with pytest.raises(PermanentBackendError,
                       match=f"RoleBinding shop/{name} is not labelled as this bot's"):
        kctx.granter(cluster).revoke(spec, reference)
    assert [(m, p) for _, m, p in kube.requests[before:]] == [
        ("DELETE", binding_path(name, "shop")), ("GET", binding_path(name, "shop")),
        ("DELETE", binding_path(name, "payments"))]  # the bot's own: one request
    assert ("payments", name) not in kube.role_bindings  # no access left behind
    assert kube.role_bindings[("shop", name)] == theirs


@pytest.mark.parametrize("cluster", ["prod", "oidc"])
@pytest.mark.parametrize("change", ["replaced", "relabelled"])
def test_a_binding_changed_between_judging_and_deleting_is_not_deleted(
        kctx: Context, kube: FakeKubernetes, monkeypatch: pytest.MonkeyPatch, cluster: str,
        change: str) -> None:
    request_id = grant(kctx, cluster, "view")
    name = f"k8s-access-{request_id}"
    bindings = bindings_of(kctx, cluster)
    theirs = copy.deepcopy(kube.cluster_role_bindings[name])
    theirs["metadata"]["labels"]["k8s-access-bot/installation"] = "blue"
    if change == "replaced":  # deleted and made again by someone else: a new UID
        theirs["metadata"]["uid"] = "another-uid"
    else:  # the same object, changed: a new resourceVersion
        theirs["metadata"]["resourceVersion"] += "1"
    request = bindings.api.request

    def judged_then_changed(method: str, path: str, body: dict[str, Any] | None = None,
                            query: dict[str, str] | None = None) -> dict[str, Any]:
        answer = request(method, path, body, query)
        if method == "GET":
            kube.cluster_role_bindings[name] = theirs
        return answer

    monkeypatch.setattr(bindings.api, "request", judged_then_changed)
    with pytest.raises(TemporaryBackendError, match="changed while the bot deleted it"):
        bindings.delete([BindingRef(name, None)], request_id)
    assert kube.cluster_role_bindings[name] == theirs
    monkeypatch.undo()
    with pytest.raises(PermanentBackendError, match="not labelled as this bot's"):
        bindings.delete([BindingRef(name, None)], request_id)  # judged again: not the bot's
    assert kube.cluster_role_bindings[name] == theirs


def calls_during(kube: FakeKubernetes, action: Any) -> list[tuple[str, str]]:
    """``action()``'s requests to the API server: (method, path)."""
    before = len(kube.requests)
    action()
    return [(method, path) for _, method, path in kube.requests[before:]]


@pytest.mark.parametrize("cluster", ["prod", "oidc"])
@pytest.mark.parametrize("namespace", [None, "shop"])
def test_a_grant_keeps_each_bindings_uid_and_its_expiry_deletes_it_in_one_request(
        kctx: Context, kube: FakeKubernetes, cluster: str, namespace: str | None) -> None:
    request_id = grant(kctx, cluster, "deploy" if namespace else "view", namespace=namespace)
    name = f"k8s-access-{request_id}"
    made = kube.role_bindings[(namespace, name)] if namespace \
        else kube.cluster_role_bindings[name]
    assert grants.get(kctx, request_id).backend_ref["bindings"] == [
        {"name": name, "namespace": namespace, "uid": made["metadata"]["uid"],
         "resource_version": made["metadata"]["resourceVersion"]}]
    clock = kctx.clock
    later = dataclasses.replace(kctx, clock=lambda: clock() + H + timedelta(minutes=1))
    path = (f"/apis/rbac.authorization.k8s.io/v1/namespaces/{namespace}/rolebindings/{name}"
            if namespace else f"/apis/rbac.authorization.k8s.io/v1/clusterrolebindings/{name}")
    assert calls_during(kube, lambda: grants.expire_due(later)) == [("DELETE", path)]
    assert grants.get(later, request_id).state is State.EXPIRED
    assert (namespace, name) not in kube.role_bindings
    assert name not in kube.cluster_role_bindings


@pytest.mark.parametrize("cluster", ["prod", "oidc"])
@pytest.mark.parametrize("whose", ["another installation", "no label", "the bot, made again"])
def test_a_binding_replaced_since_the_grant_is_judged_before_it_is_deleted(
        kctx: Context, kube: FakeKubernetes, cluster: str, whose: str) -> None:
    """Another object of the same name (a new UID) is no proof: it is read and judged, and
    deleted only when its labels make it the bot's for this request."""
    request_id = grant(kctx, cluster, "view")
    name = f"k8s-access-{request_id}"
    granted = grants.get(kctx, request_id)
    replacement = copy.deepcopy(kube.cluster_role_bindings[name])
    replacement["metadata"]["uid"] = "another-uid"
    if whose == "another installation":
        replacement["metadata"]["labels"]["k8s-access-bot/installation"] = "blue"
    elif whose == "no label":
        replacement["metadata"]["labels"] = {}
    kube.cluster_role_bindings[name] = replacement
    granter = kctx.granter(cluster)
    spec = operations.spec_for(granted, datetime.now(UTC))

    def revoke() -> None:
        granter.revoke(spec, granted.backend_ref)

    if whose == "the bot, made again":
        assert [method for method, _ in calls_during(kube, revoke)] == ["DELETE", "GET",
                                                                         "DELETE"]
        assert name not in kube.cluster_role_bindings
        return
    before = len(kube.requests)
    with pytest.raises(PermanentBackendError, match="not labelled as this bot's"):
        revoke()
    assert [method for _, method, _ in kube.requests[before:]] == ["DELETE", "GET"]
    assert kube.cluster_role_bindings[name] == replacement


@pytest.mark.parametrize("cluster", ["prod", "oidc"])
def test_a_grant_recorded_without_uids_is_revoked_as_before(
        kctx: Context, kube: FakeKubernetes, cluster: str) -> None:
    """A backend reference written before the bot kept UIDs: read, judged, then deleted."""
    request_id = grant(kctx, cluster, "view")
    name = f"k8s-access-{request_id}"
    with kctx.transaction() as uow:
        granted = uow.requests.get(request_id, for_update=True)
        granted.backend_ref = {**granted.backend_ref,
                               "bindings": [{"name": name, "namespace": None}]}
        uow.requests.save(granted)
    calls = calls_during(kube, lambda: grants.revoke(kctx, request_id, ALICE, "done"))
    assert [method for method, _ in calls] == ["GET", "DELETE"]
    assert name not in kube.cluster_role_bindings
    assert grants.get(kctx, request_id).state is State.REVOKED


@pytest.mark.parametrize("backends", [("certificate", "rbac"), ("rbac", "rbac"),
                                      ("certificate", "certificate")])
def test_clusters_sharing_an_api_server_leave_each_other_alone(
        engine: Engine, kube: FakeKubernetes, directory: StaticDirectory,
        backends: tuple[str, str]) -> None:
    config = parse_config({"clusters": {"prod": cluster_config(kube, backends[0]),
                                        "sandbox": cluster_config(kube, backends[1])}},
                          Path("shared.yaml"))
    classes = {"certificate": KubernetesCertificateGranter, "rbac": KubernetesRbacGranter}
    made: dict[str, Granter] = {}
    for name, backend in zip(("prod", "sandbox"), backends, strict=True):
        settings = config.cluster(name).kubernetes
        assert settings is not None
        made[name] = classes[backend](config, name, KubernetesApi.from_config(name, settings))
    ctx = build_context(Settings(), config, engine=engine, granters=made,
                        notifier=RecordingNotifier(), directory=directory)
    on_prod, on_sandbox = grant(ctx, "prod", "view"), grant(ctx, "sandbox", "view")
    ended = grant(ctx, "sandbox", "admin")
    stray = copy.deepcopy(kube.cluster_role_bindings[f"k8s-access-{ended}"])
    grants.revoke(ctx, ended, ALICE, "done")
    kube.cluster_role_bindings[f"k8s-access-{ended}"] = stray
    # Another installation on the same API server judges none of them.
    other = dataclasses.replace(config, file=config.file.model_copy(
        update={"installation": "blue"}))
    blue = {name: type(granter)(other, name, granter.api)  # type: ignore[attr-defined]
            for name, granter in made.items()}
    assert grants.reconcile(dataclasses.replace(ctx, granters=blue), fix=True,
                            grace=timedelta(0)) == []
    assert f"k8s-access-{ended}" in kube.cluster_role_bindings
    kube.cluster_role_bindings["older-version"] = labelled_binding(  # no cluster label
        "older-version", ended, stray["subjects"][0]["name"])
    assert grants.reconcile(only(ctx, "prod"), fix=True, grace=timedelta(0)) == []
    assert {f"k8s-access-{on_prod}", f"k8s-access-{on_sandbox}",
            f"k8s-access-{ended}", "older-version"} <= set(kube.cluster_role_bindings)
    removed = grants.reconcile(only(ctx, "sandbox"), fix=True, grace=timedelta(0))
    assert sorted((s.cluster, s.grant.name, s.removed) for s in removed) == [
        ("sandbox", f"k8s-access-{ended}", True), ("sandbox", "older-version", True)]
    assert {f"k8s-access-{on_prod}", f"k8s-access-{on_sandbox}"} <= \
        set(kube.cluster_role_bindings)
    assert grants.get(ctx, on_prod).state is grants.get(ctx, on_sandbox).state is State.ACTIVE


def test_rsa_keys_where_configured(engine: Engine, kube: FakeKubernetes,
                                   directory: StaticDirectory, tmp_path: Path) -> None:
    from cryptography.hazmat.primitives.asymmetric import rsa

    data = {"clusters": {"prod": cluster_config(kube, "certificate"),
                         "oidc": cluster_config(kube, "rbac")}}
    data["clusters"]["prod"]["kubernetes"]["key_algorithm"] = "rsa-2048"
    config = parse_config(data, Path("rsa.yaml"))
    notifier = RecordingNotifier()
    ctx = build_context(Settings(), config, engine=engine, granters=granters_for(config),
                        notifier=notifier, directory=directory)
    request_id = grant(ctx, "prod", "view")
    user = yaml.safe_load(issued_kubeconfig(notifier, tmp_path, request_id).read_text())[
        "users"][0]["user"]
    key = serialization.load_pem_private_key(base64.b64decode(user["client-key-data"]), None)
    assert isinstance(key, rsa.RSAPrivateKey) and key.key_size == 2048


@pytest.mark.parametrize("hanging", [1, 1000], ids=["one-call", "every-call"])
def test_a_hung_api_server_holds_up_an_expiry_pass_for_its_timeout_only(
        engine: Engine, k8s_config: Config, kube: FakeKubernetes,
        directory: StaticDirectory, hanging: int) -> None:
    """The request timeout bounds each call that hangs: the pass ends what it can and is
    over long before the API server answers; the retry pass ends the rest once it does."""
    ctx = dataclasses.replace(
        build_context(Settings(), k8s_config, engine=engine,
                      granters=granters_for(k8s_config, timeout=0.5),
                      notifier=RecordingNotifier(), directory=directory),
        retry=RetryPolicy(jitter=0, first_delay=timedelta(0)))
    ids = []
    for user in (ALICE, DAVE, ADMIN):
        request = access.file_request(ctx, user, "oidc", "view", duration=H, reason="x")
        assert request.id is not None
        access.approve(ctx, request.id, BOB)
        ids.append(request.id)
    clock = ctx.clock
    later = dataclasses.replace(ctx, clock=lambda: clock() + H + timedelta(minutes=1))
    kube.hang_next, kube.hang_seconds = hanging, 8.0
    started = time.monotonic()
    assert grants.expire_due(later) == 3
    assert time.monotonic() - started < 6  # bounded by the timeout, not the 8s hang
    kube.hang_next = 0
    left = [grants.get(later, i) for i in ids if grants.get(later, i).state is State.ACTIVE]
    assert all("unreachable or too slow" in (grant.last_error or "") for grant in left)
    if hanging == 1000:
        assert len(left) == 3
    operations.run_due(later)
    assert all(grants.get(later, i).state is State.EXPIRED for i in ids)
    assert not {f"k8s-access-{i}" for i in ids} & set(kube.cluster_role_bindings)


def test_a_csr_is_approved_as_created_and_read_again_only_when_it_changed(
        kctx: Context, kube: FakeKubernetes) -> None:
    """The approval sends the CSR the API server returned on creation: no read in between.
    When something changed it meanwhile, the API server answers 409 and it is read again."""
    first = grant(kctx, "prod", "view")
    assert grants.get(kctx, first).state is State.ACTIVE
    calls = [(method, path.rsplit("/", 1)[-1]) for _, method, path in kube.requests
             if "certificatesigningrequests" in path]
    assert [method for method, _ in calls] == ["POST", "PUT", "GET"]  # create, approve, signed
    grants.revoke(kctx, first, ALICE, "done")
    del kube.requests[:]
    kube.csrs_change_after_create = 1
    second = grant(kctx, "prod", "view")
    assert grants.get(kctx, second).state is State.ACTIVE
    assert [method for _, method, path in kube.requests
            if "certificatesigningrequests" in path] == ["POST", "PUT", "GET", "PUT", "GET"]


@pytest.mark.parametrize("cluster", ["prod", "oidc"])
@pytest.mark.parametrize("step", ["grant", "revoke"])
def test_a_rate_limited_api_server_is_retried_no_sooner_than_it_asks(
        kctx: Context, kube: FakeKubernetes, cluster: str, step: str) -> None:
    """A 429 with Retry-After (API priority and fairness) is a temporary failure retried no
    sooner than the API server asked, for grants and revocations alike."""
    kube.retry_after = 300
    request = access.file_request(kctx, ALICE, cluster, "view", duration=H, reason="x")
    assert request.id is not None
    if step == "revoke":
        access.approve(kctx, request.id, BOB)
    asked = kctx.clock()
    kube.fail_next = [429]
    if step == "grant":
        waiting = access.approve(kctx, request.id, BOB)
        assert waiting.state is State.APPROVED
    else:
        waiting = grants.revoke(kctx, request.id, BOB, "over")
    assert "API server answered 429" in (waiting.last_error or "")
    assert "300 s" in (waiting.last_error or "")
    with kctx.transaction() as uow:
        operation = uow.operations.get(request.id, OperationKind.GRANT if step == "grant"
                                       else OperationKind.REVOKE)
    assert operation is not None and operation.next_attempt_at >= asked + timedelta(seconds=300)


@pytest.mark.parametrize("answer", [409, 404])
def test_a_csr_changed_or_gone_while_approved_is_tried_again(
        kctx: Context, kube: FakeKubernetes, answer: int) -> None:
    """Another controller keeps writing the CSR while the bot approves it (409 twice, the
    object has been modified), or it vanishes (404): a temporary failure said plainly, not an
    unexpected error; the next attempt issues a new certificate."""
    handle = kube.handle
    failed: list[str] = []

    def once(user: Any, method: str, path: str, query: dict[str, str],
             body: Any, content_type: str = "application/json") -> tuple[int, dict[str, Any]]:
        if method == "PUT" and path.endswith("/approval") and \
                len(failed) < (2 if answer == 409 else 1):  # one 409 is read again
            failed.append(path)
            return answer, {"kind": "Status", "apiVersion": "v1", "status": "Failure",
                            "code": answer, "reason": "Conflict" if answer == 409 else "NotFound",
                            "message": "the object has been modified; please apply your "
                            "changes to the latest version and try again"}
        return handle(user, method, path, query, body, content_type)

    kube.handle = once  # type: ignore[method-assign]
    request = access.file_request(kctx, ALICE, "prod", "view", duration=H, reason="x")
    assert request.id is not None
    waiting = access.approve(kctx, request.id, BOB)
    assert waiting.state is State.APPROVED
    assert "while the bot approved it" in (waiting.last_error or "") or \
        "before the bot approved it" in (waiting.last_error or "")
    assert "unexpected" not in (waiting.last_error or "")
    assert operations.run_due(kctx) == 1
    assert grants.get(kctx, request.id).state is State.ACTIVE


@pytest.mark.parametrize("cluster", ["prod", "oidc"])
@pytest.mark.parametrize("relabel", ["another installation", "no managed-by label"])
def test_a_binding_relabelled_in_place_is_not_deleted_by_its_uid(
        kctx: Context, kube: FakeKubernetes, cluster: str, relabel: str) -> None:
    request_id = grant(kctx, cluster, "view")
    name = f"k8s-access-{request_id}"
    granted = grants.get(kctx, request_id)
    assert granted.backend_ref["bindings"][0].get("uid")  # kept from its creation
    binding = kube.cluster_role_bindings[name]  # the same object (same UID), relabelled
    labels = binding["metadata"]["labels"]
    if relabel == "another installation":
        labels["k8s-access-bot/installation"] = "blue"
    else:
        del labels["app.kubernetes.io/managed-by"]
    binding["metadata"]["resourceVersion"] = str(binding["metadata"].get("resourceVersion",
                                                                         "")) + "1"
    spec = operations.spec_for(granted, datetime.now(UTC))
    with pytest.raises(PermanentBackendError, match="not labelled as this bot's"):
        kctx.granter(cluster).revoke(spec, granted.backend_ref)
    assert name in kube.cluster_role_bindings  # left alone, as a binding without a UID is


# --- bindings changed by a person ---------------------------------------------------------


def binding_path(name: str, namespace: str | None) -> str:
    return (f"/apis/rbac.authorization.k8s.io/v1/namespaces/{namespace}/rolebindings/{name}"
            if namespace else f"/apis/rbac.authorization.k8s.io/v1/clusterrolebindings/{name}")


def stored_binding(kube: FakeKubernetes, name: str, namespace: str | None) -> dict[str, Any]:
    return kube.role_bindings[(namespace, name)] if namespace \
        else kube.cluster_role_bindings[name]


def as_admin(kube: FakeKubernetes, method: str, path: str, body: Any,
             content_type: str = "application/json") -> requests.Response:
    """One request to the local API server over TLS as ``admin``, a raw body and media type
    as given (kubectl sends only the media types it knows)."""
    cert, key = kube.ca.write(kube.folder, "admin-raw", "admin")
    return requests.request(method, kube.url + path, cert=(str(cert), str(key)),
                            verify=str(kube.ca_path), timeout=10,
                            data=body if isinstance(body, str | bytes) else json.dumps(body),
                            headers={"Content-Type": content_type})


@pytest.mark.parametrize(("cluster", "namespace"), [("prod", None), ("oidc", "shop")])
@pytest.mark.parametrize("change", ["label", "annotate"])
def test_a_binding_changed_with_kubectl_gets_a_new_resource_version_and_is_judged_on_revocation(
        kctx: Context, kube: FakeKubernetes, cluster: str, namespace: str | None,
        change: str) -> None:
    """``kubectl label``/``annotate --overwrite`` (a merge PATCH) change a binding as on a real
    API server: a new resourceVersion, the same UID. The revocation's one DELETE on the
    creation's UID and resourceVersion then fails its precondition, so the binding is read and
    judged: relabelled as another installation's, it is left alone and named; only annotated,
    it is still the bot's and is deleted."""
    request_id = grant(kctx, cluster, "deploy" if namespace else "view", namespace=namespace)
    name = f"k8s-access-{request_id}"
    made = copy.deepcopy(stored_binding(kube, name, namespace)["metadata"])
    admin = kube.kubeconfig("admin", "admin")
    where = ["rolebinding", name, "-n", namespace] if namespace \
        else ["clusterrolebinding", name]
    edit = "k8s-access-bot/installation=blue" if change == "label" else "note=looked-at"
    changed = kubectl(admin, change, *where, edit, "--overwrite")
    assert changed.returncode == 0, changed.stderr
    metadata = stored_binding(kube, name, namespace)["metadata"]
    assert metadata["resourceVersion"] != made["resourceVersion"]  # every change gets a new one
    assert (metadata["uid"], metadata["creationTimestamp"]) == (made["uid"],
                                                                made["creationTimestamp"])
    if change == "label":
        assert metadata["labels"]["k8s-access-bot/installation"] == "blue"
    else:
        assert metadata["annotations"] == {**made["annotations"], "note": "looked-at"}
    granted = grants.get(kctx, request_id)
    spec = operations.spec_for(granted, datetime.now(UTC))
    path = binding_path(name, namespace)

    def revoke() -> None:
        kctx.granter(cluster).revoke(spec, granted.backend_ref)

    if change == "annotate":  # still the bot's: read, judged, deleted
        assert calls_during(kube, revoke) == [("DELETE", path), ("GET", path), ("DELETE", path)]
        assert name not in kube.cluster_role_bindings
        assert (namespace, name) not in kube.role_bindings
        return
    described = f"RoleBinding {namespace}/{name}" if namespace else f"ClusterRoleBinding {name}"
    before = len(kube.requests)
    with pytest.raises(PermanentBackendError, match=f"{described} is not labelled as this bot's"):
        revoke()
    assert [(m, p) for _, m, p in kube.requests[before:]] == [("DELETE", path), ("GET", path)]
    assert stored_binding(kube, name, namespace)["metadata"] == metadata  # left alone


@pytest.mark.parametrize("namespace", [None, "shop"])
def test_a_binding_replaced_with_a_stale_resource_version_is_refused_with_409(
        kctx: Context, kube: FakeKubernetes, namespace: str | None) -> None:
    """PUT replaces a binding only as last read: a resourceVersion changed since is a 409 in
    the API server's words; the current one replaces it, keeping its UID and creation time,
    with a new resourceVersion."""
    request_id = grant(kctx, "oidc", "deploy" if namespace else "view", namespace=namespace)
    name = f"k8s-access-{request_id}"
    path = binding_path(name, namespace)
    read = as_admin(kube, "GET", path, None).json()
    relabelled = as_admin(kube, "PATCH", path, {"metadata": {"labels": {"team": "a"}}},
                          "application/strategic-merge-patch+json")
    assert relabelled.status_code == 200, relabelled.text
    assert relabelled.json()["metadata"]["resourceVersion"] != read["metadata"]["resourceVersion"]
    stale = copy.deepcopy(read)
    stale["metadata"]["labels"]["team"] = "b"
    refused = as_admin(kube, "PUT", path, stale)
    plural = "rolebindings" if namespace else "clusterrolebindings"
    assert refused.status_code == 409
    assert refused.json() == {
        "kind": "Status", "apiVersion": "v1", "metadata": {}, "status": "Failure",
        "reason": "Conflict", "code": 409,
        "message": f'Operation cannot be fulfilled on {plural}.rbac.authorization.k8s.io '
                   f'"{name}": the object has been modified; please apply your changes to the '
                   "latest version and try again"}
    assert stored_binding(kube, name, namespace)["metadata"]["labels"]["team"] == "a"
    current = as_admin(kube, "GET", path, None).json()
    current["metadata"]["labels"]["team"] = "b"
    del current["metadata"]["uid"], current["metadata"]["creationTimestamp"]
    replaced = as_admin(kube, "PUT", path, current)
    assert replaced.status_code == 200, replaced.text
    metadata = stored_binding(kube, name, namespace)["metadata"]
    assert metadata["labels"]["team"] == "b"
    assert (metadata["uid"], metadata["creationTimestamp"]) == (
        read["metadata"]["uid"], read["metadata"]["creationTimestamp"])
    assert metadata["resourceVersion"] not in (read["metadata"]["resourceVersion"],
                                               current["metadata"]["resourceVersion"])
    assert replaced.json() == stored_binding(kube, name, namespace)


def test_patches_of_a_binding_follow_their_media_type(kctx: Context,
                                                      kube: FakeKubernetes) -> None:
    """A merge patch merges labels and removes one set to null; a JSON patch (RFC 6902)
    applies its operations, a failed ``test`` changing nothing (422); a media type the API
    server does not take is 415 and changes nothing; the roleRef cannot change (422); each
    accepted patch gives a new resourceVersion."""
    request_id = grant(kctx, "oidc", "view")
    name = f"k8s-access-{request_id}"
    path = binding_path(name, None)
    versions = [kube.cluster_role_bindings[name]["metadata"]["resourceVersion"]]

    def labels() -> dict[str, str]:
        return dict(kube.cluster_role_bindings[name]["metadata"]["labels"])

    merged = as_admin(kube, "PATCH", path, {"metadata": {"labels": {
        "team": "a", "k8s-access-bot/cluster": None}}}, "application/merge-patch+json")
    assert merged.status_code == 200, merged.text
    assert labels() == {"app.kubernetes.io/managed-by": "k8s-access-bot",
                        "k8s-access-bot/installation": "default", "team": "a"}
    versions.append(kube.cluster_role_bindings[name]["metadata"]["resourceVersion"])
    patched = as_admin(kube, "PATCH", path, [
        {"op": "test", "path": "/metadata/labels/team", "value": "a"},
        {"op": "replace", "path": "/metadata/labels/team", "value": "b"}],
        "application/json-patch+json")
    assert patched.status_code == 200, patched.text
    assert labels()["team"] == "b"
    versions.append(kube.cluster_role_bindings[name]["metadata"]["resourceVersion"])
    assert len(set(versions)) == 3
    before = copy.deepcopy(kube.cluster_role_bindings[name])
    failed_test = as_admin(kube, "PATCH", path, [
        {"op": "test", "path": "/metadata/labels/team", "value": "a"},
        {"op": "remove", "path": "/metadata/labels/team"}], "application/json-patch+json")
    assert (failed_test.status_code, failed_test.json()["reason"]) == (422, "Invalid")
    unknown = as_admin(kube, "PATCH", path, "metadata:\n  labels: {team: c}\n",
                       "application/x-yaml")
    assert unknown.status_code == 415
    assert unknown.json()["reason"] == "UnsupportedMediaType"
    assert unknown.json()["message"].startswith(
        "the body of the request was in an unknown format - accepted media types include: ")
    other_role = as_admin(kube, "PATCH", path, {"roleRef": {"name": "cluster-admin"}},
                          "application/merge-patch+json")
    assert (other_role.status_code, other_role.json()["reason"]) == (422, "Invalid")
    assert "cannot change roleRef" in other_role.json()["message"]
    assert kube.cluster_role_bindings[name] == before


def test_changing_a_binding_takes_the_update_and_patch_verbs(kctx: Context,
                                                            kube: FakeKubernetes) -> None:
    """The bot's own account (the README's RBAC) may not patch or replace a binding: 403, as
    for any verb its role does not hold."""
    request_id = grant(kctx, "oidc", "view")
    name = f"k8s-access-{request_id}"
    bot = kube.kubeconfig("bot-again", "k8s-access-bot")
    refused = kubectl(bot, "label", "clusterrolebinding", name, "team=a")
    assert refused.returncode != 0
    assert 'cannot patch resource "clusterrolebindings"' in refused.stderr
    assert "team" not in kube.cluster_role_bindings[name]["metadata"]["labels"]
