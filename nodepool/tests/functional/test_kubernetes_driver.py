"""The kubernetes driver end to end: Zuul's protocol against a launcher
whose provider talks to the simulated API server with the real kubernetes
client (nodepool.tests.k8s_sim), over HTTP, through a kubeconfig."""

from __future__ import annotations

import base64
from typing import Any

import pytest
import yaml
from kubernetes import client

from nodepool.driver.k8s_common import steps
from nodepool.tests.functional.k8s_support import (  # noqa: F401
    CONTEXT,
    config_text,
    core_as,
    fast_polls,
    node_records,
    raw_record,
    secret_token,
    use_kubeconfig,
    wait_gone,
    zuul_kubeconfig,
)
from nodepool.tests.helpers import wait_for
from nodepool.tests.k8s_sim import SimulatedKubernetes

PROVIDER = "kubespray"
LABELS = ["kubernetes-namespace", "pod-fedora", "pod-custom", "pod-broken"]
RBAC = "rbac.authorization.k8s.io"


def provider_yaml(*, pool: str = "", provider: str = "") -> str:
    return f"""  - name: {PROVIDER}
    driver: kubernetes
    context: {CONTEXT}
    launch-retries: 2
{provider}
    pools:
      - name: main
        node-attributes:
          key1: value1
{pool}
        labels:
          - name: kubernetes-namespace
            type: namespace
          - name: pod-fedora
            type: pod
            image: docker.io/fedora:28
            cpu: 2
            memory: 512
            storage: 10
            memory-limit: 1024
            python-path: /usr/bin/python3
            shell-type: csh
            env:
              - name: FOO
                value: hello
            node-selector:
              storageType: ssd
            privileged: true
            scheduler-name: myscheduler
            volumes:
              - name: my-csi-inline-vol
                csi:
                  driver: inline.storage.kubernetes.io
            volume-mounts:
              - name: my-csi-inline-vol
                mountPath: /data
            labels:
              environment: qa
            dynamic-labels:
              tenant: "{{request.tenant_name}}"
            annotations:
              team: infra
          - name: pod-custom
            type: pod
            spec:
              containers:
                - name: pod-custom
                  image: ubuntu:jammy
                  command: ["/bin/sh", "-c"]
                  args: ["while true; do sleep 30; done;"]
          - name: pod-broken
            type: pod
            cpu: 1
"""


@pytest.fixture
def start(k8s_sim: SimulatedKubernetes, zk_info: Any, launcher_factory: Any,
          monkeypatch: pytest.MonkeyPatch) -> Any:
    """Start a launcher on provider_yaml(**kwargs)."""
    use_kubeconfig(monkeypatch, k8s_sim)

    def start_launcher(name: str = "nodepool.yaml", pool: str = "", provider: str = "",
                       min_ready: dict[str, int] | None = None, **kwargs: Any) -> Any:
        return launcher_factory(
            config_text(zk_info, LABELS, provider_yaml(pool=pool, provider=provider),
                        min_ready),
            name=name, **kwargs)
    return start_launcher


def fulfil(zuul: Any, label: str) -> tuple[str, str, dict]:
    """(request id, node id, node record) of a fulfilled request."""
    request_id = zuul.submit([label])
    request = zuul.wait_request(request_id)
    assert request["state"] == "fulfilled", request
    [node_id] = request["nodes"]
    return request_id, node_id, zuul.node(node_id)


