"""The local Kubernetes API of the benchmarks, in a process of its own; it signs approved CSRs
at once, so that what is timed is the bot, not a cluster.

``python -m bench.cluster_server``: prints one line of JSON (``url``, and the bot's
``kubeconfig``, ``certificate``, ``key`` and the ``ca``, as files), serves until its stdin
closes, then prints the requests it received by method as one line of JSON.
"""

from __future__ import annotations

import json
import shutil
import sys
import tempfile
from collections import Counter
from pathlib import Path

import yaml

from bot.fakes.kubernetes import FakeKubernetes


def main() -> None:
    folder = Path(tempfile.mkdtemp(prefix="bench-cluster-"))
    try:
        kube = FakeKubernetes(folder).start()
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
        sys.stdin.read()
        kube.stop()
        print(json.dumps(Counter(method for _, method, _ in list(kube.requests))), flush=True)
    finally:
        shutil.rmtree(folder, ignore_errors=True)


if __name__ == "__main__":
    main()
