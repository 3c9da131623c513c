"""The ``certificate`` and ``rbac`` granters.

``KubernetesCertificateGranter`` issues a short-lived client certificate through the
CertificateSigningRequest API (CN = the user's Kubernetes username, no O), binds the role to
that User, and hands over a kubeconfig holding the key, which is never stored or logged.
Certificates cannot be revoked in Kubernetes: revocation deletes the bindings, after which the
certificate still authenticates but authorizes nothing.

``KubernetesRbacGranter`` only binds the role to the username the cluster's OIDC login yields.
"""

from __future__ import annotations

import base64
import logging
import math
import secrets
import time
from collections.abc import Callable
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from bot.adapters.kubeconfig import KUBELOGIN_INSTALL_URL, kubeconfig, oidc_login_exec
from bot.adapters.kubernetes import certificates
from bot.adapters.kubernetes.api import Conflict, KubernetesApi, Missing
from bot.adapters.kubernetes.bindings import (
    REQUEST_ANNOTATION,
    BindingRef,
    Bindings,
    Owner,
    plan,
    refs_from,
)
from bot.config import Config, KubernetesClusterConfig
from bot.domain.errors import PermanentBackendError, PolicyViolation, TemporaryBackendError
from bot.domain.model import AccessRequest
from bot.domain.ports import Delivery, GrantResult, GrantSpec, ManagedGrant, UserInfo

log = logging.getLogger(__name__)
SIGNER = "kubernetes.io/kube-apiserver-client"
CSR_PATH = "/apis/certificates.k8s.io/v1/certificatesigningrequests"
MIN_CERTIFICATE_SECONDS = 600
CERTIFICATE_ROUND_UP_SECONDS = 60
"""A grant of the shortest length (600 s) reaches the signer a moment after it began: its
certificate may outlast it by up to this much; the binding still ends on time."""


def render_username(template: str, user: UserInfo, *, for_certificate: bool) -> str:
    """The user's Kubernetes username: an explicit mapping, else the template filled in."""
    explicit = user.links.get("kubernetes")
    if explicit:
        return certificates.check_username(explicit, for_certificate=for_certificate)
    needs_email = "{email}" in template or "{local}" in template
    if needs_email and not user.email:
        raise PolicyViolation(
            "Slack shows no email for you, so the bot cannot work out your Kubernetes "
            "username; ask an admin to map it under `users:` in the bot's configuration.")
    email = user.email or ""
    username = template.format(email=email, local=email.split("@", 1)[0],
                               name=user.name or "", slack_id=user.slack_user_id)
    try:
        return certificates.check_username(username, for_certificate=for_certificate)
    except Exception as error:
        raise PolicyViolation(f"Your Kubernetes username cannot be used: {error}") from None


class _KubernetesGranter:
    """What both backends share: the cluster's settings, its API, the bindings."""

    def __init__(self, config: Config, cluster: str, api: KubernetesApi,
                 clock: Callable[[], datetime] = lambda: datetime.now(UTC)) -> None:
        self.config = config
        self.cluster = cluster
        settings = config.cluster(cluster).kubernetes
        assert settings is not None
        self.settings: KubernetesClusterConfig = settings
        self.api = api
        self.owner = Owner(config.file.installation, cluster)
        self.bindings = Bindings(api, self.owner)
        self.clock = clock

    def resolve_subject(self, user: UserInfo) -> str:
        return render_username(self.settings.username_template, user,
                               for_certificate=isinstance(self, KubernetesCertificateGranter))

    def prepare(self, spec: GrantSpec) -> dict[str, Any]:
        return {}

    def check_user_csr(self, csr_pem: str, subject: str) -> None:
        if not isinstance(self, KubernetesCertificateGranter):
            raise PolicyViolation(f"Cluster {self.cluster} does not issue certificates.")
        certificates.check_user_csr(csr_pem, subject)

    def _bind(self, spec: GrantSpec) -> list[dict[str, str | None]]:
        role = self.config.role(spec.cluster, spec.role)
        refs = plan(self.owner, spec.request_id, role, spec.namespace)
        made = self.bindings.create(refs, role, spec.subject, spec.request_id,
                                    spec.requester_id, spec.ends_at)
        return [ref.as_dict() for ref in made]

    def revoke(self, spec: GrantSpec, reference: dict[str, Any]) -> None:
        refs = refs_from(reference)
        if not refs:  # the grant failed before binding: plan what it would have made
            refs = plan(self.owner, spec.request_id,
                        self.config.role(spec.cluster, spec.role), spec.namespace)
        self.bindings.delete(refs, spec.request_id)

    def describe(self, spec: GrantSpec, reference: dict[str, Any]) -> str:
        made = ", ".join(ref.describe() for ref in refs_from(reference)) or "no bindings"
        return f"{made} for User {spec.subject}"

    def shared_object(self, reference: dict[str, Any]) -> str | None:
        return None  # each grant has its own binding, named after its request

    def managed(self) -> list[ManagedGrant]:
        return self.bindings.managed()

    def explained_by(self, grant: ManagedGrant, request: AccessRequest) -> bool:
        assert request.id is not None
        return grant.name == self.owner.binding_name(request.id)

    def remove(self, grant: ManagedGrant) -> None:
        self.bindings.delete([BindingRef(grant.name, grant.namespace)], grant.request_id)

    def _ca_pem(self) -> bytes | None:
        path = self.settings.ca_file or self.api.ca_file
        if not path:
            return None
        try:
            return Path(path).read_bytes()
        except OSError as error:
            raise PermanentBackendError(f"cluster {self.cluster}: cannot read the CA file "
                                        f"{path}: {error}") from None


