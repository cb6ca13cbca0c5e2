"""A label's ``max-servers``: nodes of one label across every provider.

A top-level label may set ``max-servers`` (ours; upstream only has it on
pools).  Every node record carrying the label counts, whatever its state,
provider or pool (as a pool's ``max-servers`` counts every record of the
pool), and so does every node a pool worker of this launcher has decided
to launch whose record the node cache does not show yet.  A request whose
new nodes would take a label over its cap waits; one asking for more
nodes of a label than its cap is declined everywhere.  Handing out ready
nodes adds none, so it is never held back.

Why a ledger here and not only the node cache's count: a pool worker
decides to launch before the node record exists, and the pools of all
providers run in parallel.  Two pools of this launcher looking at the
same count could both take the last slot.  :meth:`LabelCaps.claim` checks
and takes slots under one lock for the whole launcher, and each taken
slot (a :class:`LabelClaim`) counts until the cache has seen the launch's
record (which then counts instead), or until it is given back.

Several launchers: each keeps its own claims, so two launchers deciding
within the moment it takes one's new record to reach the other's cache
(milliseconds, normally) can both take the last slot.  The cap is then
overshot by at most the nodes decided in that window, and no new node is
launched until the count is back under the cap.  Launchers serving the
same pool do not race: they already take turns on that pool's capacity
decisions (see ``NodePool.pool_coordination``).
"""

from __future__ import annotations

import logging
import math
import threading
import time
from collections import Counter
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from typing import Any

from nodepool.driver.launch import LaunchHandle
from nodepool.zk.node_index import NodeIndex

log = logging.getLogger("nodepool.LabelCaps")

# A launched claim whose record the cache never showed (created and gone
# between two looks, with no later record since) stops counting after
# this long (as nodepool.driver.quota_ledger's reservations).
CLAIM_TTL = 60.0


@dataclass(eq=False)
class LabelClaim:
    """One node of a capped label that a pool decided to launch."""

    label: str
    # The launch, once started: the claim ends when the cache has seen
    # its record (or the launch ended without making one).
    launch: LaunchHandle | None = None
    # When the ledger first saw the launch's record made (monotonic).
    recorded_at: float | None = None


class LabelCaps:
    """Every capped label's count, and the slots this launcher took.

    ``labels`` returns the configured labels (re-read on every call, so a
    reload takes effect at once); ``on_freed(labels)`` is called when
    claims are given back, so that pools waiting for those labels look
    again.
    """

    def __init__(self, index: NodeIndex, labels: Callable[[], Mapping[str, Any]],
                 on_freed: Callable[[set[str]], None] | None = None) -> None:
        self._index = index
        self._labels = labels
        self._on_freed = on_freed
        self._lock = threading.Lock()
        self._claims: set[LabelClaim] = set()
        # The capped labels of the configuration last seen (a reload
        # replaces the mapping): asked for every request a pool looks at.
        self._capped_of: tuple[Mapping[str, Any] | None, dict[str, float]] = (None, {})

    # Configuration --------------------------------------------------------

    def cap(self, label: str) -> float:
        """The label's ``max-servers`` (``inf``: none)."""
        config = self._labels().get(label)
        return math.inf if config is None else config.max_servers

    def capped(self) -> dict[str, float]:
        """Labels with a cap, and their caps (do not change the result)."""
        labels = self._labels()
        source, capped = self._capped_of
        if source is not labels:
            capped = {name: label.max_servers for name, label in labels.items()
                      if label.max_servers != math.inf}
            self._capped_of = (labels, capped)
        return capped

    def too_large(self, labels: Iterable[str]) -> str | None:
        """Why a request for ``labels`` can never be served under the
        caps (it asks for more nodes of a label than its cap), or None."""
        for label, count in sorted(Counter(labels).items()):
            cap = self.cap(label)
            if count > cap:
                return (f"it asks for {count} nodes of label {label}, more than the "
                        f"label's max-servers ({cap:g})")
        return None

    # Counting ---------------------------------------------------------------

    def in_use(self, label: str) -> int:
        """Nodes of ``label`` now: records in any state plus slots this
        launcher took whose record is not in the cache yet."""
        with self._lock:
            return self._in_use_locked(label)

    def room(self, label: str) -> float:
        """How many more nodes of ``label`` may be launched now (``inf``:
        no cap)."""
        cap = self.cap(label)
        if cap == math.inf:
            return math.inf
        return max(0, cap - self.in_use(label))

    def _in_use_locked(self, label: str) -> int:
        # Pending first, the count second: a record the cache shows in
        # between is then counted twice (briefly too cautious), never
        # missed.
        pending = sum(1 for claim in self._current_claims() if claim.label == label)
        return pending + self._index.label_count(label)

    def _current_claims(self) -> set[LabelClaim]:
        now = time.monotonic()
        ended = set()
        for claim in self._claims:
            launch = claim.launch
            if launch is None or not launch.record_created.is_set():
                continue
            node_id = launch.node.id
            if node_id is None:
                ended.add(claim)  # the record was never made
            elif self._index.seen_past(str(node_id)):
                ended.add(claim)
            elif claim.recorded_at is None:
                claim.recorded_at = now
            elif now - claim.recorded_at > CLAIM_TTL:
                ended.add(claim)
        self._claims -= ended
        return self._claims

    # Taking and giving back -------------------------------------------------

    def claim(self, labels: Iterable[str],
              held: Counter[str] | None = None) -> list[LabelClaim] | None:
        """Take one slot per entry of ``labels`` that is capped, if every
        one fits (with ``held`` more of each taken as spoken for); None
        when one does not (nothing is taken then)."""
        labels = list(labels)
        if not labels:
            return []
        caps = self.capped()
        wanted = Counter(label for label in labels if label in caps)
        if not wanted:
            return []
        held = held or Counter()
        with self._lock:
            for label, count in wanted.items():
                if self._in_use_locked(label) + held[label] + count > caps[label]:
                    return None
            claims = [LabelClaim(label) for label, count in wanted.items()
                      for _ in range(count)]
            self._claims.update(claims)
        return claims

    def launched(self, claim: LabelClaim, launch: LaunchHandle) -> None:
        """The claimed node is being launched by ``launch``: the claim
        ends once the cache shows its record."""
        with self._lock:
            claim.launch = launch

    def release(self, claims: Iterable[LabelClaim]) -> None:
        """Give back claims whose nodes will not be launched."""
        freed = set()
        with self._lock:
            for claim in claims:
                if claim in self._claims:
                    self._claims.discard(claim)
                    freed.add(claim.label)
        if freed and self._on_freed is not None:
            try:
                self._on_freed(freed)
            except Exception:
                log.exception("Could not wake the pools waiting for %s", sorted(freed))

    def launch_ended(self, launch: LaunchHandle) -> None:
        """A launch ended; if it never made a record, its slot is free at
        once (a record, while it lasts, counts through the cache)."""
        if launch.node.id is not None:
            return
        with self._lock:
            claims = [c for c in self._claims if c.launch is launch]
        self.release(claims)
