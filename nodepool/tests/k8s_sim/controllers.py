"""What the cluster's controllers and admission plugins do to objects.

On a real cluster these run asynchronously next to the API server; here
they are hooks called when an object is created or deleted plus timers
(``ClusterState.after``) that fire on the next ``tick()`` once due:

* namespace controller: every new namespace gets the ``default`` service
  account (and on OpenShift ``builder`` and ``deployer``) and the
  ``kube-root-ca.crt`` config map; deleting a namespace marks it
  Terminating, then removes everything in it, then the namespace.
* token controller: a ``kubernetes.io/service-account-token`` secret gets
  ``data.token`` (a signed JWT), ``data["ca.crt"]`` and ``data.namespace``
  after ``token_delay``; a token secret whose service account does not
  exist is deleted instead; deleting a service account deletes its token
  secrets.  With ``legacy_sa_token_secrets`` every new service account
  also gets an auto-created ``<sa>-token-xxxxx`` secret listed in its
  ``secrets`` (Kubernetes before 1.24, OpenShift before 4.16), and on
  OpenShift a ``<sa>-dockercfg-xxxxx`` pull secret.
* scheduler and kubelet: a new pod is Pending, then after
  ``pod_start_delay`` Running with a node, pod IP and container statuses
  (or whatever fate the test chose: Failed, stuck Pending, Unschedulable).
  A pod deleted while running lingers with a deletionTimestamp for
  ``pod_delete_delay``.
* admission: a pod's service account must exist, and ResourceQuota objects
  in its namespace are enforced (pods count and cpu/memory requests/limits).
"""

from __future__ import annotations

import base64
import copy
import functools
import random
import uuid
from decimal import Decimal
from typing import Any

from nodepool.tests.k8s_sim import quantity
from nodepool.tests.k8s_sim.errors import forbidden_error, not_found
from nodepool.tests.k8s_sim.state import ClusterState, now_rfc3339
from nodepool.tests.k8s_sim.validation import (
    SA_NAME_ANNOTATION,
    SA_TOKEN_TYPE,
    SA_UID_ANNOTATION,
)

Obj = dict[str, Any]

_SUFFIX_CHARS = "bcdfghjklmnpqrstvwxz2456789"
TERMINAL_PHASES = ("Succeeded", "Failed")


def random_suffix(n: int = 5) -> str:
    return "".join(random.choice(_SUFFIX_CHARS) for _ in range(n))


def b64(text: str | bytes) -> str:
    raw = text.encode() if isinstance(text, str) else text
    return base64.b64encode(raw).decode()


def stamp(obj: Obj) -> None:
    """Server-set metadata of a new object."""
    meta = obj["metadata"]
    meta["uid"] = str(uuid.uuid4())
    meta["creationTimestamp"] = now_rfc3339()


def create_object(state: ClusterState, resource: str, obj: Obj) -> Obj:
    """Store a new object as the API server would and run the controllers' hooks."""
    stamp(obj)
    state.put(resource, obj, "ADDED")
    hook = AFTER_CREATE.get(resource)
    if hook is not None:
        hook(state, obj)
    return obj


def _still(state: ClusterState, resource: str, obj: Obj) -> Obj | None:
    """The current object if it is still the same incarnation (same uid)."""
    meta = obj["metadata"]
    current = state.get(resource, meta.get("namespace", ""), meta["name"])
    if current is None or current["metadata"]["uid"] != meta["uid"]:
        return None
    return current


# -- namespaces -----------------------------------------------------------------------------

def namespace_defaults(obj: Obj) -> None:
    meta = obj["metadata"]
    meta.setdefault("labels", {})["kubernetes.io/metadata.name"] = meta["name"]
    obj["spec"] = {"finalizers": ["kubernetes"]}
    obj["status"] = {"phase": "Active"}