class KubernetesCertificateGranter(_KubernetesGranter):
    def grant(self, spec: GrantSpec, prepared: dict[str, Any]) -> GrantResult:
        issued, key, instructions = self._issue(spec)
        bindings = self._bind(spec)
        return self._result(spec, issued, key, bindings, instructions)

    def extend(self, spec: GrantSpec, reference: dict[str, Any]) -> GrantResult:
        """A certificate's end cannot move: issue a new one that lasts to the new end."""
        issued, key, instructions = self._issue(spec)
        return self._result(spec, issued, key, reference.get("bindings", []),
                            "A new certificate replaces the old one. " + instructions)

    def _result(self, spec: GrantSpec, issued: certificates.IssuedCertificate,
                key: bytes | None, bindings: list[dict[str, str | None]],
                instructions: str) -> GrantResult:
        content = kubeconfig(
            cluster=spec.cluster, server=self.settings.server, ca_pem=self._ca_pem(),
            user=spec.subject, certificate_pem=issued.pem, key=key, namespace=spec.namespace)
        reference = {"bindings": bindings,
                     "certificate_not_after": issued.not_after.isoformat(),
                     "certificate_serial": f"{issued.serial:x}"}
        return GrantResult(reference=reference,
                           delivery=Delivery(instructions, f"{spec.cluster}.kubeconfig",
                                             content))

    def _issue(self, spec: GrantSpec) -> tuple[certificates.IssuedCertificate, bytes | None,
                                                str]:
        seconds = math.ceil((spec.ends_at - self.clock()).total_seconds())
        if MIN_CERTIFICATE_SECONDS - CERTIFICATE_ROUND_UP_SECONDS <= seconds \
                < MIN_CERTIFICATE_SECONDS:
            seconds = MIN_CERTIFICATE_SECONDS
        if seconds < MIN_CERTIFICATE_SECONDS:
            raise PermanentBackendError(
                f"only {seconds}s of the grant are left; Kubernetes issues client certificates "
                f"for at least {MIN_CERTIFICATE_SECONDS}s")
        if spec.user_csr:
            csr_pem = certificates.check_user_csr(spec.user_csr, spec.subject)
            key = None
        else:
            private = certificates.generate_key(self.settings.key_algorithm)
            csr_pem = certificates.build_csr(private, spec.subject)
            key = certificates.key_pem(private)
        name = f"{self.owner.binding_name(spec.request_id)}-{secrets.token_hex(3)}"
        created = self.api.request("POST", CSR_PATH, {
            "apiVersion": "certificates.k8s.io/v1",
            "kind": "CertificateSigningRequest",
            "metadata": {"name": name, "labels": self.owner.labels,
                         "annotations": {REQUEST_ANNOTATION: str(spec.request_id)}},
            "spec": {"request": base64.b64encode(csr_pem).decode(), "signerName": SIGNER,
                     "usages": ["client auth"], "expirationSeconds": seconds},
        })
        self._approve(name, spec.request_id, created)
        certificate = self._wait_for_certificate(name)
        issued = certificates.check_issued(certificate, spec.subject, csr_pem, spec.ends_at)
        log.info("certificate %s issued for request %s, valid until %s", f"{issued.serial:x}",
                 spec.request_id, issued.not_after.isoformat())
        how = (f"Your kubeconfig for {spec.cluster} is attached: save it and run "
               f"`kubectl --kubeconfig {spec.cluster}.kubeconfig auth whoami`. "
               f"The certificate is valid until {issued.not_after:%Y-%m-%d %H:%M} UTC; access "
               "ends with the grant, whatever the certificate says.")
        if key is None:
            how = (f"Your certificate for {spec.cluster} is in the attached kubeconfig; add "
                   "your own private key as `client-key-data` (or `client-key`) to use it.")
        return issued, key, how

    def _approve(self, name: str, request_id: int, created: dict[str, Any]) -> None:
        """Approve the CSR as the API server returned it on creation; read it again only when
        something changed it since (a conflict on its resourceVersion). It changing again
        (409: another controller keeps writing it) or vanishing (404) fails the attempt, to be
        tried again with a new CSR."""
        try:
            csr = created if created.get("metadata", {}).get("resourceVersion") \
                else self.api.request("GET", f"{CSR_PATH}/{name}")
            for attempt in (1, 2):
                status = csr.setdefault("status", {})
                status.setdefault("conditions", []).append({
                    "type": "Approved", "status": "True", "reason": "K8sAccessBotApproved",
                    "message": f"approved in Slack, k8s-access request #{request_id}",
                })
                try:
                    self.api.request("PUT", f"{CSR_PATH}/{name}/approval", csr)
                    return
                except Conflict:
                    if attempt == 2:
                        raise
                    csr = self.api.request("GET", f"{CSR_PATH}/{name}")
        except (Conflict, Missing) as error:
            what = "kept changing while the bot approved it" if isinstance(error, Conflict) \
                else "vanished before the bot approved it"
            raise TemporaryBackendError(
                f"cluster {self.cluster}: CSR {name} {what}: {error}") from None

    def _wait_for_certificate(self, name: str) -> bytes:
        deadline = time.monotonic() + self.settings.csr_timeout.total_seconds()
        delay = 0.1
        while True:
            try:
                csr = self.api.request("GET", f"{CSR_PATH}/{name}")
            except Missing:
                raise PermanentBackendError(
                    f"cluster {self.cluster}: CSR {name} vanished before it was signed") from None
            status = csr.get("status") or {}
            for condition in status.get("conditions") or []:
                if condition.get("type") in ("Denied", "Failed") and \
                        condition.get("status", "True") == "True":
                    raise PermanentBackendError(
                        f"cluster {self.cluster}: CSR {name} was {condition['type'].lower()}: "
                        f"{condition.get('message') or condition.get('reason')}")
            if status.get("certificate"):
                return base64.b64decode(status["certificate"])
            if time.monotonic() > deadline:
                raise PermanentBackendError(
                    f"cluster {self.cluster}: CSR {name} was approved but not signed within "
                    f"{int(self.settings.csr_timeout.total_seconds())}s; is the "
                    "kube-controller-manager signing kubernetes.io/kube-apiserver-client "
                    "(--cluster-signing-cert-file)?")
            time.sleep(delay)
            delay = min(delay * 2, 2.0)


