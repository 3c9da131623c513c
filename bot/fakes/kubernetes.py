"""A local TLS server that speaks the part of the Kubernetes API the bot and kubectl use.

Mutual TLS against a test CA: the client certificate's CN is the user and its O the groups.
Every request is authorized by the stored RBAC (ClusterRoles, Roles and their bindings), with
the API's own checks: ``bind`` on the role a binding grants, ``approve`` on the signer for CSR
approval. Approved CSRs for ``kubernetes.io/kube-apiserver-client`` are signed with the test CA,
honouring ``expirationSeconds``. Created bindings get ``creationTimestamp``, ``uid`` and
``resourceVersion``; a single binding can be read, replaced (PUT) and patched (PATCH: JSON merge
patch, strategic merge patch, JSON patch), as ``kubectl label``/``annotate``/``edit`` do, and
every change of a stored object gives it a new ``resourceVersion`` from one counter, as the API
server does. Lists filter by equality-based label selectors (``a=b,c!=d,!e,f``). Errors are
``Status`` objects like the API server sends. Faults (5xx, 429 with ``Retry-After``, hangs,
a signer that never signs) can be switched on, and ``before_list`` runs once while the next
list of bindings is being answered, to put an event in the middle of a slow list.
"""

from __future__ import annotations

import base64
import itertools
import json
import re
import ssl
import threading
import uuid
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from http.server import BaseHTTPRequestHandler
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, urlparse

import yaml
from cryptography import x509
from cryptography.x509.oid import NameOID

from bot.fakes.pki import TestCA
from bot.fakes.server import HeldAnswers, JsonHandler, Served, TLSServer

RBAC = "rbac.authorization.k8s.io"
CERTS = "certificates.k8s.io"
SIGNER = "kubernetes.io/kube-apiserver-client"

BUILTIN_CLUSTER_ROLES: dict[str, list[dict[str, Any]]] = {
    "view": [{"apiGroups": ["", "apps"], "resources": ["pods", "services", "configmaps",
                                                       "deployments", "namespaces"],
              "verbs": ["get", "list", "watch"]}],
    "edit": [{"apiGroups": ["", "apps"], "resources": ["pods", "services", "configmaps",
                                                       "deployments", "secrets"],
              "verbs": ["get", "list", "watch", "create", "update", "patch", "delete"]}],
    "cluster-admin": [{"apiGroups": ["*"], "resources": ["*"], "verbs": ["*"]}],
}

# What the README tells operators to give the bot's own account: tests install exactly this.
BOT_RULES: list[dict[str, Any]] = [
    {"apiGroups": [CERTS], "resources": ["certificatesigningrequests"],
     "verbs": ["create", "get", "list", "watch"]},
    {"apiGroups": [CERTS], "resources": ["certificatesigningrequests/approval"],
     "verbs": ["update"]},
    {"apiGroups": [CERTS], "resources": ["signers"], "resourceNames": [SIGNER],
     "verbs": ["approve"]},
    {"apiGroups": [RBAC], "resources": ["clusterrolebindings", "rolebindings"],
     "verbs": ["create", "get", "list", "delete"]},
    {"apiGroups": [RBAC], "resources": ["clusterroles", "roles"], "verbs": ["bind"],
     "resourceNames": ["view", "edit", "cluster-admin"]},
]

DISCOVERY: dict[str, list[tuple[str, bool, list[str]]]] = {
    "v1": [("pods", True, ["get", "list", "create", "delete"]),
           ("services", True, ["get", "list"]), ("configmaps", True, ["get", "list"]),
           ("secrets", True, ["get", "list"]), ("namespaces", False, ["get", "list"])],
    "apps/v1": [("deployments", True, ["get", "list", "create", "update", "delete"])],
    f"{RBAC}/v1": [("clusterroles", False, ["get", "list"]), ("roles", True, ["get", "list"]),
                   ("clusterrolebindings", False, ["create", "get", "list", "update", "patch",
                                                   "delete"]),
                   ("rolebindings", True, ["create", "get", "list", "update", "patch",
                                           "delete"])],
    f"{CERTS}/v1": [("certificatesigningrequests", False, ["create", "get", "list"])],
    "authentication.k8s.io/v1": [("selfsubjectreviews", False, ["create"])],
    "authorization.k8s.io/v1": [("selfsubjectaccessreviews", False, ["create"])],
}


@dataclass
class User:
    name: str
    groups: list[str]