def test_namespace_node_carries_a_working_token_and_is_deleted_after_use(
        k8s_sim, start, zuul):
    start()
    request_id, node_id, node = fulfil(zuul, "kubernetes-namespace")
    namespace = f"main-{node_id}"
    token, ca = secret_token(k8s_sim, namespace)
    # The record as upstream writes it, for Zuul's executor.
    assert node["connection_type"] == "namespace"
    assert node["connection_port"] == {
        "name": namespace, "namespace": namespace, "host": k8s_sim.url, "skiptls": False,
        "token": token, "user": "zuul-worker", "ca_crt": ca}
    assert node["ssh_port"] == node["connection_port"]
    assert base64.b64decode(ca) == k8s_sim.ca_pem
    assert node["external_id"] == namespace
    assert node["interface_ip"] is None and node["host_id"] is None
    assert node["cloud"] == CONTEXT and node["region"] is None and node["az"] is None
    assert node["python_path"] == "auto" and node["shell_type"] is None
    assert node["host_keys"] == []
    assert node["resources"] == {"cores": 0, "instances": 1, "ram": 0}
    assert node["attributes"] == {"key1": "value1"}
    assert node["provider"] == PROVIDER and node["pool"] == "main"
    assert "launch_progress" not in raw_record(zuul, node_id)
    # What the cluster got.
    ns = k8s_sim.get("namespaces", "", namespace)
    assert {k: v for k, v in ns["metadata"]["labels"].items()
            if k.startswith("nodepool")} == {
        "nodepool_node_id": node_id, "nodepool_provider_name": PROVIDER,
        "nodepool_pool_name": "main", "nodepool_node_label": "kubernetes-namespace"}
    [role] = k8s_sim.roles(namespace)
    assert role["metadata"]["name"] == "zuul"
    assert "pods/exec" in role["rules"][0]["resources"]
    [binding] = [b for b in k8s_sim.role_bindings(namespace)
                 if b["metadata"]["name"] == "zuul-role"]
    assert binding["roleRef"] == {"apiGroup": RBAC, "kind": "Role", "name": "zuul"}
    assert binding["subjects"] == [{"kind": "ServiceAccount", "name": "zuul-worker",
                                    "namespace": namespace}]
    # The token is the service account's and works.
    assert core_as(k8s_sim, token).list_namespaced_pod(namespace).items == []

    zuul.return_nodes(zuul.accept(request_id))
    wait_for(lambda: zuul.node(node_id) is None, what="used node deleted")
    wait_gone(k8s_sim, namespace)


def test_pod_node_runs_the_labels_pod(k8s_sim, start, zuul):
    start()
    request_id, node_id, node = fulfil(zuul, "pod-fedora")
    namespace = f"main-{node_id}"
    token, ca = secret_token(k8s_sim, namespace)
    assert node["connection_type"] == "kubectl"
    assert node["connection_port"] == {
        "name": namespace, "namespace": namespace, "host": k8s_sim.url, "skiptls": False,
        "token": token, "user": "zuul-worker", "ca_crt": ca, "pod": "pod-fedora"}
    assert node["interface_ip"] == "pod-fedora"
    assert node["host_id"] == "sim-node-1"
    assert node["python_path"] == "/usr/bin/python3" and node["shell_type"] == "csh"
    assert node["resources"] == {"cores": 2, "instances": 1, "ram": 512,
                                 "ephemeral-storage": 10}
    [pod] = k8s_sim.pods(namespace)
    assert pod["status"]["phase"] == "Running"
    meta = pod["metadata"]
    assert meta["name"] == "pod-fedora"
    assert meta["annotations"] == {"team": "infra"}
    assert meta["labels"] == {
        "environment": "qa", "tenant": "tenant-one", "nodepool_node_id": node_id,
        "nodepool_provider_name": PROVIDER, "nodepool_pool_name": "main",
        "nodepool_node_label": "pod-fedora"}
    spec = pod["spec"]
    [container] = spec["containers"]
    assert container["image"] == "docker.io/fedora:28"
    assert container["imagePullPolicy"] == "IfNotPresent"
    assert container["command"] == ["/bin/sh", "-c"]
    assert container["env"] == [{"name": "FOO", "value": "hello"}]
    assert container["resources"] == {
        "requests": {"cpu": "2", "memory": "512Mi", "ephemeral-storage": "10M"},
        "limits": {"cpu": "2", "memory": "1Gi", "ephemeral-storage": "10M"}}
    assert container["securityContext"] == {"privileged": True}
    assert container["volumeMounts"] == [{"name": "my-csi-inline-vol", "mountPath": "/data"}]
    assert spec["nodeSelector"] == {"storageType": "ssd"}
    assert spec["schedulerName"] == "myscheduler"
    assert spec["volumes"] == [{"name": "my-csi-inline-vol",
                                "csi": {"driver": "inline.storage.kubernetes.io"}}]
    # Only what the API defines was sent: the pod keeps the default policy.
    assert spec["restartPolicy"] == "Always"
    [role] = k8s_sim.roles(namespace)
    assert role["metadata"]["name"] == "zuul-restricted"
    zuul.return_nodes(zuul.accept(request_id))
    wait_gone(k8s_sim, namespace)
    assert k8s_sim.pods(namespace) == []


def test_custom_spec_pod_is_sent_as_given(k8s_sim, start, zuul):
    start()
    _, node_id, node = fulfil(zuul, "pod-custom")
    namespace = f"main-{node_id}"
    [pod] = k8s_sim.pods(namespace)
    [container] = pod["spec"]["containers"]
    assert (container["name"], container["image"]) == ("pod-custom", "ubuntu:jammy")
    assert container["args"] == ["while true; do sleep 30; done;"]
    assert node["connection_port"]["pod"] == "pod-custom"
    assert node["resources"] == {"cores": 0, "instances": 1, "ram": 0}


