"""A cluster, checked: the bot's credentials reach the API server, and every right the bot needs
for each configured role is granted, asked of the API server itself with
``SelfSubjectAccessReview`` (authorization.k8s.io/v1), so the answer is the cluster's own RBAC
(or whatever authorizer it runs), not a guess from reading roles.

The rights are those the granters use: list the bot's bindings everywhere (reconcile), create,
read and delete the (Cluster)RoleBindings of each role where it is granted, ``bind`` the role
itself, and for certificate clusters create and read CSRs, update their approval and ``approve``
on the ``kubernetes.io/kube-apiserver-client`` signer (or on ``kubernetes.io/*``, which the
API server accepts too).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from bot.adapters.kubernetes.api import KubernetesApi, Missing
from bot.adapters.kubernetes.bindings import RBAC
from bot.adapters.kubernetes.granters import SIGNER
from bot.checks.findings import Findings, Reporter, cause
from bot.config import Config
from bot.domain.errors import DomainError

CERTIFICATES = "certificates.k8s.io"
REVIEWS = "/apis/authorization.k8s.io/v1/selfsubjectaccessreviews"
WHOAMI = "/apis/authentication.k8s.io/v1/selfsubjectreviews"


@dataclass(frozen=True)
class Right:
    """One thing the bot must be allowed to do, as a SelfSubjectAccessReview asks it."""

    verb: str
    group: str
    resource: str
    subresource: str = ""
    namespace: str | None = None
    name: str | None = None

    def describe(self) -> str:
        resource = f"{self.resource}/{self.subresource}" if self.subresource else self.resource
        named = f" {self.name}" if self.name else ""
        where = f" in namespace {self.namespace}" if self.namespace else " (cluster-wide)"
        return f"{self.verb} {resource}{named}{where}"

    def rule(self) -> str:
        """The RBAC rule that grants it, to paste into the bot's (Cluster)Role."""
        resource = f"{self.resource}/{self.subresource}" if self.subresource else self.resource
        names = f", resourceNames: [{self.name}]" if self.name else ""
        holder = f"a Role in namespace {self.namespace} (or a ClusterRole)" if self.namespace \
            else "a ClusterRole bound with a ClusterRoleBinding"
        group = self.group or '""'
        return (f"give the bot's account {{apiGroups: [{group}], resources: [{resource}]{names}, "
                f"verbs: [{self.verb}]}} in {holder}")

    def attributes(self) -> dict[str, str]:
        attributes = {"verb": self.verb, "group": self.group, "resource": self.resource}
        if self.subresource:
            attributes["subresource"] = self.subresource
        if self.namespace:
            attributes["namespace"] = self.namespace
        if self.name:
            attributes["name"] = self.name
        return attributes


def rights_needed(config: Config, cluster: str) -> dict[Right, list[str]]:
    """Every right the bot needs on ``cluster``, each with what it is for (in config order)."""
    settings = config.cluster(cluster)
    needed: dict[Right, list[str]] = {}

    def need(right: Right, why: str) -> None:
        reasons = needed.setdefault(right, [])
        if why not in reasons:
            reasons.append(why)

    for plural in ("clusterrolebindings", "rolebindings"):
        need(Right("list", RBAC, plural), "reconcile")
    for role_name, role in settings.roles.items():
        why = f"role {role_name}"
        if role.cluster_role is not None:
            for verb in ("create", "get", "delete"):
                need(Right(verb, RBAC, "clusterrolebindings"), why)
            need(Right("bind", RBAC, "clusterroles", name=role.cluster_role), why)
            continue
        assert role.role is not None  # the config requires cluster_role or role
        bound = "clusterroles" if role.role_kind == "ClusterRole" else "roles"
        for namespace in role.namespaces:
            for verb in ("create", "get", "delete"):
                need(Right(verb, RBAC, "rolebindings", namespace=namespace), why)
            need(Right("bind", RBAC, bound, namespace=namespace, name=role.role), why)
    if settings.backend == "certificate":
        why = "issuing certificates"
        need(Right("create", CERTIFICATES, "certificatesigningrequests"), why)
        need(Right("get", CERTIFICATES, "certificatesigningrequests"), why)
        need(Right("update", CERTIFICATES, "certificatesigningrequests", "approval"), why)
        need(Right("approve", CERTIFICATES, "signers", name=SIGNER), why)
    return needed


