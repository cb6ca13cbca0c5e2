"""Configuration of kubernetes providers."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from nodepool.driver.k8s_common.config import NAMESPACE, POD, K8sProviderConfig, k8s_schema


def kubernetes_schema() -> dict:
    return k8s_schema(max_nodes_key="max-servers", context_required=False)


class KubernetesProviderConfig(K8sProviderConfig):
    MAX_NODES_KEY = "max-servers"
    KNOWN_TYPES = ("namespace", "pod")

    def label_kind(self, label: Mapping[str, Any]) -> str:
        # As upstream: any type but "namespace" makes a pod.
        return NAMESPACE if label.get("type") == NAMESPACE else POD