def test_label_whose_pod_can_never_be_sent_is_declined(k8s_sim, start, zuul):
    start()
    request = zuul.wait_request(zuul.submit(["pod-broken"]))
    assert request["state"] == "failed" and request["declined_by"]
    assert k8s_sim.calls("create", "namespaces") == 0
    assert not node_records(zuul)


def test_pool_cores_limit_makes_requests_wait(k8s_sim, start, zuul):
    start(pool="        max-cores: 2\n")
    first, _, _ = fulfil(zuul, "pod-fedora")
    waiting = zuul.submit(["pod-fedora"])
    # A request the pool can serve, ahead of the waiting one: once it is
    # fulfilled the pool worker has looked at the waiting one too.
    ahead = zuul.submit(["kubernetes-namespace"], priority="100")
    assert zuul.wait_request(ahead)["state"] == "fulfilled"
    request = zuul.request(waiting)
    assert request["state"] == "requested" and not request.get("declined_by")
    assert len(k8s_sim.pods()) == 1
    zuul.return_nodes(zuul.accept(first))
    assert zuul.wait_request(waiting)["state"] == "fulfilled"


def test_resource_quota_refusal_waits_instead_of_failing(k8s_sim, start, zuul):
    start()
    k8s_sim.exceed_quota("pods", count=1)
    request_id = zuul.submit(["pod-fedora"])
    request = zuul.wait_request(request_id)
    assert request["state"] == "fulfilled" and request["declined_by"] == []
    assert k8s_sim.calls("create", "pods") == 2


def test_pod_that_never_starts_times_out_and_the_retry_succeeds(
        k8s_sim, start, zuul, monkeypatch):
    monkeypatch.setattr(steps, "POD_START_TIMEOUT", 0.5)
    start()
    k8s_sim.set_pod_fate("Pending", count=1)
    _, node_id, node = fulfil(zuul, "pod-fedora")
    namespace = f"main-{node_id}"
    # The first attempt's namespace was deleted before the second made
    # it again (same name: it is the node's).
    assert k8s_sim.calls("create", "pods") == 2
    assert k8s_sim.calls("create", "namespaces") == 2
    assert k8s_sim.calls("delete", "namespaces") == 1
    [pod] = k8s_sim.pods(namespace)
    assert pod["status"]["phase"] == "Running"


def test_failing_pods_fail_the_request_and_leave_nothing_behind(k8s_sim, start, zuul):
    start()
    k8s_sim.set_pod_fate("Failed")
    request = zuul.wait_request(zuul.submit(["pod-fedora"]))
    assert request["state"] == "failed"
    assert k8s_sim.calls("create", "pods") == 2  # launch-retries: 2
    wait_for(lambda: not node_records(zuul), what="failed node deleted")
    wait_for(lambda: not [n for n in k8s_sim.namespace_names() if n.startswith("main-")],
             what="namespaces deleted")
    # The launcher lives on.
    k8s_sim.set_pod_fate("Running")
    fulfil(zuul, "pod-fedora")


def test_forbidden_call_fails_with_the_reason_then_recovers(k8s_sim, start, zuul, caplog):
    start()
    k8s_sim.refuse_creates(f"rolebindings.{RBAC}", 403)
    request = zuul.wait_request(zuul.submit(["kubernetes-namespace"]))
    assert request["state"] == "failed"
    assert "lacks a permission" in caplog.text
    assert 'cannot create resource \\"rolebindings\\"' in caplog.text or \
        'cannot create resource "rolebindings"' in caplog.text
    wait_for(lambda: not [n for n in k8s_sim.namespace_names() if n.startswith("main-")],
             what="half-made namespaces deleted")
    k8s_sim.clear_refusals()
    fulfil(zuul, "kubernetes-namespace")


def test_passing_server_errors_are_retried_in_place(k8s_sim, start, zuul):
    start()
    k8s_sim.fail_next_requests(2, 500, path_prefix="/api/v1/namespaces/main-")
    _, _, node = fulfil(zuul, "kubernetes-namespace")
    # Both errors hit the service account's creation, which was asked
    # again: one namespace, no second attempt.
    assert k8s_sim.calls("create", "serviceaccounts") == 1
    assert k8s_sim.calls("create", "namespaces") == 1
    assert k8s_sim.calls("delete", "namespaces") == 0
    assert node["connection_type"] == "namespace"


