"""The simulated Kubernetes / OpenShift API server, driven by the real
``kubernetes`` client over HTTP.

These tests pin down what the kubernetes, openshift and openshiftpods
drivers' tests will rely on: that a client built from the kubeconfig the
simulator writes can run upstream's call sequences (namespace, service
account, token secret, role, rolebinding, pod; OpenShift project requests),
that errors arrive as ``ApiException`` with the real status and ``Status``
body, and that each fault switch does what it promises.
"""

from __future__ import annotations

import base64
import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import urllib3
import yaml
from cryptography import x509
from kubernetes import client, config, watch
from kubernetes.client.exceptions import ApiException
from kubernetes.dynamic import DynamicClient
from kubernetes.dynamic.exceptions import ResourceNotFoundError
from pydantic import ValidationError

from nodepool.tests.helpers import wait_for
from nodepool.tests.k8s_sim import SimulatedKubernetes

RBAC = "rbac.authorization.k8s.io"
USER = "zuul-worker"


# -- helpers --------------------------------------------------------------------------------

@pytest.fixture
def api(k8s_sim: SimulatedKubernetes) -> Iterator[client.ApiClient]:
    api_client = config.new_client_from_config(config_file=k8s_sim.kubeconfig_path,
                                               context="sim-context")
    yield api_client
    api_client.close()


@pytest.fixture
def core(api: client.ApiClient) -> client.CoreV1Api:
    return client.CoreV1Api(api)


@pytest.fixture
def rbac(api: client.ApiClient) -> client.RbacAuthorizationV1Api:
    return client.RbacAuthorizationV1Api(api)


@pytest.fixture
def dynamic(api: client.ApiClient, tmp_path: Path) -> DynamicClient:
    # The discovery cache is keyed by URL only; keep it private to the test
    # so a later simulator on a reused port cannot read a stale one.
    return DynamicClient(api, cache_file=str(tmp_path / "discovery.json"))


def namespace_body(name: str, labels: dict[str, str] | None = None) -> dict[str, Any]:
    return {"apiVersion": "v1", "kind": "Namespace",
            "metadata": {"name": name, "labels": labels or {}}}


def pod_body(name: str, labels: dict[str, str] | None = None, **container: Any
             ) -> dict[str, Any]:
    spec = {"name": name, "image": "docker.io/fedora:40", "command": ["/bin/sh", "-c"],
            "args": ["while true; do sleep 30; done;"], **container}
    return {"apiVersion": "v1", "kind": "Pod",
            "metadata": {"name": name, "labels": labels or {}},
            "spec": {"containers": [spec]}}


def token_secret_body(name: str = USER, account: str = USER) -> dict[str, Any]:
    return {"apiVersion": "v1", "kind": "Secret", "type": "kubernetes.io/service-account-token",
            "metadata": {"name": name,
                         "annotations": {"kubernetes.io/service-account.name": account}}}


def status_of(exc: ApiException) -> dict[str, Any]:
    assert exc.body is not None
    body = json.loads(exc.body)
    assert body["kind"] == "Status" and body["status"] == "Failure"
    assert body["code"] == exc.status
    return body


def phase(core: client.CoreV1Api, name: str, namespace: str) -> str | None:
    status = core.read_namespaced_pod(name, namespace).status
    return status.phase if status else None


def gone(read: Any, *args: Any) -> bool:
    try:
        read(*args)
    except ApiException as e:
        if e.status == 404:
            return True
        raise
    return False


def jwt_claims(token: str) -> dict[str, Any]:
    payload = token.split(".")[1]
    return json.loads(base64.urlsafe_b64decode(payload + "=" * (-len(payload) % 4)))


# -- connection and authentication ------------------------------------------------------------

def test_kubeconfig_connects_with_the_bearer_token(k8s_sim, api, core, tmp_path):
    version = client.VersionApi(api).get_code()
    assert (version.major, version.minor) == ("1", "37")
    assert [ns.metadata.name for ns in core.list_namespace().items] == [
        "default", "kube-public", "kube-system"]

    kubeconfig = yaml.safe_load(Path(k8s_sim.kubeconfig_path).read_text())
    assert kubeconfig["current-context"] == "sim-context"
    [user] = kubeconfig["users"]
    user["user"]["token"] = "not-the-token"
    bad_path = tmp_path / "bad-kubeconfig"
    bad_path.write_text(yaml.safe_dump(kubeconfig))
    bad = client.CoreV1Api(config.new_client_from_config(config_file=str(bad_path),
                                                         context="sim-context"))
    with pytest.raises(ApiException) as e:
        bad.list_namespace()
    assert e.value.status == 401
    assert status_of(e.value)["reason"] == "Unauthorized"


def test_kubeconfig_entries_of_several_clusters_share_one_file(tmp_path):
    path = tmp_path / "kubeconfig"
    with SimulatedKubernetes("one") as one, SimulatedKubernetes("two", openshift=True) as two:
        assert one.write_kubeconfig(path) == "one-context"
        assert two.write_kubeconfig(path, current=False) == "two-context"
        data = yaml.safe_load(path.read_text())
        assert data["current-context"] == "one-context"
        for sim in (one, two):
            core = client.CoreV1Api(config.new_client_from_config(
                config_file=str(path), context=f"{sim.name}-context"))
            core.create_namespace(namespace_body(f"only-in-{sim.name}"))
        assert "only-in-one" in one.namespace_names()
        assert "only-in-one" not in two.namespace_names()


