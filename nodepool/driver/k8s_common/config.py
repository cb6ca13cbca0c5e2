"""Configuration of kubernetes, openshift and openshiftpods providers.

The three drivers take the same label and pool keys (openshift adds
``image-pull-secrets``; openshiftpods labels are always pods and need an
``image`` or a ``spec``) and differ in the provider key that caps the
number of nodes: ``max-servers``, ``max-projects`` and ``max-pods``.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from typing import Any, ClassVar

import voluptuous as v

from nodepool.driver import ConfigLabel, ConfigPool, Driver, ProviderConfig
from nodepool.driver.quota import QuotaInformation

# What a label makes.
NAMESPACE = "namespace"
PROJECT = "project"
POD = "pod"


def _first(*values: Any) -> Any:
    """The first value that is set (0 counts as set)."""
    return next((value for value in values if value is not None), None)


class K8sLabel(ConfigLabel):
    """A label of a kubernetes-family pool.

    ``kind`` is what a node of it is: ``namespace`` (kubernetes) or
    ``project`` (openshift) alone, or ``pod`` in one.  ``type`` is the
    configured value it came from.
    """

    def __init__(self, d: Mapping[str, Any], pool: K8sPool, kind: str) -> None:
        super().__init__(d["name"], pool)
        # Nodes are reached through the API server with a token, never
        # over SSH: there are no host keys to scan.
        self.host_key_checking = False
        self.kind = kind
        self.type: str = d.get("type", POD)
        # A complete pod spec given by the operator (``spec``) replaces
        # everything nodepool would put in the pod.
        self.spec: dict[str, Any] | None = d.get("spec")
        # The container image (``image``; not ConfigLabel.image, which
        # is the boot image of cloud drivers).
        self.container_image: str | None = d.get("image")
        self.image_pull: str = d.get("image-pull", "IfNotPresent")
        self.image_pull_secrets: list[Any] = list(d.get("image-pull-secrets") or [])
        self.python_path: str = d.get("python-path", "auto")
        self.shell_type: str | None = d.get("shell-type")
        self.cpu: int | None = d.get("cpu", pool.default_label_cpu)
        self.memory: int | None = d.get("memory", pool.default_label_memory)
        self.storage: int | None = d.get("storage", pool.default_label_storage)
        # A limit is the first of: the label's limit, the pool's default
        # limit, the label's request, the pool's default request.
        self.cpu_limit: int | None = _first(d.get("cpu-limit"),
                                            pool.default_label_cpu_limit, self.cpu)
        self.memory_limit: int | None = _first(d.get("memory-limit"),
                                               pool.default_label_memory_limit, self.memory)
        self.storage_limit: int | None = _first(d.get("storage-limit"),
                                                pool.default_label_storage_limit, self.storage)
        self.gpu: float | None = d.get("gpu")
        self.gpu_resource: str | None = d.get("gpu-resource")
        self.env: list[dict[str, str]] = list(d.get("env") or [])
        self.node_selector: dict[str, Any] | None = d.get("node-selector")
        self.privileged: bool | None = d.get("privileged")
        self.scheduler_name: str | None = d.get("scheduler-name")
        self.volumes: list[Any] | None = d.get("volumes")
        self.volume_mounts: list[Any] | None = d.get("volume-mounts")
        # Kubernetes labels and annotations put on what the node gets.
        self.k8s_labels: dict[str, Any] = dict(d.get("labels") or {})
        self.dynamic_labels: dict[str, str] = dict(d.get("dynamic-labels") or {})
        self.annotations: dict[str, Any] = dict(d.get("annotations") or {})
        self.extra_resources: dict[str, int] = dict(pool.default_label_extra_resources)
        self.extra_resources.update(d.get("extra-resources") or {})

    @property
    def is_pod(self) -> bool:
        return self.kind == POD

    def quota(self) -> QuotaInformation:
        """What one node of this label counts against pool and tenant
        limits (and what its record's ``resources`` say, as upstream
        writes it: ``cores``, ``instances`` and ``ram`` always)."""
        resources: dict[str, float] = {"cores": self.cpu or 0, "instances": 1,
                                       "ram": self.memory or 0}
        if self.storage:
            resources["ephemeral-storage"] = self.storage
        if self.gpu and self.gpu_resource:
            resources[self.gpu_resource] = self.gpu
        resources.update(self.extra_resources)
        return QuotaInformation(resources)


class K8sPool(ConfigPool):
    """A pool: labels, limits (defaulting to the provider's) and the
    defaults of its labels' resources."""

    def __init__(self, d: Mapping[str, Any], provider: K8sProviderConfig) -> None:
        super().__init__(provider=provider)
        self.load_common(d)
        if d.get("max-servers") is None:
            self.max_servers = provider.max_servers
        self.max_cores = d.get("max-cores", provider.max_cores)
        self.max_ram = d.get("max-ram", provider.max_ram)
        self.max_resources = {**provider.max_resources, **(d.get("max-resources") or {})}
        self.host_key_checking = False
        self.default_label_cpu: int | None = d.get("default-label-cpu")
        self.default_label_memory: int | None = d.get("default-label-memory")
        self.default_label_storage: int | None = d.get("default-label-storage")
        self.default_label_cpu_limit: int | None = d.get("default-label-cpu-limit")
        self.default_label_memory_limit: int | None = d.get("default-label-memory-limit")
        self.default_label_storage_limit: int | None = d.get("default-label-storage-limit")
        self.default_label_extra_resources: dict[str, int] = dict(
            d.get("default-label-extra-resources") or {})
        for label in d.get("labels") or []:
            self.labels[label["name"]] = K8sLabel(label, self, provider.label_kind(label))


class K8sProviderConfig(ProviderConfig):
    """A kubernetes-family provider: a kubeconfig context and pools."""

    # The provider key that caps the nodes of every pool that sets no
    # ``max-servers`` of its own.
    MAX_NODES_KEY: ClassVar[str] = "max-servers"
    # The label ``type`` values the driver knows (others are accepted, as
    # upstream accepts them, with a warning).
    KNOWN_TYPES: ClassVar[tuple[str, ...]] = ()

    def __init__(self, driver: Driver, provider: Mapping[str, Any]) -> None:
        super().__init__(driver, provider)
        # The kubeconfig context; None: the kubeconfig's current context
        # (or the in-cluster service account when there is no kubeconfig).
        self.context: str | None = provider.get("context")
        # Written into node records: upstream puts the context there.
        self.cloud = self.context
        self.max_servers: float = provider.get(self.MAX_NODES_KEY, math.inf)
        self.max_cores: float = provider.get("max-cores", math.inf)
        self.max_ram: float = provider.get("max-ram", math.inf)
        self.max_resources: dict[str, float] = dict(provider.get("max-resources") or {})
        self._warnings: list[str] = []
        for pool in provider.get("pools") or []:
            self.pools[pool["name"]] = K8sPool(pool, self)
            for label in pool.get("labels") or []:
                kind = self.label_kind(label)
                if "type" in label and label["type"] not in self.KNOWN_TYPES:
                    self._warnings.append(
                        f"pool {pool['name']!r} label {label['name']!r}: type "
                        f"{label['type']!r} is none of {', '.join(self.KNOWN_TYPES)}; "
                        f"it makes a {kind}, as upstream")

    def load_warnings(self) -> list[str]:
        return list(self._warnings)

    def label_kind(self, label: Mapping[str, Any]) -> str:
        """What a node of ``label`` is (see :class:`K8sLabel`)."""
        raise NotImplementedError

    def load(self, config: Any) -> None:
        self._register_pools(config)


# Schemas ------------------------------------------------------------------------------


def _label_schemas(*, typed: bool, image_pull_secrets: bool,
                   image_required: bool) -> v.Any:
    """A label built by nodepool from keys, or one whose pod ``spec`` the
    operator gives whole (then only labels and annotations may be added)."""
    env_var = {v.Required("name"): str, v.Required("value"): str}
    from_keys: dict[Any, Any] = {
        v.Required("name"): str,
        (v.Required("image") if image_required else v.Optional("image")): str,
        "image-pull": str,
        "python-path": str,
        "shell-type": str,
        "cpu": int,
        "memory": int,
        "storage": int,
        "cpu-limit": int,
        "memory-limit": int,
        "storage-limit": int,
        "gpu": float,
        "gpu-resource": str,
        "env": [env_var],
        "node-selector": dict,
        "privileged": bool,
        "scheduler-name": str,
        "volumes": list,
        "volume-mounts": list,
        "labels": dict,
        "dynamic-labels": dict,
        "annotations": dict,
        "extra-resources": {str: int},
    }
    from_spec: dict[Any, Any] = {
        v.Required("name"): str,
        v.Required("spec"): dict,
        "labels": dict,
        "dynamic-labels": dict,
        "annotations": dict,
    }
    if image_pull_secrets:
        from_keys["image-pull-secrets"] = list
    if typed:
        from_keys[v.Required("type")] = str
        from_spec[v.Required("type")] = str
    return v.Any(from_keys, from_spec)


def k8s_schema(*, max_nodes_key: str, context_required: bool, typed: bool = True,
               image_pull_secrets: bool = False, image_required: bool = False) -> dict:
    """The provider keys of one kubernetes-family driver (beyond name,
    driver, max-concurrency and priority)."""
    pool = {
        **ConfigPool.schema(),
        v.Required("labels"): [_label_schemas(typed=typed,
                                              image_pull_secrets=image_pull_secrets,
                                              image_required=image_required)],
        "max-cores": int,
        "max-ram": int,
        "max-resources": {str: int},
        "default-label-cpu": int,
        "default-label-memory": int,
        "default-label-storage": int,
        "default-label-cpu-limit": int,
        "default-label-memory-limit": int,
        "default-label-storage-limit": int,
        "default-label-extra-resources": {str: int},
    }
    return {
        v.Required("pools"): [pool],
        (v.Required("context") if context_required else v.Optional("context")): str,
        "launch-retries": int,
        max_nodes_key: int,
        "max-cores": int,
        "max-ram": int,
        "max-resources": {str: int},
    }