def test_unanswered_calls_fail_the_launch_and_what_they_made_is_cleaned_up(
        k8s_sim, start, zuul, caplog):
    launcher = start()
    launcher.providers[PROVIDER].adapter.conn.timeout = (5.0, 0.2)
    k8s_sim.set_latency(0.5)
    request = zuul.wait_request(zuul.submit(["kubernetes-namespace"]))
    assert request["state"] == "failed"
    assert "creating namespace main-0000000000 failed" in caplog.text
    assert "Read timed out" in caplog.text
    # The failed node no longer counts once its launch is over, so the
    # namespace its unanswered call made is a leak as soon as the record
    # is gone.
    assert not launcher.providers[PROVIDER].quota.is_reserved("0000000000")
    k8s_sim.set_latency(0)
    fulfil(zuul, "kubernetes-namespace")
    # The namespace made by a call whose answer never came is a leak.
    wait_gone(k8s_sim, "main-0000000000")


def test_namespace_an_earlier_try_made_is_continued_with(k8s_sim, start, zuul):
    # As if the answer to the namespace's creation had been lost: it
    # exists, made for this node (node ids start at 0 in a fresh chroot).
    k8s_sim.add_namespace("main-0000000000", labels={
        "nodepool_provider_name": PROVIDER, "nodepool_pool_name": "main",
        "nodepool_node_id": "0000000000", "nodepool_node_label": "kubernetes-namespace"})
    # No leak cleanup pass may see it before the node record exists.
    start(cleanup_interval=3600)
    _, node_id, node = fulfil(zuul, "kubernetes-namespace")
    assert node_id == "0000000000" and node["external_id"] == "main-0000000000"
    assert k8s_sim.calls("create", "namespaces") == 1
    assert k8s_sim.calls("delete", "namespaces") == 0


def test_someone_elses_namespace_with_the_nodes_name_is_left_alone(k8s_sim, start, zuul):
    start()
    # Node ids start at 0000000000 in a fresh ZooKeeper.
    for n in range(3):
        k8s_sim.add_namespace(f"main-{n:010d}", labels={"team": "other"})
    request = zuul.wait_request(zuul.submit(["kubernetes-namespace"]))
    assert request["state"] == "failed"
    for n in range(3):
        ns = k8s_sim.get("namespaces", "", f"main-{n:010d}")
        assert ns is not None and ns["metadata"]["labels"]["team"] == "other"


def test_leaked_namespaces_deleted_on_the_second_sighting_and_nothing_else(
        k8s_sim, start, zuul, statsd):
    ours = {"nodepool_provider_name": PROVIDER, "nodepool_pool_name": "main",
            "nodepool_node_label": "kubernetes-namespace"}
    k8s_sim.add_namespace("main-0000000099", labels={**ours, "nodepool_node_id": "0000000099"})
    k8s_sim.add_namespace("main-0000000098", labels={
        **ours, "nodepool_node_id": "0000000098", "nodepool_provider_name": "other"})
    k8s_sim.add_namespace("copied-0000000097", labels={**ours, "nodepool_node_id": "0000000097"})
    k8s_sim.add_namespace("someone-elses", labels={"team": "x"})
    start()
    _, _, node = fulfil(zuul, "kubernetes-namespace")
    wait_gone(k8s_sim, "main-0000000099")
    log = k8s_sim.requests_log
    delete = log.index(("DELETE", "/api/v1/namespaces/main-0000000099"))
    assert log[:delete].count(("GET", "/api/v1/namespaces")) >= 2
    names = k8s_sim.namespace_names()
    for kept in ("main-0000000098", "copied-0000000097", "someone-elses",
                 node["external_id"]):
        assert kept in names
    wait_for(lambda: statsd.has(f"nodepool.provider.{PROVIDER}.leaked.nodes:1|c"),
             what="leak counted")


def test_ready_node_whose_namespace_vanished_is_replaced(k8s_sim, start, zuul):
    start(min_ready={"kubernetes-namespace": 1})
    [first] = wait_for(lambda: [n for n in node_records(zuul) if n["state"] == "ready"],
                       what="min-ready node")
    k8s_sim.delete_namespace(first["external_id"])
    wait_for(lambda: zuul.node(first["id"]) is None, what="vanished node deleted")
    [second] = wait_for(lambda: [n for n in node_records(zuul) if n["state"] == "ready"],
                        what="replacement node")
    assert second["external_id"] in k8s_sim.namespace_names()