def test_tls_endpoint_verifies_against_the_kubeconfig_ca(tmp_path):
    with SimulatedKubernetes(tls=True) as sim:
        assert sim.url.startswith("https://127.0.0.1:")
        sim.write_kubeconfig(tmp_path / "kubeconfig")
        api = sim.new_api_client()
        assert api.configuration.verify_ssl
        with open(api.configuration.ssl_ca_cert, "rb") as f:
            assert f.read() == sim.ca_pem
        client.CoreV1Api(api).create_namespace(namespace_body("over-tls"))
        assert "over-tls" in sim.namespace_names()

        untrusted = client.Configuration()
        untrusted.host = sim.url
        untrusted.api_key = {"authorization": f"Bearer {sim.token}"}
        untrusted.retries = False
        with pytest.raises(ApiException) as e:
            client.CoreV1Api(client.ApiClient(untrusted)).list_namespace()
        assert e.value.status == 0 and "CERTIFICATE_VERIFY_FAILED" in e.value.reason


# -- the kubernetes driver's sequence ---------------------------------------------------------

def test_upstream_kubernetes_namespace_sequence(k8s_sim, core, rbac):
    """Namespace, service account, token secret (waited for), role,
    rolebinding and pod, as upstream's kubernetes driver creates them."""
    ns = "main-0000000001"
    labels = {"nodepool_node_id": "0000000001", "nodepool_provider_name": "kubespray",
              "nodepool_pool_name": "main", "nodepool_node_label": "pod-fedora"}
    created = core.create_namespace(namespace_body(ns, labels))
    assert created.metadata.uid and created.metadata.creation_timestamp
    assert created.status.phase == "Active"
    assert created.metadata.labels == {**labels, "kubernetes.io/metadata.name": ns}

    core.create_namespaced_service_account(ns, {"apiVersion": "v1", "kind": "ServiceAccount",
                                                "metadata": {"name": USER}})
    k8s_sim.hold_tokens()
    secret = core.create_namespaced_secret(ns, token_secret_body())
    assert not secret.data
    # Held: the token controller has not run, however often the driver looks.
    assert not core.read_namespaced_secret(USER, ns).data
    k8s_sim.hold_tokens(False)
    secret = wait_for(lambda: (s := core.read_namespaced_secret(USER, ns)).data and s,
                      what="token filled")
    token = base64.b64decode(secret.data["token"]).decode()
    ca = base64.b64decode(secret.data["ca.crt"])
    assert base64.b64decode(secret.data["namespace"]).decode() == ns
    assert x509.load_pem_x509_certificate(ca).subject == x509.load_pem_x509_certificate(
        k8s_sim.ca_pem).subject
    assert ca == k8s_sim.ca_pem
    claims = jwt_claims(token)
    assert claims["sub"] == f"system:serviceaccount:{ns}:{USER}"
    sa = core.read_namespaced_service_account(USER, ns)
    assert claims["kubernetes.io/serviceaccount/service-account.uid"] == sa.metadata.uid

    rbac.create_namespaced_role(ns, {
        "kind": "Role", "apiVersion": f"{RBAC}/v1", "metadata": {"name": "zuul-restricted"},
        "rules": [{"apiGroups": [""], "resources": ["pods"], "verbs": ["get", "list"]},
                  {"apiGroups": [""], "resources": ["pods/exec"], "verbs": ["create"]}]})
    rbac.create_namespaced_role_binding(ns, {
        "apiVersion": f"{RBAC}/v1", "kind": "RoleBinding", "metadata": {"name": "zuul-role"},
        "roleRef": {"apiGroup": RBAC, "kind": "Role", "name": "zuul-restricted"},
        "subjects": [{"kind": "ServiceAccount", "name": USER, "namespace": ns}]})
    [binding] = [b for b in k8s_sim.role_bindings(ns) if b["metadata"]["name"] == "zuul-role"]
    assert binding["subjects"] == [{"kind": "ServiceAccount", "name": USER, "namespace": ns}]

    pod = core.create_namespaced_pod(ns, pod_body("pod-fedora", labels))
    assert pod.status.phase == "Pending"
    wait_for(lambda: phase(core, "pod-fedora", ns) == "Running", what="pod running")
    pod = core.read_namespaced_pod("pod-fedora", ns)
    assert pod.spec.node_name == "sim-node-1"
    assert pod.status.pod_ip and pod.status.host_ip
    assert pod.status.container_statuses[0].ready

    # The service-account token is a working credential, as kubectl will use it.
    conf = client.Configuration()
    conf.host = k8s_sim.url
    conf.api_key = {"authorization": f"Bearer {token}"}
    as_worker = client.CoreV1Api(client.ApiClient(conf))
    assert [p.metadata.name for p in as_worker.list_namespaced_pod(ns).items] == ["pod-fedora"]


