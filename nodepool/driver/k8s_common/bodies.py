"""The objects the drivers create, as the Kubernetes API defines them.

They follow upstream Nodepool 11 field for field, except for two fields
that are not part of the API and that the kubernetes client (37 and
later) refuses to send: a RoleBinding ``userNames`` (the ``subjects``
already name the service account) and a Pod top-level ``restartPolicy``
(API servers dropped it, so upstream's pods always ran with the default
policy, which ours keep).

What a label makes is also checked against the client's models up front
(:func:`check_label`), so a label whose objects can never be sent is
declined with the reason instead of failing every launch.
"""

from __future__ import annotations

import json
import logging
from typing import Any

from kubernetes.client import V1Namespace, V1Pod
from pydantic import ValidationError

from nodepool.driver.adapter import META_NODE_ID, META_POOL, META_PROVIDER
from nodepool.driver.k8s_common.config import K8sLabel
from nodepool.driver.request_format import format_with_request
from nodepool.exceptions import RuntimeConfigurationException

# The label every object of a node carries besides the framework's tags.
META_LABEL = "nodepool_node_label"
# The service account Zuul's executor acts as.
USER = "zuul-worker"
# Verbs of the roles granted to that account.
ALL_VERBS = ["create", "delete", "get", "list", "patch", "update", "watch"]
RBAC_GROUP = "rbac.authorization.k8s.io"


# Labels ---------------------------------------------------------------------------------

def object_labels(label: K8sLabel, tags: dict[str, str], request: Any,
                  log: logging.Logger | logging.LoggerAdapter) -> dict[str, Any]:
    """The Kubernetes labels of a node's objects: the label's ``labels``,
    its ``dynamic-labels`` formatted with the request (one that does not
    format is logged and left out, as upstream does), and nodepool's own
    tags (``tags`` from the framework plus the label name), which
    nothing configurable overrides: the leak cleanup relies on them."""
    labels: dict[str, Any] = dict(label.k8s_labels)
    if request is None and label.dynamic_labels:
        # A launch resumed without its request at hand.
        log.warning("No node request at hand; dynamic labels %s left out",
                    ", ".join(label.dynamic_labels))
    for key, fmt in label.dynamic_labels.items() if request is not None else ():
        try:
            labels[key] = format_with_request(fmt, request)
        except Exception:
            log.exception("Could not format dynamic label %s (%r); leaving it out", key, fmt)
    labels.update({
        META_NODE_ID: tags[META_NODE_ID],
        META_PROVIDER: tags[META_PROVIDER],
        META_POOL: tags[META_POOL],
        META_LABEL: label.name,
    })
    return labels


# Namespaces and access --------------------------------------------------------------------

def namespace(name: str, labels: dict[str, Any]) -> dict[str, Any]:
    return {"apiVersion": "v1", "kind": "Namespace",
            "metadata": {"name": name, "labels": labels}}


def service_account() -> dict[str, Any]:
    return {"apiVersion": "v1", "kind": "ServiceAccount", "metadata": {"name": USER}}


def token_secret() -> dict[str, Any]:
    """A secret the token controller fills with the account's token and
    the cluster CA (Kubernetes no longer makes one by itself)."""
    return {"apiVersion": "v1", "kind": "Secret",
            "type": "kubernetes.io/service-account-token",
            "metadata": {"name": USER,
                         "annotations": {"kubernetes.io/service-account.name": USER}}}


def role(restricted: bool) -> dict[str, Any]:
    """``zuul``: what a job may do in its own namespace; ``zuul-restricted``
    (pod nodes): only reach into the pod, as upstream grants."""
    if restricted:
        return {"apiVersion": f"{RBAC_GROUP}/v1", "kind": "Role",
                "metadata": {"name": "zuul-restricted"},
                "rules": [
                    {"apiGroups": [""], "resources": ["pods"], "verbs": ["get", "list"]},
                    {"apiGroups": [""], "resources": ["pods/exec"], "verbs": ALL_VERBS},
                    {"apiGroups": [""], "resources": ["pods/logs"], "verbs": ALL_VERBS},
                    {"apiGroups": [""], "resources": ["pods/portforward"],
                     "verbs": ALL_VERBS},
                ]}
    return {"apiVersion": f"{RBAC_GROUP}/v1", "kind": "Role", "metadata": {"name": "zuul"},
            "rules": [{"apiGroups": [""],
                       "resources": ["pods", "pods/exec", "pods/log", "pods/portforward",
                                     "services", "endpoints", "crontabs", "jobs",
                                     "deployments", "replicasets", "configmaps",
                                     "secrets"],
                       "verbs": ALL_VERBS}]}


def role_binding(name: str, namespace: str, role_kind: str, role_name: str) -> dict[str, Any]:
    return {"apiVersion": f"{RBAC_GROUP}/v1", "kind": "RoleBinding",
            "metadata": {"name": name},
            "roleRef": {"apiGroup": RBAC_GROUP, "kind": role_kind, "name": role_name},
            "subjects": [{"kind": "ServiceAccount", "name": USER, "namespace": namespace}]}


# Where OpenShift keeps a project request's ``description``.
DESCRIPTION_ANNOTATION = "openshift.io/description"
_OWNER_KEYS = (META_PROVIDER, META_POOL, META_NODE_ID, META_LABEL)


