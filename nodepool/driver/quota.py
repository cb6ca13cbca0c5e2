"""Resource arithmetic for quota decisions.

A ``QuotaInformation`` is a bag of named resources (``instances``,
``cores``, ``ram``, ``volumes``, ``volume-gb``, or anything a driver or a
tenant limit names).  Limits missing from a bag are unlimited; usage
missing from a bag is zero.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping
from typing import Any


class QuotaInformation:
    """Named resource amounts with add/subtract and a "does it fit" test."""

    def __init__(self, resources: Mapping[str, float] | None = None, **kw: float) -> None:
        self.resources: dict[str, float] = {}
        for source in (resources or {}, kw):
            for key, value in source.items():
                if value is not None:
                    self.resources[key] = value

    @classmethod
    def for_limits(cls, **limits: float | None) -> QuotaInformation:
        """Limits where None or a negative value mean "no limit"."""
        return cls({k: (math.inf if v is None or v < 0 else v) for k, v in limits.items()})

    def copy(self) -> QuotaInformation:
        return QuotaInformation(dict(self.resources))

    def get(self, key: str, default: float = 0) -> float:
        return self.resources.get(key, default)

    def add(self, other: QuotaInformation) -> QuotaInformation:
        for key, value in other.resources.items():
            self.resources[key] = self.resources.get(key, 0) + value
        return self

    def subtract(self, other: QuotaInformation) -> QuotaInformation:
        """Subtract usage from limits (missing limit keys stay unlimited)."""
        for key, value in other.resources.items():
            if key in self.resources:
                self.resources[key] -= value
        return self

    def multiply(self, factor: float) -> QuotaInformation:
        return QuotaInformation({k: v * factor for k, v in self.resources.items()})

    def fits(self, need: QuotaInformation) -> bool:
        """Whether ``need`` fits into these remaining limits."""
        return all(need.get(k) <= v for k, v in self.resources.items()
                   if k in need.resources)

    def non_negative(self) -> bool:
        return all(v >= 0 for v in self.resources.values())

    def min_with(self, other: QuotaInformation) -> QuotaInformation:
        """Per-key minimum of two limit sets."""
        keys = set(self.resources) | set(other.resources)
        return QuotaInformation({k: min(self.get(k, math.inf), other.get(k, math.inf))
                                 for k in keys})

    def to_dict(self) -> dict[str, Any]:
        return {k: (int(v) if float(v).is_integer() else v)
                for k, v in self.resources.items() if v != math.inf}

    @classmethod
    def total(cls, items: Iterable[QuotaInformation]) -> QuotaInformation:
        out = cls()
        for item in items:
            out.add(item)
        return out

    def __repr__(self) -> str:
        return f"QuotaInformation({self.resources})"

    def __eq__(self, other: object) -> bool:
        return isinstance(other, QuotaInformation) and self.resources == other.resources

    __hash__ = None  # type: ignore[assignment]