def test_launch_resumed_by_another_launcher_continues_with_the_same_namespace(
        k8s_sim, start, zuul):
    first = start()
    k8s_sim.hold_pods_pending()
    request_id = zuul.submit(["pod-fedora"])

    def waiting_for_pod() -> bool:
        nodes = node_records(zuul)
        return bool(nodes) and ((nodes[0].get("launch_progress") or {}).get("op") or {}).get(
            "step") == "running"
    wait_for(waiting_for_pod, what="launch waiting for its pod")
    first.stop()
    start(name="second.yaml")
    k8s_sim.start_pending_pods()
    assert zuul.wait_request(request_id)["state"] == "fulfilled"
    assert k8s_sim.calls("create", "namespaces") == 1
    assert k8s_sim.calls("create", "pods") == 1
    node = zuul.node(zuul.request(request_id)["nodes"][0])
    token, _ = secret_token(k8s_sim, node["external_id"])
    # The token was read again from its secret, never stored in progress.
    assert node["connection_port"]["token"] == token


def test_tls_server_ca_is_handed_to_zuul(zk_info, zuul, launcher_factory, tmp_path,
                                         monkeypatch):
    with SimulatedKubernetes("sim", tls=True) as sim:
        sim.write_kubeconfig(tmp_path / "kubeconfig")
        use_kubeconfig(monkeypatch, sim)
        launcher_factory(config_text(zk_info, LABELS, provider_yaml()))
        request_id, _, node = fulfil(zuul, "kubernetes-namespace")
        port = node["connection_port"]
        assert port["host"].startswith("https://") and port["skiptls"] is False
        assert base64.b64decode(port["ca_crt"]) == sim.ca_pem
        zuul.return_nodes(zuul.accept(request_id))
        wait_gone(sim, port["namespace"])


def test_kubeconfig_without_certificate_checks_tells_zuul_to_skip_them(
        zk_info, zuul, launcher_factory, tmp_path, monkeypatch):
    with SimulatedKubernetes("sim", tls=True) as sim:
        path = tmp_path / "kubeconfig"
        sim.write_kubeconfig(path)
        kubeconfig = yaml.safe_load(path.read_text())
        [cluster] = kubeconfig["clusters"]
        del cluster["cluster"]["certificate-authority-data"]
        cluster["cluster"]["insecure-skip-tls-verify"] = True
        path.write_text(yaml.safe_dump(kubeconfig))
        use_kubeconfig(monkeypatch, sim)
        launcher_factory(config_text(zk_info, LABELS, provider_yaml()))
        _, _, node = fulfil(zuul, "kubernetes-namespace")
        port = node["connection_port"]
        assert port["skiptls"] is True and "ca_crt" not in port


def test_token_never_filled_fails_the_attempts(k8s_sim, start, zuul, monkeypatch, caplog):
    monkeypatch.setattr(steps, "TOKEN_TIMEOUT", 0.3)
    start()
    k8s_sim.hold_tokens()
    request = zuul.wait_request(zuul.submit(["kubernetes-namespace"]))
    assert request["state"] == "failed"
    assert "no token in secret zuul-worker after 0.3 s" in caplog.text
    assert k8s_sim.calls("create", "namespaces") == 2
    k8s_sim.hold_tokens(False)
    fulfil(zuul, "kubernetes-namespace")



@pytest.mark.slow
@pytest.mark.parametrize("label", ["kubernetes-namespace", "pod-fedora"])
def test_zuul_executor_reaches_the_node_with_the_record(k8s_sim, start, zuul, tmp_path, label,
                                                        zuul_python):
    """Zuul 14.3's own executor code turns the record into a kubeconfig;
    with it, the job reaches its namespace (and pod)."""
    start()
    _, node_id, _ = fulfil(zuul, label)
    api, seen = zuul_kubeconfig(zuul_python, zuul, node_id, tmp_path / "zuul-kubeconfig")
    namespace = f"main-{node_id}"
    assert seen["namespace"] == namespace
    pods = client.CoreV1Api(api).list_namespaced_pod(namespace).items
    if label == "pod-fedora":
        assert seen["connection_type"] == "kubectl"
        assert seen["pod"] == seen["ansible_host"] == "pod-fedora"
        assert [p.metadata.name for p in pods] == ["pod-fedora"]
    else:
        assert seen["connection_type"] == "namespace" and seen["pod"] is None
        assert pods == []
