"""The kubernetes adapter: a namespace per node.

A node of a ``namespace`` label is a namespace ``<pool>-<node id>`` with a
service account ``zuul-worker``, its token, a role ``zuul`` and a binding
of the two; Zuul gets the token (``connection_type: namespace``).  A
``pod`` label adds a pod named after the label, and the account may only
reach into it (role ``zuul-restricted``; ``connection_type: kubectl``,
``interface_ip`` the pod's name).  Deleting the node deletes the
namespace, and the cluster deletes everything in it.
"""

from __future__ import annotations

import logging
from typing import Any

from nodepool.driver.adapter import META_PROVIDER, Instance, LaunchSpec
from nodepool.driver.k8s_common import bodies
from nodepool.driver.k8s_common.adapter import K8sAdapter
from nodepool.driver.k8s_common.steps import K8sDelete, NamespacedCreate

log = logging.getLogger("nodepool.driver.kubernetes")


class NamespaceCreate(NamespacedCreate):
    """namespace, serviceaccount, secret, token, role, rolebinding[, pod,
    running]."""

    FIRST = "namespace"
    ACCESS_STEP = "role"

    def _step_namespace(self) -> None:
        self.doing = f"creating namespace {self.namespace}"
        body = bodies.namespace(self.namespace, self.object_labels())
        if not self.create_once(self.conn.core.create_namespace, body):
            existing: Any = self.conn.core.read_namespace(self.namespace,
                                                     _request_timeout=self.conn.timeout)
            self.adopt(f"namespace {self.namespace}", existing.metadata.labels)
        self.external_id = self.namespace
        self._goto("serviceaccount")

    @property
    def role_name(self) -> str:
        return "zuul-restricted" if self.label.is_pod else "zuul"

    def _step_role(self) -> None:
        self.doing = f"creating role {self.role_name} in {self.namespace}"
        self.create_once(self.conn.rbac.create_namespaced_role, self.namespace,
                         bodies.role(restricted=self.label.is_pod))
        self._goto("rolebinding")

    def _step_rolebinding(self) -> Instance | None:
        self.doing = f"creating role binding zuul-role in {self.namespace}"
        self.create_once(self.conn.rbac.create_namespaced_role_binding, self.namespace,
                         bodies.role_binding("zuul-role", self.namespace, "Role", self.role_name))
        return self.access_granted()

    def finish(self, pod: Any) -> Instance:
        resource = {"name": self.namespace, **self.access(pod)}
        if pod is None:
            return self.instance(resource=resource, connection_type="namespace")
        return self.instance(resource=resource, connection_type="kubectl",
                             interface_ip=self.pod_name, host_id=pod.spec.node_name)


class NamespaceDelete(K8sDelete):
    def delete_call(self) -> None:
        self.adapter.conn.core.delete_namespace(self.external_id,
                                                propagation_policy="Background",
                                                _request_timeout=self.adapter.conn.timeout)

    def read_call(self) -> None:
        self.adapter.conn.core.read_namespace(self.external_id,
                                              _request_timeout=self.adapter.conn.timeout)


class KubernetesAdapter(K8sAdapter):
    OBJECT_TYPE = "namespace"

    def create(self, spec: LaunchSpec, progress: dict[str, Any] | None = None,
               external_id: Any = None) -> NamespaceCreate:
        return NamespaceCreate(self, spec, progress, external_id)

    def delete(self, external_id: Any, progress: dict[str, Any] | None = None
               ) -> NamespaceDelete:
        return NamespaceDelete(self, external_id, progress)

    def owned(self) -> list[tuple[str, dict[str, str]]]:
        namespaces = self.conn.core.list_namespace(
            label_selector=f"{META_PROVIDER}={self.provider.name}",
            _request_timeout=self.conn.timeout).items
        found = []
        for namespace in namespaces:
            meta: Any = namespace.metadata
            tags = dict(meta.labels or {})
            if meta.deletion_timestamp is None and self.named_as_made(meta.name, tags):
                found.append((meta.name, tags))
        return found
