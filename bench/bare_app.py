"""The baselines: slack-bolt apps served like the bot (waitress), doing only what Slack asks.

``python -m bench.bare_app PORT SLACK_API_URL [MODE [FILE]]``, MODE one of:

- none: Bolt's default mode, acknowledging only;
- ``before-response``: as the bot runs Bolt (the listener answers before it returns, instead
  of Bolt waiting for the answer in steps of 10 ms);
- ``forms VIEW.json``: Bolt's default mode, and the listener opens ``VIEW`` (the bot's own
  form, as the local Slack received it) for an incomplete ``request`` and for Deny and Extend,
  as Bolt recommends: from the process that acknowledges, while the ``trigger_id`` is valid;
- ``kubeconfig CREDENTIALS.json``: Bolt's default mode, and an Approve click does the outside
  work of a certificate grant with nothing around it: a key and CSR, the CSR created, approved
  and read back signed from the local Kubernetes, a ClusterRoleBinding, a DM opened and the
  kubeconfig shared in it. The button's value is the requester's Slack ID.
"""

from __future__ import annotations

import base64
import http.client
import json
import ssl
import sys
import uuid
from collections.abc import Callable
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import yaml
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID
from slack_bolt import App
from slack_sdk import WebClient
from waitress import serve

from bot.adapters.web import WebApp
from bot.app import slack_http
from bot.fakes.slack import BOT_TOKEN, SIGNING_SECRET

CSRS = "/apis/certificates.k8s.io/v1/certificatesigningrequests"
BINDINGS = "/apis/rbac.authorization.k8s.io/v1/clusterrolebindings"


def bare_app(api_url: str, before_response: bool = False, form: dict[str, Any] | None = None,
             cluster: dict[str, str] | None = None) -> App:
    app = App(signing_secret=SIGNING_SECRET, token_verification_enabled=False,
              client=WebClient(token=BOT_TOKEN, base_url=api_url),
              process_before_response=before_response)

    @app.command("/k8s-access")
    def command(ack: Callable[[], None], command: dict[str, Any], client: WebClient) -> None:
        ack()
        if form is not None and len(command.get("text", "").split()) < 3 and \
                command.get("text", "").startswith("request"):
            client.views_open(trigger_id=command["trigger_id"], view=form)

    @app.action("approve")
    def approve(ack: Callable[[], None], body: dict[str, Any], client: WebClient) -> None:
        ack()
        if cluster is not None:
            grant(cluster, client, body["actions"][0]["value"])

    @app.action("deny")
    @app.action("extend")
    def open_form(ack: Callable[[], None], body: dict[str, Any], client: WebClient) -> None:
        ack()
        if form is not None:
            client.views_open(trigger_id=body["trigger_id"], view=form)

    return app


def grant(cluster: dict[str, str], client: WebClient, user_id: str) -> None:
    """A client certificate for ``user_id``, signed by the cluster, bound to ``view``, and the
    kubeconfig shared in the user's DM."""
    key = ec.generate_private_key(ec.SECP256R1())
    name = f"bare-{uuid.uuid4().hex[:12]}"
    username = f"{user_id.lower()}@example.com"
    csr = x509.CertificateSigningRequestBuilder().subject_name(x509.Name(
        [x509.NameAttribute(NameOID.COMMON_NAME, username)])).sign(key, hashes.SHA256())
    api = _Kubernetes(cluster)
    created = api.call("POST", CSRS, {
        "apiVersion": "certificates.k8s.io/v1", "kind": "CertificateSigningRequest",
        "metadata": {"name": name},
        "spec": {"request": base64.b64encode(csr.public_bytes(serialization.Encoding.PEM))
                 .decode(), "signerName": "kubernetes.io/kube-apiserver-client",
                 "usages": ["client auth"], "expirationSeconds": 3600}})
    created.setdefault("status", {})["conditions"] = [
        {"type": "Approved", "status": "True", "reason": "Bare", "message": "bare"}]
    api.call("PUT", f"{CSRS}/{name}/approval", created)
    certificate = api.call("GET", f"{CSRS}/{name}")["status"]["certificate"]
    api.call("POST", BINDINGS, {
        "apiVersion": "rbac.authorization.k8s.io/v1", "kind": "ClusterRoleBinding",
        "metadata": {"name": name},
        "roleRef": {"apiGroup": "rbac.authorization.k8s.io", "kind": "ClusterRole",
                    "name": "view"},
        "subjects": [{"kind": "User", "apiGroup": "rbac.authorization.k8s.io",
                      "name": username}]})
    key_pem = key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                                serialization.NoEncryption())
    kubeconfig = yaml.safe_dump({
        "apiVersion": "v1", "kind": "Config",
        "clusters": [{"name": "c", "cluster": {"server": cluster["url"],
                                               "certificate-authority-data": base64.b64encode(
                                                   Path(cluster["ca"]).read_bytes()).decode()}}],
        "users": [{"name": username, "user": {"client-certificate-data": certificate,
                                              "client-key-data": base64.b64encode(
                                                  key_pem).decode()}}],
        "contexts": [{"name": "c", "context": {"cluster": "c", "user": username}}],
        "current-context": "c"})
    channel = client.conversations_open(users=user_id)["channel"]["id"]
    client.files_upload_v2(channel=channel, content=kubeconfig, filename="kubeconfig.yaml")
    api.close()


class _Kubernetes:
    """JSON over mutual TLS, one connection per grant."""

    def __init__(self, cluster: dict[str, str]) -> None:
        context = ssl.create_default_context(cafile=cluster["ca"])
        context.load_cert_chain(cluster["certificate"], cluster["key"])
        address = urlsplit(cluster["url"])
        self._connection = http.client.HTTPSConnection(address.hostname or "127.0.0.1",
                                                       address.port, context=context, timeout=30)

    def call(self, method: str, path: str, body: dict[str, Any] | None = None) -> Any:
        payload = json.dumps(body).encode() if body is not None else None
        self._connection.request(method, path, payload, {"Content-Type": "application/json"})
        response = self._connection.getresponse()
        answer = json.loads(response.read() or b"{}")
        if response.status >= 300:
            raise RuntimeError(f"{method} {path}: {response.status} {answer}")
        return answer

    def close(self) -> None:
        self._connection.close()


if __name__ == "__main__":
    port, api_url, *mode = sys.argv[1:]
    data = json.loads(Path(mode[1]).read_text()) if len(mode) > 1 else None
    app = bare_app(api_url, before_response=mode == ["before-response"],
                   form=data if mode[:1] == ["forms"] else None,
                   cluster=data if mode[:1] == ["kubeconfig"] else None)
    serve(WebApp(slack_http(app), lambda: {}), host="127.0.0.1", port=int(port), threads=8,
          _quiet=True)
