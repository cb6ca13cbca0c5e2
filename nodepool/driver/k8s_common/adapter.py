"""The adapter the kubernetes-family drivers share.

Quota: a cluster has no account limits nodepool could read, so only the
pool limits (and tenant limits) apply, counted with what each label's
pods request, as upstream does; a ResourceQuota refusal makes the request
wait (see :mod:`.errors`).

Listings: a driver lists the objects it made for this provider (its
``owned()``), recognised by nodepool's labels (for OpenShift projects, by
the description we gave them).  The framework uses the listing to find
ready nodes whose objects vanished, the objects of a launch it resumes,
and leaks: objects of ours whose node record is gone are deleted once
seen on two passes.  Anything without our tags is never touched.
"""

from __future__ import annotations

import logging
from typing import Any

from nodepool.driver.adapter import (
    META_NODE_ID,
    META_POOL,
    Adapter,
    Instance,
    Resource,
)
from nodepool.driver.k8s_common import bodies
from nodepool.driver.k8s_common.config import K8sLabel
from nodepool.driver.k8s_common.connection import Connection
from nodepool.driver.quota import QuotaInformation
from nodepool.exceptions import NotFound

log = logging.getLogger("nodepool.driver.k8s")


class LeakedObject(Resource):
    """A namespace, project or pod of ours, for the leak cleanup.  Counted
    as ``nodepool.provider.<name>.leaked.nodes``, the key upstream's
    kubernetes driver sends."""

    @property
    def plural(self) -> str:
        return "nodes"


class K8sAdapter(Adapter):
    """Base of the kubernetes, openshift and openshiftpods adapters."""

    # Upstream looks at a pod or token once a second.
    poll_interval = 1.0
    # What ``owned()`` lists, for logs.
    OBJECT_TYPE = "namespace"

    def __init__(self, provider_config: Any) -> None:
        super().__init__(provider_config)
        self.conn = Connection(provider_config.context)

    # Labels -----------------------------------------------------------------------------

    def get_quota_for_label(self, label: K8sLabel) -> QuotaInformation:
        """What a node of ``label`` uses; raises RuntimeConfigurationException
        for a label whose objects could never be sent."""
        bodies.check_label(label)
        return label.quota()

    # Listings ---------------------------------------------------------------------------

    def owned(self) -> list[tuple[str, dict[str, str]]]:
        """(external id, nodepool tags) of every object this provider made
        that is not being deleted."""
        raise NotImplementedError

    @staticmethod
    def named_as_made(name: str, tags: dict[str, str], prefix_key: str = META_POOL) -> bool:
        """Whether an object's name is the one nodepool gives an object with
        these tags (``<pool>-<node id>``; pods of openshiftpods
        ``<label>-<node id>``): labels someone copied onto another object
        do not make it ours."""
        return name == f"{tags.get(prefix_key)}-{tags.get(META_NODE_ID)}"

    def list_instances(self) -> list[Instance]:
        return [Instance(external_id=external_id, metadata=tags)
                for external_id, tags in self.owned()]

    def list_resources(self) -> list[Resource]:
        return [LeakedObject(self.OBJECT_TYPE, external_id, tags, external_id)
                for external_id, tags in self.owned()]

    def delete_resource(self, resource: Resource) -> None:
        """Start deleting a leaked object (the next pass sees it gone)."""
        op = self.delete(resource.id)
        try:
            op.advance()
        except NotFound:
            pass

    def stop(self) -> None:
        self.conn.close()
