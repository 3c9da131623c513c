"""RoleBindings and ClusterRoleBindings for one User, created and deleted only by the bot.

Each binding is named from the request ID and says who made it: the labels
``app.kubernetes.io/managed-by: k8s-access-bot``, ``k8s-access-bot/installation: <installation>``
and ``k8s-access-bot/cluster: <configured cluster>``, and the annotation
``k8s-access-bot/request-id``. The bot deletes nothing without the first label, nothing labelled
for another installation or another configured cluster (several may share one API server), and
treats a binding of an older version (only the first label) as its own only where its records
say so. A grant's record keeps each binding's UID from its creation: revoking deletes that very
object in one request (the UID as precondition), and judges by the labels only what it cannot
prove so (no UID recorded, or another object of that name since).
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from enum import StrEnum
from typing import Any

from bot.adapters.kubernetes.api import Conflict, KubernetesApi, Missing
from bot.config import RoleConfig
from bot.domain.errors import PermanentBackendError, TemporaryBackendError
from bot.domain.ports import ManagedGrant

MANAGED_BY = "app.kubernetes.io/managed-by"
BOT = "k8s-access-bot"
INSTALLATION_LABEL = "k8s-access-bot/installation"
CLUSTER_LABEL = "k8s-access-bot/cluster"
REQUEST_ANNOTATION = "k8s-access-bot/request-id"
RBAC = "rbac.authorization.k8s.io"
DEFAULT_INSTALLATION = "default"


class Claim(StrEnum):
    """Whose an object labelled as the bot's is, as seen by one installation's cluster."""

    OURS = "ours"
    """Labelled for this installation and this configured cluster."""
    UNCLAIMED = "unclaimed"
    """Made by an older version: only ``managed-by``; its request ID and the records decide."""
    OTHERS = "others"
    """Another installation's or another configured cluster's: never touched."""


@dataclass(frozen=True)
class Owner:
    """The installation and configured cluster that make and judge objects."""

    installation: str
    cluster: str

    @property
    def labels(self) -> dict[str, str]:
        return {MANAGED_BY: BOT, INSTALLATION_LABEL: self.installation,
                CLUSTER_LABEL: self.cluster}

    def claim(self, item: dict[str, Any]) -> Claim:
        labels = item.get("metadata", {}).get("labels") or {}
        if labels.get(MANAGED_BY) != BOT:
            return Claim.OTHERS
        installation, cluster = labels.get(INSTALLATION_LABEL), labels.get(CLUSTER_LABEL)
        if installation is None and cluster is None:
            return Claim.UNCLAIMED
        if installation == self.installation and cluster == self.cluster:
            return Claim.OURS
        return Claim.OTHERS

    def binding_name(self, request_id: int) -> str:
        return binding_name(request_id, self.installation)


@dataclass(frozen=True)
class BindingRef:
    name: str
    namespace: str | None
    uid: str | None = None
    """``metadata.uid`` of the binding the bot created, as its creation answered; None for a
    binding only planned, listed, or recorded before the bot kept UIDs."""
    resource_version: str | None = None
    """``metadata.resourceVersion`` of that binding as the bot created it: any change since
    (a label edited by hand) gives it another."""

    @property
    def path(self) -> str:
        if self.namespace is None:
            return f"/apis/{RBAC}/v1/clusterrolebindings/{self.name}"
        return f"/apis/{RBAC}/v1/namespaces/{self.namespace}/rolebindings/{self.name}"

    @property
    def collection(self) -> str:
        return self.path.rsplit("/", 1)[0]

    def as_dict(self) -> dict[str, str | None]:
        """``{"name", "namespace"}``, and ``"uid"`` and ``"resource_version"`` when known:
        what a grant's backend reference holds of each binding."""
        made: dict[str, str | None] = {"name": self.name, "namespace": self.namespace}
        if self.uid is not None:
            made["uid"] = self.uid
        if self.resource_version is not None:
            made["resource_version"] = self.resource_version
        return made

    def describe(self) -> str:
        return f"RoleBinding {self.namespace}/{self.name}" if self.namespace \
            else f"ClusterRoleBinding {self.name}"


