"""``labelSelector`` and ``fieldSelector`` as the API server parses them.

Label selectors support the whole grammar (``a=b``, ``a==b``, ``a!=b``,
``a in (x,y)``, ``a notin (x)``, ``a``, ``!a``); field selectors support the
equality forms on the fields each resource indexes (see ``FIELDS`` in
resources.py).  A malformed selector is a 400, as on a real server.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from typing import Any

from nodepool.tests.k8s_sim.errors import ApiError

Matcher = Callable[[dict[str, str]], bool]

_KEY = re.compile(r"^([A-Za-z0-9][-A-Za-z0-9_.]*/)?[A-Za-z0-9]([-A-Za-z0-9_.]*[A-Za-z0-9])?$")
_VALUE = re.compile(r"^(([A-Za-z0-9][-A-Za-z0-9_.]*)?[A-Za-z0-9])?$")


def _split_requirements(text: str) -> list[str]:
    parts: list[str] = []
    current: list[str] = []
    depth = 0
    for ch in text:
        if ch == "(":
            depth += 1
        elif ch == ")":
            depth -= 1
        if ch == "," and depth == 0:
            parts.append("".join(current))
            current = []
        else:
            current.append(ch)
    parts.append("".join(current))
    return [p.strip() for p in parts if p.strip()]


def _bad_label(req: str, why: str) -> ApiError:
    return ApiError(400, f"unable to parse requirement: {why}: {req!r}")


def _check_key(key: str, req: str) -> str:
    if not _KEY.match(key) or len(key.rsplit("/", 1)[-1]) > 63:
        raise _bad_label(req, f"invalid label key {key!r}")
    return key


def _check_value(value: str, req: str) -> str:
    if len(value) > 63 or not _VALUE.match(value):
        raise _bad_label(req, f"invalid label value {value!r}")
    return value


def _requirement(req: str) -> Matcher:
    set_match = re.match(r"^(\S+)\s+(in|notin)\s*\((.*)\)$", req)
    if set_match:
        key = _check_key(set_match.group(1), req)
        values = {_check_value(v.strip(), req) for v in set_match.group(3).split(",")}
        if set_match.group(2) == "in":
            return lambda labels: labels.get(key) in values
        return lambda labels: labels.get(key) not in values
    for op in ("==", "!=", "="):
        if op in req:
            key, value = (s.strip() for s in req.split(op, 1))
            _check_key(key, req)
            _check_value(value, req)
            if op == "!=":
                return lambda labels: labels.get(key) != value
            return lambda labels: labels.get(key) == value
    if req.startswith("!"):
        key = _check_key(req[1:].strip(), req)
        return lambda labels: key not in labels
    key = _check_key(req, req)
    return lambda labels: key in labels


def label_matcher(text: str | None) -> Matcher:
    """A predicate over a label map; the empty selector matches everything."""
    if not text:
        return lambda labels: True
    requirements = [_requirement(r) for r in _split_requirements(text)]
    return lambda labels: all(r(labels) for r in requirements)


def field_matcher(text: str | None, supported: dict[str, Callable[[dict[str, Any]], Any]]
                  ) -> Callable[[dict[str, Any]], bool]:
    """A predicate over whole objects; ``supported`` maps field label to getter."""
    if not text:
        return lambda obj: True
    tests: list[Callable[[dict[str, Any]], bool]] = []
    for req in (r.strip() for r in text.split(",") if r.strip()):
        for op in ("!=", "==", "="):
            if op in req:
                key, value = (s.strip() for s in req.split(op, 1))
                break
        else:
            raise ApiError(400, f"invalid selector: '{text}'; can't understand '{req}'")
        getter = supported.get(key)
        if getter is None:
            raise ApiError(400, f'field label not supported: {key}')

        def test(obj: dict[str, Any], getter=getter, value=value, negate=op == "!=") -> bool:
            actual = getter(obj)
            actual = "" if actual is None else str(actual)
            return (actual != value) if negate else (actual == value)
        tests.append(test)
    return lambda obj: all(t(obj) for t in tests)
