"""Shared pieces of the kubernetes, openshift and openshiftpods driver tests.

The drivers talk to the simulated API server (nodepool.tests.k8s_sim)
through the real kubernetes client, configured from the kubeconfig the
simulator writes; the launcher finds it through ``$KUBECONFIG``, as an
operator's would.
"""

from __future__ import annotations

import base64
import json
import pathlib
import subprocess
from typing import Any

import pytest
from kubernetes import client

from nodepool.driver.k8s_common.adapter import K8sAdapter
from nodepool.tests.helpers import wait_for

CONTEXT = "sim-context"


@pytest.fixture(autouse=True)
def fast_polls(monkeypatch: pytest.MonkeyPatch) -> None:
    # The drivers look at a pod or token once a second; the simulator
    # starts pods in 50 ms, so look more often here.
    monkeypatch.setattr(K8sAdapter, "poll_interval", 0.05)


def use_kubeconfig(monkeypatch: pytest.MonkeyPatch, sim: Any) -> None:
    monkeypatch.setenv("KUBECONFIG", sim.kubeconfig_path)


def config_text(zk_info: Any, labels: list[str], providers: str,
                min_ready: dict[str, int] | None = None) -> str:
    min_ready = min_ready or {}
    return (zk_info.config_yaml()
            + "labels:\n" + "".join(f"  - name: {name}\n    min-ready: {min_ready.get(name, 0)}\n"
                                    for name in labels)
            + "providers:\n" + providers)


def secret_token(sim: Any, namespace: str, name: str = "zuul-worker") -> tuple[str, str]:
    """(token, base64 CA) of a filled service-account token secret."""
    secret = sim.get("secrets", namespace, name)
    assert secret is not None and secret.get("data"), f"no token secret in {namespace}"
    return (base64.b64decode(secret["data"]["token"]).decode(), secret["data"]["ca.crt"])


def core_as(sim: Any, token: str, host: str | None = None) -> client.CoreV1Api:
    """A client that authenticates with ``token`` (as Zuul's executor will)."""
    configuration = client.Configuration()
    configuration.host = host or sim.url
    configuration.api_key = {"authorization": f"Bearer {token}"}
    return client.CoreV1Api(client.ApiClient(configuration))


def node_records(zuul: Any) -> list[dict]:
    """Every node record, each with its ``id``."""
    if not zuul.client.exists("/nodepool/nodes"):
        return []
    found = []
    for node_id in zuul.client.get_children("/nodepool/nodes"):
        node = zuul.node(node_id)
        if node:
            found.append({**node, "id": node_id})
    return found


def raw_record(zuul: Any, node_id: str) -> dict:
    """The node's znode exactly as stored (key order included)."""
    data, _ = zuul.client.get(f"/nodepool/nodes/{node_id}")
    return json.loads(data)


def wait_gone(sim: Any, namespace: str) -> None:
    wait_for(lambda: namespace not in sim.namespace_names(), what=f"namespace {namespace} gone")


KUBECONFIG_SCRIPT = (pathlib.Path(__file__).resolve().parent.parent / "zuul_compat"
                     / "kubeconfig.py")


def zuul_kubeconfig(zuul_python: pathlib.Path, zuul: Any, node_id: str,
                    path: pathlib.Path) -> tuple[client.ApiClient, dict]:
    """(a client configured from the kubeconfig Zuul 14.3's executor writes
    for the node, what Zuul makes of the record: context, namespace, pod,
    connection_type, ansible_host)."""
    result = subprocess.run([str(zuul_python), str(KUBECONFIG_SCRIPT), str(path)],
                            input=json.dumps(raw_record(zuul, node_id)), capture_output=True,
                            text=True, timeout=120)
    assert result.returncode == 0, result.stderr[-3000:]
    seen = json.loads(result.stdout.strip().splitlines()[-1])
    from kubernetes import config
    return config.new_client_from_config(config_file=str(path), context=seen["context"]), seen