def test_pod_resources_are_echoed_canonical(k8s_sim, core):
    core.create_namespace(namespace_body("res"))
    pod = core.create_namespaced_pod("res", pod_body(
        "p", resources={"requests": {"cpu": "2", "memory": "1024Mi",
                                     "ephemeral-storage": "10M"},
                        "limits": {"cpu": "2", "memory": "2048Mi", "nvidia.com/gpu": "1.00"}}))
    resources = pod.spec.containers[0].resources
    assert resources.requests == {"cpu": "2", "memory": "1Gi", "ephemeral-storage": "10M",
                                  "nvidia.com/gpu": "1"}
    assert resources.limits == {"cpu": "2", "memory": "2Gi", "nvidia.com/gpu": "1"}
    assert pod.status.qos_class == "Burstable"
    assert pod.spec.restart_policy == "Always"
    assert pod.spec.service_account_name == "default"
    assert pod.spec.containers[0].image_pull_policy == "IfNotPresent"


def test_watch_sees_the_pod_go_running(k8s_sim, core):
    k8s_sim.set_pod_start_delay(0.2)
    core.create_namespace(namespace_body("watched"))
    created = core.create_namespaced_pod("watched", pod_body("p"))
    phases = []
    w = watch.Watch()
    for event in w.stream(core.list_namespaced_pod, "watched",
                          resource_version=created.metadata.resource_version,
                          timeout_seconds=20):
        phases.append((event["type"], event["object"].status.phase))
        if event["object"].status.phase == "Running":
            w.stop()
    assert phases[-1] == ("MODIFIED", "Running")
    assert k8s_sim.calls("watch", "pods") == 1


def test_watch_from_a_resource_version_and_selector_transitions(k8s_sim, core):
    core.create_namespace(namespace_body("w"))
    start = core.list_namespaced_pod("w").metadata.resource_version
    core.create_namespaced_pod("w", pod_body("in", {"app": "x"}))
    core.create_namespaced_pod("w", pod_body("out", {"app": "y"}))
    core.patch_namespaced_pod("in", "w", {"metadata": {"labels": {"app": "z"}}})
    core.delete_namespaced_pod("out", "w")
    seen = []
    for event in watch.Watch().stream(core.list_namespaced_pod, "w", label_selector="app=x",
                                      resource_version=start, timeout_seconds=1):
        seen.append((event["type"], event["object"].metadata.name))
    # Leaving the selector is a DELETED for this watcher; "out" never matched.
    assert seen[0] == ("ADDED", "in")
    assert seen[-1] == ("DELETED", "in")
    assert all(name == "in" for _, name in seen)


def test_watch_from_a_too_old_resource_version_is_expired(k8s_sim, core):
    with pytest.raises(ApiException) as e:
        for _ in watch.Watch().stream(core.list_namespace, resource_version="1",
                                      timeout_seconds=1):
            pass
    assert e.value.status == 410


def test_deleting_a_namespace_removes_its_pods(k8s_sim, core):
    k8s_sim.set_namespace_delete_delay(0.2)
    core.create_namespace(namespace_body("doomed"))
    core.create_namespaced_pod("doomed", pod_body("p1"))
    core.create_namespaced_pod("doomed", pod_body("p2"))
    assert len(k8s_sim.pods("doomed")) == 2
    deleted = core.delete_namespace("doomed", body={
        "apiVersion": "v1", "kind": "DeleteOptions", "propagationPolicy": "Background"})
    # DELETE answers with the namespace, now Terminating (an untyped dict in client 37).
    assert deleted["kind"] == "Namespace"
    assert deleted["status"]["phase"] == "Terminating"
    assert deleted["metadata"]["deletionTimestamp"]
    with pytest.raises(ApiException) as e:
        core.create_namespaced_pod("doomed", pod_body("p3"))
    assert e.value.status == 403
    assert "being terminated" in status_of(e.value)["message"]
    wait_for(lambda: gone(core.read_namespace, "doomed"), what="namespace gone")
    assert k8s_sim.pods("doomed") == []
    assert k8s_sim.service_accounts("doomed") == []


def test_label_selectors_on_namespace_list(k8s_sim, core):
    k8s_sim.add_namespace("someone-elses", labels={"team": "other"})
    core.create_namespace(namespace_body("main-1", {"nodepool_provider_name": "p1",
                                                    "nodepool_node_id": "1"}))
    core.create_namespace(namespace_body("main-2", {"nodepool_provider_name": "p2",
                                                    "nodepool_node_id": "2"}))

    def names(selector: str) -> list[str]:
        return [n.metadata.name for n in core.list_namespace(label_selector=selector).items]

    assert names("nodepool_provider_name=p1") == ["main-1"]
    assert names("nodepool_provider_name") == ["main-1", "main-2"]
    assert names("nodepool_provider_name in (p1,p2),nodepool_node_id!=1") == ["main-2"]
    assert names("!nodepool_provider_name") == [
        "default", "kube-public", "kube-system", "someone-elses"]
    assert names("team notin (other),nodepool_node_id") == ["main-1", "main-2"]
    # Someone else's namespace keeps its labels and is listed like any other.
    [foreign] = [n for n in core.list_namespace().items if n.metadata.name == "someone-elses"]
    assert foreign.metadata.labels["team"] == "other"
    with pytest.raises(ApiException) as e:
        core.list_namespace(label_selector="a in (b")
    assert e.value.status == 400
    assert [n.metadata.name for n in core.list_namespace(
        field_selector="metadata.name=main-2").items] == ["main-2"]