def namespace_created(state: ClusterState, ns: Obj) -> None:
    name = ns["metadata"]["name"]
    accounts = ["default"] + (["builder", "deployer"] if state.openshift else [])
    for account in accounts:
        create_object(state, "serviceaccounts", {
            "apiVersion": "v1", "kind": "ServiceAccount",
            "metadata": {"name": account, "namespace": name}})
    create_object(state, "configmaps", {
        "apiVersion": "v1", "kind": "ConfigMap",
        "metadata": {"name": "kube-root-ca.crt", "namespace": name,
                     "annotations": {"kubernetes.io/description": (
                         "Contains a CA bundle that can be used to verify the "
                         "kube-apiserver when using internal endpoints such as the "
                         "internal service IP or kubernetes.default.svc. No other usage "
                         "is guaranteed across distributions of Kubernetes clusters.")}},
        "data": {"ca.crt": state.pki.ca_pem.decode()}})


def namespace_delete(state: ClusterState, ns: Obj) -> Obj:
    """Mark Terminating (once) and schedule the removal of everything in it."""
    if ns["metadata"].get("deletionTimestamp"):
        return ns
    ns = copy.deepcopy(ns)
    ns["metadata"]["deletionTimestamp"] = now_rfc3339()
    ns["status"] = {"phase": "Terminating"}
    state.put("namespaces", ns, "MODIFIED")
    snapshot = copy.deepcopy(ns)
    state.after(state.namespace_delete_delay, lambda s: _finalize_namespace(s, snapshot))
    return ns


def _finalize_namespace(state: ClusterState, ns: Obj) -> None:
    if _still(state, "namespaces", ns) is None:
        return
    name = ns["metadata"]["name"]
    for resource in list(state.objects):
        if resource == "namespaces":
            continue
        for obj in state.items(resource, name):
            state.remove(resource, name, obj["metadata"]["name"])
    state.remove("namespaces", "", name)


def namespace_usable(state: ClusterState, namespace: str, resource: str, group: str,
                     name: str) -> None:
    """Creating in a missing namespace is a 404; in a Terminating one a 403."""
    ns = state.get("namespaces", "", namespace)
    if ns is None:
        raise not_found("namespaces", "", namespace)
    if ns["status"].get("phase") == "Terminating":
        raise forbidden_error(resource, group, name,
                              f"unable to create new content in namespace {namespace} "
                              "because it is being terminated")


# -- service accounts and tokens ----------------------------------------------------------

def serviceaccount_created(state: ClusterState, sa: Obj) -> None:
    if not (state.legacy_sa_token_secrets or state.openshift):
        return
    snapshot = copy.deepcopy(sa)
    state.after(state.token_delay, lambda s: _legacy_secrets(s, snapshot))


def _legacy_secrets(state: ClusterState, sa: Obj) -> None:
    current = _still(state, "serviceaccounts", sa)
    if current is None:
        return
    meta = current["metadata"]
    names: list[str] = []
    if state.openshift:
        name = f"{meta['name']}-dockercfg-{random_suffix()}"
        create_object(state, "secrets", {
            "apiVersion": "v1", "kind": "Secret", "type": "kubernetes.io/dockercfg",
            "metadata": {"name": name, "namespace": meta["namespace"],
                         "annotations": {SA_NAME_ANNOTATION: meta["name"],
                                         SA_UID_ANNOTATION: meta["uid"]}},
            "data": {".dockercfg": b64("{}")}})
        names.append(name)
        current.setdefault("imagePullSecrets", []).append({"name": name})
    if state.legacy_sa_token_secrets:
        name = f"{meta['name']}-token-{random_suffix()}"
        secret = {
            "apiVersion": "v1", "kind": "Secret", "type": SA_TOKEN_TYPE,
            "metadata": {"name": name, "namespace": meta["namespace"],
                         "annotations": {SA_NAME_ANNOTATION: meta["name"]}}}
        stamp(secret)
        _fill_token(state, secret, current)
        state.put("secrets", secret, "ADDED")
        names.append(name)
    secrets = current.setdefault("secrets", [])
    secrets.extend({"name": n} for n in names)
    state.put("serviceaccounts", current, "MODIFIED")