def _status(code: int, reason: str, message: str) -> dict[str, Any]:
    return {"kind": "Status", "apiVersion": "v1", "metadata": {}, "status": "Failure",
            "message": message, "reason": reason, "code": code}


MERGE_PATCH = "application/merge-patch+json"
STRATEGIC_MERGE_PATCH = "application/strategic-merge-patch+json"
JSON_PATCH = "application/json-patch+json"


def _modified(qualified: str, name: str) -> tuple[int, dict[str, Any]]:
    """409: the write named a resourceVersion the object no longer has."""
    return 409, _status(409, "Conflict",
                        f'Operation cannot be fulfilled on {qualified} "{name}": the object has '
                        "been modified; please apply your changes to the latest version and try "
                        "again")


def _precondition_conflict(qualified: str, name: str, failed: str) -> tuple[int, dict[str, Any]]:
    """409: a precondition (UID, resourceVersion) the object no longer meets, ``failed`` saying
    which (:func:`_precondition_failed`)."""
    return 409, _status(409, "Conflict", f'Operation cannot be fulfilled on {qualified} '
                        f'"{name}": Precondition failed: {failed}')


@dataclass
class FakeKubernetes(Served, HeldAnswers):
    folder: Path
    superusers: set[str] = field(default_factory=lambda: {"admin"})
    namespaces: set[str] = field(default_factory=lambda: {"default", "shop", "payments"})
    signing: bool = True
    fail_next: list[int] = field(default_factory=list)
    retry_after: int | None = None
    """What a failing 429 asks for, in ``Retry-After`` and the Status's
    ``details.retryAfterSeconds``, as the API server's priority and fairness does."""
    hang_next: int = 0
    hang_seconds: float = 3.0
    requests: list[tuple[str, str, str]] = field(default_factory=list)
    """(user, method, path) of every request, in order."""
    clock: Callable[[], datetime] = lambda: datetime.now(UTC)
    before_list: Callable[[], None] | None = None
    """Runs once, before the next list of (Cluster)RoleBindings is answered."""
    csrs_change_after_create: int = 0
    """The next this many CSRs are changed right after they are created (as by another
    controller): an update with the resourceVersion their creation returned is a conflict."""

    def __post_init__(self) -> None:
        self.ca = TestCA()
        self.lock = threading.RLock()
        self._versions = itertools.count(1)
        self.csrs: dict[str, dict[str, Any]] = {}
        self.cluster_roles: dict[str, dict[str, Any]] = {
            name: {"metadata": {"name": name}, "rules": rules}
            for name, rules in BUILTIN_CLUSTER_ROLES.items()}
        self.roles: dict[tuple[str, str], dict[str, Any]] = {}
        self.cluster_role_bindings: dict[str, dict[str, Any]] = {}
        self.role_bindings: dict[tuple[str, str], dict[str, Any]] = {}
        self.ca_path = self.folder / "ca.crt"
        self.ca_path.write_bytes(self.ca.pem)
        cert, key = self.ca.write(self.folder, "server", "kube-apiserver", server=True)
        context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
        context.load_cert_chain(cert, key)
        context.load_verify_locations(self.ca_path)
        context.verify_mode = ssl.CERT_REQUIRED
        self.tls = context
        self._serve_on(TLSServer(("127.0.0.1", 0), _handler(self), context), scheme="https")

    # --- setting up ---------------------------------------------------------------------

    def kubeconfig(self, name: str, user: str, groups: tuple[str, ...] = (),
                   certificate: bytes | None = None, key: bytes | None = None) -> Path:
        """A kubeconfig for ``user`` (a fresh client certificate unless one is given)."""
        if certificate is None or key is None:
            certificate, key = self.ca.issue(user, groups)
        path = self.folder / f"{name}.kubeconfig"
        path.write_text(yaml.safe_dump({
            "apiVersion": "v1", "kind": "Config",
            "clusters": [{"name": "fake", "cluster": {
                "server": self.url,
                "certificate-authority-data": base64.b64encode(self.ca.pem).decode()}}],
            "users": [{"name": user, "user": {
                "client-certificate-data": base64.b64encode(certificate).decode(),
                "client-key-data": base64.b64encode(key).decode()}}],
            "contexts": [{"name": "fake", "context": {"cluster": "fake", "user": user}}],
            "current-context": "fake",
        }))
        return path

    def allow_bot(self, user: str = "k8s-access-bot",
                  rules: list[dict[str, Any]] | None = None) -> None:
        """Give the bot's account the README's RBAC (or other ``rules``)."""
        with self.lock:
            self.cluster_roles["k8s-access-bot"] = {"metadata": {"name": "k8s-access-bot"},
                                                    "rules": rules or BOT_RULES}
            self.cluster_role_bindings["k8s-access-bot"] = {
                "apiVersion": f"{RBAC}/v1", "kind": "ClusterRoleBinding",
                "metadata": {"name": "k8s-access-bot", "uid": str(uuid.uuid4()),
                             "resourceVersion": self.next_version(),
                             "creationTimestamp": self.clock().strftime("%Y-%m-%dT%H:%M:%SZ")},
                "roleRef": {"apiGroup": RBAC, "kind": "ClusterRole", "name": "k8s-access-bot"},
                "subjects": [{"kind": "User", "apiGroup": RBAC, "name": user}]}

    # --- authorization ------------------------------------------------------------------

    def _rules_for(self, user: User, namespace: str | None) -> list[dict[str, Any]]:
        def matches(subjects: list[dict[str, Any]] | None) -> bool:
            return any((s.get("kind") == "User" and s.get("name") == user.name)
                       or (s.get("kind") == "Group" and s.get("name") in user.groups)
                       for s in subjects or [])

        rules: list[dict[str, Any]] = []
        for binding in self.cluster_role_bindings.values():
            if matches(binding.get("subjects")):
                rules += self.cluster_roles.get(binding["roleRef"]["name"], {}).get("rules", [])
        if namespace is not None:
            for (ns, _), binding in self.role_bindings.items():
                if ns != namespace or not matches(binding.get("subjects")):
                    continue
                ref = binding["roleRef"]
                role = self.cluster_roles.get(ref["name"]) if ref["kind"] == "ClusterRole" \
                    else self.roles.get((ns, ref["name"]))
                rules += (role or {}).get("rules", [])
        return rules

    def allowed(self, user: User, verb: str, group: str, resource: str,
                namespace: str | None = None, name: str | None = None) -> bool:
        if user.name in self.superusers or "system:masters" in user.groups:
            return True
        with self.lock:
            for rule in self._rules_for(user, namespace):
                if not ({"*", verb} & set(rule.get("verbs", []))):
                    continue
                if not ({"*", group} & set(rule.get("apiGroups", []))):
                    continue
                if not ({"*", resource} & set(rule.get("resources", []))):
                    continue
                names = rule.get("resourceNames") or []
                if names and name not in names:
                    continue
                return True
        return False

    def next_version(self) -> str:
        """A new ``resourceVersion``, greater than every one given before: each change of a
        stored object takes one (call with the lock held)."""
        return str(next(self._versions))

    # --- signing ------------------------------------------------------------------------

    def _sign(self, csr_object: dict[str, Any]) -> None:
        spec = csr_object["spec"]
        request = x509.load_pem_x509_csr(base64.b64decode(spec["request"]))
        seconds = spec.get("expirationSeconds") or 3600
        now = datetime.now(UTC)
        pem = self.ca.sign(request.subject, request.public_key(), now + timedelta(seconds=seconds),
                           not_before=now - timedelta(minutes=5))
        csr_object.setdefault("status", {})["certificate"] = base64.b64encode(pem).decode()

    # --- the API ------------------------------------------------------------------------

    def handle(self, user: User, method: str, path: str, query: dict[str, str],
               body: Any, content_type: str = "application/json") -> tuple[int, dict[str, Any]]:
        """One request: ``body`` is the decoded JSON (a list for a JSON patch), or the raw
        text when it was not JSON; ``content_type`` the request's media type."""
        with self.lock:
            self.requests.append((user.name, method, path))
            if self.fail_next:
                code = self.fail_next.pop(0)
                if code == 429:
                    failure = _status(code, "TooManyRequests",
                                      "Too many requests, please try again later.")
                    if self.retry_after is not None:
                        failure["details"] = {"retryAfterSeconds": self.retry_after}
                    return code, failure
                return code, _status(code, "InternalError", "etcdserver: request timed out")
        if path in ("/version", "/version/"):
            return 200, {"major": "1", "minor": "37", "gitVersion": "v1.37.0"}
        if path == "/api":
            return 200, {"kind": "APIVersions", "versions": ["v1"],
                         "serverAddressByClientCIDRs": []}
        if path == "/apis":
            return 200, {"kind": "APIGroupList", "apiVersion": "v1", "groups": [
                {"name": gv.split("/")[0], "versions": [{"groupVersion": gv,
                                                         "version": gv.split("/")[1]}],
                 "preferredVersion": {"groupVersion": gv, "version": gv.split("/")[1]}}
                for gv in DISCOVERY if "/" in gv]}
        for group_version, resources in DISCOVERY.items():
            prefix = "/api/v1" if group_version == "v1" else f"/apis/{group_version}"
            if path == prefix:
                return 200, {"kind": "APIResourceList", "apiVersion": "v1",
                             "groupVersion": group_version, "resources": [
                                 {"name": r, "singularName": r.rstrip("s"), "namespaced": ns,
                                  "kind": r.capitalize(), "verbs": verbs}
                                 for r, ns, verbs in resources]}
        if method == "GET" and path.endswith("rolebindings"):
            self.run_before_list()
        with self.lock:
            return self._resource(user, method, path, query, body,
                                  content_type.split(";", 1)[0].strip().lower())

    def _forbidden(self, user: User, verb: str, group: str, resource: str,
                   namespace: str | None) -> tuple[int, dict[str, Any]]:
        where = f'in the namespace "{namespace}"' if namespace else "at the cluster scope"
        qualified = f"{resource}.{group}" if group else resource
        return 403, _status(403, "Forbidden",
                            f'{qualified} is forbidden: User "{user.name}" cannot {verb} resource '
                            f'"{resource}" in API group "{group}" {where}')

    def _resource(self, user: User, method: str, path: str, query: dict[str, str],
                  body: Any, content_type: str) -> tuple[int, dict[str, Any]]:
        if path == "/apis/authentication.k8s.io/v1/selfsubjectreviews" and method == "POST":
            return 201, {"apiVersion": "authentication.k8s.io/v1", "kind": "SelfSubjectReview",
                         "metadata": {}, "status": {"userInfo": {
                             "username": user.name, "groups": [*user.groups,
                                                                 "system:authenticated"]}}}
        if path == "/apis/authorization.k8s.io/v1/selfsubjectaccessreviews":
            return self._access_review(user, method, body)
        match = re.fullmatch(rf"/apis/{CERTS}/v1/certificatesigningrequests(?:/([^/]+))?"
                             r"(?:/(approval|status))?", path)
        if isinstance(body, str) and method != "PATCH":  # a patch's media type is judged first
            return 400, _status(400, "BadRequest", "the body of the request could not be "
                                "decoded as JSON")
        if match:
            return self._csr(user, method, match.group(1), match.group(2), body)
        match = re.fullmatch(rf"/apis/{RBAC}/v1(?:/namespaces/([^/]+))?/"
                             r"(clusterrolebindings|rolebindings)(?:/([^/]+))?", path)
        if match:
            return self._binding(user, method, match.group(1), match.group(2), match.group(3),
                                 query, body, content_type)
        return 404, _status(404, "NotFound", "the server could not find the requested resource")

    def _access_review(self, user: User, method: str,
                       body: dict[str, Any] | None) -> tuple[int, dict[str, Any]]:
        """SelfSubjectAccessReview: the same RBAC evaluation that guards every request."""
        if method != "POST":
            return 405, _status(405, "MethodNotAllowed",
                                f"the server does not allow this method on the requested "
                                f"resource ({method})")
        if not isinstance(body, dict):
            return 400, _status(400, "BadRequest", "the body of the request was empty or not "
                                "a SelfSubjectAccessReview")
        spec = body.get("spec")
        attributes = spec.get("resourceAttributes") if isinstance(spec, dict) else None
        if not isinstance(attributes, dict) or not attributes.get("verb"):
            return 422, _status(422, "Invalid",
                                'SelfSubjectAccessReview.authorization.k8s.io "" is invalid: '
                                "spec.resourceAttributes: Invalid value: exactly one of "
                                "nonResourceAttributes or resourceAttributes must be specified")
        subresource = attributes.get("subresource") or ""
        allowed = self.allowed(user, attributes["verb"], attributes.get("group") or "",
                               (attributes.get("resource") or "")
                               + (f"/{subresource}" if subresource else ""),
                               attributes.get("namespace") or None, attributes.get("name"))
        return 201, {**body, "status": {"allowed": allowed}}

    def _csr(self, user: User, method: str, name: str | None, sub: str | None,
             body: dict[str, Any] | None) -> tuple[int, dict[str, Any]]:
        resource = "certificatesigningrequests" + (f"/{sub}" if sub else "")
        verb = {"POST": "create", "GET": "get" if name else "list", "PUT": "update",
                "PATCH": "patch", "DELETE": "delete"}.get(method, method.lower())
        if not self.allowed(user, verb, CERTS, resource, None, name):
            return self._forbidden(user, verb, CERTS, resource, None)
        if method == "POST":
            assert body is not None
            new_name = body["metadata"]["name"]
            if new_name in self.csrs:
                return 409, _status(409, "AlreadyExists",
                                    f'certificatesigningrequests.{CERTS} "{new_name}" '
                                    "already exists")
            if (body["spec"].get("expirationSeconds") or 600) < 600:
                return 422, _status(422, "Invalid", "spec.expirationSeconds: Invalid value: "
                                    "may not specify a duration less than 600 seconds (10m0s)")
            stored = {**body, "status": {}}
            stored["metadata"]["creationTimestamp"] = datetime.now(UTC).isoformat()
            stored["metadata"]["resourceVersion"] = self.next_version()
            self.csrs[new_name] = stored
            created = json.loads(json.dumps(stored))
            if self.csrs_change_after_create:
                self.csrs_change_after_create -= 1
                stored["metadata"]["resourceVersion"] = self.next_version()
            return 201, created
        if name is None:
            return 200, {"kind": "CertificateSigningRequestList",
                         "items": list(self.csrs.values())}
        if name not in self.csrs:
            return 404, _status(404, "NotFound",
                                f'certificatesigningrequests.{CERTS} "{name}" not found')
        stored = self.csrs[name]
        if method == "GET":
            return 200, stored
        if method == "PUT" and sub == "approval":
            assert body is not None
            signer = stored["spec"]["signerName"]
            wildcard = signer.split("/", 1)[0] + "/*"  # the API server accepts the domain too
            if not (self.allowed(user, "approve", CERTS, "signers", None, signer)
                    or self.allowed(user, "approve", CERTS, "signers", None, wildcard)):
                return 403, _status(403, "Forbidden",
                                    f'certificatesigningrequests.{CERTS} "{name}" is forbidden: '
                                    f'user not permitted to approve requests with signerName '
                                    f'"{signer}"')
            version = body.get("metadata", {}).get("resourceVersion")
            if version and version != stored["metadata"].get("resourceVersion"):
                return _modified(f"certificatesigningrequests.{CERTS}", name)
            stored["metadata"]["resourceVersion"] = self.next_version()
            stored["status"]["conditions"] = body.get("status", {}).get("conditions", [])
            approved = any(c.get("type") == "Approved" for c in stored["status"]["conditions"])
            if approved and self.signing and signer == SIGNER:
                self._sign(stored)  # the signer's own change, after the approval's
                stored["metadata"]["resourceVersion"] = self.next_version()
            return 200, stored
        if method == "DELETE":
            del self.csrs[name]
            return 200, _status(200, "", "") | {"status": "Success"}
        return 405, _status(405, "MethodNotAllowed", "method not allowed")

    def _binding(self, user: User, method: str, namespace: str | None, plural: str,
                 name: str | None, query: dict[str, str], body: Any,
                 content_type: str = "application/json") -> tuple[int, dict[str, Any]]:
        cluster_scoped = plural == "clusterrolebindings"
        verb = {"POST": "create", "GET": "get" if name else "list", "DELETE": "delete",
                "PUT": "update", "PATCH": "patch"}.get(method, method.lower())
        if not self.allowed(user, verb, RBAC, plural, namespace, name):
            return self._forbidden(user, verb, RBAC, plural, namespace)
        if cluster_scoped:
            store: dict[Any, dict[str, Any]] = self.cluster_role_bindings
        else:
            store = self.role_bindings
        kind = "ClusterRoleBinding" if cluster_scoped else "RoleBinding"
        if method == "GET" and name is None:
            selector = query.get("labelSelector", "")
            items = [b for key, b in store.items()
                     if (cluster_scoped or namespace is None or key[0] == namespace)
                     and _selected(b["metadata"].get("labels") or {}, selector)]
            return 200, {"kind": f"{kind}List", "apiVersion": f"{RBAC}/v1", "items": items}
        if method == "POST":
            assert body is not None
            new_name = body["metadata"]["name"]
            key: Any = new_name if cluster_scoped else (namespace, new_name)
            if not cluster_scoped and namespace not in self.namespaces:
                return 404, _status(404, "NotFound", f'namespaces "{namespace}" not found')
            refused = self._bind_refused(user, plural, new_name, namespace, body["roleRef"])
            if refused:
                return refused
            if key in store:
                return 409, _status(409, "AlreadyExists",
                                    f'{plural}.{RBAC} "{new_name}" already exists')
            stored = json.loads(json.dumps(body))
            if not cluster_scoped:
                stored["metadata"]["namespace"] = namespace
            stored["metadata"].update(
                creationTimestamp=self.clock().strftime("%Y-%m-%dT%H:%M:%SZ"),
                uid=str(uuid.uuid4()), resourceVersion=self.next_version())
            store[key] = stored
            return 201, stored
        if method not in ("GET", "PUT", "PATCH", "DELETE") or name is None:
            return 405, _status(405, "MethodNotAllowed",
                                f"the server does not allow this method on the requested "
                                f"resource ({method})")
        if method == "PATCH" and content_type not in (MERGE_PATCH, STRATEGIC_MERGE_PATCH,
                                                      JSON_PATCH):
            return 415, _status(415, "UnsupportedMediaType",
                                "the body of the request was in an unknown format - accepted "
                                f"media types include: {JSON_PATCH}, {MERGE_PATCH}, "
                                f"{STRATEGIC_MERGE_PATCH}")
        key = name if cluster_scoped else (namespace, name)
        if key not in store:
            return 404, _status(404, "NotFound", f'{plural}.{RBAC} "{name}" not found')
        if method == "GET":
            return 200, {"apiVersion": f"{RBAC}/v1", "kind": kind, **store[key]}
        if method == "DELETE":
            failed = _precondition_failed(store[key], body)
            if failed:
                return _precondition_conflict(f"{plural}.{RBAC}", name, failed)
            del store[key]
            return 200, {"kind": "Status", "apiVersion": "v1", "status": "Success"}
        current = store[key]
        if method == "PUT":
            if not isinstance(body, dict) or not isinstance(body.get("metadata"), dict):
                return 400, _status(400, "BadRequest",
                                    f"the body of the request was not a {kind}")
            changed: Any = json.loads(json.dumps(body))
        else:
            changed, failure = _patched(current, body, content_type)
            if failure:
                return failure
        return self._replace(user, plural, kind, key, name, namespace, current, changed)

    def _bind_refused(self, user: User, plural: str, name: str, namespace: str | None,
                      ref: dict[str, Any]) -> tuple[int, dict[str, Any]] | None:
        """403 unless ``user`` may bind the role ``ref`` names (the API server's escalation
        check, on every create and update of a binding); None when it may."""
        role_resource = "clusterroles" if ref.get("kind") == "ClusterRole" else "roles"
        role_namespace = None if ref.get("kind") == "ClusterRole" else namespace
        if self.allowed(user, "bind", RBAC, role_resource, role_namespace, ref.get("name")):
            return None
        return 403, _status(403, "Forbidden",
                            f'{plural}.{RBAC} "{name}" is forbidden: user "{user.name}" is '
                            "attempting to grant RBAC permissions not currently held (no bind "
                            f'permission on {ref.get("kind")} {ref.get("name")})')

    def _replace(self, user: User, plural: str, kind: str, key: Any, name: str,
                 namespace: str | None, current: dict[str, Any],
                 changed: Any) -> tuple[int, dict[str, Any]]:
        """Store ``changed`` in place of ``current`` (a PUT's body, or a patch's result) as
        the API server's update does: a resourceVersion it names must be the stored one (409),
        a UID it names the stored one; the name, namespace, UID and creationTimestamp are kept,
        the roleRef cannot change, and it gets a new resourceVersion."""
        qualified = f"{plural}.{RBAC}"
        if not isinstance(changed, dict) or not isinstance(changed.get("metadata"), dict):
            return 422, _status(422, "Invalid", f'{kind}.{RBAC} "{name}" is invalid: '
                                "metadata: Required value")
        metadata = changed["metadata"]
        if metadata.get("name", name) != name:
            return 400, _status(400, "BadRequest",
                                f"the name of the object ({metadata.get('name')}) does not "
                                f"match the name on the URL ({name})")
        if namespace is not None and metadata.get("namespace", namespace) != namespace:
            return 400, _status(400, "BadRequest", "the namespace of the provided object does "
                                "not match the namespace sent on the request")
        stored_metadata = current["metadata"]
        version = metadata.get("resourceVersion")
        if version and str(version) != stored_metadata.get("resourceVersion"):
            return _modified(qualified, name)
        failed = _precondition_failed(current,
                                      {"preconditions": {"uid": metadata.get("uid") or None}})
        if failed:
            return _precondition_conflict(qualified, name, failed)
        if changed.get("roleRef") != current.get("roleRef"):
            ref = changed.get("roleRef")
            return 422, _status(422, "Invalid",
                                f'{kind}.{RBAC} "{name}" is invalid: roleRef: Invalid value: '
                                f"{json.dumps(ref)}: cannot change roleRef")
        refused = self._bind_refused(user, plural, name, namespace, current["roleRef"])
        if refused:
            return refused
        metadata.update(name=name, uid=stored_metadata.get("uid"),
                        creationTimestamp=stored_metadata.get("creationTimestamp"),
                        resourceVersion=self.next_version())
        if namespace is not None:
            metadata["namespace"] = namespace
        changed.setdefault("apiVersion", current.get("apiVersion", f"{RBAC}/v1"))
        changed.setdefault("kind", current.get("kind", kind))
        if plural == "clusterrolebindings":
            self.cluster_role_bindings[key] = changed
        else:
            self.role_bindings[key] = changed
        return 200, changed


