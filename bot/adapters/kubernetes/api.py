"""The Kubernetes API as the bot uses it: JSON in, JSON out, errors with meaning.

The official client supplies the connection (kubeconfig or in-cluster credentials, TLS, auth);
this module sends plain JSON bodies through it so that the wire format is exactly the API's,
and translates every failure: 5xx, 429, timeouts and connection errors are temporary; 401, 403
and validation errors are permanent, with a message that tells the operator what to fix.
"""

from __future__ import annotations

import json
import logging
import os
from typing import Any

import urllib3
import yaml
from kubernetes import client as k8s
from kubernetes import config as k8s_config
from kubernetes.client.exceptions import ApiException

from bot.adapters.waits import asked_wait
from bot.config import KubernetesClusterConfig
from bot.domain.errors import PermanentBackendError, TemporaryBackendError

log = logging.getLogger(__name__)


class Missing(Exception):
    """404: the object is not there."""


class Conflict(Exception):
    """409: an object of that name exists already."""


class KubernetesApi:
    def __init__(self, cluster: str, api_client: Any, timeout: float = 15) -> None:
        self.cluster = cluster
        self._client = api_client
        self._timeout = timeout

    @classmethod
    def from_config(cls, cluster: str, settings: KubernetesClusterConfig, *,
                    timeout: float = 15, retries: bool = True) -> KubernetesApi:
        """Credentials from a kubeconfig (and context) or the pod's service account.

        ``timeout`` bounds each request in seconds; without ``retries`` a failed connection is
        reported at once instead of being tried again (urllib3 tries three more times). An
        answer is never waited for again inside a call: urllib3 would sleep out each 429's
        (or 503's) ``Retry-After`` three times over, holding the operation's lease past every
        timeout; the operation engine retries no sooner than asked instead.
        """
        configuration = k8s.Configuration()
        configuration.retries = urllib3.util.Retry(
            total=3, respect_retry_after_header=False) if retries else False
        try:
            if settings.in_cluster:
                k8s_config.load_incluster_config(client_configuration=configuration)
            else:
                path = os.path.expanduser(settings.kubeconfig or "")
                k8s_config.load_kube_config(config_file=path,
                                            context=settings.context,
                                            client_configuration=configuration,
                                            persist_config=False)
        except (k8s_config.ConfigException, OSError, ValueError, yaml.YAMLError) as error:
            source = "the in-cluster service account" if settings.in_cluster \
                else f"kubeconfig {settings.kubeconfig}"
            hint = ("; in_cluster: true works only inside a pod: run the check there "
                    "(kubectl -n k8s-access exec deploy/k8s-access-bot -- "
                    "k8s-access-bot config check)"
                    if settings.in_cluster and "KUBERNETES_SERVICE_HOST" not in os.environ
                    else "")
            cause = str(error).rstrip(".")
            raise PermanentBackendError(
                f"cluster {cluster}: cannot load {source}: {cause}{hint}") from None
        return cls(cluster, k8s.ApiClient(configuration), timeout)

    @property
    def host(self) -> str:
        """The API server URL the bot's own credentials point at."""
        host: str = self._client.configuration.host
        return host

    @property
    def ca_file(self) -> str | None:
        ca: str | None = self._client.configuration.ssl_ca_cert
        return ca

    def request(self, method: str, path: str, body: dict[str, Any] | None = None,
                query: dict[str, str] | None = None) -> dict[str, Any]:
        """Send one request; the parsed JSON answer, or :class:`Missing`/:class:`Conflict`."""
        serialized = self._client.param_serialize(
            method, path, query_params=list((query or {}).items()),
            header_params={"Content-Type": "application/json", "Accept": "application/json"},
            body=body, auth_settings=["BearerToken"])
        try:
            response = self._client.call_api(*serialized[:5], _request_timeout=self._timeout)
            response.read()
        except ApiException as error:  # TLS failures arrive as status 0
            raise TemporaryBackendError(
                f"cluster {self.cluster}: cannot reach the API server: {error.reason}") from None
        except urllib3.exceptions.HTTPError as error:
            raise TemporaryBackendError(
                f"cluster {self.cluster}: API server unreachable or too slow: "
                f"{type(error).__name__}") from None
        status = response.status
        try:
            payload: dict[str, Any] = json.loads(response.data or b"{}")
        except ValueError:
            payload = {"message": (response.data or b"")[:200].decode(errors="replace")}
        if 200 <= status < 300:
            return payload
        message = payload.get("message") or response.reason or f"HTTP {status}"
        if status == 404:
            raise Missing(message)
        if status == 409:
            raise Conflict(message)
        if status == 401:
            raise PermanentBackendError(
                f"cluster {self.cluster}: the API server rejected the bot's credentials (401); "
                "check its kubeconfig or service account token.")
        if status == 403:
            raise PermanentBackendError(
                f"cluster {self.cluster}: the bot lacks rights: {message}. Give its account "
                "the RBAC listed in the README (certificate backend).")
        if status == 429 or status >= 500:
            wait = asked_wait(response.headers)
            if wait is None:  # the Status may say it instead
                seconds = (payload.get("details") or {}).get("retryAfterSeconds")
                wait = float(seconds) if isinstance(seconds, int) and seconds >= 0 else None
            raise TemporaryBackendError(
                f"cluster {self.cluster}: API server answered {status}: {message}"
                + (f" (it asks to wait {wait:.0f} s)" if wait is not None else ""),
                delay_seconds=wait)
        raise PermanentBackendError(f"cluster {self.cluster}: API server refused ({status}): "
                                    f"{message}")

    def close(self) -> None:
        self._client.close()
