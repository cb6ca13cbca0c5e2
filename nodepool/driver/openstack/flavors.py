"""Choosing a flavor for a label, shared by the OpenStack and fake drivers."""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

from nodepool.exceptions import RuntimeConfigurationException


def select_flavor(flavors: Iterable[Any], min_ram: int | None,
                  flavor_name: str | None) -> Any:
    """The flavor a label asks for.

    With ``min-ram``: the smallest flavor with at least that much RAM, among
    those whose name contains ``flavor-name`` when that is set too.  With
    only ``flavor-name``: the flavor of exactly that name (or id).
    """
    flavors = list(flavors)
    if min_ram is not None:
        candidates = [f for f in flavors if f.ram >= min_ram
                      and (flavor_name is None or flavor_name in f.name)]
        if not candidates:
            raise RuntimeConfigurationException(
                f"no flavor with at least {min_ram} MB RAM"
                + (f" whose name contains {flavor_name!r}" if flavor_name else ""))
        return sorted(candidates, key=lambda f: (f.ram, f.name))[0]
    for flavor in flavors:
        if flavor_name in (flavor.name, getattr(flavor, "id", None)):
            return flavor
    raise RuntimeConfigurationException(f"no flavor named {flavor_name!r}")