def serviceaccount_deleted(state: ClusterState, sa: Obj) -> None:
    meta = sa["metadata"]
    for secret in state.items("secrets", meta["namespace"]):
        annotations = secret["metadata"].get("annotations") or {}
        if (annotations.get(SA_NAME_ANNOTATION) == meta["name"]
                and secret.get("type") in (SA_TOKEN_TYPE, "kubernetes.io/dockercfg")):
            state.remove("secrets", meta["namespace"], secret["metadata"]["name"])


def secret_defaults(obj: Obj) -> None:
    obj.setdefault("type", "Opaque")
    string_data = obj.pop("stringData", None)
    if string_data:
        data = obj.setdefault("data", {})
        for key, value in string_data.items():
            data[key] = b64(value)


def secret_created(state: ClusterState, secret: Obj) -> None:
    if secret.get("type") != SA_TOKEN_TYPE or (secret.get("data") or {}).get("token"):
        return
    snapshot = copy.deepcopy(secret)
    if state.hold_tokens:
        state.held_tokens.append(snapshot)
    else:
        state.after(state.token_delay, lambda s: _token_controller(s, snapshot))


def release_tokens(state: ClusterState) -> None:
    held, state.held_tokens = state.held_tokens, []
    for snapshot in held:
        state.after(0, functools.partial(_token_controller, secret=snapshot))


def _token_controller(state: ClusterState, secret: Obj) -> None:
    current = _still(state, "secrets", secret)
    if current is None:
        return
    meta = current["metadata"]
    sa_name = (meta.get("annotations") or {}).get(SA_NAME_ANNOTATION, "")
    sa = state.get("serviceaccounts", meta["namespace"], sa_name)
    if sa is None:
        # The token controller deletes token secrets of missing service accounts.
        state.remove("secrets", meta["namespace"], meta["name"])
        return
    _fill_token(state, current, sa)
    state.put("secrets", current, "MODIFIED")


def _fill_token(state: ClusterState, secret: Obj, sa: Obj) -> None:
    meta = secret["metadata"]
    sa_meta = sa["metadata"]
    meta.setdefault("annotations", {})[SA_UID_ANNOTATION] = sa_meta["uid"]
    token = state.pki.sign_jwt({
        "iss": "kubernetes/serviceaccount",
        "kubernetes.io/serviceaccount/namespace": meta["namespace"],
        "kubernetes.io/serviceaccount/secret.name": meta["name"],
        "kubernetes.io/serviceaccount/service-account.name": sa_meta["name"],
        "kubernetes.io/serviceaccount/service-account.uid": sa_meta["uid"],
        "sub": f"system:serviceaccount:{meta['namespace']}:{sa_meta['name']}",
    })
    data = secret.setdefault("data", {})
    data["token"] = b64(token)
    data["ca.crt"] = b64(state.pki.ca_pem)
    data["namespace"] = b64(meta["namespace"])


# -- pods -------------------------------------------------------------------------------------

_DEFAULT_TOLERATIONS = [
    {"key": "node.kubernetes.io/not-ready", "operator": "Exists", "effect": "NoExecute",
     "tolerationSeconds": 300},
    {"key": "node.kubernetes.io/unreachable", "operator": "Exists", "effect": "NoExecute",
     "tolerationSeconds": 300},
]


def _default_pull_policy(image: str) -> str:
    if not image:
        return "IfNotPresent"  # as the API server defaults it; validation rejects the pod
    last = image.rsplit("/", 1)[-1]
    if "@" in last:
        return "IfNotPresent"
    if ":" not in last or last.endswith(":latest"):
        return "Always"
    return "IfNotPresent"


