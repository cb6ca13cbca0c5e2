"""Configuration, request bodies and error handling of the kubernetes,
openshift and openshiftpods drivers (no cluster needed)."""

from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Any

import pytest
import urllib3
from kubernetes.client.exceptions import ApiException

from nodepool.config import check_config, load_config
from nodepool.driver.k8s_common import bodies, errors
from nodepool.driver.k8s_common.connection import ClientConfigError, build_api_client
from nodepool.driver.openshiftpods.adapter import OpenShiftPodsAdapter
from nodepool.exceptions import RuntimeConfigurationException


def write(tmp_path: Path, providers: str, labels: tuple[str, ...] = ("l1", "l2", "l3")) -> str:
    path = tmp_path / "nodepool.yaml"
    path.write_text("labels:\n" + "".join(f"  - name: {n}\n" for n in labels)
                    + "providers:\n" + providers)
    return str(path)


# -- configuration ----------------------------------------------------------------------------

# Verdicts of upstream 11.0.0's ``nodepool config-validate`` on each
# provider (recorded with the reference install).
VERDICTS = [
    ("kubernetes", "", "    - name: l1\n      type: pod\n      image: x\n", True),
    ("kubernetes", "", "    - name: l1\n      image: x\n", False),  # no type
    ("kubernetes", "max-projects: 2", "    - name: l1\n      type: namespace\n", False),
    ("kubernetes", "launch-timeout: 3", "    - name: l1\n      type: namespace\n", False),
    ("kubernetes", "", "    - name: l1\n      type: pod\n      image: x\n"
                       "      image-pull-secrets: []\n", False),
    ("kubernetes", "", "    - name: l1\n      type: pod\n      image: x\n      gpu: 1\n", False),
    ("kubernetes", "", "    - name: l1\n      type: pod\n      image: x\n      cpu: '2'\n",
     False),
    ("kubernetes", "", "    - name: l1\n      type: pod\n      image: x\n      env:\n"
                       "        - name: a\n", False),
    ("kubernetes", "", "    - name: l1\n      type: pod\n      spec: {containers: []}\n"
                       "      labels: {a: b}\n      annotations: {x: y}\n", True),
    ("kubernetes", "", "    - name: l1\n      type: pod\n      spec: {containers: []}\n"
                       "      cpu: 2\n", False),
    ("openshift", "context: c\n    max-projects: 3", "    - name: l1\n      type: project\n",
     True),
    ("openshift", "", "    - name: l1\n      type: project\n", False),  # context required
    ("openshift", "context: c\n    max-servers: 3", "    - name: l1\n      type: project\n",
     False),
    ("openshift", "context: c\n    max-pods: 3", "    - name: l1\n      type: project\n",
     False),
    ("openshiftpods", "context: c\n    max-pods: 3", "    - name: l1\n      image: x\n", True),
    ("openshiftpods", "context: c", "    - name: l1\n      type: pod\n      image: x\n", False),
    ("openshiftpods", "context: c", "    - name: l1\n      cpu: 2\n", False),  # no image
    ("openshiftpods", "context: c", "    - name: l1\n      spec: {containers: []}\n", True),
    ("openshiftpods", "context: c\n    max-projects: 3", "    - name: l1\n      image: x\n",
     False),
    ("openshiftpods", "", "    - name: l1\n      image: x\n", False),
]


@pytest.mark.parametrize("driver,provider,labels,valid", VERDICTS)
def test_config_validate_agrees_with_upstream(tmp_path, driver, provider, labels, valid):
    text = (f"  - name: p\n    driver: {driver}\n    {provider}\n    pools:\n"
            f"      - name: main\n        labels:\n"
            + "".join(f"    {line}\n" for line in labels.splitlines()))
    problems = check_config(write(tmp_path, text))
    assert (problems == []) == valid, problems


