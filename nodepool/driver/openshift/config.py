"""Configuration of openshift providers."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from nodepool.driver.k8s_common.config import POD, PROJECT, K8sProviderConfig, k8s_schema


def openshift_schema() -> dict:
    return k8s_schema(max_nodes_key="max-projects", context_required=True,
                      image_pull_secrets=True)


class OpenShiftProviderConfig(K8sProviderConfig):
    MAX_NODES_KEY = "max-projects"
    KNOWN_TYPES = ("project", "pod")

    def label_kind(self, label: Mapping[str, Any]) -> str:
        # As upstream: any type but "pod" makes a project alone.
        return POD if label.get("type") == POD else PROJECT