def pod_defaults(obj: Obj) -> None:
    spec = obj.setdefault("spec", {})
    spec.setdefault("restartPolicy", "Always")
    spec.setdefault("dnsPolicy", "ClusterFirst")
    spec.setdefault("schedulerName", "default-scheduler")
    spec.setdefault("serviceAccountName", spec.get("serviceAccount") or "default")
    spec["serviceAccount"] = spec["serviceAccountName"]
    spec.setdefault("terminationGracePeriodSeconds", 30)
    spec.setdefault("securityContext", {})
    spec.setdefault("enableServiceLinks", True)
    spec.setdefault("preemptionPolicy", "PreemptLowerPriority")
    spec.setdefault("priority", 0)
    tolerations = spec.setdefault("tolerations", [])
    for toleration in _DEFAULT_TOLERATIONS:
        if not any(t.get("key") == toleration["key"] for t in tolerations):
            tolerations.append(dict(toleration))
    for container in spec.get("containers", []) + spec.get("initContainers", []):
        if "imagePullPolicy" not in container:
            container["imagePullPolicy"] = _default_pull_policy(container.get("image", ""))
        container.setdefault("terminationMessagePath", "/dev/termination-log")
        container.setdefault("terminationMessagePolicy", "File")
        resources = container.setdefault("resources", {})
        limits = resources.get("limits") or {}
        requests = resources.get("requests")
        for name, value in limits.items():
            # Requests default to the limits where they are not set.
            if requests is None:
                requests = resources["requests"] = {}
            requests.setdefault(name, value)
    obj["status"] = {"phase": "Pending", "qosClass": _qos_class(spec)}


def _qos_class(spec: Obj) -> str:
    containers = spec.get("containers", [])
    resources = [c.get("resources") or {} for c in containers]
    if not any(r.get("requests") or r.get("limits") for r in resources):
        return "BestEffort"
    for r in resources:
        limits = r.get("limits") or {}
        requests = r.get("requests") or {}
        for name in ("cpu", "memory"):
            if name not in limits or requests.get(name, limits[name]) != limits[name]:
                return "Burstable"
    return "Guaranteed"


def pod_admit(state: ClusterState, pod: Obj) -> None:
    """ServiceAccount and ResourceQuota admission; 403 like the real plugins."""
    meta = pod["metadata"]
    namespace, name = meta["namespace"], meta["name"]
    account = pod["spec"]["serviceAccountName"]
    if state.get("serviceaccounts", namespace, account) is None:
        raise forbidden_error("pods", "", name,
                              f"error looking up service account {namespace}/{account}: "
                              f'serviceaccount "{account}" not found')
    for rq in state.items("resourcequotas", namespace):
        hard = (rq.get("spec") or {}).get("hard") or {}
        if not hard:
            continue
        requested = pod_usage(pod)
        used = quota_usage(state, namespace)
        missing = [r for r in hard
                   if r in ("cpu", "memory", "requests.cpu", "requests.memory",
                            "limits.cpu", "limits.memory") and r not in requested]
        if missing:
            containers = ",".join(c["name"] for c in pod["spec"]["containers"])
            detail = "; ".join(f"{r} for: {containers}" for r in sorted(missing))
            raise forbidden_error("pods", "", name,
                                  f"failed quota: {rq['metadata']['name']}: must specify "
                                  f"{detail}")
        over = [r for r in sorted(hard) if r in requested and
                used.get(r, 0) + requested[r] > quantity.parse(hard[r]).value]
        if over:
            raise forbidden_error(
                "pods", "", name,
                f"exceeded quota: {rq['metadata']['name']}, "
                f"requested: {_fmt_usage(over, requested)}, used: {_fmt_usage(over, used)}, "
                "limited: " + ",".join(f"{r}={hard[r]}" for r in over))


def _fmt_usage(names: list[str], values: dict[str, Any]) -> str:
    return ",".join(f"{r}={_fmt_quantity(values.get(r, 0))}" for r in names)


