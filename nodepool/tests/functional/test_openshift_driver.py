"""The openshift and openshiftpods drivers end to end: Zuul's protocol
against a launcher whose provider talks to the simulated OpenShift API
server with the real kubernetes client, over HTTP, through a kubeconfig."""

from __future__ import annotations

import base64
import json
from typing import Any

import pytest
from kubernetes import client

from nodepool.tests.functional.k8s_support import (  # noqa: F401
    CONTEXT,
    config_text,
    core_as,
    fast_polls,
    node_records,
    secret_token,
    use_kubeconfig,
    wait_gone,
    zuul_kubeconfig,
)
from nodepool.tests.helpers import wait_for
from nodepool.tests.k8s_sim import SimulatedKubernetes

RBAC = "rbac.authorization.k8s.io"
DESCRIPTION = "openshift.io/description"


def openshift_yaml() -> str:
    return f"""  - name: openshift
    driver: openshift
    context: {CONTEXT}
    launch-retries: 2
    max-projects: 10
    pools:
      - name: main
        node-attributes:
          key1: value1
        labels:
          - name: openshift-project
            type: project
          - name: pod-fedora
            type: pod
            image: docker.io/fedora:28
            image-pull-secrets:
              - name: registry-secret
            python-path: /usr/bin/python3
            shell-type: csh
            cpu: 1
            memory: 256
"""


def pods_yaml(max_pods: int = 10) -> str:
    return f"""  - name: openshift-pods
    driver: openshiftpods
    context: {CONTEXT}
    launch-retries: 2
    max-pods: {max_pods}
    pools:
      - name: zuul-pods
        labels:
          - name: pod-fedora
            image: docker.io/fedora:28
            labels:
              team: ci
"""


def fulfil(zuul: Any, label: str) -> tuple[str, str, dict]:
    request_id = zuul.submit([label])
    request = zuul.wait_request(request_id)
    assert request["state"] == "fulfilled", request
    [node_id] = request["nodes"]
    return request_id, node_id, zuul.node(node_id)


@pytest.fixture
def start_openshift(openshift_sim: SimulatedKubernetes, zk_info: Any, launcher_factory: Any,
                    monkeypatch: pytest.MonkeyPatch) -> Any:
    use_kubeconfig(monkeypatch, openshift_sim)
    return lambda **kw: launcher_factory(
        config_text(zk_info, ["openshift-project", "pod-fedora"], openshift_yaml()), **kw)


@pytest.fixture
def start_pods(openshift_sim: SimulatedKubernetes, zk_info: Any, launcher_factory: Any,
               monkeypatch: pytest.MonkeyPatch) -> Any:
    use_kubeconfig(monkeypatch, openshift_sim)
    openshift_sim.add_namespace("zuul-pods")
    return lambda **kw: launcher_factory(
        config_text(zk_info, ["pod-fedora"], pods_yaml()), **kw)


# -- openshift ------------------------------------------------------------------------------

def test_project_node_is_a_requested_project_with_admin_access(openshift_sim, start_openshift,
                                                               zuul):
    start_openshift()
    request_id, node_id, node = fulfil(zuul, "openshift-project")
    project = f"main-{node_id}"
    token, ca = secret_token(openshift_sim, project)
    assert node["connection_type"] == "project"
    assert node["connection_port"] == {
        "namespace": project, "host": openshift_sim.url, "skiptls": False, "token": token,
        "user": "zuul-worker", "ca_crt": ca}
    assert node["external_id"] == project
    assert node["interface_ip"] is None and node["host_id"] is None
    assert node["cloud"] == CONTEXT and node["attributes"] == {"key1": "value1"}
    assert node["python_path"] == "auto"
    assert node["resources"] == {"cores": 0, "instances": 1, "ram": 0}
    # Asked for as a self-provisioning user does; ownership in the
    # description, since the project template drops the request's labels.
    ns = openshift_sim.get("namespaces", "", project)
    assert ns["metadata"]["annotations"]["openshift.io/requester"]
    assert json.loads(ns["metadata"]["annotations"][DESCRIPTION]) == {
        "nodepool_node_id": node_id, "nodepool_node_label": "openshift-project",
        "nodepool_pool_name": "main", "nodepool_provider_name": "openshift"}
    binding = openshift_sim.get(f"rolebindings.{RBAC}", project, "admin-0")
    assert binding["roleRef"] == {"apiGroup": RBAC, "kind": "ClusterRole", "name": "admin"}
    assert binding["subjects"] == [{"kind": "ServiceAccount", "name": "zuul-worker",
                                    "namespace": project}]
    assert core_as(openshift_sim, token).list_namespaced_pod(project).items == []
    zuul.return_nodes(zuul.accept(request_id))
    wait_for(lambda: zuul.node(node_id) is None, what="used node deleted")
    wait_gone(openshift_sim, project)