def project_request(name: str, labels: dict[str, Any]) -> dict[str, Any]:
    """An OpenShift project request.  OpenShift's project template does
    not carry a request's labels over to the project, and a project's
    requester may not label it afterwards, so nodepool's tags also go
    into the ``description`` (which the template keeps, as the
    ``openshift.io/description`` annotation): that is how the leak
    cleanup recognises our projects."""
    description = json.dumps({key: labels[key] for key in _OWNER_KEYS}, sort_keys=True)
    return {"apiVersion": "project.openshift.io/v1", "kind": "ProjectRequest",
            "metadata": {"name": name, "labels": labels}, "description": description}


def owner_tags(metadata: dict[str, Any] | None) -> dict[str, str]:
    """Nodepool's tags of an object from its (camelCase) metadata: its
    labels, or for an OpenShift project the description we gave it."""
    metadata = metadata or {}
    labels = metadata.get("labels") or {}
    if labels.get(META_PROVIDER):
        return {key: str(value) for key, value in labels.items()}
    note = (metadata.get("annotations") or {}).get(DESCRIPTION_ANNOTATION)
    if not note:
        return {}
    try:
        tags = json.loads(note)
    except ValueError:
        return {}
    if not isinstance(tags, dict):
        return {}
    return {key: str(tags[key]) for key in _OWNER_KEYS if key in tags}


# Pods -------------------------------------------------------------------------------------

def pod(name: str, label: K8sLabel, labels: dict[str, Any]) -> dict[str, Any]:
    """The pod of a pod label: the operator's ``spec`` as given, or one
    container that sleeps, built from the label's keys."""
    metadata = {"name": name, "labels": labels, "annotations": dict(label.annotations)}
    if label.spec:
        return {"apiVersion": "v1", "kind": "Pod", "metadata": metadata, "spec": label.spec}
    container: dict[str, Any] = {
        "name": label.name,
        "image": label.container_image,
        "imagePullPolicy": label.image_pull,
        "command": ["/bin/sh", "-c"],
        "args": ["while true; do sleep 30; done;"],
        "env": label.env,
    }
    resources = container_resources(label)
    if resources:
        container["resources"] = resources
    if label.volume_mounts:
        container["volumeMounts"] = label.volume_mounts
    if label.privileged is not None:
        container["securityContext"] = {"privileged": label.privileged}
    spec: dict[str, Any] = {"containers": [container]}
    if label.image_pull_secrets:
        spec["imagePullSecrets"] = label.image_pull_secrets
    if label.node_selector:
        spec["nodeSelector"] = label.node_selector
    if label.scheduler_name:
        spec["schedulerName"] = label.scheduler_name
    if label.volumes:
        spec["volumes"] = label.volumes
    return {"apiVersion": "v1", "kind": "Pod", "metadata": metadata, "spec": spec}


def container_resources(label: K8sLabel) -> dict[str, dict[str, str]]:
    """Requests and limits: cpu in cores, memory in MiB, storage in MB,
    a GPU as a decimal (quantities are strings in the API)."""
    requests: dict[str, str] = {}
    limits: dict[str, str] = {}
    if label.cpu:
        requests["cpu"] = str(int(label.cpu))
    if label.memory:
        requests["memory"] = f"{int(label.memory)}Mi"
    if label.storage:
        requests["ephemeral-storage"] = f"{int(label.storage)}M"
    if label.cpu_limit:
        limits["cpu"] = str(int(label.cpu_limit))
    if label.memory_limit:
        limits["memory"] = f"{int(label.memory_limit)}Mi"
    if label.storage_limit:
        limits["ephemeral-storage"] = f"{int(label.storage_limit)}M"
    if label.gpu_resource and label.gpu:
        requests[label.gpu_resource] = f"{label.gpu:.2f}"
        limits[label.gpu_resource] = f"{label.gpu:.2f}"
    resources: dict[str, dict[str, str]] = {}
    if requests:
        resources["requests"] = requests
    if limits:
        resources["limits"] = limits
    return resources


def check_label(label: K8sLabel) -> None:
    """Raise RuntimeConfigurationException if what ``label`` makes can
    never be sent: a pod with no image and no spec, or objects the API's
    models refuse (a misspelt field of ``spec``, a number where a string
    belongs, in the pod or in the label's ``labels``)."""
    tags = {key: "0" for key in _OWNER_KEYS}
    labels = {**label.k8s_labels, **tags}
    checks: list[tuple[Any, dict[str, Any]]] = [
        (V1Namespace, namespace(label.name, labels))]
    if label.is_pod:
        if not label.spec and not label.container_image:
            raise RuntimeConfigurationException(
                f"label {label.name} makes a pod but has neither image nor spec; add one")
        checks.append((V1Pod, pod(label.name, label, labels)))
    for model, body in checks:
        try:
            model.model_validate(body)
        except ValidationError as e:
            problems = "; ".join(f"{'.'.join(str(p) for p in err['loc'])}: {err['msg']}"
                                 for err in e.errors())
            raise RuntimeConfigurationException(
                f"label {label.name}: the {body['kind'].lower()} it describes is not valid "
                f"({problems}); fix the label's settings") from e