class _Unreachable(Exception):
    """The review itself failed: the cause is the server's, not a missing right."""


def _allowed(api: KubernetesApi, right: Right) -> tuple[bool, str]:
    """Whether the bot may, and the authorizer's reason or evaluation error (may be empty)."""
    review = {"apiVersion": "authorization.k8s.io/v1", "kind": "SelfSubjectAccessReview",
              "spec": {"resourceAttributes": right.attributes()}}
    try:
        answer = api.request("POST", REVIEWS, review)
    except (DomainError, Missing) as error:
        raise _Unreachable() from error
    status: dict[str, Any] = answer.get("status") or {}
    said = str(status.get("evaluationError") or status.get("reason") or "")
    return bool(status.get("allowed")) and not status.get("denied"), said


def _signer_wildcard(right: Right) -> Right:
    """``kubernetes.io/*`` for ``kubernetes.io/kube-apiserver-client``: the API server allows
    approving for a signer with the right on its domain's wildcard too."""
    domain = (right.name or "").split("/", 1)[0]
    return Right(right.verb, right.group, right.resource, name=f"{domain}/*")


def check_cluster(config: Config, cluster: str, reporter: Reporter, *,
                  timeout: float) -> Findings:
    """The bot's credentials and every right it needs on ``cluster``; stops at the first
    failure that is the server's (unreachable, TLS, 401, 404), since the rest would fail alike."""
    settings = config.cluster(cluster)
    kubernetes = settings.kubernetes
    assert kubernetes is not None  # the config requires it for these backends
    target = f"cluster {cluster}"
    credentials = "the in-cluster service account" if kubernetes.in_cluster \
        else f"kubeconfig {kubernetes.kubeconfig}"
    try:
        api = KubernetesApi.from_config(cluster, kubernetes, timeout=timeout, retries=False)
    except DomainError as error:
        findings = Findings(reporter, target, kubernetes.server)
        reporter.target(target, kubernetes.server, "the bot's credentials")
        findings.failed("credentials", error.message,
                        f"fix clusters.{cluster}.kubernetes ({credentials})")
        return findings
    needed = rights_needed(config, cluster)
    findings = Findings(reporter, target, api.host)
    reporter.target(target, api.host,
                    f"backend {settings.backend}, {len(needed)} rights, with {credentials}")
    try:
        whoami = api.request("POST", WHOAMI, {"apiVersion": "authentication.k8s.io/v1",
                                              "kind": "SelfSubjectReview"})
        user = (whoami.get("status") or {}).get("userInfo") or {}
        findings.ok("credentials", f"authenticated as {user.get('username', '?')}")
    except Missing:
        pass  # SelfSubjectReview is GA since Kubernetes 1.28: the reviews below still tell
    except Exception as error:
        findings.failed("credentials", f"{_cause_of(error, timeout)}; {len(needed)} rights not "
                        "checked", _fix_for(error, api.host))
        return findings
    for checked, (right, purposes) in enumerate(needed.items()):
        try:
            allowed, said = _allowed(api, right)
            if not allowed and right.resource == "signers":
                allowed, _ = _allowed(api, _signer_wildcard(right))
        except _Unreachable as error:
            reason = error.__cause__ or error
            findings.failed("rights", f"SelfSubjectAccessReview failed: "
                            f"{_cause_of(reason, timeout)}; {len(needed) - checked} rights not "
                            "checked", _fix_for(reason, api.host))
            return findings
        for_what = ", ".join(purposes)
        if allowed:
            findings.ok(right.describe(), f"allowed (needed for {for_what})")
        else:
            findings.failed(right.describe(),
                            f"not allowed; needed for {for_what}" + (f": {said}" if said else ""),
                            right.rule())
    return findings


def _cause_of(error: BaseException, timeout: float) -> str:
    if isinstance(error, Missing):
        return f"404 Not Found: {error}"
    return cause(error, timeout)


def _fix_for(error: BaseException, url: str) -> str:
    if isinstance(error, Missing):
        return f"is {url} a Kubernetes API server (1.19 or later)? check the kubeconfig's server"
    text = cause(error, 1)
    if text.startswith("TLS error"):
        return "check the kubeconfig's certificate-authority(-data) and server name"
    if text.startswith(("connection refused", "no answer", "host name")):
        return f"check the kubeconfig's server ({url}) and the network path to it"
    return ""
