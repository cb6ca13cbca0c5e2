"""Formatting operators' templates with the node request being served
(``dynamic-tags``, ``dynamic-instance-properties``...).

A template sees only what upstream's ``getSafeAttributes`` offers:
``{request.id}``, ``.labels``, ``.requestor``, ``.requestor_data``,
``.relative_priority``, ``.event_id``, ``.created_time`` and
``.tenant_name``; a field that reaches for a private attribute
(``{request.__class__}``) is refused, as it could walk from the request
into the whole process.
"""

from __future__ import annotations

import re
import string
from typing import Any

_PRIVATE_FIELD = re.compile(r"(^|\.)_")


class RequestView:
    """The template-visible attributes of a node request (None for a
    launch resumed without its request)."""

    def __init__(self, request: Any) -> None:
        self.id = getattr(request, "id", None)
        self.labels = list(getattr(request, "node_types", None) or [])
        self.requestor = getattr(request, "requestor", None)
        self.requestor_data = getattr(request, "requestor_data", None)
        self.relative_priority = getattr(request, "relative_priority", None)
        self.event_id = getattr(request, "event_id", None)
        self.created_time = getattr(request, "created_time", None)
        self.tenant_name = getattr(request, "tenant_name", None)


class _SafeFormatter(string.Formatter):
    def get_field(self, field_name: str, args: Any, kwargs: Any) -> Any:
        if _PRIVATE_FIELD.search(field_name):
            raise ValueError(f"field {field_name!r} names a private attribute")
        return super().get_field(field_name, args, kwargs)


_formatter = _SafeFormatter()


def format_with_request(template: str, request: Any) -> str:
    """``template`` with ``{request.<attribute>}`` fields filled in;
    raises (KeyError, AttributeError, ValueError...) when it cannot be."""
    return _formatter.format(str(template), request=RequestView(request))