def test_list_pagination(k8s_sim, core):
    for i in range(5):
        k8s_sim.add_namespace(f"page-{i}")
    first = core.list_namespace(limit=4)
    assert len(first.items) == 4 and first.metadata.remaining_item_count == 4
    second = core.list_namespace(limit=4, _continue=first.metadata._continue)
    assert not second.metadata._continue
    names = [n.metadata.name for n in first.items + second.items]
    assert names == sorted(k8s_sim.namespace_names())


# -- errors --------------------------------------------------------------------------------

def test_not_found_and_already_exists_are_status_objects(k8s_sim, core, rbac):
    with pytest.raises(ApiException) as e:
        core.read_namespace("missing")
    assert e.value.status == 404
    body = status_of(e.value)
    assert body["reason"] == "NotFound"
    assert body["message"] == 'namespaces "missing" not found'
    assert body["details"] == {"name": "missing", "kind": "namespaces"}

    core.create_namespace(namespace_body("twice"))
    with pytest.raises(ApiException) as e:
        core.create_namespace(namespace_body("twice"))
    assert e.value.status == 409
    assert status_of(e.value)["reason"] == "AlreadyExists"

    with pytest.raises(ApiException) as e:
        rbac.read_namespaced_role("nope", "twice")
    assert status_of(e.value)["message"] == 'roles.rbac.authorization.k8s.io "nope" not found'

    with pytest.raises(ApiException) as e:
        core.create_namespaced_pod("no-such-namespace", pod_body("p"))
    assert e.value.status == 404
    assert status_of(e.value)["message"] == 'namespaces "no-such-namespace" not found'


def test_invalid_bodies_are_422_with_causes(k8s_sim, core, dynamic):
    core.create_namespace(namespace_body("v"))
    with pytest.raises(ApiException) as e:
        core.create_namespaced_pod("v", {"apiVersion": "v1", "kind": "Pod",
                                         "metadata": {"name": "Bad_Name"},
                                         "spec": {"containers": [{"name": "c"}]}})
    assert e.value.status == 422
    body = status_of(e.value)
    assert body["reason"] == "Invalid"
    assert body["details"]["causes"][0]["field"] == "metadata.name"

    with pytest.raises(ApiException) as e:
        core.create_namespaced_pod("v", pod_body("p", image=""))
    assert {c["field"] for c in status_of(e.value)["details"]["causes"]} == {
        "spec.containers[0].image"}

    with pytest.raises(ApiException) as e:
        core.create_namespace(namespace_body("v", {"nodepool_node_id": "not valid!"}))
    assert e.value.status == 422

    bindings = dynamic.resources.get(api_version=f"{RBAC}/v1", kind="RoleBinding")
    with pytest.raises(ApiException) as e:
        bindings.create(namespace="v", body={
            "apiVersion": f"{RBAC}/v1", "kind": "RoleBinding", "metadata": {"name": "rb"},
            "subjects": [{"kind": "ServiceAccount", "name": USER}]})
    assert e.value.status == 422
    assert status_of(e.value)["details"]["causes"][0]["field"] == "roleRef"
    with pytest.raises(ApiException) as e:
        bindings.create(namespace="v", body={
            "apiVersion": f"{RBAC}/v1", "kind": "RoleBinding", "metadata": {"name": "rb"},
            "roleRef": {"apiGroup": RBAC, "kind": "Role", "name": "zuul"},
            "subjects": [{"kind": "Robot", "name": USER}, {"kind": "ServiceAccount"}]})
    fields = {c["field"] for c in status_of(e.value)["details"]["causes"]}
    assert fields == {"subjects[0].kind", "subjects[1].name"}


