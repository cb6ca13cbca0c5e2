"""The resource types the simulator serves, as discovery describes them.

A :class:`ResourceType` ties together what the API server knows about one
REST resource: its group/version/plural and kind, the schema its bodies are
decoded with, its validation, which verbs it allows, whether DELETE returns
the object or a ``Status``, which field selectors it indexes, and where its
objects are stored.  Two OpenShift resources are views of other storage, as
on a real OpenShift: ``projects`` are namespaces, and
``authorization.openshift.io`` rolebindings are RBAC rolebindings.
"""

from __future__ import annotations

import copy
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from nodepool.tests.k8s_sim import validation
from nodepool.tests.k8s_sim.errors import Cause, required
from nodepool.tests.k8s_sim.validation import RBAC_GROUP

Obj = dict[str, Any]

PROJECT_GROUP = "project.openshift.io"
AUTHZ_GROUP = "authorization.openshift.io"
PROJECTS = f"projects.{PROJECT_GROUP}"
PROJECT_REQUESTS = f"projectrequests.{PROJECT_GROUP}"

CRUD = ("create", "delete", "deletecollection", "get", "list", "patch", "update", "watch")


def _path(*keys: str) -> Callable[[Obj], Any]:
    def get(obj: Obj) -> Any:
        value: Any = obj
        for key in keys:
            value = (value or {}).get(key)
        return value
    return get


COMMON_FIELDS = {"metadata.name": _path("metadata", "name"),
                 "metadata.namespace": _path("metadata", "namespace")}


@dataclass(frozen=True)
class ResourceType:
    group: str
    version: str
    plural: str
    kind: str
    singular: str
    namespaced: bool
    model: str
    name_rule: str  # "label", "subdomain" or "segment"
    verbs: tuple[str, ...] = CRUD
    short_names: tuple[str, ...] = ()
    returns_deleted_object: bool = False
    openshift_only: bool = False
    validate: Callable[[Obj], list[Cause]] = lambda obj: []
    fields: dict[str, Callable[[Obj], Any]] = field(default_factory=dict)
    # Storage of views: which resource holds the objects, and the conversions.
    storage: str | None = None
    to_storage: Callable[[Obj], Obj] | None = None
    from_storage: Callable[[Obj], Obj] | None = None

    @property
    def api_version(self) -> str:
        return f"{self.group}/{self.version}" if self.group else self.version

    @property
    def key(self) -> str:
        """Qualified resource name (``pods``, ``roles.rbac.authorization.k8s.io``)."""
        return f"{self.plural}.{self.group}" if self.group else self.plural

    @property
    def storage_key(self) -> str:
        return self.storage or self.key

    @property
    def field_getters(self) -> dict[str, Callable[[Obj], Any]]:
        return {**COMMON_FIELDS, **self.fields}

    def view(self, stored: Obj) -> Obj:
        """The object as this resource presents it (a copy)."""
        obj = copy.deepcopy(stored)
        if self.from_storage is not None:
            obj = self.from_storage(obj)
        obj["apiVersion"] = self.api_version
        obj["kind"] = self.kind
        return obj


# -- OpenShift views ------------------------------------------------------------------------

def namespace_to_project(ns: Obj) -> Obj:
    return {"metadata": ns["metadata"], "spec": ns.get("spec", {}),
            "status": ns.get("status", {})}


def project_to_namespace(project: Obj) -> Obj:
    return {"metadata": project["metadata"], "spec": project.get("spec", {}),
            "status": project.get("status", {})}


SA_USER_PREFIX = "system:serviceaccount:"


def openshift_to_rbac_binding(binding: Obj) -> Obj:
    """authorization.openshift.io RoleBinding -> rbac RoleBinding, as OpenShift
    converts it: a roleRef without namespace names a ClusterRole, and
    ``userNames``/``groupNames`` become subjects."""
    ref = binding.get("roleRef") or {}
    out: Obj = {"metadata": binding["metadata"]}
    if ref:
        out["roleRef"] = {
            "apiGroup": RBAC_GROUP,
            "kind": "Role" if ref.get("namespace") else "ClusterRole",
            "name": ref.get("name", ""),
        }
    subjects: list[Obj] = []

    def add(subject: Obj) -> None:
        if subject not in subjects:
            subjects.append(subject)

    for ref_subject in binding.get("subjects") or []:
        kind = ref_subject.get("kind", "")
        subject = {"kind": kind, "name": ref_subject.get("name", "")}
        if kind == "ServiceAccount":
            subject["namespace"] = ref_subject.get("namespace", binding["metadata"].get(
                "namespace", ""))
        elif kind in ("User", "Group", "SystemUser", "SystemGroup"):
            subject["kind"] = "Group" if "Group" in kind else "User"
            subject["apiGroup"] = RBAC_GROUP
        add(subject)
    for user in binding.get("userNames") or []:
        if user.startswith(SA_USER_PREFIX) and user.count(":") == 3:
            namespace, name = user[len(SA_USER_PREFIX):].split(":")
            add({"kind": "ServiceAccount", "name": name, "namespace": namespace})
        else:
            add({"kind": "User", "apiGroup": RBAC_GROUP, "name": user})
    for group in binding.get("groupNames") or []:
        add({"kind": "Group", "apiGroup": RBAC_GROUP, "name": group})
    if subjects:
        out["subjects"] = subjects
    return out


