"""Field validation of the kinds the simulator serves (the 422 causes).

Only the rules a driver can plausibly trip are implemented, with the API
server's field paths and wording: names, labels and annotations, a pod's
containers, images, policies and resources, RBAC rules, role references
and subjects, service-account token secrets.
"""

from __future__ import annotations

import re
from typing import Any

from nodepool.tests.k8s_sim import quantity
from nodepool.tests.k8s_sim.errors import (
    ApiError,
    Cause,
    duplicate,
    invalid,
    required,
    unsupported,
)

Obj = dict[str, Any]

DNS_LABEL = re.compile(r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?$")
DNS_SUBDOMAIN = re.compile(r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*$")
LABEL_NAME = re.compile(r"^([A-Za-z0-9][-A-Za-z0-9_.]*)?[A-Za-z0-9]$")
LABEL_VALUE = re.compile(r"^(([A-Za-z0-9][-A-Za-z0-9_.]*)?[A-Za-z0-9])?$")
CONFIG_KEY = re.compile(r"^[-._a-zA-Z0-9]+$")

DNS_LABEL_MSG = (
    "a lowercase RFC 1123 label must consist of lower case alphanumeric characters or '-', "
    "and must start and end with an alphanumeric character (e.g. 'my-name',  or '123-abc', "
    "regex used for validation is '[a-z0-9]([-a-z0-9]*[a-z0-9])?')")
DNS_SUBDOMAIN_MSG = (
    "a lowercase RFC 1123 subdomain must consist of lower case alphanumeric characters, '-' "
    "or '.', and must start and end with an alphanumeric character (e.g. 'example.com', regex "
    "used for validation is "
    "'[a-z0-9]([-a-z0-9]*[a-z0-9])?(\\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*')")
LABEL_VALUE_MSG = (
    "a valid label must be an empty string or consist of alphanumeric characters, '-', '_' "
    "or '.', and must start and end with an alphanumeric character (e.g. 'MyValue',  or "
    "'my_value',  or '12345', regex used for validation is "
    "'(([A-Za-z0-9][-A-Za-z0-9_.]*)?[A-Za-z0-9])?')")
QUALIFIED_NAME_MSG = (
    "name part must consist of alphanumeric characters, '-', '_' or '.', and must start and "
    "end with an alphanumeric character (e.g. 'MyName',  or 'my.name',  or '123-abc', regex "
    "used for validation is '([A-Za-z0-9][-A-Za-z0-9_.]*)?[A-Za-z0-9]')")

RBAC_GROUP = "rbac.authorization.k8s.io"


def dns_label(name: str, path: str) -> list[Cause]:
    if len(name) > 63:
        return [invalid(path, name, "must be no more than 63 characters")]
    if not DNS_LABEL.match(name):
        return [invalid(path, name, DNS_LABEL_MSG)]
    return []


def dns_subdomain(name: str, path: str) -> list[Cause]:
    if len(name) > 253:
        return [invalid(path, name, "must be no more than 253 characters")]
    if not DNS_SUBDOMAIN.match(name):
        return [invalid(path, name, DNS_SUBDOMAIN_MSG)]
    return []


def path_segment(name: str, path: str) -> list[Cause]:
    """Names of RBAC objects only need to be usable in a URL path."""
    if name in (".", ".."):
        return [invalid(path, name, f"may not be '{name}'")]
    for bad in ("/", "%"):
        if bad in name:
            return [invalid(path, name, f"may not contain '{bad}'")]
    return []


def qualified_name(key: str, path: str) -> list[Cause]:
    prefix, _, name = key.rpartition("/")
    causes: list[Cause] = []
    if prefix:
        if len(prefix) > 253 or not DNS_SUBDOMAIN.match(prefix):
            causes.append(invalid(path, key, "prefix part " + DNS_SUBDOMAIN_MSG))
    if not name:
        causes.append(invalid(path, key, "name part must be non-empty"))
    elif len(name) > 63:
        causes.append(invalid(path, key, "name part must be no more than 63 characters"))
    elif not LABEL_NAME.match(name):
        causes.append(invalid(path, key, QUALIFIED_NAME_MSG))
    return causes


def metadata(obj: Obj, name_rule: str, namespaced: bool) -> list[Cause]:
    meta = obj.get("metadata") or {}
    causes: list[Cause] = []
    name = meta.get("name")
    if not name:
        causes.append(required("metadata.name"))
    elif name_rule == "label":
        causes += dns_label(name, "metadata.name")
    elif name_rule == "subdomain":
        causes += dns_subdomain(name, "metadata.name")
    else:
        causes += path_segment(name, "metadata.name")
    if namespaced and not meta.get("namespace"):
        causes.append(required("metadata.namespace"))
    for key, value in (meta.get("labels") or {}).items():
        causes += qualified_name(key, "metadata.labels")
        if len(value) > 63:
            causes.append(invalid("metadata.labels", value, "must be no more than 63 characters"))
        elif not LABEL_VALUE.match(value):
            causes.append(invalid("metadata.labels", value, LABEL_VALUE_MSG))
    annotations = meta.get("annotations") or {}
    for key in annotations:
        causes += qualified_name(key.lower(), "metadata.annotations")
    if sum(len(k) + len(v) for k, v in annotations.items()) > 256 * 1024:
        causes.append(Cause("metadata.annotations", "FieldValueTooLong",
                            "Too long: must have at most 262144 bytes"))
    return causes


# -- pods -----------------------------------------------------------------------------

def _resources(resources: Obj, path: str) -> list[Cause]:
    causes: list[Cause] = []
    limits = resources.get("limits") or {}
    requests = resources.get("requests") or {}
    for section, values in (("limits", limits), ("requests", requests)):
        for name, value in values.items():
            if quantity.parse(value).value < 0:
                causes.append(invalid(f"{path}.{section}[{name}]", value,
                                      "must be greater than or equal to 0"))
    for name, value in requests.items():
        if name in limits and quantity.parse(value).value > quantity.parse(limits[name]).value:
            causes.append(invalid(f"{path}.requests", value,
                                  f"must be less than or equal to {name} limit of "
                                  f"{limits[name]}"))
    return causes


def _containers(containers: list[Obj], path: str, seen: set[str]) -> list[Cause]:
    causes: list[Cause] = []
    for i, container in enumerate(containers):
        cpath = f"{path}[{i}]"
        name = container.get("name")
        if not name:
            causes.append(required(f"{cpath}.name"))
        else:
            causes += dns_label(name, f"{cpath}.name")
            if name in seen:
                causes.append(duplicate(f"{cpath}.name", name))
            seen.add(name)
        if not container.get("image"):
            causes.append(required(f"{cpath}.image"))
        policy = container.get("imagePullPolicy")
        if policy not in ("Always", "IfNotPresent", "Never"):
            causes.append(unsupported(f"{cpath}.imagePullPolicy", policy,
                                      ["Always", "IfNotPresent", "Never"]))
        causes += _resources(container.get("resources") or {}, f"{cpath}.resources")
    return causes


def pod(obj: Obj) -> list[Cause]:
    spec = obj.get("spec") or {}
    causes: list[Cause] = []
    containers = spec.get("containers") or []
    if not containers:
        causes.append(required("spec.containers"))
    seen: set[str] = set()
    causes += _containers(containers, "spec.containers", seen)
    causes += _containers(spec.get("initContainers") or [], "spec.initContainers", seen)
    restart = spec.get("restartPolicy")
    if restart not in ("Always", "OnFailure", "Never"):
        causes.append(unsupported("spec.restartPolicy", restart,
                                  ["Always", "OnFailure", "Never"]))
    dns = spec.get("dnsPolicy")
    if dns not in ("ClusterFirstWithHostNet", "ClusterFirst", "Default", "None"):
        causes.append(unsupported("spec.dnsPolicy", dns,
                                  ["ClusterFirstWithHostNet", "ClusterFirst", "Default", "None"]))
    for key, value in (spec.get("nodeSelector") or {}).items():
        causes += qualified_name(key, "spec.nodeSelector")
        if not LABEL_VALUE.match(value) or len(value) > 63:
            causes.append(invalid("spec.nodeSelector", value, LABEL_VALUE_MSG))
    volume_names: set[str] = set()
    for i, volume in enumerate(spec.get("volumes") or []):
        name = volume.get("name")
        if not name:
            causes.append(required(f"spec.volumes[{i}].name"))
        elif name in volume_names:
            causes.append(duplicate(f"spec.volumes[{i}].name", name))
        volume_names.add(name or "")
    for i, container in enumerate(containers):
        for j, mount in enumerate(container.get("volumeMounts") or []):
            if mount.get("name") not in volume_names:
                causes.append(Cause(f"spec.containers[{i}].volumeMounts[{j}].name",
                                    "FieldValueNotFound",
                                    f'Not found: "{mount.get("name")}"'))
    return causes


# -- secrets ----------------------------------------------------------------------------

SA_NAME_ANNOTATION = "kubernetes.io/service-account.name"
SA_UID_ANNOTATION = "kubernetes.io/service-account.uid"
SA_TOKEN_TYPE = "kubernetes.io/service-account-token"


def secret(obj: Obj) -> list[Cause]:
    causes: list[Cause] = []
    for key in obj.get("data") or {}:
        if not CONFIG_KEY.match(key):
            causes.append(invalid("data", key, "a valid config key must consist of "
                                  "alphanumeric characters, '-', '_' or '.' (e.g. 'key.name',"
                                  "  or 'KEY_NAME',  or 'key-name', regex used for validation "
                                  "is '[-._a-zA-Z0-9]+')"))
    if obj.get("type") == SA_TOKEN_TYPE:
        annotations = obj["metadata"].get("annotations") or {}
        if not annotations.get(SA_NAME_ANNOTATION):
            causes.append(required(f"metadata.annotations[{SA_NAME_ANNOTATION}]"))
    return causes


def config_map(obj: Obj) -> list[Cause]:
    return [invalid("data", key, "a valid config key must consist of alphanumeric "
                    "characters, '-', '_' or '.'")
            for key in list(obj.get("data") or {}) + list(obj.get("binaryData") or {})
            if not CONFIG_KEY.match(key)]


# -- rbac -------------------------------------------------------------------------------

def role(obj: Obj) -> list[Cause]:
    causes: list[Cause] = []
    for i, rule in enumerate(obj.get("rules") or []):
        path = f"rules[{i}]"
        if not rule.get("verbs"):
            causes.append(Cause(f"{path}.verbs", "FieldValueRequired",
                                "Required value: verbs must contain at least one value"))
        if rule.get("nonResourceURLs"):
            causes.append(invalid(f"{path}.nonResourceURLs", rule["nonResourceURLs"],
                                  "namespaced rules cannot apply to non-resource URLs"))
            continue
        if not rule.get("apiGroups"):
            causes.append(Cause(f"{path}.apiGroups", "FieldValueRequired",
                                "Required value: resource rules must supply at least one "
                                "api group"))
        if not rule.get("resources"):
            causes.append(Cause(f"{path}.resources", "FieldValueRequired",
                                "Required value: resource rules must supply at least one "
                                "resource"))
    return causes


def role_binding(obj: Obj) -> list[Cause]:
    causes: list[Cause] = []
    ref = obj.get("roleRef")
    if not ref:
        return [required("roleRef")]
    if ref.get("apiGroup") != RBAC_GROUP:
        causes.append(unsupported("roleRef.apiGroup", ref.get("apiGroup", ""), [RBAC_GROUP]))
    if ref.get("kind") not in ("Role", "ClusterRole"):
        causes.append(unsupported("roleRef.kind", ref.get("kind", ""), ["Role", "ClusterRole"]))
    if not ref.get("name"):
        causes.append(required("roleRef.name"))
    else:
        causes += path_segment(ref["name"], "roleRef.name")
    for i, subject in enumerate(obj.get("subjects") or []):
        path = f"subjects[{i}]"
        if not subject.get("name"):
            causes.append(required(f"{path}.name"))
        kind = subject.get("kind")
        if kind == "ServiceAccount":
            if subject.get("apiGroup"):
                causes.append(unsupported(f"{path}.apiGroup", subject["apiGroup"], [""]))
            if subject.get("name"):
                causes += dns_subdomain(subject["name"], f"{path}.name")
        elif kind in ("User", "Group"):
            if subject.get("apiGroup") != RBAC_GROUP:
                causes.append(unsupported(f"{path}.apiGroup", subject.get("apiGroup", ""),
                                          [RBAC_GROUP]))
        else:
            causes.append(unsupported(f"{path}.kind", kind or "",
                                      ["ServiceAccount", "User", "Group"]))
    return causes


def body_kind(body: Obj, kind: str, api_version: str) -> None:
    """A body of another kind or version than the endpoint's is a 400."""
    got_kind = body.get("kind")
    got_version = body.get("apiVersion")
    if got_kind and got_kind != kind:
        raise ApiError(400, f"{kind} in version \"{api_version.rsplit('/', 1)[-1]}\" cannot be "
                            f"handled as a {kind}: no kind \"{got_kind}\" is registered for "
                            f"version \"{got_version or api_version}\"")
    if got_version and got_version != api_version:
        raise ApiError(400, f"the API version in the data ({got_version}) does not match the "
                            f"expected API version ({api_version})")
