"""RoleBindings and ClusterRoleBindings for one User, created and deleted only by the bot.

Each binding is named from the request ID, labelled ``app.kubernetes.io/managed-by:
k8s-access-bot`` and annotated with the request; the bot deletes nothing without that label.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from typing import Any

from bot.adapters.kubernetes.api import Conflict, KubernetesApi, Missing
from bot.config import RoleConfig
from bot.domain.errors import PermanentBackendError
from bot.domain.ports import ManagedGrant

MANAGED_BY = "app.kubernetes.io/managed-by"
BOT = "k8s-access-bot"
REQUEST_ANNOTATION = "k8s-access-bot/request-id"
RBAC = "rbac.authorization.k8s.io"


@dataclass(frozen=True)
class BindingRef:
    name: str
    namespace: str | None

    @property
    def path(self) -> str:
        if self.namespace is None:
            return f"/apis/{RBAC}/v1/clusterrolebindings/{self.name}"
        return f"/apis/{RBAC}/v1/namespaces/{self.namespace}/rolebindings/{self.name}"

    @property
    def collection(self) -> str:
        return self.path.rsplit("/", 1)[0]

    def as_dict(self) -> dict[str, str | None]:
        return {"name": self.name, "namespace": self.namespace}

    def describe(self) -> str:
        return f"RoleBinding {self.namespace}/{self.name}" if self.namespace \
            else f"ClusterRoleBinding {self.name}"


def binding_name(request_id: int) -> str:
    return f"k8s-access-{request_id}"


def plan(request_id: int, role: RoleConfig, namespace: str | None) -> list[BindingRef]:
    """The bindings one grant needs: one ClusterRoleBinding, or a RoleBinding in its namespace."""
    name = binding_name(request_id)
    if role.cluster_role is not None:
        return [BindingRef(name, None)]
    namespaces = [namespace] if namespace else list(role.namespaces)
    return [BindingRef(name, ns) for ns in namespaces]


def _body(ref: BindingRef, role: RoleConfig, username: str, request_id: int,
          requester: str, ends_at: datetime) -> dict[str, Any]:
    if ref.namespace is None:
        kind, role_ref = "ClusterRoleBinding", {"apiGroup": RBAC, "kind": "ClusterRole",
                                                "name": role.cluster_role}
    else:
        kind, role_ref = "RoleBinding", {"apiGroup": RBAC, "kind": role.role_kind,
                                         "name": role.role}
    metadata: dict[str, Any] = {
        "name": ref.name,
        "labels": {MANAGED_BY: BOT},
        "annotations": {REQUEST_ANNOTATION: str(request_id),
                        "k8s-access-bot/requester": requester,
                        "k8s-access-bot/ends-at": ends_at.isoformat()},
    }
    if ref.namespace is not None:
        metadata["namespace"] = ref.namespace
    return {
        "apiVersion": f"{RBAC}/v1",
        "kind": kind,
        "metadata": metadata,
        "roleRef": role_ref,
        "subjects": [{"kind": "User", "apiGroup": RBAC, "name": username}],
    }


def _is_ours(existing: dict[str, Any], username: str | None = None) -> bool:
    labels = existing.get("metadata", {}).get("labels") or {}
    if labels.get(MANAGED_BY) != BOT:
        return False
    if username is None:
        return True
    return [s.get("name") for s in existing.get("subjects") or []] == [username]


class Bindings:
    def __init__(self, api: KubernetesApi) -> None:
        self.api = api

    def create(self, refs: list[BindingRef], role: RoleConfig, username: str, request_id: int,
               requester: str, ends_at: datetime) -> None:
        """Create each binding; one the bot made before for the same user counts as made."""
        for ref in refs:
            body = _body(ref, role, username, request_id, requester, ends_at)
            try:
                self.api.request("POST", ref.collection, body)
            except Conflict:
                existing = self.api.request("GET", ref.path)
                if not _is_ours(existing, username):
                    raise PermanentBackendError(
                        f"cluster {self.api.cluster}: {ref.describe()} exists and was not made "
                        f"by the bot for {username}; remove or rename it") from None
            except Missing:
                raise PermanentBackendError(
                    f"cluster {self.api.cluster}: namespace {ref.namespace} does not exist"
                ) from None

    def delete(self, refs: list[BindingRef]) -> None:
        """Delete each binding the bot made; one already gone counts as deleted."""
        for ref in refs:
            try:
                existing = self.api.request("GET", ref.path)
            except Missing:
                continue
            if not _is_ours(existing):
                raise PermanentBackendError(
                    f"cluster {self.api.cluster}: {ref.describe()} is no longer labelled as the "
                    "bot's; it leaves it alone, remove it by hand if it must go")
            try:
                self.api.request("DELETE", ref.path)
            except Missing:
                continue

    def managed(self) -> list[ManagedGrant]:
        """Every binding labelled as the bot's, in the whole cluster."""
        selector = {"labelSelector": f"{MANAGED_BY}={BOT}"}
        found = []
        for path, namespaced in ((f"/apis/{RBAC}/v1/clusterrolebindings", False),
                                 (f"/apis/{RBAC}/v1/rolebindings", True)):
            for item in self.api.request("GET", path, query=selector).get("items", []):
                metadata = item.get("metadata", {})
                if not _is_ours(item):
                    continue
                raw_id = (metadata.get("annotations") or {}).get(REQUEST_ANNOTATION, "")
                subjects = item.get("subjects") or []
                found.append(ManagedGrant(
                    name=metadata["name"],
                    namespace=metadata.get("namespace") if namespaced else None,
                    request_id=int(raw_id) if raw_id.isdigit() else None,
                    subject=subjects[0].get("name") if subjects else None,
                ))
        return found


def refs_from(reference: dict[str, Any]) -> list[BindingRef]:
    return [BindingRef(b["name"], b.get("namespace")) for b in reference.get("bindings", [])]