def test_pod_node_in_its_own_project(openshift_sim, start_openshift, zuul):
    start_openshift()
    request_id, node_id, node = fulfil(zuul, "pod-fedora")
    project = f"main-{node_id}"
    token, ca = secret_token(openshift_sim, project)
    assert node["connection_type"] == "kubectl"
    assert node["connection_port"] == {
        "namespace": project, "host": openshift_sim.url, "skiptls": False, "token": token,
        "user": "zuul-worker", "ca_crt": ca, "pod": "pod-fedora"}
    assert node["interface_ip"] == "pod-fedora"
    # Upstream records no host for openshift pods.
    assert node["host_id"] is None
    assert node["python_path"] == "/usr/bin/python3" and node["shell_type"] == "csh"
    assert node["resources"] == {"cores": 1, "instances": 1, "ram": 256}
    [pod] = openshift_sim.pods(project)
    assert pod["metadata"]["name"] == "pod-fedora"
    assert pod["spec"]["imagePullSecrets"] == [{"name": "registry-secret"}]
    assert pod["spec"]["containers"][0]["resources"]["requests"] == {"cpu": "1",
                                                                     "memory": "256Mi"}
    zuul.return_nodes(zuul.accept(request_id))
    wait_gone(openshift_sim, project)


def test_project_quota_refusal_waits(openshift_sim, start_openshift, zuul):
    start_openshift()
    openshift_sim.exceed_quota("projectrequests.project.openshift.io", count=1)
    request = zuul.wait_request(zuul.submit(["openshift-project"]))
    assert request["state"] == "fulfilled" and request["declined_by"] == []
    assert openshift_sim.calls("create", "projectrequests.project.openshift.io") == 2


def test_leaked_project_deleted_and_nothing_else(openshift_sim, start_openshift, zuul):
    def note(provider: str, node_id: str) -> dict[str, str]:
        return {DESCRIPTION: json.dumps({
            "nodepool_provider_name": provider, "nodepool_pool_name": "main",
            "nodepool_node_id": node_id, "nodepool_node_label": "openshift-project"})}
    openshift_sim.add_namespace("main-0000000099", annotations=note("openshift", "0000000099"))
    openshift_sim.add_namespace("main-0000000098", annotations=note("other", "0000000098"))
    openshift_sim.add_namespace("main-0000000097", annotations={DESCRIPTION: "hand-made"})
    start_openshift()
    _, _, node = fulfil(zuul, "openshift-project")
    wait_gone(openshift_sim, "main-0000000099")
    names = openshift_sim.namespace_names()
    for kept in ("main-0000000098", "main-0000000097", node["external_id"]):
        assert kept in names


# -- openshiftpods ----------------------------------------------------------------------------

def test_pod_in_the_pools_project_uses_the_launchers_own_token(openshift_sim, start_pods,
                                                               zuul):
    start_pods()
    request_id, node_id, node = fulfil(zuul, "pod-fedora")
    pod_name = f"pod-fedora-{node_id}"
    assert node["connection_type"] == "kubectl"
    # A plain HTTP server: no CA, as upstream writes it.
    assert node["connection_port"] == {
        "pod": pod_name, "namespace": "zuul-pods", "host": openshift_sim.url, "ca_crt": None,
        "skiptls": False, "token": openshift_sim.token, "user": "zuul-worker"}
    assert node["external_id"] == f"zuul-pods-{pod_name}"
    assert node["interface_ip"] == pod_name
    assert node["host_id"] == "sim-node-1"
    assert node["cloud"] == CONTEXT
    [pod] = openshift_sim.pods("zuul-pods")
    assert pod["metadata"]["labels"]["team"] == "ci"
    assert pod["metadata"]["labels"]["nodepool_node_id"] == node_id
    # Nothing else is made for a pod node.
    assert openshift_sim.calls("create", "namespaces") == 0
    assert openshift_sim.calls("create", "serviceaccounts") == 0
    zuul.return_nodes(zuul.accept(request_id))
    wait_for(lambda: not openshift_sim.pods("zuul-pods"), what="pod deleted")
    assert "zuul-pods" in openshift_sim.namespace_names()