def rbac_to_openshift_binding(binding: Obj) -> Obj:
    ref = binding.get("roleRef") or {}
    out: Obj = {"metadata": binding["metadata"], "roleRef": {"name": ref.get("name", "")}}
    if ref.get("kind") == "Role":
        out["roleRef"]["namespace"] = binding["metadata"].get("namespace", "")
    users, groups, subjects = [], [], []
    for subject in binding.get("subjects") or []:
        kind = subject.get("kind")
        if kind == "ServiceAccount":
            users.append(f"{SA_USER_PREFIX}{subject.get('namespace', '')}:{subject['name']}")
            subjects.append({"kind": "ServiceAccount", "name": subject["name"],
                             "namespace": subject.get("namespace", "")})
        elif kind == "Group":
            groups.append(subject["name"])
            subjects.append({"kind": "Group", "name": subject["name"]})
        else:
            users.append(subject["name"])
            subjects.append({"kind": "User", "name": subject["name"]})
    out["userNames"] = users or None
    out["groupNames"] = groups or None
    out["subjects"] = subjects
    return {k: v for k, v in out.items() if v is not None}


def openshift_binding_validate(obj: Obj) -> list[Cause]:
    if not (obj.get("roleRef") or {}).get("name"):
        return [required("roleRef.name")]
    return validation.role_binding(openshift_to_rbac_binding(obj))


# -- the registry ---------------------------------------------------------------------------

RESOURCES: list[ResourceType] = [
    ResourceType("", "v1", "namespaces", "Namespace", "namespace", False, "V1Namespace",
                 "label", verbs=("create", "delete", "get", "list", "patch", "update", "watch"),
                 short_names=("ns",), returns_deleted_object=True,
                 fields={"status.phase": _path("status", "phase")}),
    ResourceType("", "v1", "pods", "Pod", "pod", True, "V1Pod", "subdomain",
                 short_names=("po",), returns_deleted_object=True, validate=validation.pod,
                 fields={"spec.nodeName": _path("spec", "nodeName"),
                         "spec.restartPolicy": _path("spec", "restartPolicy"),
                         "spec.schedulerName": _path("spec", "schedulerName"),
                         "spec.serviceAccountName": _path("spec", "serviceAccountName"),
                         "status.phase": _path("status", "phase"),
                         "status.podIP": _path("status", "podIP"),
                         "status.nominatedNodeName": _path("status", "nominatedNodeName")}),
    ResourceType("", "v1", "serviceaccounts", "ServiceAccount", "serviceaccount", True,
                 "V1ServiceAccount", "subdomain", short_names=("sa",),
                 returns_deleted_object=True),
    ResourceType("", "v1", "secrets", "Secret", "secret", True, "V1Secret", "subdomain",
                 validate=validation.secret, fields={"type": _path("type")}),
    ResourceType("", "v1", "configmaps", "ConfigMap", "configmap", True, "V1ConfigMap",
                 "subdomain", short_names=("cm",), validate=validation.config_map),
    ResourceType("", "v1", "resourcequotas", "ResourceQuota", "resourcequota", True,
                 "V1ResourceQuota", "subdomain", short_names=("quota",),
                 returns_deleted_object=True),
    ResourceType(RBAC_GROUP, "v1", "roles", "Role", "role", True, "V1Role", "segment",
                 validate=validation.role),
    ResourceType(RBAC_GROUP, "v1", "rolebindings", "RoleBinding", "rolebinding", True,
                 "V1RoleBinding", "segment", validate=validation.role_binding),
    ResourceType(PROJECT_GROUP, "v1", "projects", "Project", "project", False, "Project",
                 "label", verbs=("delete", "get", "list", "watch"), openshift_only=True,
                 storage="namespaces", to_storage=project_to_namespace,
                 from_storage=namespace_to_project,
                 fields={"status.phase": _path("status", "phase")}),
    ResourceType(PROJECT_GROUP, "v1", "projectrequests", "ProjectRequest", "projectrequest",
                 False, "ProjectRequest", "label", verbs=("create", "list"),
                 openshift_only=True),
    ResourceType(AUTHZ_GROUP, "v1", "rolebindings", "RoleBinding", "rolebinding", True,
                 "OpenShiftRoleBinding", "segment",
                 verbs=("create", "delete", "get", "list", "patch", "update"),
                 openshift_only=True, validate=openshift_binding_validate,
                 storage=f"rolebindings.{RBAC_GROUP}", to_storage=openshift_to_rbac_binding,
                 from_storage=rbac_to_openshift_binding),
]


def served(openshift: bool) -> list[ResourceType]:
    return [r for r in RESOURCES if openshift or not r.openshift_only]


def find(resources: list[ResourceType], group: str, version: str, plural: str
         ) -> ResourceType | None:
    for rtype in resources:
        if rtype.group == group and rtype.version == version and rtype.plural == plural:
            return rtype
    return None


def group_versions(resources: list[ResourceType]) -> dict[str, list[str]]:
    groups: dict[str, list[str]] = {}
    for rtype in resources:
        if rtype.group and rtype.version not in groups.setdefault(rtype.group, []):
            groups[rtype.group].append(rtype.version)
    return groups


def discovery_entry(rtype: ResourceType) -> Obj:
    entry: Obj = {
        "name": rtype.plural,
        "singularName": rtype.singular,
        "namespaced": rtype.namespaced,
        "kind": rtype.kind,
        "verbs": list(rtype.verbs),
    }
    if rtype.short_names:
        entry["shortNames"] = list(rtype.short_names)
    return entry