def test_unknown_fields_warn_by_default_and_fail_when_strict(k8s_sim, core, rbac, dynamic):
    """Upstream's bodies carry a RoleBinding ``userNames`` and a Pod top-level
    ``restartPolicy``: client 37 refuses them itself; a real server drops
    them with a warning, or refuses them under strict field validation."""
    core.create_namespace(namespace_body("f"))
    upstream_binding = {
        "apiVersion": f"{RBAC}/v1", "kind": "RoleBinding", "metadata": {"name": "zuul-role"},
        "roleRef": {"apiGroup": RBAC, "kind": "Role", "name": "zuul"},
        "subjects": [{"kind": "ServiceAccount", "name": USER, "namespace": "f"}],
        "userNames": [f"system:serviceaccount:f:{USER}"]}
    with pytest.raises(ValidationError):
        rbac.create_namespaced_role_binding("f", upstream_binding)
    assert k8s_sim.calls("create", f"rolebindings.{RBAC}") == 0

    bindings = dynamic.resources.get(api_version=f"{RBAC}/v1", kind="RoleBinding")
    with pytest.raises(ApiException) as e:
        bindings.create(namespace="f", body=upstream_binding,
                        query_params=[("fieldValidation", "Strict")])
    assert e.value.status == 400
    assert status_of(e.value)["message"] == 'strict decoding error: unknown field "userNames"'

    response = api_call(k8s_sim, dynamic, "POST",
                        f"/apis/{RBAC}/v1/namespaces/f/rolebindings", upstream_binding)
    assert response.status == 201
    assert response.headers.get("Warning") == '299 - "unknown field \\"userNames\\""'
    stored = k8s_sim.get(f"rolebindings.{RBAC}", "f", "zuul-role")
    assert stored is not None and "userNames" not in stored

    upstream_pod = {**pod_body("p"), "restartPolicy": "Never"}
    pods = dynamic.resources.get(api_version="v1", kind="Pod")
    with pytest.raises(ApiException) as e:
        pods.create(namespace="f", body=upstream_pod,
                    query_params=[("fieldValidation", "Strict")])
    assert 'unknown field "restartPolicy"' in status_of(e.value)["message"]
    created = pods.create(namespace="f", body=upstream_pod,
                          query_params=[("fieldValidation", "Ignore")])
    # Dropped, so the pod gets the default policy, not the one upstream meant.
    assert created.spec.restartPolicy == "Always"


def api_call(sim: SimulatedKubernetes, dynamic: DynamicClient, method: str, path: str,
             body: Any) -> Any:
    """A raw request through the client's own transport (to see headers)."""
    api = dynamic.client
    return api.rest_client.request(
        method, api.configuration.host + path, body=body,
        headers={"Content-Type": "application/json", "Accept": "application/json",
                 "Authorization": f"Bearer {sim.token}"})


def test_wrong_json_types_are_bad_requests(k8s_sim, dynamic):
    k8s_sim.add_namespace("t")
    pods = dynamic.resources.get(api_version="v1", kind="Pod")
    body = pod_body("p")
    body["spec"]["containers"][0]["image"] = 42
    with pytest.raises(ApiException) as e:
        pods.create(namespace="t", body=body)
    assert e.value.status == 400
    assert "cannot unmarshal number" in status_of(e.value)["message"]


def test_resource_version_bumps_and_update_conflicts(k8s_sim, core):
    first = core.create_namespace(namespace_body("rv"))
    core.create_namespace(namespace_body("rv-other"))
    patched = core.patch_namespace("rv", {"metadata": {"labels": {"a": "b"}}})
    assert int(patched.metadata.resource_version) > int(first.metadata.resource_version)
    assert patched.metadata.uid == first.metadata.uid
    assert patched.metadata.labels["a"] == "b"
    stale = first.to_dict()
    with pytest.raises(ApiException) as e:
        core.replace_namespace("rv", stale)
    assert e.value.status == 409
    assert status_of(e.value)["reason"] == "Conflict"


# -- fault switches ---------------------------------------------------------------------------

@pytest.mark.parametrize("status,reason", [(403, "Forbidden"), (500, "InternalError"),
                                           (409, "AlreadyExists")])
def test_refuse_creates(k8s_sim, core, status, reason):
    k8s_sim.refuse_creates("namespaces", status, count=1)
    with pytest.raises(ApiException) as e:
        core.create_namespace(namespace_body("refused"))
    assert e.value.status == status
    assert status_of(e.value)["reason"] == reason
    assert "refused" not in k8s_sim.namespace_names()
    core.create_namespace(namespace_body("refused"))
    assert k8s_sim.calls("create", "namespaces") == 2


def test_refusals_last_until_cleared(k8s_sim, core, rbac):
    k8s_sim.add_namespace("r")
    k8s_sim.refuse_creates(f"roles.{RBAC}", 403)
    role = {"kind": "Role", "apiVersion": f"{RBAC}/v1", "metadata": {"name": "zuul"},
            "rules": [{"apiGroups": [""], "resources": ["pods"], "verbs": ["get"]}]}
    for _ in range(2):
        with pytest.raises(ApiException) as e:
            rbac.create_namespaced_role("r", role)
        assert 'cannot create resource "roles"' in status_of(e.value)["message"]
    k8s_sim.clear_refusals()
    rbac.create_namespaced_role("r", role)
    k8s_sim.refuse("delete", f"roles.{RBAC}", 500, count=1)
    with pytest.raises(ApiException) as e:
        rbac.delete_namespaced_role("zuul", "r")
    assert e.value.status == 500
    assert rbac.delete_namespaced_role("zuul", "r")["status"] == "Success"
    k8s_sim.refuse("list", "pods", 403, count=1)
    with pytest.raises(ApiException) as e:
        client.CoreV1Api(rbac.api_client).list_namespaced_pod("r")
    assert status_of(e.value)["message"] == (
        'pods is forbidden: User "sim-admin" cannot list resource "pods" in API group "" '
        'in the namespace "r"')