class KubernetesRbacGranter(_KubernetesGranter):
    def grant(self, spec: GrantSpec, prepared: dict[str, Any]) -> GrantResult:
        bindings = self._bind(spec)
        return GrantResult(reference={"bindings": bindings},
                           delivery=self._how_to_connect(spec))

    def extend(self, spec: GrantSpec, reference: dict[str, Any]) -> GrantResult:
        return GrantResult(reference=reference,
                           delivery=Delivery("Your usual login keeps working until the new end."))

    def _how_to_connect(self, spec: GrantSpec) -> Delivery:
        settings = self.settings
        where = f" in namespace {spec.namespace}" if spec.namespace else ""
        granted = (f"the cluster ({settings.server}) now lets `{spec.subject}` act as "
                   f"{spec.role}{where}.")
        if not (settings.oidc_issuer_url and settings.oidc_client_id):
            return Delivery(
                f"Sign in to {spec.cluster} as usual, through your OIDC login: {granted} "
                f"`kubectl auth whoami` must show `{spec.subject}`. No OIDC login for this "
                "cluster yet? Install kubelogin (`kubectl krew install oidc-login`, or "
                f"{KUBELOGIN_INSTALL_URL}), ask the cluster's admins for its OIDC issuer URL "
                "and client ID, and run `kubectl oidc-login setup --oidc-issuer-url=ISSUER_URL "
                "--oidc-client-id=CLIENT_ID`: it signs you in and prints the kubeconfig entry "
                "to add.")
        exec_plugin = oidc_login_exec(issuer_url=settings.oidc_issuer_url,
                                      client_id=settings.oidc_client_id)
        content = kubeconfig(
            cluster=spec.cluster, server=settings.server, ca_pem=self._ca_pem(),
            user=spec.subject, namespace=spec.namespace, exec_plugin=exec_plugin)
        return Delivery(
            f"Sign in to {spec.cluster} with the attached kubeconfig: {granted} It signs you "
            f"in at {settings.oidc_issuer_url} "
            "with kubelogin (install it once with `kubectl krew install oidc-login`, or "
            f"{KUBELOGIN_INSTALL_URL}); `kubectl --kubeconfig {spec.cluster}.kubeconfig auth "
            f"whoami` opens a browser to sign in and then shows `{spec.subject}`.",
            f"{spec.cluster}.kubeconfig", content)


