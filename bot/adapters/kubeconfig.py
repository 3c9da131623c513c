"""Kubeconfig files as the bot hands them out: one cluster, one user, one context.

A kubeconfig the bot sends must work as it is, with ``kubectl``, for someone who has only just
installed the one tool it names. So the exec entries here say everything the plugin needs
(the GitLab instance for ``glab``, the issuer for ``kubectl oidc-login``), carry an
``installHint`` that kubectl prints when the tool is missing, and use the stable
``client.authentication.k8s.io/v1`` exec API, written the way the tools' own kubeconfig
commands write them (``glab cluster agent update-kubeconfig``, ``kubectl oidc-login setup``).
"""

from __future__ import annotations

import base64
from urllib.parse import urlsplit

import yaml

EXEC_API_VERSION = "client.authentication.k8s.io/v1"
"""The exec credential API every supported kubectl (1.24+) speaks; v1 requires
``interactiveMode``."""
GLAB_INSTALL_URL = "https://gitlab.com/gitlab-org/cli#installation"
KUBELOGIN_INSTALL_URL = "https://github.com/int128/kubelogin#setup"


_SafeDumper: type[yaml.SafeDumper] = getattr(yaml, "CSafeDumper", yaml.SafeDumper)
"""libyaml's emitter where PyYAML was built with it: the same YAML, written ten times faster
(a kubeconfig's long base64 lines cost the pure-Python emitter a few milliseconds each)."""


class _Dumper(_SafeDumper):  # type: ignore[valid-type,misc]
    """Writes text of several lines (install hints) as a YAML block, readable in an editor."""


def _text(dumper: yaml.SafeDumper, data: str) -> yaml.ScalarNode:
    return dumper.represent_scalar("tag:yaml.org,2002:str", data,
                                   style="|" if "\n" in data else None)


_Dumper.add_representer(str, _text)


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
    return yaml.dump(document, Dumper=_Dumper, sort_keys=False).encode()


# --- GitLab agent for Kubernetes: glab ---------------------------------------------------


def gitlab_host(gitlab_url: str) -> str:
    """The GitLab instance as ``glab`` takes it in ``GITLAB_HOST``.

    ``https://gitlab.example.com/`` → ``gitlab.example.com`` (what ``glab cluster agent
    update-kubeconfig`` writes); a port or a relative URL root stays (``gitlab.example.com:8443``,
    ``example.com/gitlab``); a plain-http instance keeps its scheme (``http://gitlab.lan``), which
    glab reads as the protocol to speak. Raises :class:`ValueError` for a URL without a host.
    """
    parts = urlsplit(gitlab_url.strip())
    if not parts.netloc or parts.scheme not in ("http", "https"):
        raise ValueError(f"'{gitlab_url}' is not a GitLab URL like https://gitlab.example.com")
    host = parts.netloc + parts.path.rstrip("/")
    return host if parts.scheme == "https" else f"{parts.scheme}://{host}"


def glab_login_command(gitlab_url: str) -> str:
    """The one command that logs ``glab`` in to the instance at ``gitlab_url``."""
    parts = urlsplit(gitlab_url.strip())
    host = parts.netloc + parts.path.rstrip("/")
    protocol = " --api-protocol http" if parts.scheme == "http" else ""
    return f"glab auth login --hostname {host}{protocol}"


def glab_exec(*, agent_id: int, gitlab_url: str) -> dict[str, object]:
    """The exec entry that gets a token for the agent with ``glab cluster agent get-token``.

    glab picks its GitLab instance from ``GITLAB_HOST``, else from the git remote of the
    directory kubectl runs in, else gitlab.com; the entry names the instance so that neither
    of the last two decides. ``interactiveMode: Never``: get-token never prompts (it uses the
    login from ``glab auth login``), as in glab's own kubeconfig entries.
    """
    return {
        "apiVersion": EXEC_API_VERSION,
        "command": "glab",
        "args": ["cluster", "agent", "get-token", "--agent", str(agent_id)],
        "env": [{"name": "GITLAB_HOST", "value": gitlab_host(gitlab_url)}],
        "installHint": (
            "This kubeconfig gets its token from the GitLab CLI, glab, which is not "
            f"installed.\nInstall it ({GLAB_INSTALL_URL}), then log in once with:\n"
            f"  {glab_login_command(gitlab_url)}\n"),
        "interactiveMode": "Never",
    }


# --- OIDC: kubelogin ----------------------------------------------------------------------


def oidc_login_exec(*, issuer_url: str, client_id: str) -> dict[str, object]:
    """The exec entry that signs in through kubelogin (``kubectl oidc-login get-token``).

    The command is the plugin's own executable, ``kubectl-oidc_login`` (what kubectl runs for
    ``kubectl oidc-login``), so that kubectl shows the install hint when it is missing.
    kubelogin opens a browser for the login and caches the token; as ``kubectl oidc-login
    setup`` suggests, it needs no terminal input (``interactiveMode: Never``).
    """
    return {
        "apiVersion": EXEC_API_VERSION,
        "command": "kubectl-oidc_login",
        "args": ["get-token", f"--oidc-issuer-url={issuer_url}",
                 f"--oidc-client-id={client_id}"],
        "installHint": (
            "This kubeconfig signs you in through OIDC with the kubectl plugin oidc-login "
            f"(kubelogin), which is not installed.\nInstall it with `kubectl krew install "
            f"oidc-login` or as described at {KUBELOGIN_INSTALL_URL}; a browser then opens "
            f"to sign in at {issuer_url}.\n"),
        "interactiveMode": "Never",
    }
