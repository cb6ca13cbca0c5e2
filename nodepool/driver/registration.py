"""Nodes that are registered, not launched: what a registering driver and
the framework exchange, and the bookkeeping that needs no ZooKeeper.

Some providers offer endpoints that exist already (static hosts): nothing
is launched, each endpoint instead gets a fixed number of READY node
records, one per *slot*, which are handed out, used, deleted and
registered again.  Such a provider sets ``Provider.registers_endpoints``
and implements the endpoint hooks declared on
:class:`nodepool.driver.Provider`; the framework's
:class:`nodepool.driver.registrar.Registrar` does the rest (when to look,
the records' slots, locks, retries with a backoff, logging).

A driver describes each endpoint with an :class:`EndpointSpec` and reports
an endpoint it must not offer by raising :class:`EndpointProblem` from
its check.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Hashable, Iterable
from dataclasses import dataclass, field
from typing import Any

from nodepool.zk import models
from nodepool.zk.models import Node

log = logging.getLogger("nodepool.driver.registration")

# Retry delays for an endpoint whose check fails.
INITIAL_BACKOFF = 1.0
MAX_BACKOFF = 30.0

# What an endpoint's health is before its first check.
UNKNOWN = "unknown"
# ... and after a successful one.
UP = "up"

# Records in these states no longer hold their slot: the endpoint is free
# for a new record as soon as one is marked for deletion (as upstream).
FREEING_STATES = (models.DELETING, models.DELETED)


@dataclass(frozen=True, eq=False)
class EndpointSpec:
    """One endpoint as the provider's configuration describes it.

    ``key`` identifies the endpoint: a record belongs to the endpoint whose
    key ``Provider.endpoint_key(record)`` returns, whichever configuration
    or process wrote it, so existing records are adopted, not duplicated.
    ``slots`` is how many records the endpoint keeps; ``description``
    names it for operators (logs, ``describe()``); ``config`` is the
    driver's own configuration object for it, for the driver's hooks.
    """

    key: Hashable
    pool: str
    slots: int
    description: str
    config: Any = field(default=None, repr=False)


class EndpointProblem(Exception):
    """The endpoint must not be offered now.  ``kind`` is a short word for
    the health state (``unreachable``, ``host-key-mismatch``); the message
    tells the operator what is wrong."""

    def __init__(self, kind: str, message: str) -> None:
        super().__init__(message)
        self.kind = kind


class EndpointHealth:
    """What was last learned about one endpoint and when to ask it again.

    Kept by the registrar per endpoint key, so a provider object that
    replaces another on a configuration change does not start by
    hammering an endpoint already known to be down.  Problems are logged
    when they start and when they end, not on every retry.
    """

    def __init__(self, description: str) -> None:
        self.description = description
        self.state = UNKNOWN
        self.reason: str | None = None
        self.backoff = 0.0
        self.next_try = 0.0

    def due(self, now: float | None = None) -> bool:
        return (time.monotonic() if now is None else now) >= self.next_try

    def record_ok(self) -> None:
        if self.state not in (UP, UNKNOWN):
            log.info("%s answers again; offering it", self.description)
        self.state = UP
        self.reason = None
        self.backoff = 0.0
        self.next_try = 0.0

    def record_problem(self, problem: EndpointProblem) -> None:
        """Back off; log only when the kind of problem changes."""
        if self.state != problem.kind:
            log.warning("%s is not offered: %s (retrying with a backoff of up to "
                        "%.0f s)", self.description, problem, MAX_BACKOFF)
        self.state = problem.kind
        self.reason = str(problem)
        self.backoff = min(MAX_BACKOFF, self.backoff * 2 if self.backoff else INITIAL_BACKOFF)
        self.next_try = time.monotonic() + self.backoff


@dataclass
class SlotView:
    """An endpoint's live records by slot; ``excess`` are records no slot
    can hold (the slot count was lowered, or duplicates)."""

    slots: list[Node | None]
    excess: list[Node] = field(default_factory=list)

    @property
    def empty(self) -> list[int]:
        return [i for i, node in enumerate(self.slots) if node is None]

    @property
    def records(self) -> list[Node]:
        return [node for node in self.slots if node is not None]


def slot_view(slots: int, nodes: Iterable[Node]) -> SlotView:
    """Place one endpoint's records into its ``slots``.

    Records being deleted do not count.  Records with a valid free slot
    number keep it; records without one (written by very old versions)
    take the first free slot; the rest are excess.  The order (oldest
    first) is the same in every process, so two launchers looking at the
    same records agree on which are excess.
    """
    view = SlotView([None] * max(slots, 0))
    unslotted = []
    for node in sorted(nodes, key=lambda n: (n.created_time or 0, n.id or "")):
        if node.state in FREEING_STATES:
            continue
        slot = node.slot
        if isinstance(slot, int) and 0 <= slot < len(view.slots) and view.slots[slot] is None:
            view.slots[slot] = node
        elif slot is None:
            unslotted.append(node)
        else:
            view.excess.append(node)
    for node in unslotted:
        if None in view.slots:
            view.slots[view.slots.index(None)] = node
        else:
            view.excess.append(node)
    return view


def is_free(node: Node) -> bool:
    """Whether a record may be rewritten or deregistered: READY, not
    allocated to a request, not locked."""
    return node.state == models.READY and not node.allocated_to and not node.locked


def new_record(fields: dict[str, Any], slot: int) -> Node:
    """A READY record for ``slot`` with the driver's ``fields``."""
    node = Node()
    node.state = models.READY
    # What upstream's new records carry until a driver says otherwise.
    node.node_properties = {}
    for key, value in fields.items():
        setattr(node, key, value)
    node.slot = slot
    return node


def apply_fields(node: Node, fields: dict[str, Any]) -> bool:
    """Bring ``node`` in line with ``fields``; True when something changed."""
    changed = False
    for key, value in fields.items():
        if getattr(node, key) != value:
            setattr(node, key, value)
            changed = True
    return changed