def _merge_patch(target: Any, patch: Any) -> Any:
    """RFC 7386 JSON merge patch: objects merge member by member, ``null`` removes a member,
    anything else (lists included) replaces."""
    if not isinstance(patch, dict):
        return json.loads(json.dumps(patch))
    merged = dict(target) if isinstance(target, dict) else {}
    for member, value in patch.items():
        if value is None:
            merged.pop(member, None)
        else:
            merged[member] = _merge_patch(merged.get(member), value)
    return merged


def _patched(current: dict[str, Any], patch: Any,
             content_type: str) -> tuple[Any, tuple[int, dict[str, Any]] | None]:
    """``current`` with ``patch`` applied as ``content_type`` says, or the API server's
    failure. A strategic merge patch of a binding is a merge patch: its labels and annotations
    merge, and ``subjects`` (a list without a merge key) is replaced; the ``$patch``-style
    directives are not understood. A JSON patch (RFC 6902) needs the ``jsonpatch`` package
    (installed with the test extras): without it the answer is 415, honestly."""
    document = json.loads(json.dumps(current))
    if content_type in (MERGE_PATCH, STRATEGIC_MERGE_PATCH):
        if not isinstance(patch, dict):
            return None, (400, _status(400, "BadRequest", "the body of the request was not a "
                                       "JSON object: a merge patch is one"))
        return _merge_patch(document, patch), None
    try:
        import jsonpatch
    except ImportError:
        return None, (415, _status(415, "UnsupportedMediaType",
                                   "the body of the request was in an unknown format - "
                                   f"accepted media types include: {MERGE_PATCH}, "
                                   f"{STRATEGIC_MERGE_PATCH}"))
    if not isinstance(patch, list):
        return None, (400, _status(400, "BadRequest", "the body of the request was not a "
                                   "JSON patch: a JSON patch is a list of operations"))
    try:
        return jsonpatch.apply_patch(document, patch), None
    except (jsonpatch.JsonPatchException, jsonpatch.JsonPointerException) as error:
        return None, (422, _status(422, "Invalid", str(error)))


