"""The API client of one provider, from the standard client configuration.

A provider names a kubeconfig ``context`` (or none: the kubeconfig's
current context).  The kubeconfig is the file(s) ``$KUBECONFIG`` names,
else ``~/.kube/config``, read when the provider first talks to the cluster
(the kubernetes client itself reads ``$KUBECONFIG`` only once, when it is
imported, so we look it up ourselves).  Without any kubeconfig the
launcher uses the service account of the pod it runs in (in-cluster
configuration), as upstream does.

The client is built on first use and rebuilt after a failure to build it,
so a kubeconfig fixed after the launcher started is picked up without a
restart; a bad one fails launches with a message naming the fix.
"""

from __future__ import annotations

import base64
import logging
import os
import threading
from typing import Any

from kubernetes import client as k8s_client
from kubernetes import config as k8s_config

from nodepool.exceptions import LaunchNodepoolException

log = logging.getLogger("nodepool.driver.k8s")

DEFAULT_KUBECONFIG = os.path.join("~", ".kube", "config")
# What the client says when no kubeconfig file exists at all.
_NO_KUBECONFIG = "Invalid kube-config file. No configuration found."
# Seconds to connect and to wait for an answer; an API server that hangs
# must not hold a launch step (or a delete worker) forever.
REQUEST_TIMEOUT = (10.0, 30.0)


class ClientConfigError(LaunchNodepoolException):
    """No usable client configuration for the provider's context."""


def kubeconfig_path() -> str:
    """The kubeconfig file(s) to read now (``$KUBECONFIG`` may list
    several, separated by ``:``)."""
    return os.environ.get("KUBECONFIG") or DEFAULT_KUBECONFIG


def build_api_client(context: str | None) -> k8s_client.ApiClient:
    """An ApiClient for ``context`` of the kubeconfig, or in-cluster."""
    path = kubeconfig_path()
    try:
        return k8s_config.new_client_from_config(config_file=path, context=context)
    except FileNotFoundError:
        pass
    except k8s_config.ConfigException as e:
        if _NO_KUBECONFIG not in str(e):
            raise ClientConfigError(
                f"kubeconfig {path}: cannot use context {context or '(current)'}: {e}; "
                "fix the kubeconfig or the provider's context") from e
    except Exception as e:
        raise ClientConfigError(f"kubeconfig {path} is unusable: {e}") from e
    configuration = k8s_client.Configuration()
    try:
        k8s_config.load_incluster_config(client_configuration=configuration)
    except k8s_config.ConfigException as e:
        raise ClientConfigError(
            f"no kubeconfig at {path} (set $KUBECONFIG for the launcher) and not "
            f"running inside a cluster ({e})") from e
    return k8s_client.ApiClient(configuration=configuration)


class Connection:
    """The provider's API client and the typed API groups the drivers use."""

    def __init__(self, context: str | None) -> None:
        self.context = context
        # (connect, read) seconds of every call made through this connection.
        self.timeout: tuple[float, float] = REQUEST_TIMEOUT
        self._lock = threading.Lock()
        self._api: k8s_client.ApiClient | None = None

    @property
    def api(self) -> k8s_client.ApiClient:
        with self._lock:
            if self._api is None:
                self._api = build_api_client(self.context)
                log.debug("Connected to %s (context %s)", self._api.configuration.host,
                          self.context or "(current)")
            return self._api

    @property
    def core(self) -> k8s_client.CoreV1Api:
        return k8s_client.CoreV1Api(self.api)

    @property
    def rbac(self) -> k8s_client.RbacAuthorizationV1Api:
        return k8s_client.RbacAuthorizationV1Api(self.api)

    @property
    def custom(self) -> k8s_client.CustomObjectsApi:
        """For OpenShift's own kinds (project requests, projects)."""
        return k8s_client.CustomObjectsApi(self.api)

    def server(self) -> tuple[str, bool]:
        """(the API server URL, whether its certificate is verified), as
        Zuul's executor gets them."""
        configuration = self.api.configuration
        return configuration.host, bool(configuration.verify_ssl)

    def own_credentials(self) -> tuple[str | None, str | None]:
        """(our own bearer token, the base64 PEM of the CA the client
        verifies the server with), for openshiftpods nodes, which Zuul
        reaches with the launcher's own account.  The CA is None for a
        plain HTTP server, as upstream writes it."""
        configuration = self.api.configuration
        # Asking through the client runs its refresh hook (expiring
        # tokens of exec or OIDC authentication).
        header: Any = configuration.get_api_key_with_prefix("BearerToken",
                                                            alias="authorization")
        token = header.split()[-1] if header else None
        ca = None
        if configuration.ssl_ca_cert:
            with open(configuration.ssl_ca_cert, "rb") as f:
                ca = base64.b64encode(f.read()).decode("ascii")
        return token, ca

    def close(self) -> None:
        with self._lock:
            api, self._api = self._api, None
        if api is not None:
            try:
                api.close()
            except Exception:
                log.exception("Error closing the API client of context %s", self.context)
