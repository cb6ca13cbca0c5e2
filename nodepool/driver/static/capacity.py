"""How much of a request a set of static hosts could ever serve at once.

A static pool cannot launch, so a request is only worth waiting for if
its labels can be spread over distinct slots of hosts that carry them.
With multi-label hosts that is a matching problem: ``[a, b]`` fits one
host labelled ``a b`` with two slots, but not one with a single slot.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterable


def max_assignable(labels: Iterable[str], hosts: Iterable[tuple[list[str], int]]) -> int:
    """The largest number of ``labels`` (a multiset) that can be given
    distinct slots, where ``hosts`` yields (labels of the host, slots).

    Augmenting paths over a tiny flow network: label -> host -> slot
    capacity.  Requests and pools are small, so clarity wins over speed.
    """
    wanted = Counter(labels)
    host_list = [(set(h_labels), slots) for h_labels, slots in hosts if slots > 0]
    # flow[label][host index]: how many of that label the host serves.
    flow: dict[str, Counter[int]] = {label: Counter() for label in wanted}
    used = Counter[int]()

    def augment(label: str, seen: set[int]) -> bool:
        for index, (h_labels, slots) in enumerate(host_list):
            if label not in h_labels or index in seen:
                continue
            seen.add(index)
            if used[index] < slots:
                used[index] += 1
                flow[label][index] += 1
                return True
            # The host is full: move one of its other labels elsewhere.
            for other, per_host in flow.items():
                if per_host[index] and augment_from(other, index, seen):
                    used[index] += 1
                    flow[label][index] += 1
                    return True
        return False

    def augment_from(label: str, leaving: int, seen: set[int]) -> bool:
        flow[label][leaving] -= 1
        used[leaving] -= 1
        if augment(label, seen):
            return True
        flow[label][leaving] += 1
        used[leaving] += 1
        return False

    served = 0
    for label, count in wanted.items():
        for _ in range(count):
            if augment(label, set()):
                served += 1
    return served