def _precondition_failed(stored: dict[str, Any], options: dict[str, Any] | None) -> str | None:
    """What a DeleteOptions body's ``preconditions`` (UID, resourceVersion) find changed in the
    object, in the API server's words; None when they hold or there are none."""
    preconditions = (options or {}).get("preconditions") or {}
    metadata = stored.get("metadata", {})
    for key, name in (("uid", "UID"), ("resourceVersion", "ResourceVersion")):
        wanted = preconditions.get(key)
        if wanted is not None and wanted != metadata.get(key):
            return (f"{name} in precondition: {wanted}, {name} in object meta: "
                    f"{metadata.get(key, '')}")
    return None


def _selected(labels: dict[str, str], selector: str) -> bool:
    """Equality-based label selector requirements, comma-separated (all must hold)."""
    for requirement in filter(None, (r.strip() for r in selector.split(","))):
        if requirement.startswith("!"):
            if requirement[1:] in labels:
                return False
        elif "!=" in requirement:
            key, _, value = requirement.partition("!=")
            if labels.get(key) == value:
                return False
        elif "=" in requirement:
            key, _, value = requirement.partition("=")
            if labels.get(key) != value.lstrip("="):
                return False
        elif requirement not in labels:
            return False
    return True


def _handler(kube: FakeKubernetes) -> type[BaseHTTPRequestHandler]:
    class Handler(JsonHandler):
        # The headers and the body go out as two writes; on a kept-alive connection Nagle's
        # algorithm would hold the body for the client's delayed ACK (40 ms), a wait no real
        # API server makes.
        disable_nagle_algorithm = True

        def _user(self) -> User:
            certificate = self.connection.getpeercert()
            name, groups = "", []
            for rdn in certificate.get("subject", ()):
                for key, value in rdn:
                    if key == "commonName":
                        name = value
                    elif key == "organizationName":
                        groups.append(value)
            return User(name, groups)

        def _serve(self) -> None:
            url = urlparse(self.path)
            raw = self.read_body()
            content_type = self.headers.get("Content-Type", "")
            body: Any = None
            if raw and "protobuf" in content_type:
                body = _from_protobuf(url.path, raw)  # kubectl sends auth reviews as protobuf
            elif raw:
                try:
                    body = json.loads(raw)
                except ValueError:
                    body = raw.decode(errors="replace")  # answered 400 (or 415 for a patch)
            kube.hang_if_due()
            query = {k: v[0] for k, v in parse_qs(url.query).items()}
            status, payload = kube.handle(self._user(), self.command, url.path, query, body,
                                          content_type=content_type or "application/json")
            wait = (payload.get("details") or {}).get("retryAfterSeconds")
            self.send_json(status, payload, {"Retry-After": str(wait)}
                           if status == 429 and wait is not None else None)

        do_GET = do_POST = do_PUT = do_DELETE = do_PATCH = _serve

    return Handler