def test_quota_refusals(k8s_sim, core):
    k8s_sim.add_namespace("q")
    k8s_sim.exceed_quota("pods", count=1)
    with pytest.raises(ApiException) as e:
        core.create_namespaced_pod("q", pod_body("p1"))
    assert e.value.status == 403
    assert "exceeded quota" in status_of(e.value)["message"]

    # A real ResourceQuota: one pod, one cpu.
    k8s_sim.set_quota("q", pods=1, requests_cpu="1")
    with pytest.raises(ApiException) as e:
        core.create_namespaced_pod("q", pod_body("p1"))
    assert "must specify requests.cpu" in status_of(e.value)["message"]
    core.create_namespaced_pod("q", pod_body("p1", resources={"requests": {"cpu": "500m"}}))
    with pytest.raises(ApiException) as e:
        core.create_namespaced_pod("q", pod_body("p2", resources={"requests": {"cpu": "100m"}}))
    assert status_of(e.value)["message"] == (
        'pods "p2" is forbidden: exceeded quota: sim-quota, requested: pods=1, '
        "used: pods=1, limited: pods=1")
    quota = core.read_namespaced_resource_quota("sim-quota", "q")
    assert quota.status.used == {"pods": "1", "requests.cpu": "500m"}
    core.delete_namespaced_pod("p1", "q")
    core.create_namespaced_pod("q", pod_body("p2", resources={"requests": {"cpu": "100m"}}))


def test_pod_fates(k8s_sim, core):
    k8s_sim.add_namespace("fates")
    k8s_sim.set_pod_fate("Pending", count=1)
    k8s_sim.set_pod_fate("Failed", count=1)
    k8s_sim.set_pod_fate("Unschedulable", count=1)
    core.create_namespaced_pod("fates", pod_body("held"))
    core.create_namespaced_pod("fates", pod_body("failing"))
    core.create_namespaced_pod("fates", pod_body("unschedulable"))
    core.create_namespaced_pod("fates", pod_body("normal"))
    # The normal pod, created last with the same delay, proves the others' time came.
    wait_for(lambda: phase(core, "normal", "fates") == "Running", what="normal pod running")
    assert phase(core, "failing", "fates") == "Failed"
    failed = core.read_namespaced_pod("failing", "fates")
    assert failed.status.container_statuses[0].state.terminated.exit_code == 1

    held = core.read_namespaced_pod("held", "fates")
    assert held.status.phase == "Pending"
    assert held.status.container_statuses[0].state.waiting.reason == "ContainerCreating"
    unschedulable = core.read_namespaced_pod("unschedulable", "fates")
    assert unschedulable.status.phase == "Pending"
    assert unschedulable.spec.node_name is None
    assert unschedulable.status.conditions[0].reason == "Unschedulable"

    k8s_sim.start_pending_pods()
    wait_for(lambda: phase(core, "held", "fates") == "Running", what="held pod released")


def test_hold_pods_pending_until_released(k8s_sim, core):
    k8s_sim.add_namespace("hold")
    k8s_sim.hold_pods_pending()
    core.create_namespaced_pod("hold", pod_body("a"))
    core.create_namespaced_pod("hold", pod_body("b"))
    wait_for(lambda: core.read_namespaced_pod("b", "hold").spec.node_name, what="b scheduled")
    assert phase(core, "a", "hold") == phase(core, "b", "hold") == "Pending"
    k8s_sim.start_pending_pods()
    wait_for(lambda: {phase(core, n, "hold") for n in "ab"} == {"Running"}, what="released")


def test_slow_responses(k8s_sim, core):
    k8s_sim.set_latency(0.5)
    # urllib3 retries the read timeouts of a GET, then gives up.
    with pytest.raises(urllib3.exceptions.MaxRetryError) as e:
        core.list_namespace(_request_timeout=(5, 0.05))
    assert isinstance(e.value.reason, urllib3.exceptions.ReadTimeoutError)
    k8s_sim.set_latency(0)
    assert core.list_namespace(_request_timeout=(5, 5)).items


def test_fail_next_requests(k8s_sim, core):
    k8s_sim.fail_next_requests(1, 503, path_prefix="/api/v1/namespaces")
    with pytest.raises(ApiException) as e:
        core.list_namespace()
    assert e.value.status == 503
    assert core.list_namespace().items
    assert k8s_sim.calls("list", "namespaces") == 1


def test_pod_delete_returns_the_pod_and_can_linger(k8s_sim, core):
    k8s_sim.add_namespace("d")
    core.create_namespaced_pod("d", pod_body("p"))
    wait_for(lambda: phase(core, "p", "d") == "Running", what="running")
    k8s_sim.set_pod_delete_delay(0.2)
    deleted = core.delete_namespaced_pod("p", "d")
    assert isinstance(deleted, client.V1Pod)
    assert deleted.metadata.deletion_timestamp is not None
    assert core.read_namespaced_pod("p", "d").metadata.deletion_grace_period_seconds == 30
    wait_for(lambda: gone(core.read_namespaced_pod, "p", "d"), what="pod gone")
    secret = core.create_namespaced_secret("d", {"apiVersion": "v1", "kind": "Secret",
                                                 "metadata": {"name": "s"},
                                                 "stringData": {"k": "v"}})
    assert secret.data == {"k": base64.b64encode(b"v").decode()}
    status = core.delete_namespaced_secret("s", "d", propagation_policy="Foreground")
    assert status["kind"] == "Status" and status["details"]["uid"] == secret.metadata.uid


