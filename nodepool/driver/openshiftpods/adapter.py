"""The openshiftpods adapter: a pod per node in the pool's project.

Each pool names a project that exists already (nodepool's account needs
no right to create projects).  A node is a pod ``<label>-<node id>`` in it;
Zuul reaches it with the launcher's own token, since there is no service
account of the node's own (``connection_type: kubectl``).  The node's
``external_id`` is ``<project>-<pod>``, as upstream writes it; deleting
the node deletes the pod.
"""

from __future__ import annotations

import logging
from typing import Any

from nodepool.driver.adapter import META_PROVIDER, Instance, LaunchSpec
from nodepool.driver.k8s_common import bodies, errors
from nodepool.driver.k8s_common.adapter import K8sAdapter
from nodepool.driver.k8s_common.steps import K8sCreate, K8sDelete
from nodepool.exceptions import LaunchNodepoolException

log = logging.getLogger("nodepool.driver.openshiftpods")


class PodCreate(K8sCreate):
    """pod, running."""

    FIRST = "pod"

    @property
    def pod_namespace(self) -> str:
        return self.spec.pool.name

    @property
    def pod_name(self) -> str:
        return f"{self.label.name}-{self.node_id}"

    def pod_exists(self) -> None:
        existing: Any = self.conn.core.read_namespaced_pod(self.pod_name, self.pod_namespace,
                                                      _request_timeout=self.conn.timeout)
        self.adopt(f"pod {self.pod_name} in {self.pod_namespace}", existing.metadata.labels)

    def pod_created(self) -> None:
        self.external_id = f"{self.pod_namespace}-{self.pod_name}"

    def finish(self, pod: Any) -> Instance:
        token, ca = self.conn.own_credentials()
        if not token:
            raise LaunchNodepoolException(
                f"context {self.adapter.provider.context} authenticates without a bearer "
                "token, but openshiftpods nodes hand the launcher's token to Zuul; use a "
                "token (e.g. a service account's) for this context")
        host, verified = self.conn.server()
        resource = {"pod": self.pod_name, "namespace": self.pod_namespace, "host": host,
                    "ca_crt": ca, "skiptls": not verified, "token": token,
                    "user": bodies.USER}
        return self.instance(resource=resource, connection_type="kubectl",
                             interface_ip=self.pod_name, host_id=pod.spec.node_name)


class PodDelete(K8sDelete):
    adapter: OpenShiftPodsAdapter

    def advance(self) -> bool:
        if self.adapter.split_external_id(self.external_id)[0] is None:
            # As upstream: a pod of a pool no longer configured cannot be
            # found again; its record goes, the pod stays.
            log.error("Pod %s is in no project of provider %s (pools: %s); leaving it",
                      self.external_id, self.adapter.provider.name,
                      ", ".join(self.adapter.provider.pools))
            return True
        return super().advance()

    def delete_call(self) -> None:
        project, pod = self.adapter.split_external_id(self.external_id)
        assert project is not None
        self.adapter.conn.core.delete_namespaced_pod(pod, project,
                                                     _request_timeout=self.adapter.conn.timeout)

    def read_call(self) -> None:
        project, pod = self.adapter.split_external_id(self.external_id)
        assert project is not None
        self.adapter.conn.core.read_namespaced_pod(pod, project,
                                                   _request_timeout=self.adapter.conn.timeout)


class OpenShiftPodsAdapter(K8sAdapter):
    OBJECT_TYPE = "pod"

    def create(self, spec: LaunchSpec, progress: dict[str, Any] | None = None,
               external_id: Any = None) -> PodCreate:
        return PodCreate(self, spec, progress, external_id)

    def delete(self, external_id: Any, progress: dict[str, Any] | None = None) -> PodDelete:
        return PodDelete(self, external_id, progress)

    def split_external_id(self, external_id: str) -> tuple[str | None, str]:
        """(project, pod) of ``<project>-<pod>``; the longest pool name
        that fits wins (pools ``a`` and ``a-b`` may both exist)."""
        for project in sorted(self.provider.pools, key=len, reverse=True):
            if external_id.startswith(f"{project}-"):
                return project, external_id[len(project) + 1:]
        return None, external_id

    def owned(self) -> list[tuple[str, dict[str, str]]]:
        found = []
        for project in self.provider.pools:
            try:
                pods = self.conn.core.list_namespaced_pod(
                    project, label_selector=f"{META_PROVIDER}={self.provider.name}",
                    _request_timeout=self.conn.timeout).items
            except Exception as e:
                if errors.status(e) != 404:
                    raise
                log.warning("Project %s of provider %s does not exist", project,
                            self.provider.name)
                continue
            for pod in pods:
                meta: Any = pod.metadata
                tags = dict(meta.labels or {})
                if meta.deletion_timestamp is None and self.named_as_made(
                        meta.name, tags, bodies.META_LABEL):
                    found.append((f"{project}-{meta.name}", tags))
        return found
