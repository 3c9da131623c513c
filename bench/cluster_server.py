"""The local Kubernetes API of the benchmarks, in a process of its own; it signs approved CSRs
at once, so that what is timed is the bot, not a cluster.

``python -m bench.cluster_server``: prints one line of JSON (``url``, and the bot's
``kubeconfig``, ``certificate``, ``key`` and the ``ca``, as files), then answers commands, one
line of JSON each on its stdin, with one line of JSON on its stdout:

- ``{"create": [binding, ...]}``: ClusterRoleBindings and RoleBindings created as the API
  creates them (``uid``, ``resourceVersion``, ``creationTimestamp``), without a request over
  the network or in the counts: ``{"made": [{"uid": …, "resourceVersion": …}, ...]}`` in the
  same order;
- ``{"count": label}``: the ClusterRoleBindings and RoleBindings carrying the label
  ``label`` (``key=value``): ``{"bindings": n}``;
- ``{"requests": true}``: the requests received so far, by method: ``{"GET": n, ...}``.

When its stdin closes it stops, then prints the requests it received by method.

The bot's account is a superuser here: the local server's authorizer reads every binding on
each request, which with the ten thousand bindings of the expiry rows would time the local
server, not the bot (a real API server's authorizer keeps them indexed).
"""

from __future__ import annotations

import json
import shutil
import sys
import tempfile
from collections import Counter
from pathlib import Path
from typing import Any

import yaml

from bot.fakes.kubernetes import RBAC, FakeKubernetes, User, _selected

SEEDER = User("admin", [])


def create(kube: FakeKubernetes, bindings: list[dict[str, Any]]) -> list[dict[str, str]]:
    """Each binding created as a POST would create it, its ``uid`` and ``resourceVersion``;
    none counted as a request."""
    made = []
    for body in bindings:
        namespace = body["metadata"].get("namespace")
        path = f"/apis/{RBAC}/v1/clusterrolebindings" if namespace is None \
            else f"/apis/{RBAC}/v1/namespaces/{namespace}/rolebindings"
        status, created = kube.handle(SEEDER, "POST", path, {}, body)
        assert status == 201, created
        made.append({key: created["metadata"][key] for key in ("uid", "resourceVersion")})
    with kube.lock:
        kube.requests[:] = [r for r in kube.requests if r[0] != SEEDER.name]
    return made


def count(kube: FakeKubernetes, label: str) -> int:
    with kube.lock:
        return sum(_selected(binding["metadata"].get("labels") or {}, label)
                   for store in (kube.cluster_role_bindings, kube.role_bindings)
                   for binding in store.values())


def requests(kube: FakeKubernetes) -> Counter[str]:
    with kube.lock:
        return Counter(method for _, method, _ in kube.requests)


def main() -> None:
    folder = Path(tempfile.mkdtemp(prefix="bench-cluster-"))
    try:
        kube = FakeKubernetes(folder, superusers={"admin", "k8s-access-bot"}).start()
        kube.allow_bot()
        certificate, key = kube.ca.write(folder, "bot", "k8s-access-bot")
        kubeconfig = folder / "bot.kubeconfig"
        kubeconfig.write_text(yaml.safe_dump({
            "apiVersion": "v1", "kind": "Config",
            "clusters": [{"name": "bench", "cluster": {
                "server": kube.url, "certificate-authority": str(kube.ca_path)}}],
            "users": [{"name": "k8s-access-bot", "user": {
                "client-certificate": str(certificate), "client-key": str(key)}}],
            "contexts": [{"name": "bench", "context": {"cluster": "bench",
                                                       "user": "k8s-access-bot"}}],
            "current-context": "bench"}))
        print(json.dumps({"url": kube.url, "kubeconfig": str(kubeconfig),
                          "certificate": str(certificate), "key": str(key),
                          "ca": str(kube.ca_path)}), flush=True)
        for line in sys.stdin:
            command = json.loads(line)
            if "create" in command:
                answer: Any = {"made": create(kube, command["create"])}
            elif "count" in command:
                answer = {"bindings": count(kube, command["count"])}
            else:
                answer = requests(kube)
            print(json.dumps(answer), flush=True)
        kube.stop()
        print(json.dumps(requests(kube)), flush=True)
    finally:
        shutil.rmtree(folder, ignore_errors=True)


if __name__ == "__main__":
    main()