def test_token_controller_cleans_up_after_service_accounts(k8s_sim, core):
    k8s_sim.add_namespace("tok")
    core.create_namespaced_secret("tok", token_secret_body("orphan", "no-such-account"))
    wait_for(lambda: gone(core.read_namespaced_secret, "orphan", "tok"),
             what="orphan token secret deleted")
    core.create_namespaced_service_account("tok", {"apiVersion": "v1", "kind": "ServiceAccount",
                                                   "metadata": {"name": USER}})
    core.create_namespaced_secret("tok", token_secret_body())
    wait_for(lambda: core.read_namespaced_secret(USER, "tok").data, what="token")
    deleted = core.delete_namespaced_service_account(USER, "tok")
    assert deleted.metadata.name == USER
    assert gone(core.read_namespaced_secret, USER, "tok")

    with pytest.raises(ApiException) as e:
        core.create_namespaced_pod("tok", {**pod_body("p"), "spec": {
            "serviceAccountName": USER, "containers": [{"name": "c", "image": "busybox"}]}})
    assert e.value.status == 403
    assert f'serviceaccount "{USER}" not found' in status_of(e.value)["message"]


# -- OpenShift ----------------------------------------------------------------------------

@pytest.fixture
def os_api(openshift_sim: SimulatedKubernetes) -> Iterator[client.ApiClient]:
    api_client = openshift_sim.new_api_client()
    yield api_client
    api_client.close()


def test_upstream_openshift_project_sequence(openshift_sim, os_api, tmp_path):
    """ProjectRequest, service account with its auto-created token secret,
    an authorization.openshift.io RoleBinding with userNames, a pod, and
    project deletion, as upstream's openshift driver does them."""
    dyn = DynamicClient(os_api, cache_file=str(tmp_path / "discovery.json"))
    core = client.CoreV1Api(os_api)
    name = "main-0000000002"
    requests = dyn.resources.get(api_version="project.openshift.io/v1", kind="ProjectRequest")
    project = requests.create(body={"apiVersion": "project.openshift.io/v1",
                                    "kind": "ProjectRequest",
                                    "metadata": {"name": name, "labels": {"a": "b"}}})
    assert project.kind == "Project" and project.status.phase == "Active"
    projects = dyn.resources.get(api_version="v1", kind="Project")
    assert name in [p.metadata.name for p in projects.get().items]
    assert core.read_namespace(name).metadata.annotations["openshift.io/requester"]
    with pytest.raises(ApiException) as e:
        requests.create(body={"apiVersion": "project.openshift.io/v1",
                              "kind": "ProjectRequest", "metadata": {"name": name}})
    assert e.value.status == 409

    core.create_namespaced_service_account(name, {"apiVersion": "v1", "kind": "ServiceAccount",
                                                  "metadata": {"name": USER}})
    sa = wait_for(lambda: (a := core.read_namespaced_service_account(USER, name)).secrets and a,
                  what="legacy secrets")
    tokens = [core.read_namespaced_secret(s.name, name) for s in sa.secrets]
    assert [s.type for s in tokens] == ["kubernetes.io/dockercfg",
                                        "kubernetes.io/service-account-token"]
    assert base64.b64decode(tokens[1].data["ca.crt"]) == openshift_sim.ca_pem

    bindings = dyn.resources.get(api_version="authorization.openshift.io/v1", kind="RoleBinding")
    bindings.create(namespace=name, body={
        "apiVersion": "authorization.openshift.io/v1", "kind": "RoleBinding",
        "metadata": {"name": "admin-0"}, "roleRef": {"name": "admin"},
        "subjects": [{"kind": "ServiceAccount", "name": USER, "namespace": name}],
        "userNames": [f"system:serviceaccount:{name}:{USER}"]})
    stored = openshift_sim.get(f"rolebindings.{RBAC}", name, "admin-0")
    assert stored is not None
    assert stored["roleRef"] == {"apiGroup": RBAC, "kind": "ClusterRole", "name": "admin"}
    assert stored["subjects"] == [{"kind": "ServiceAccount", "name": USER, "namespace": name}]
    assert bindings.get(namespace=name, name="admin-0").userNames == [
        f"system:serviceaccount:{name}:{USER}"]

    core.create_namespaced_pod(name, pod_body("pod"))
    wait_for(lambda: phase(core, "pod", name) == "Running", what="pod running")
    assert projects.delete(name=name).status == "Success"
    wait_for(lambda: gone(core.read_namespace, name), what="project gone")
    assert openshift_sim.pods(name) == []
    with pytest.raises(ApiException) as e:
        projects.get(name=name)
    assert status_of(e.value)["message"] == f'projects.project.openshift.io "{name}" not found'


