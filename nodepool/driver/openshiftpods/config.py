"""Configuration of openshiftpods providers: each pool is a project that
exists already, and every label is a pod in it."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from nodepool.driver.k8s_common.config import POD, K8sProviderConfig, k8s_schema


def openshiftpods_schema() -> dict:
    return k8s_schema(max_nodes_key="max-pods", context_required=True, typed=False,
                      image_pull_secrets=True, image_required=True)


class OpenShiftPodsProviderConfig(K8sProviderConfig):
    MAX_NODES_KEY = "max-pods"

    def label_kind(self, label: Mapping[str, Any]) -> str:
        return POD
