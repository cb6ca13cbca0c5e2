"""A backing node as a metastatic provider sees it: which of its slots
carry which metastatic node, and what is stored about it in ZooKeeper.

Only what cannot be rebuilt from the metastatic nodes themselves is
written on the backing node (its ``user_data``: owner, label, slot count,
failed, launch time); which node occupies which slot is written on each
metastatic node (its ``driver_data``).  So allocating and freeing a slot
writes nothing on the backing node, and two writers can never disagree
about a count.  The wire format is upstream Nodepool 11's, so either
launcher can take over the other's backing nodes.
"""

from __future__ import annotations

import json
import logging
import threading
import time
from typing import Any

log = logging.getLogger("nodepool.driver.metastatic")


def owner_id(provider_name: str) -> str:
    """How a metastatic provider names itself: the requestor of its
    backing requests, its backing nodes' lock identifier and owner."""
    return f"NodePool:metastatic:{provider_name}"


class BackingNode:
    """One backing node (or the request for it, while ``node_id`` is
    None) and its slots.  Not thread-safe: the adapter guards it."""

    def __init__(self, label: str, slots: int, launched: float | None = None) -> None:
        self.label = label
        self.slots = slots
        self.node_id: str | None = None
        self.request_id: str | None = None
        # No new nodes go to a failed backing node; it is released as soon
        # as its last node is gone.
        self.failed = False
        # Wall-clock time, stored (min-retention-time and max-age count
        # from it across restarts).
        self.launched = time.time() if launched is None else launched
        # Monotonic time of the last slot freed (grace-time counts from it).
        self.last_used = time.monotonic()
        self.allocated: list[str | None] = [None] * slots

    def __repr__(self) -> str:
        where = self.node_id or f"request {self.request_id}"
        return f"<BackingNode {where} {self.label} {self.allocated}>"

    @property
    def empty(self) -> bool:
        return all(node_id is None for node_id in self.allocated)

    def has_free_slot(self) -> bool:
        return not self.failed and None in self.allocated

    def holds(self, node_id: str) -> bool:
        return node_id in self.allocated

    def node_ids(self) -> list[str]:
        return [node_id for node_id in self.allocated if node_id is not None]

    def take(self, node_id: str, slot: int | None = None) -> int:
        """Put ``node_id`` in ``slot`` (or the first free one); return the
        slot.  Raises ValueError if that slot is taken or out of range."""
        if slot is None:
            slot = self.allocated.index(None)
        if not 0 <= slot < self.slots:
            raise ValueError(f"slot {slot} is out of range (0-{self.slots - 1})")
        if self.allocated[slot] is not None:
            raise ValueError(f"slot {slot} is held by node {self.allocated[slot]}")
        self.allocated[slot] = node_id
        return slot

    def free(self, node_id: str) -> int | None:
        """Free the slot of ``node_id``; its index, None if it held none."""
        if node_id not in self.allocated:
            return None
        slot = self.allocated.index(node_id)
        self.allocated[slot] = None
        self.last_used = time.monotonic()
        return slot

    def user_data(self, owner: str) -> str:
        """The backing node's ``user_data`` (a JSON string, as upstream)."""
        return json.dumps({"owner": owner, "label": self.label, "slots": self.slots,
                           "failed": self.failed, "launched": self.launched})

    @classmethod
    def from_user_data(cls, node_id: str, user_data: Any, owner: str) -> BackingNode | None:
        """The record a backing node's ``user_data`` describes, if it says
        ``owner`` owns it; None (logged at debug) for anything else.  The
        caller still checks that ``owner`` holds the node's lock: user
        data alone proves nothing."""
        if not isinstance(user_data, str):
            return None
        try:
            data = json.loads(user_data)
        except ValueError:
            return None
        if not isinstance(data, dict) or data.get("owner") != owner:
            return None
        label, slots = data.get("label"), data.get("slots")
        failed, launched = data.get("failed", False), data.get("launched", 0)
        if (not isinstance(label, str) or not isinstance(slots, int) or isinstance(slots, bool)
                or slots < 1 or not isinstance(failed, bool)
                or not isinstance(launched, (int, float)) or isinstance(launched, bool)):
            log.debug("Node %s: user_data names us as owner but is malformed: %r",
                      node_id, user_data)
            return None
        record = cls(label, slots, launched=float(launched))
        record.node_id = node_id
        record.failed = failed
        return record


class Holdings:
    """Every backing node (and pending backing request) of one metastatic
    provider, and the lock that guards them.

    It outlives the adapter: a provider replaced after a configuration
    change hands it to its successor (see :mod:`.provider`), so slots
    taken by launches still in flight on the old one are known to the new
    one, which would otherwise rebuild its view from ZooKeeper without
    them and could release a backing node under their feet.
    """

    def __init__(self) -> None:
        self.lock = threading.Lock()
        self.records: list[BackingNode] = []
        # Set once the records have been rebuilt from ZooKeeper.
        self.recovered = False
        self.recover_lock = threading.Lock()


def slot_of(node_id: str, driver_data: Any, backing: dict[str, BackingNode]
            ) -> tuple[BackingNode, int] | None:
    """The backing node and slot a metastatic node's ``driver_data``
    names, if that backing node is one of ``backing`` (by id); None
    (logged at debug when malformed) otherwise."""
    if not isinstance(driver_data, dict):
        if driver_data is not None:
            log.debug("Node %s: driver_data is not an object: %r", node_id, driver_data)
        return None
    backing_id, slot = driver_data.get("backing_node"), driver_data.get("slot")
    record = backing.get(backing_id) if isinstance(backing_id, str) else None
    if record is None:
        return None
    if not isinstance(slot, int) or isinstance(slot, bool):
        log.debug("Node %s: driver_data has no usable slot: %r", node_id, driver_data)
        return None
    return record, slot