def binding_name(request_id: int, installation: str = DEFAULT_INSTALLATION) -> str:
    """``k8s-access-<id>``; another installation's name goes in too, so that two installations
    on one API server never reach for the same name."""
    if installation == DEFAULT_INSTALLATION:
        return f"k8s-access-{request_id}"
    return f"k8s-access-{installation}-{request_id}"


def plan(owner: Owner, request_id: int, role: RoleConfig,
         namespace: str | None) -> list[BindingRef]:
    """The bindings one grant needs: one ClusterRoleBinding, or a RoleBinding in its namespace."""
    name = owner.binding_name(request_id)
    if role.cluster_role is not None:
        return [BindingRef(name, None)]
    namespaces = [namespace] if namespace else list(role.namespaces)
    return [BindingRef(name, ns) for ns in namespaces]


def _body(owner: Owner, ref: BindingRef, role: RoleConfig, username: str, request_id: int,
          requester: str, ends_at: datetime) -> dict[str, Any]:
    if ref.namespace is None:
        kind, role_ref = "ClusterRoleBinding", {"apiGroup": RBAC, "kind": "ClusterRole",
                                                "name": role.cluster_role}
    else:
        kind, role_ref = "RoleBinding", {"apiGroup": RBAC, "kind": role.role_kind,
                                         "name": role.role}
    metadata: dict[str, Any] = {
        "name": ref.name,
        "labels": owner.labels,
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


def _request_id(item: dict[str, Any]) -> int | None:
    raw = (item.get("metadata", {}).get("annotations") or {}).get(REQUEST_ANNOTATION, "")
    return int(raw) if raw.isdigit() else None


def _subjects(item: dict[str, Any]) -> list[str | None]:
    return [s.get("name") for s in item.get("subjects") or []]


def _created_at(item: dict[str, Any]) -> datetime | None:
    raw = item.get("metadata", {}).get("creationTimestamp")
    if not raw:
        return None
    try:
        return datetime.fromisoformat(str(raw).replace("Z", "+00:00"))
    except ValueError:
        return None


class Bindings:
    def __init__(self, api: KubernetesApi, owner: Owner) -> None:
        self.api = api
        self.owner = owner

    def create(self, refs: list[BindingRef], role: RoleConfig, username: str, request_id: int,
               requester: str, ends_at: datetime) -> list[BindingRef]:
        """Create each binding; one this installation's cluster made before for the same request
        and user counts as made. The bindings made, each with its ``metadata.uid``."""
        made = []
        for ref in refs:
            body = _body(self.owner, ref, role, username, request_id, requester, ends_at)
            try:
                created = self.api.request("POST", ref.collection, body)
            except Conflict:
                existing = self.api.request("GET", ref.path)
                if not (self.owner.claim(existing) is Claim.OURS
                        and _request_id(existing) == request_id
                        and _subjects(existing) == [username]):
                    raise PermanentBackendError(
                        f"cluster {self.api.cluster}: {ref.describe()} exists and was not made "
                        f"by this bot for request #{request_id} and {username}; remove or "
                        "rename it") from None
                created = existing
            except Missing:
                raise PermanentBackendError(
                    f"cluster {self.api.cluster}: namespace {ref.namespace} does not exist"
                ) from None
            metadata = created.get("metadata", {})
            uid, version = metadata.get("uid"), metadata.get("resourceVersion")
            made.append(BindingRef(ref.name, ref.namespace, str(uid) if uid else None,
                                   str(version) if version else None))
        return made

    def delete(self, refs: list[BindingRef], request_id: int | None = None) -> None:
        """Delete each binding the bot made (for ``request_id``, when given); one already gone
        counts as deleted. A binding of another installation or cluster is never deleted: the
        bot's own among ``refs`` are deleted all the same, then :class:`PermanentBackendError`
        names the others.

        A ref with the UID and resourceVersion the creation answered is deleted in one
        request, with both as preconditions: they prove the object is the very one the bot
        created, unchanged since. When it is not (409: replaced by another object of the same
        name, or changed, relabelled perhaps), and for a ref without them, the binding is read
        and judged by its labels, then deleted with the UID and resourceVersion judged as
        preconditions, so that one replaced or relabelled in between is not deleted
        (:class:`TemporaryBackendError`: judged again on the next try)."""
        refused = []
        for ref in refs:
            if ref.uid is not None and ref.resource_version is not None \
                    and self._deleted_as_made(ref):
                continue
            try:
                existing = self.api.request("GET", ref.path)
            except Missing:
                continue
            claim = self.owner.claim(existing)
            if claim is Claim.OTHERS or (
                    request_id is not None and _request_id(existing) != request_id):
                refused.append(ref.describe())
                continue
            metadata = existing.get("metadata", {})
            preconditions = {field: metadata[field] for field in ("uid", "resourceVersion")
                             if metadata.get(field)}
            try:
                self._delete(ref, preconditions)
            except Missing:
                continue
            except Conflict:
                raise TemporaryBackendError(
                    f"cluster {self.api.cluster}: {ref.describe()} changed while the bot "
                    "deleted it; it is judged again on the next try") from None
        if refused:
            raise PermanentBackendError(
                f"cluster {self.api.cluster}: {', '.join(refused)} "
                f"{'is' if len(refused) == 1 else 'are'} not labelled as this bot's for cluster "
                f"{self.owner.cluster}"
                + (f" and request #{request_id}" if request_id is not None else "")
                + ("; it leaves it alone, remove it by hand if it must go" if len(refused) == 1
                   else "; it leaves them alone, remove them by hand if they must go"))

    def _deleted_as_made(self, ref: BindingRef) -> bool:
        """Delete the very object the bot created, as it created it (its UID and
        resourceVersion as preconditions): True when it is deleted or gone; False when another
        object of that name stands there now, or the bot's was changed since (relabelled: it
        is then read and judged)."""
        try:
            self._delete(ref, {"uid": str(ref.uid),
                               "resourceVersion": str(ref.resource_version)})
        except Missing:
            return True
        except Conflict:
            return False
        return True

    def _delete(self, ref: BindingRef, preconditions: dict[str, str]) -> None:
        """One DELETE, on ``preconditions`` (``uid``, ``resourceVersion``); :class:`Missing`
        when the binding is gone, :class:`Conflict` when a precondition fails."""
        self.api.request("DELETE", ref.path, body={
            "kind": "DeleteOptions", "apiVersion": "v1", "preconditions": preconditions})

    def managed(self) -> list[ManagedGrant]:
        """Every binding on the API server labelled as this installation's for this configured
        cluster, and every binding of an older version (``owned=False``); none of another."""
        selector = {"labelSelector": f"{MANAGED_BY}={BOT}"}
        found = []
        for path, namespaced in ((f"/apis/{RBAC}/v1/clusterrolebindings", False),
                                 (f"/apis/{RBAC}/v1/rolebindings", True)):
            for item in self.api.request("GET", path, query=selector).get("items", []):
                claim = self.owner.claim(item)
                if claim is Claim.OTHERS:
                    continue
                metadata = item.get("metadata", {})
                subjects = _subjects(item)
                found.append(ManagedGrant(
                    name=metadata["name"],
                    namespace=metadata.get("namespace") if namespaced else None,
                    request_id=_request_id(item),
                    subject=subjects[0] if subjects else None,
                    created_at=_created_at(item),
                    owned=claim is Claim.OURS,
                ))
        return found


def refs_from(reference: dict[str, Any]) -> list[BindingRef]:
    """The bindings a grant's backend reference names (their UIDs and resourceVersions where
    it kept them)."""
    return [BindingRef(b["name"], b.get("namespace"), b.get("uid"), b.get("resource_version"))
            for b in reference.get("bindings", [])]
