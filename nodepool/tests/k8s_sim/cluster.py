"""The public face of the simulator: lifecycle, kubeconfig, knobs and inspection.

Code under test reaches the cluster only over HTTP through the real
``kubernetes`` client, configured by the kubeconfig :meth:`write_kubeconfig`
writes.  The test itself turns knobs and inspects state through the methods
here, never through the API, so looking never shows up in the call counts
or disturbs injected faults.
"""

from __future__ import annotations

import base64
import copy
import os
import shutil
from typing import Any

import yaml

from nodepool.tests.k8s_sim import controllers, httpd
from nodepool.tests.k8s_sim.pki import ClusterPKI
from nodepool.tests.k8s_sim.state import ClusterState, Obj, Refusal
from nodepool.tests.sim_http import HttpFrontEnd, LoopbackSimulator

POD_FATES = ("Running", "Failed", "Pending", "Unschedulable")


class SimulatedKubernetes(LoopbackSimulator):
    """A Kubernetes (or, with ``openshift=True``, OpenShift) API server on loopback.

    ``pod_start_delay``: seconds from pod creation to Running.
    ``token_delay``: seconds before the token controller fills a
    service-account token secret.  ``namespace_delete_delay``: seconds a
    deleted namespace stays Terminating.  ``legacy_sa_token_secrets``: every
    service account gets an auto-created token secret (default: on for
    OpenShift, as upstream's openshift driver expects, off for Kubernetes
    >= 1.24 behaviour).  ``tls``: serve HTTPS with a certificate from the
    cluster CA instead of plain HTTP.

    Usable as a context manager, which starts and stops the server; the
    API server URL (``url``) is known once started.
    """

    sim_kind = "simulated cluster"

    def __init__(
        self,
        name: str = "sim",
        *,
        openshift: bool = False,
        pod_start_delay: float = 0.05,
        token_delay: float = 0.05,
        namespace_delete_delay: float = 0.05,
        legacy_sa_token_secrets: bool | None = None,
        tls: bool = False,
    ) -> None:
        self.name = name
        self.openshift = openshift
        self.tls = tls
        if legacy_sa_token_secrets is None:
            legacy_sa_token_secrets = openshift
        self._state = ClusterState(
            openshift=openshift,
            pod_start_delay=pod_start_delay,
            token_delay=token_delay,
            namespace_delete_delay=namespace_delete_delay,
            legacy_sa_token_secrets=legacy_sa_token_secrets,
        )
        self._pki = ClusterPKI(name)
        self._state.pki = self._pki
        self.kubeconfig_path: str | None = None
        for ns in ("default", "kube-system", "kube-public"):
            self.add_namespace(ns)
        if openshift:
            for ns in ("openshift", "openshift-infra"):
                self.add_namespace(ns)

    # -- lifecycle -------------------------------------------------------------------

    def _front_end(self) -> HttpFrontEnd:
        tls = self._pki.write_server_files() if self.tls else None
        try:
            http = httpd.front_end(self._state, tls)
        finally:
            if tls is not None:
                # Loaded into the server's SSL context; nothing reads them again.
                shutil.rmtree(os.path.dirname(tls[0]), ignore_errors=True)
        with self._state.lock:
            self._state.stopping = False
            self._state.server_url = http.base_url
        return http

    @property
    def token(self) -> str:
        """The cluster-admin bearer token the kubeconfig carries."""
        return self._state.admin_token

    @property
    def ca_pem(self) -> bytes:
        """The cluster CA certificate (PEM), as in kubeconfig and token secrets."""
        return self._pki.ca_pem

    # -- kubeconfig ------------------------------------------------------------------

    def kubeconfig_entries(self, context: str | None = None, namespace: str | None = None
                           ) -> dict[str, Any]:
        """The cluster, user and context entries for this cluster."""
        context = context or f"{self.name}-context"
        ctx: dict[str, Any] = {"cluster": f"{self.name}-cluster", "user": f"{self.name}-admin"}
        if namespace:
            ctx["namespace"] = namespace
        return {
            "cluster": {"name": f"{self.name}-cluster", "cluster": {
                "server": self.url,
                "certificate-authority-data": base64.b64encode(self.ca_pem).decode()}},
            "user": {"name": f"{self.name}-admin", "user": {"token": self.token}},
            "context": {"name": context, "context": ctx},
        }

    def write_kubeconfig(self, path: str | os.PathLike[str], context: str | None = None,
                         namespace: str | None = None, current: bool = True) -> str:
        """Add (or replace) this cluster's entries in the kubeconfig at ``path``.

        Entries of other clusters already in the file are kept, so several
        simulators (several providers) can share one kubeconfig.  Returns the
        context name (default ``<name>-context``), which becomes
        ``current-context`` unless ``current`` is False.
        """
        entries = self.kubeconfig_entries(context, namespace)
        data: dict[str, Any] = {}
        if os.path.exists(path):
            with open(path) as f:
                data = yaml.safe_load(f) or {}
        data.setdefault("apiVersion", "v1")
        data.setdefault("kind", "Config")
        data.setdefault("preferences", {})
        for section, key in (("clusters", "cluster"), ("users", "user"),
                             ("contexts", "context")):
            items = [i for i in data.get(section) or [] if i["name"] != entries[key]["name"]]
            items.append(entries[key])
            data[section] = items
        if current or not data.get("current-context"):
            data["current-context"] = entries["context"]["name"]
        with open(path, "w") as f:
            os.fchmod(f.fileno(), 0o600)
            yaml.safe_dump(data, f, default_flow_style=False)
        self.kubeconfig_path = os.fspath(path)
        return entries["context"]["name"]

    def new_api_client(self, context: str | None = None) -> Any:
        """A ``kubernetes.client.ApiClient`` built from the written kubeconfig,
        exactly as a driver builds one (for tests of the simulator itself)."""
        from kubernetes import config as k8s_config
        if self.kubeconfig_path is None:
            raise RuntimeError("call write_kubeconfig() first")
        return k8s_config.new_client_from_config(
            config_file=self.kubeconfig_path, context=context or f"{self.name}-context")

    # -- knobs -----------------------------------------------------------------------

    def set_pod_start_delay(self, seconds: float) -> None:
        """Seconds from create to Running for pods created from now on."""
        with self._state.lock:
            self._state.pod_start_delay = seconds

    def set_pod_fate(self, fate: str, count: int | None = None) -> None:
        """What new pods become after ``pod_start_delay``.

        ``Running`` (the default), ``Failed`` (container exits 1), ``Pending``
        (scheduled but never started: waiting in ContainerCreating until
        :meth:`start_pending_pods`) or ``Unschedulable`` (never scheduled).
        With ``count`` only the next ``count`` pods; otherwise every pod from
        now on.
        """
        if fate not in POD_FATES:
            raise ValueError(f"unknown pod fate {fate!r}; use one of {POD_FATES}")
        with self._state.lock:
            if count is None:
                self._state.pod_fates.clear()
                self._state.default_pod_fate = fate
            else:
                self._state.pod_fates.extend([fate] * count)

    def hold_pods_pending(self) -> None:
        """Pods created from now on stay Pending (see ``set_pod_fate``)."""
        self.set_pod_fate("Pending")

    def start_pending_pods(self) -> None:
        """Back to normal: held pods start now and new pods run as usual."""
        with self._state.lock:
            self._state.default_pod_fate = "Running"
            self._state.pod_fates.clear()
            controllers.start_pending_pods(self._state)

    def set_pod_delete_delay(self, seconds: float) -> None:
        """Deleted running pods linger (with a deletionTimestamp) this long."""
        with self._state.lock:
            self._state.pod_delete_delay = seconds

    def set_namespace_delete_delay(self, seconds: float) -> None:
        """Deleted namespaces stay Terminating this long before they and their contents go."""
        with self._state.lock:
            self._state.namespace_delete_delay = seconds

    def set_token_delay(self, seconds: float) -> None:
        """Seconds before the token controller fills new token secrets."""
        with self._state.lock:
            self._state.token_delay = seconds

    def hold_tokens(self, hold: bool = True) -> None:
        """While held, new token secrets stay empty; releasing fills them."""
        with self._state.lock:
            self._state.hold_tokens = hold
            if not hold:
                controllers.release_tokens(self._state)

    def set_legacy_sa_token_secrets(self, enabled: bool) -> None:
        """Whether new service accounts get an auto-created token secret."""
        with self._state.lock:
            self._state.legacy_sa_token_secrets = enabled

    def set_latency(self, seconds: float) -> None:
        """Delay every response by this long (the request is logged at once)."""
        with self._state.lock:
            self._state.latency = seconds

    def fail_next_requests(self, n: int, status: int = 500,
                           path_prefix: str | None = None) -> None:
        """Answer the next ``n`` requests whose path starts with ``path_prefix``
        (any request when None) with ``status`` and a Status body."""
        with self._state.lock:
            self._state.request_failures.append([n, status, path_prefix])

    def refuse(self, verb: str, resource: str, status: int = 403, count: int | None = None,
               message: str | None = None) -> None:
        """Answer ``verb`` requests (create, get, list, delete, patch, update)
        on ``resource`` with ``status``: 403 Forbidden (RBAC wording), 409
        AlreadyExists, 500 InternalError, or any other code.

        ``resource`` is the qualified plural: ``pods``, ``namespaces``,
        ``rolebindings.rbac.authorization.k8s.io``,
        ``projectrequests.project.openshift.io``.  With ``count`` only the
        next ``count`` such requests; otherwise until :meth:`clear_refusals`.
        """
        with self._state.lock:
            self._state.refusals.append(Refusal(verb, resource, status, count, message))

    def refuse_creates(self, resource: str, status: int = 403, count: int | None = None,
                       message: str | None = None) -> None:
        """``refuse("create", ...)``."""
        self.refuse("create", resource, status, count, message)

    def exceed_quota(self, resource: str = "pods", count: int | None = None) -> None:
        """Creates of ``resource`` get the 403 "exceeded quota" a ResourceQuota
        admission gives.  For real quota accounting use :meth:`set_quota`."""
        with self._state.lock:
            self._state.refusals.append(Refusal("create", resource, 403, count, None,
                                                quota=True))

    def clear_refusals(self) -> None:
        with self._state.lock:
            self._state.refusals.clear()

    def set_quota(self, namespace: str, name: str = "sim-quota", **hard: str | int) -> None:
        """Put a ResourceQuota in ``namespace`` (e.g. ``pods=2``,
        ``requests_cpu="2"``: underscores stand for dots), enforced on pod
        creation like the real admission plugin."""
        spec = {key.replace("_", "."): str(value) for key, value in hard.items()}
        with self._state.lock:
            existing = self._state.get("resourcequotas", namespace, name)
            if existing is not None:
                existing["spec"] = {"hard": spec}
                self._state.put("resourcequotas", existing, "MODIFIED")
                return
            controllers.create_object(self._state, "resourcequotas", {
                "apiVersion": "v1", "kind": "ResourceQuota",
                "metadata": {"name": name, "namespace": namespace}, "spec": {"hard": spec}})

    # -- direct state changes ----------------------------------------------------------

    def add_namespace(self, name: str, labels: dict[str, str] | None = None,
                      annotations: dict[str, str] | None = None) -> None:
        """Create a namespace directly, bypassing faults: someone else's namespace
        (for "leaks that are not ours are left alone"), or a leaked one of ours."""
        ns: Obj = {"apiVersion": "v1", "kind": "Namespace",
                   "metadata": {"name": name, "labels": dict(labels or {})}}
        if annotations:
            ns["metadata"]["annotations"] = dict(annotations)
        controllers.namespace_defaults(ns)
        with self._state.lock:
            if self._state.get("namespaces", "", name) is not None:
                raise ValueError(f"namespace {name} already exists")
            controllers.create_object(self._state, "namespaces", ns)

    def add_pod(self, namespace: str, name: str, labels: dict[str, str] | None = None,
                image: str = "docker.io/library/busybox:1.36") -> None:
        """Create a pod directly (it starts like any other pod)."""
        pod: Obj = {"apiVersion": "v1", "kind": "Pod",
                    "metadata": {"name": name, "namespace": namespace,
                                 "labels": dict(labels or {})},
                    "spec": {"containers": [{"name": name, "image": image}]}}
        controllers.pod_defaults(pod)
        with self._state.lock:
            if self._state.get("namespaces", "", namespace) is None:
                raise ValueError(f"namespace {namespace} does not exist")
            controllers.create_object(self._state, "pods", pod)

    def delete_namespace(self, name: str) -> None:
        """Delete a namespace as if someone else did (it goes Terminating first)."""
        with self._state.lock:
            ns = self._state.get("namespaces", "", name)
            if ns is None:
                raise ValueError(f"namespace {name} does not exist")
            controllers.namespace_delete(self._state, ns)

    # -- inspection --------------------------------------------------------------------

    def objects(self, resource: str, namespace: str | None = None) -> list[Obj]:
        """Snapshot of stored objects (copies) of a qualified resource."""
        with self._state.lock:
            self._state.tick()
            return copy.deepcopy(self._state.items(resource, namespace))

    def get(self, resource: str, namespace: str, name: str) -> Obj | None:
        """One stored object (a copy), or None."""
        with self._state.lock:
            self._state.tick()
            obj = self._state.get(resource, namespace, name)
            return copy.deepcopy(obj) if obj is not None else None

    def namespaces(self) -> list[Obj]:
        return self.objects("namespaces")

    def namespace_names(self) -> list[str]:
        return [ns["metadata"]["name"] for ns in self.namespaces()]

    def pods(self, namespace: str | None = None) -> list[Obj]:
        return self.objects("pods", namespace)

    def secrets(self, namespace: str | None = None) -> list[Obj]:
        return self.objects("secrets", namespace)

    def service_accounts(self, namespace: str | None = None) -> list[Obj]:
        return self.objects("serviceaccounts", namespace)

    def roles(self, namespace: str | None = None) -> list[Obj]:
        return self.objects("roles.rbac.authorization.k8s.io", namespace)

    def role_bindings(self, namespace: str | None = None) -> list[Obj]:
        return self.objects("rolebindings.rbac.authorization.k8s.io", namespace)

    def calls(self, verb: str, resource: str) -> int:
        """How many ``verb`` requests reached ``resource`` (qualified plural;
        ``("get", "discovery")`` counts discovery documents).  Requests refused
        with 401 or by ``fail_next_requests`` are not counted."""
        with self._state.lock:
            return self._state.calls[(verb, resource)]

    @property
    def call_counts(self) -> dict[tuple[str, str], int]:
        with self._state.lock:
            return dict(self._state.calls)

    @property
    def requests_log(self) -> list[tuple[str, str]]:
        """Every (method, path) received, in order; path without query string."""
        with self._state.lock:
            return list(self._state.requests_log)
