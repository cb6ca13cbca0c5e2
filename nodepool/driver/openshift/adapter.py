"""The openshift adapter: a project per node.

A node of a ``project`` label is a project ``<pool>-<node id>`` (asked for
with a ProjectRequest, as a self-provisioning user does) with a service
account ``zuul-worker``, its token and the ``admin`` role in the project
(``connection_type: project``).  A ``pod`` label adds a pod named after
the label (``connection_type: kubectl``, ``interface_ip`` the pod's name).
Deleting the node deletes the project.
"""

from __future__ import annotations

import logging
from typing import Any

from nodepool.driver.adapter import META_PROVIDER, Instance, LaunchSpec
from nodepool.driver.k8s_common import bodies
from nodepool.driver.k8s_common.adapter import K8sAdapter
from nodepool.driver.k8s_common.steps import (
    OPENSHIFT_PROJECT_REQUESTS,
    OPENSHIFT_PROJECTS,
    K8sDelete,
    NamespacedCreate,
)

log = logging.getLogger("nodepool.driver.openshift")


class ProjectCreate(NamespacedCreate):
    """project, serviceaccount, secret, token, rolebinding[, pod, running].

    The token comes from a token secret we create, as for kubernetes:
    OpenShift stopped making one for every service account (upstream
    waited for that one)."""

    FIRST = "project"
    ACCESS_STEP = "rolebinding"

    def _step_project(self) -> None:
        self.doing = f"requesting project {self.namespace}"
        custom = self.conn.custom
        body = bodies.project_request(self.namespace, self.object_labels())
        if not self.create_once(custom.create_cluster_custom_object, *OPENSHIFT_PROJECT_REQUESTS,
                                body):
            existing: Any = custom.get_cluster_custom_object(*OPENSHIFT_PROJECTS, self.namespace,
                                                        _request_timeout=self.conn.timeout)
            self.adopt(f"project {self.namespace}", bodies.owner_tags(existing.get("metadata")))
        self.external_id = self.namespace
        self._goto("serviceaccount")

    def _step_rolebinding(self) -> Instance | None:
        self.doing = f"creating role binding admin-0 in {self.namespace}"
        self.create_once(self.conn.rbac.create_namespaced_role_binding, self.namespace,
                         bodies.role_binding("admin-0", self.namespace, "ClusterRole", "admin"))
        return self.access_granted()

    def finish(self, pod: Any) -> Instance:
        resource = self.access(pod)
        if pod is None:
            return self.instance(resource=resource, connection_type="project")
        # Upstream records no host for openshift pods.
        return self.instance(resource=resource, connection_type="kubectl",
                             interface_ip=self.pod_name)


class ProjectDelete(K8sDelete):
    def delete_call(self) -> None:
        self.adapter.conn.custom.delete_cluster_custom_object(
            *OPENSHIFT_PROJECTS, self.external_id, _request_timeout=self.adapter.conn.timeout)

    def read_call(self) -> None:
        self.adapter.conn.custom.get_cluster_custom_object(
            *OPENSHIFT_PROJECTS, self.external_id, _request_timeout=self.adapter.conn.timeout)


class OpenShiftAdapter(K8sAdapter):
    OBJECT_TYPE = "project"

    def create(self, spec: LaunchSpec, progress: dict[str, Any] | None = None,
               external_id: Any = None) -> ProjectCreate:
        return ProjectCreate(self, spec, progress, external_id)

    def delete(self, external_id: Any, progress: dict[str, Any] | None = None
               ) -> ProjectDelete:
        return ProjectDelete(self, external_id, progress)

    def owned(self) -> list[tuple[str, dict[str, str]]]:
        listing: Any = self.conn.custom.list_cluster_custom_object(
            *OPENSHIFT_PROJECTS, _request_timeout=self.conn.timeout)
        found = []
        for project in listing.get("items") or []:
            meta = project.get("metadata") or {}
            tags = bodies.owner_tags(meta)
            if tags.get(META_PROVIDER) != self.provider.name:
                continue
            if meta.get("deletionTimestamp") or (
                    (project.get("status") or {}).get("phase") == "Terminating"):
                continue
            if self.named_as_made(meta.get("name", ""), tags):
                found.append((meta["name"], tags))
        return found