def test_failing_pods_fail_the_request_and_are_deleted(openshift_sim, start_pods, zuul):
    start_pods()
    openshift_sim.set_pod_fate("Failed")
    request = zuul.wait_request(zuul.submit(["pod-fedora"]))
    assert request["state"] == "failed"
    assert openshift_sim.calls("create", "pods") == 2
    wait_for(lambda: not node_records(zuul), what="failed node deleted")
    wait_for(lambda: not openshift_sim.pods("zuul-pods"), what="pods deleted")


def test_leaked_pod_deleted_and_nothing_else(openshift_sim, start_pods, zuul):
    ours = {"nodepool_provider_name": "openshift-pods", "nodepool_pool_name": "zuul-pods",
            "nodepool_node_label": "pod-fedora"}
    start_pods()
    openshift_sim.add_pod("zuul-pods", "pod-fedora-0000000099",
                          labels={**ours, "nodepool_node_id": "0000000099"})
    openshift_sim.add_pod("zuul-pods", "pod-fedora-0000000098",
                          labels={**ours, "nodepool_node_id": "0000000098",
                                  "nodepool_provider_name": "other"})
    openshift_sim.add_pod("zuul-pods", "not-ours")
    wait_for(lambda: "pod-fedora-0000000099" not in {
        p["metadata"]["name"] for p in openshift_sim.pods("zuul-pods")}, what="leak deleted")
    assert {p["metadata"]["name"] for p in openshift_sim.pods("zuul-pods")} == {
        "pod-fedora-0000000098", "not-ours"}


def test_pods_over_tls_hand_zuul_the_ca(zk_info, zuul, launcher_factory, tmp_path,
                                        monkeypatch):
    with SimulatedKubernetes("sim", openshift=True, tls=True) as sim:
        sim.write_kubeconfig(tmp_path / "kubeconfig")
        use_kubeconfig(monkeypatch, sim)
        sim.add_namespace("zuul-pods")
        launcher_factory(config_text(zk_info, ["pod-fedora"], pods_yaml()))
        _, _, node = fulfil(zuul, "pod-fedora")
        port = node["connection_port"]
        assert port["host"] == sim.url and port["skiptls"] is False
        assert base64.b64decode(port["ca_crt"]) == sim.ca_pem
        assert port["token"] == sim.token


@pytest.mark.slow
def test_zuul_executor_reaches_project_and_pod_nodes(openshift_sim, zk_info, zuul,
                                                     launcher_factory, monkeypatch, tmp_path,
                                                     zuul_python):
    use_kubeconfig(monkeypatch, openshift_sim)
    openshift_sim.add_namespace("zuul-pods")
    launcher_factory(config_text(zk_info, ["openshift-project", "pod-fedora", "unused"],
                                 openshift_yaml().replace("- name: pod-fedora\n",
                                                          "- name: unused\n")
                                 + pods_yaml()))
    _, project_node, _ = fulfil(zuul, "openshift-project")
    api, seen = zuul_kubeconfig(zuul_python, zuul, project_node, tmp_path / "project-kubeconfig")
    assert seen["connection_type"] == "project"
    assert client.CoreV1Api(api).list_namespaced_pod(seen["namespace"]).items == []
    _, pod_node, _ = fulfil(zuul, "pod-fedora")
    api, seen = zuul_kubeconfig(zuul_python, zuul, pod_node, tmp_path / "pod-kubeconfig")
    assert (seen["connection_type"], seen["namespace"]) == ("kubectl", "zuul-pods")
    assert seen["pod"] == seen["ansible_host"] == f"pod-fedora-{pod_node}"
    pod = client.CoreV1Api(api).read_namespaced_pod(seen["pod"], "zuul-pods")
    assert pod.status.phase == "Running"