def _fmt_quantity(value: Any) -> str:
    return quantity.Quantity(Decimal(value), "DecimalSI").canonical()


def pod_usage(pod: Obj) -> dict[str, Any]:
    """What one pod counts against a quota."""
    usage: dict[str, Any] = {"pods": 1, "count/pods": 1}
    for container in pod["spec"].get("containers", []):
        resources = container.get("resources") or {}
        for section in ("requests", "limits"):
            for name, value in (resources.get(section) or {}).items():
                if name not in ("cpu", "memory"):
                    continue
                amount = quantity.parse(value).value
                keys = [f"{section}.{name}"] + ([name] if section == "requests" else [])
                for key in keys:
                    usage[key] = usage.get(key, 0) + amount
    return usage


def quota_usage(state: ClusterState, namespace: str) -> dict[str, Any]:
    used: dict[str, Any] = {}
    for pod in state.items("pods", namespace):
        if pod["status"].get("phase") in TERMINAL_PHASES:
            continue
        for key, value in pod_usage(pod).items():
            used[key] = used.get(key, 0) + value
    return used


def quota_view(state: ClusterState, rq: Obj) -> Obj:
    """A ResourceQuota with ``status`` computed as the quota controller would."""
    hard = (rq.get("spec") or {}).get("hard") or {}
    used = quota_usage(state, rq["metadata"].get("namespace", ""))
    rq["status"] = {"hard": dict(hard),
                    "used": {k: _fmt_quantity(used.get(k, 0)) for k in hard}}
    return rq


def pod_created(state: ClusterState, pod: Obj) -> None:
    fate = state.take_pod_fate()
    snapshot = copy.deepcopy(pod)
    if fate == "Unschedulable":
        state.after(0, lambda s: _unschedulable(s, snapshot))
    elif fate == "Pending":
        state.after(state.pod_start_delay, lambda s: _scheduled(s, snapshot, None))
        state.pending_pods.append(snapshot)
    else:
        state.after(state.pod_start_delay, lambda s: _scheduled(s, snapshot, fate))


def start_pending_pods(state: ClusterState) -> None:
    """Let pods that were held in Pending (fate ``Pending``) start now."""
    held, state.pending_pods = state.pending_pods, []
    for snapshot in held:
        state.after(0, functools.partial(_scheduled, pod=snapshot, fate="Running"))


def _condition(kind: str, status: str, **extra: str) -> Obj:
    return {"type": kind, "status": status, "lastProbeTime": None,
            "lastTransitionTime": now_rfc3339(), **extra}


def _unschedulable(state: ClusterState, pod: Obj) -> None:
    current = _still(state, "pods", pod)
    if current is None:
        return
    current["status"]["conditions"] = [_condition(
        "PodScheduled", "False", reason="Unschedulable",
        message="0/1 nodes are available: 1 Insufficient cpu. preemption: 0/1 nodes are "
                "available: 1 No preemption victims found for incoming pod.")]
    state.put("pods", current, "MODIFIED")


def _allocate_ip(state: ClusterState) -> str:
    n = state.next_pod_ip
    state.next_pod_ip += 1
    return f"10.244.{n // 254}.{n % 254 + 1}"