def test_openshiftpods_sequence(openshift_sim, os_api):
    """Pods in an existing project, listed and deleted one by one."""
    core = client.CoreV1Api(os_api)
    openshift_sim.add_namespace("zuul-pods")
    core.create_namespaced_pod("zuul-pods", pod_body("fedora-0000000003"))
    wait_for(lambda: phase(core, "fedora-0000000003", "zuul-pods") == "Running", what="running")
    openshift_sim.add_pod("zuul-pods", "not-ours")
    assert sorted(p.metadata.name for p in core.list_namespaced_pod("zuul-pods").items) == [
        "fedora-0000000003", "not-ours"]
    core.delete_namespaced_pod("fedora-0000000003", "zuul-pods")
    assert [p["metadata"]["name"] for p in openshift_sim.pods("zuul-pods")] == ["not-ours"]


def test_plain_kubernetes_has_no_openshift_apis(k8s_sim, dynamic):
    with pytest.raises(ResourceNotFoundError):
        dynamic.resources.get(api_version="project.openshift.io/v1", kind="Project")
    response = urllib3.request("GET", f"{k8s_sim.url}/apis/project.openshift.io/v1/projects",
                               headers={"Authorization": f"Bearer {k8s_sim.token}"})
    assert response.status == 404
    assert response.json()["reason"] == "NotFound"


def test_patch_formats_and_pod_spec_immutability(k8s_sim, core, dynamic):
    k8s_sim.add_namespace("pt")
    core.create_namespaced_pod("pt", pod_body("p", {"a": "1"}))
    # A dict body goes out as a strategic merge patch, a list as a JSON patch.
    core.patch_namespaced_pod("p", "pt", {"metadata": {"labels": {"b": "2"}}})
    core.patch_namespaced_pod("p", "pt", [{"op": "remove", "path": "/metadata/labels/a"}])
    assert core.read_namespaced_pod("p", "pt").metadata.labels == {"b": "2"}
    pods = dynamic.resources.get(api_version="v1", kind="Pod")
    pods.patch(namespace="pt", name="p", body={"metadata": {"labels": {"b": None}}},
               content_type="application/merge-patch+json")
    assert not core.read_namespaced_pod("p", "pt").metadata.labels

    core.patch_namespaced_pod("p", "pt", {"spec": {"containers": [
        {"name": "p", "image": "docker.io/fedora:41"}]}})
    pod = core.read_namespaced_pod("p", "pt")
    assert pod.spec.containers[0].image == "docker.io/fedora:41"
    assert pod.spec.containers[0].command == ["/bin/sh", "-c"]
    with pytest.raises(ApiException) as e:
        core.patch_namespaced_pod("p", "pt", {"spec": {"restartPolicy": "Never"}})
    assert e.value.status == 422
    assert status_of(e.value)["details"]["causes"][0]["field"] == "spec"


def test_generate_name_dry_run_and_delete_collection(k8s_sim, core):
    k8s_sim.add_namespace("gen")
    body = pod_body("ignored")
    del body["metadata"]["name"]
    body["metadata"]["generateName"] = "worker-"
    dry = core.create_namespaced_pod("gen", body, dry_run="All")
    assert dry.metadata.name.startswith("worker-")
    assert k8s_sim.pods("gen") == []
    names = {core.create_namespaced_pod("gen", body).metadata.name for _ in range(3)}
    assert len(names) == 3
    everywhere = core.list_pod_for_all_namespaces(label_selector="")
    assert {p.metadata.name for p in everywhere.items} == names
    core.delete_collection_namespaced_pod("gen")
    assert k8s_sim.pods("gen") == []


def test_legacy_token_secrets_on_plain_kubernetes(k8s_sim, core):
    k8s_sim.add_namespace("legacy")
    core.create_namespaced_service_account("legacy", {
        "apiVersion": "v1", "kind": "ServiceAccount", "metadata": {"name": "modern"}})
    k8s_sim.set_legacy_sa_token_secrets(True)
    core.create_namespaced_service_account("legacy", {
        "apiVersion": "v1", "kind": "ServiceAccount", "metadata": {"name": "old"}})
    sa = wait_for(lambda: (a := core.read_namespaced_service_account("old", "legacy")).secrets
                  and a, what="auto-created token secret")
    [ref] = sa.secrets
    assert ref.name.startswith("old-token-")
    assert core.read_namespaced_secret(ref.name, "legacy").data["token"]
    # Kubernetes >= 1.24 behaviour for the account created before the switch.
    assert not core.read_namespaced_service_account("modern", "legacy").secrets
    assert [s["metadata"]["name"] for s in k8s_sim.secrets("legacy")] == [ref.name]


def test_someone_else_deletes_a_namespace(k8s_sim, core):
    k8s_sim.add_namespace("ours", labels={"nodepool_provider_name": "p"})
    k8s_sim.add_pod("ours", "pod")
    k8s_sim.delete_namespace("ours")
    wait_for(lambda: gone(core.read_namespace, "ours"), what="namespace gone")
    assert k8s_sim.pods("ours") == []
