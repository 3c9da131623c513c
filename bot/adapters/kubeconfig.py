"""Kubeconfig files as the bot hands them out: one cluster, one user, one context."""

from __future__ import annotations

import base64

import yaml


def _b64(data: bytes) -> str:
    return base64.b64encode(data).decode()


def kubeconfig(*, cluster: str, server: str, ca_pem: bytes | None, user: str,
               certificate_pem: bytes | None = None, key: bytes | None = None,
               namespace: str | None = None, exec_plugin: dict[str, object] | None = None,
               token: str | None = None) -> bytes:
    """A kubeconfig with one cluster, one user and one context named after the cluster."""
    cluster_entry: dict[str, object] = {"server": server}
    if ca_pem:
        cluster_entry["certificate-authority-data"] = _b64(ca_pem)
    user_entry: dict[str, object] = {}
    if certificate_pem is not None:
        user_entry["client-certificate-data"] = _b64(certificate_pem)
    if key is not None:
        user_entry["client-key-data"] = _b64(key)
    if exec_plugin is not None:
        user_entry["exec"] = exec_plugin
    if token is not None:
        user_entry["token"] = token
    context: dict[str, object] = {"cluster": cluster, "user": f"{user}@{cluster}"}
    if namespace:
        context["namespace"] = namespace
    document = {
        "apiVersion": "v1",
        "kind": "Config",
        "clusters": [{"name": cluster, "cluster": cluster_entry}],
        "users": [{"name": f"{user}@{cluster}", "user": user_entry}],
        "contexts": [{"name": cluster, "context": context}],
        "current-context": cluster,
    }
    return yaml.safe_dump(document, sort_keys=False).encode()