def subject_of(pem: bytes) -> tuple[str, list[str]]:
    certificate = x509.load_pem_x509_certificate(pem)
    names = certificate.subject
    return (str(names.get_attributes_for_oid(NameOID.COMMON_NAME)[0].value),
            [str(a.value) for a in names.get_attributes_for_oid(NameOID.ORGANIZATION_NAME)])


# --- the little protobuf kubectl speaks to the review APIs ---------------------------------


def _fields(data: bytes) -> dict[int, list[bytes | int]]:
    """Decode one protobuf message into field number → values (varints and byte strings)."""
    fields: dict[int, list[bytes | int]] = {}
    index = 0

    def varint() -> int:
        nonlocal index
        shift = result = 0
        while True:
            byte = data[index]
            index += 1
            result |= (byte & 0x7F) << shift
            if not byte & 0x80:
                return result
            shift += 7

    while index < len(data):
        key = varint()
        number, wire = key >> 3, key & 7
        if wire == 0:
            fields.setdefault(number, []).append(varint())
        elif wire == 2:
            length = varint()
            fields.setdefault(number, []).append(data[index:index + length])
            index += length
        else:
            raise ValueError(f"unsupported protobuf wire type {wire}")
    return fields


def _string(fields: dict[int, list[bytes | int]], number: int) -> str:
    value = fields.get(number, [b""])[0]
    return value.decode() if isinstance(value, bytes) else str(value)


def _from_protobuf(path: str, raw: bytes) -> dict[str, Any] | None:
    """The JSON form of a SelfSubjectAccessReview (or an empty SelfSubjectReview) sent in the
    ``k8s\\0`` protobuf envelope (runtime.Unknown)."""
    if not raw.startswith(b"k8s\x00"):
        raise ValueError("not a Kubernetes protobuf envelope")
    if path.endswith("/selfsubjectreviews"):
        return None
    unknown = _fields(raw[4:])
    review = _fields(unknown[2][0])  # type: ignore[arg-type]
    spec = _fields(review.get(2, [b""])[0])  # type: ignore[arg-type]
    attributes = _fields(spec.get(1, [b""])[0])  # type: ignore[arg-type]
    names = {1: "namespace", 2: "verb", 3: "group", 4: "version", 5: "resource",
             6: "subresource", 7: "name"}
    return {"apiVersion": "authorization.k8s.io/v1", "kind": "SelfSubjectAccessReview",
            "spec": {"resourceAttributes": {key: _string(attributes, number)
                                            for number, key in names.items()}}}