def test_limits_default_to_the_providers_and_labels_to_the_pools(tmp_path):
    config = load_config(write(tmp_path, """  - name: k
    driver: kubernetes
    max-servers: 4
    max-cores: 8
    max-resources:
      gpus: 2
    pools:
      - name: main
        max-ram: 4096
        max-resources:
          tpus: 1
        default-label-cpu: 2
        default-label-memory: 1024
        default-label-storage: 10
        default-label-cpu-limit: 6
        default-label-extra-resources:
          widgets: 1
        labels:
          - name: l1
            type: pod
            image: x
          - name: l2
            type: pod
            image: x
            cpu: 4
            memory-limit: 2048
            storage-limit: 20
            gpu: 0.5
            gpu-resource: gpus
            extra-resources:
              gadgets: 3
          - name: l3
            type: nonsense
            spec:
              containers: []
      - name: own-limit
        max-servers: 1
        labels:
          - name: l1
            type: namespace
"""))
    provider = config.providers["k"]
    assert provider.cloud is None and provider.context is None
    main, own = provider.pools["main"], provider.pools["own-limit"]
    assert (main.max_servers, main.max_cores, main.max_ram) == (4, 8, 4096)
    assert main.max_resources == {"gpus": 2, "tpus": 1}
    assert (own.max_servers, own.max_cores, own.max_ram) == (1, 8, math.inf)
    assert main.limits().to_dict() == {"instances": 4, "cores": 8, "ram": 4096, "gpus": 2,
                                       "tpus": 1}
    l1, l2, l3 = (main.labels[n] for n in ("l1", "l2", "l3"))
    # Limits: the label's, else the pool's default limit, else the request.
    assert (l1.cpu, l1.memory, l1.storage) == (2, 1024, 10)
    assert (l1.cpu_limit, l1.memory_limit, l1.storage_limit) == (6, 1024, 10)
    assert (l2.cpu, l2.cpu_limit, l2.memory_limit, l2.storage_limit) == (4, 6, 2048, 20)
    assert l1.extra_resources == {"widgets": 1}
    assert l2.extra_resources == {"widgets": 1, "gadgets": 3}
    assert l2.quota().to_dict() == {"cores": 4, "instances": 1, "ram": 1024,
                                    "ephemeral-storage": 10, "gpus": 0.5, "widgets": 1,
                                    "gadgets": 3}
    # As upstream: any type but "namespace" is a pod (with a warning).
    assert l3.is_pod and not own.labels["l1"].is_pod
    [warning] = [w for w in config.warnings if "nonsense" in w]
    assert "label 'l3': type 'nonsense' is none of namespace, pod; it makes a pod" in warning
    assert not l1.host_key_checking and l1.image is None
    assert config.labels["l1"].pools == [main, own]


def test_openshift_kinds_and_max_projects(tmp_path):
    config = load_config(write(tmp_path, """  - name: os
    driver: openshift
    context: ctx
    max-projects: 3
    pools:
      - name: main
        labels:
          - name: l1
            type: project
          - name: l2
            type: pod
            image: x
          - name: l3
            type: namespace
  - name: pods
    driver: openshiftpods
    context: ctx
    max-pods: 2
    pools:
      - name: zuul
        labels:
          - name: l1
            image: x
"""))
    main = config.providers["os"].pools["main"]
    assert config.providers["os"].cloud == "ctx"
    assert main.max_servers == 3
    # As upstream: any type but "pod" is a project alone.
    assert [main.labels[n].kind for n in ("l1", "l2", "l3")] == ["project", "pod", "project"]
    zuul = config.providers["pods"].pools["zuul"]
    assert zuul.max_servers == 2 and zuul.labels["l1"].is_pod


# -- bodies -----------------------------------------------------------------------------------

def pool_label(tmp_path: Path, label_yaml: str, driver: str = "kubernetes") -> Any:
    context = "    context: c\n" if driver != "kubernetes" else ""
    config = load_config(write(tmp_path, f"""  - name: p
    driver: {driver}
{context}    pools:
      - name: main
        labels:
{label_yaml}"""))
    return config.providers["p"].pools["main"].labels["l1"]


def test_pod_body_sends_only_what_the_api_defines(tmp_path):
    label = pool_label(tmp_path, """          - name: l1
            type: pod
            image: fedora
            cpu: 2
            memory: 512
            gpu: 1.5
            gpu-resource: nvidia.com/gpu
            annotations: {a: b}
""")
    body = bodies.pod("l1", label, {"x": "y"})
    assert "restartPolicy" not in body
    assert body["metadata"] == {"name": "l1", "labels": {"x": "y"}, "annotations": {"a": "b"}}
    [container] = body["spec"]["containers"]
    assert container["resources"] == {
        "requests": {"cpu": "2", "memory": "512Mi", "nvidia.com/gpu": "1.50"},
        "limits": {"cpu": "2", "memory": "512Mi", "nvidia.com/gpu": "1.50"}}
    assert container["env"] == [] and "securityContext" not in container
    bodies.check_label(label)
    binding = bodies.role_binding("zuul-role", "ns", "Role", "zuul")
    assert "userNames" not in binding
    assert binding["subjects"] == [{"kind": "ServiceAccount", "name": "zuul-worker",
                                    "namespace": "ns"}]