def _scheduled(state: ClusterState, pod: Obj, fate: str | None) -> None:
    current = _still(state, "pods", pod)
    if current is None or current["metadata"].get("deletionTimestamp"):
        return
    if current["status"].get("phase") != "Pending":
        return
    spec, status = current["spec"], current["status"]
    spec["nodeName"] = state.node_name
    if "podIP" not in status:
        ip = _allocate_ip(state)
        status.update({"hostIP": state.host_ip, "hostIPs": [{"ip": state.host_ip}],
                       "podIP": ip, "podIPs": [{"ip": ip}], "startTime": now_rfc3339()})
    containers = spec.get("containers", [])
    started = now_rfc3339()
    if fate is None:
        status["conditions"] = [
            _condition("PodReadyToStartContainers", "False"),
            _condition("Initialized", "True"),
            _condition("Ready", "False", reason="ContainersNotReady",
                       message="containers with unready status: ["
                       + " ".join(c["name"] for c in containers) + "]"),
            _condition("ContainersReady", "False", reason="ContainersNotReady"),
            _condition("PodScheduled", "True"),
        ]
        status["containerStatuses"] = [
            _container_status(c, {"waiting": {"reason": "ContainerCreating"}}, False)
            for c in containers]
    elif fate == "Failed":
        status["phase"] = "Failed"
        status["conditions"] = [
            _condition("PodReadyToStartContainers", "False"),
            _condition("Initialized", "True"),
            _condition("Ready", "False", reason="PodFailed"),
            _condition("ContainersReady", "False", reason="PodFailed"),
            _condition("PodScheduled", "True"),
        ]
        status["containerStatuses"] = [
            _container_status(c, {"terminated": {
                "exitCode": 1, "reason": "Error", "startedAt": started,
                "finishedAt": now_rfc3339(),
                "containerID": f"containerd://{uuid.uuid4().hex}"}}, False)
            for c in containers]
    else:
        status["phase"] = "Running"
        status["conditions"] = [
            _condition("PodReadyToStartContainers", "True"),
            _condition("Initialized", "True"),
            _condition("Ready", "True"),
            _condition("ContainersReady", "True"),
            _condition("PodScheduled", "True"),
        ]
        status["containerStatuses"] = [
            _container_status(c, {"running": {"startedAt": started}}, True)
            for c in containers]
    state.put("pods", current, "MODIFIED")


def _container_status(container: Obj, container_state: Obj, ready: bool) -> Obj:
    image = container.get("image", "")
    status = {
        "name": container.get("name", ""),
        "image": image if "/" in image else f"docker.io/library/{image}",
        "imageID": "",
        "ready": ready,
        "restartCount": 0,
        "started": ready,
        "state": container_state,
        "lastState": {},
    }
    if "waiting" not in container_state:
        status["containerID"] = f"containerd://{uuid.uuid4().hex}"
        status["imageID"] = f"docker.io/library/{image.split(':')[0]}@sha256:" + (
            uuid.uuid4().hex * 2)
    return status


def pod_delete(state: ClusterState, pod: Obj, grace: int | None) -> Obj:
    """Immediate for unscheduled or grace-0 pods, else linger ``pod_delete_delay``."""
    meta = pod["metadata"]
    if meta.get("deletionTimestamp"):
        return pod
    if grace is None:
        grace = pod["spec"].get("terminationGracePeriodSeconds", 30)
    if (not pod["spec"].get("nodeName") or grace == 0 or state.pod_delete_delay <= 0
            or pod["status"].get("phase") in TERMINAL_PHASES):
        removed = state.remove("pods", meta["namespace"], meta["name"])
        assert removed is not None
        removed["metadata"].setdefault("deletionTimestamp", now_rfc3339())
        removed["metadata"].setdefault("deletionGracePeriodSeconds", 0)
        return removed
    pod = copy.deepcopy(pod)
    pod["metadata"]["deletionTimestamp"] = now_rfc3339()
    pod["metadata"]["deletionGracePeriodSeconds"] = grace
    state.put("pods", pod, "MODIFIED")
    snapshot = copy.deepcopy(pod)

    def gone(s: ClusterState) -> None:
        if _still(s, "pods", snapshot) is not None:
            s.remove("pods", snapshot["metadata"]["namespace"], snapshot["metadata"]["name"])
    state.after(state.pod_delete_delay, gone)
    return pod


AFTER_CREATE = {
    "namespaces": namespace_created,
    "serviceaccounts": serviceaccount_created,
    "secrets": secret_created,
    "pods": pod_created,
}
