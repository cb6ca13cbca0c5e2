"""A metastatic node's launch and deletion, as the framework advances
them: the work itself is the adapter's (:mod:`.adapter`)."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from nodepool.driver.adapter import META_NODE_ID, CreateOperation, DeleteOperation, Instance
from nodepool.exceptions import LaunchError

if TYPE_CHECKING:
    from nodepool.driver.adapter import LaunchSpec
    from nodepool.driver.metastatic.adapter import MetastaticAdapter
    from nodepool.driver.metastatic.backing import BackingNode

# Pause between two looks at a backing request that is not fulfilled yet.
REQUEST_POLL = 0.5


class BackingNodeFailed(LaunchError):
    """The backing node of a launch could not be had or is gone (counted
    as ``error.unknown``, as upstream counts it)."""


class MetastaticCreate(CreateOperation):
    """Steps: ``start`` (take a slot, requesting a backing node if no
    backing node has one free), ``waiting`` (until the backing node is
    ours), then the instance."""

    def __init__(self, adapter: MetastaticAdapter, spec: LaunchSpec) -> None:
        super().__init__()
        self.adapter = adapter
        self.spec = spec
        self.node_id = str(spec.metadata[META_NODE_ID])
        self.backing: BackingNode | None = None
        self.slot = 0

    def advance(self) -> Instance | None:
        if self.step == "start":
            # A resumed launch starts over too: its slot was never stored.
            self.backing, self.slot = self.adapter.allocate(self.spec.label, self.node_id)
            self.external_id = self.node_id
            self.step = "waiting"
        backing = self.backing
        assert backing is not None
        if backing.node_id is None:
            self.adapter.check_requests()
        if backing.node_id is None:
            if backing.request_id is None:
                # Dropped: the request failed or vanished.
                raise BackingNodeFailed(
                    f"the request for a {self.spec.label.backing_label!r} backing node failed")
            self.status = f"waiting for backing request {backing.request_id}"
            self.poll_after = REQUEST_POLL
            return None
        return self.adapter.instance(self.spec, backing, self.slot)


class MetastaticDelete(DeleteOperation):
    """Freeing the slot: nothing exists in any cloud."""

    def __init__(self, adapter: MetastaticAdapter, external_id: Any) -> None:
        super().__init__(external_id=external_id)
        self.adapter = adapter

    def advance(self) -> bool:
        self.adapter.free(str(self.external_id))
        return True