@pytest.mark.parametrize("label_yaml,problem", [
    ("          - name: l1\n            type: pod\n", "neither image nor spec"),
    ("          - name: l1\n            type: pod\n            spec:\n              k8s: here\n",
     "spec.k8s"),
    ("          - name: l1\n            type: pod\n            image: x\n"
     "            node-selector:\n              disks: 2\n", "nodeSelector.disks"),
    ("          - name: l1\n            type: namespace\n            labels:\n"
     "              replicas: 2\n", "metadata.labels.replicas"),
])
def test_objects_that_can_never_be_sent_are_a_label_error(tmp_path, label_yaml, problem):
    label = pool_label(tmp_path, label_yaml)
    with pytest.raises(RuntimeConfigurationException) as e:
        bodies.check_label(label)
    assert problem in str(e.value)


def test_dynamic_labels_format_safely(tmp_path, caplog):
    label = pool_label(tmp_path, """          - name: l1
            type: namespace
            labels:
              nodepool_node_id: forged
              team: ci
            dynamic-labels:
              tenant: "{request.tenant_name}"
              job: "{request.requestor_data[job_name]}"
              sneaky: "{request.__class__}"
              broken: "{request.nothing}"
""")

    class Request:
        tenant_name = "tenant-one"
        requestor_data = {"job_name": "unit"}
    tags = {"nodepool_node_id": "0000000007", "nodepool_provider_name": "p",
            "nodepool_pool_name": "main"}
    import logging
    labels = bodies.object_labels(label, tags, Request(), logging.getLogger("test"))
    assert labels == {"team": "ci", "tenant": "tenant-one", "job": "unit",
                      "nodepool_node_id": "0000000007", "nodepool_provider_name": "p",
                      "nodepool_pool_name": "main", "nodepool_node_label": "l1"}
    assert "sneaky" in caplog.text and "broken" in caplog.text


def test_project_ownership_is_read_back_from_labels_or_description():
    labels = {"nodepool_node_id": "1", "nodepool_provider_name": "p",
              "nodepool_pool_name": "main", "nodepool_node_label": "l", "team": "x"}
    request = bodies.project_request("main-1", labels)
    note = request["description"]
    described = {"annotations": {bodies.DESCRIPTION_ANNOTATION: note}}
    assert bodies.owner_tags(described) == {k: v for k, v in labels.items() if k != "team"}
    assert bodies.owner_tags({"labels": labels}) == labels
    assert bodies.owner_tags({"annotations": {bodies.DESCRIPTION_ANNOTATION: "a project"}}) == {}
    assert bodies.owner_tags(None) == {}


def test_openshiftpods_external_ids_split_at_the_longest_pool(tmp_path):
    config = load_config(write(tmp_path, """  - name: pods
    driver: openshiftpods
    context: c
    pools:
      - name: ci
        labels:
          - name: l1
            image: x
      - name: ci-gpu
        labels:
          - name: l1
            image: x
"""))
    adapter = OpenShiftPodsAdapter(config.providers["pods"])
    assert adapter.split_external_id("ci-gpu-l1-0000000001") == ("ci-gpu", "l1-0000000001")
    assert adapter.split_external_id("ci-l1-0000000002") == ("ci", "l1-0000000002")
    assert adapter.split_external_id("gone-l1-3") == (None, "gone-l1-3")


# -- errors and connection ------------------------------------------------------------------------

def api_error(status: int, message: str = "nope") -> ApiException:
    e = ApiException(status=status, reason="Reason")
    e.body = json.dumps({"kind": "Status", "message": message})
    return e


def test_error_classification():
    quota = api_error(403, 'pods "p" is forbidden: exceeded quota: q')
    assert errors.is_quota(quota) and not errors.is_transient(quota)
    assert errors.message(quota) == '403 Reason: pods "p" is forbidden: exceeded quota: q'
    assert "RBAC" in errors.hint(api_error(403))
    for status in (500, 503, 429, 0):
        assert errors.is_transient(api_error(status))
    assert not errors.is_transient(api_error(422))
    assert errors.is_transient(urllib3.exceptions.MaxRetryError(None, "/", "timed out"))
    assert not errors.is_api_error(ValueError("bug"))


def test_connection_errors_name_the_fix(tmp_path, monkeypatch):
    monkeypatch.delenv("KUBERNETES_SERVICE_HOST", raising=False)
    monkeypatch.setenv("KUBECONFIG", str(tmp_path / "missing"))
    with pytest.raises(ClientConfigError) as e:
        build_api_client("ctx")
    assert "not running inside a cluster" in str(e.value)
    config = tmp_path / "kubeconfig"
    config.write_text("apiVersion: v1\nkind: Config\nclusters: []\ncontexts: []\nusers: []\n"
                      "current-context: other\n")
    monkeypatch.setenv("KUBECONFIG", str(config))
    with pytest.raises(ClientConfigError) as e:
        build_api_client("ctx")
    assert "cannot use context ctx" in str(e.value)
