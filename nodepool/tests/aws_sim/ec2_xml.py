"""EC2's XML answers, written from botocore's own service model, so the
proxy's answers parse exactly as AWS's would."""

from __future__ import annotations

import datetime
import uuid
from typing import Any
from xml.sax.saxutils import escape

import botocore.session

NAMESPACE = "http://ec2.amazonaws.com/doc/2016-11-15/"
_model = botocore.session.get_session().get_service_model("ec2")


def _value(shape: Any, value: Any) -> str:
    if shape.type_name == "structure":
        return "".join(_element(member, shape.members[member], value[member])
                       for member in shape.members if value.get(member) is not None)
    if shape.type_name == "list":
        return "".join(f"<item>{_value(shape.member, item)}</item>" for item in value)
    if shape.type_name == "boolean":
        return "true" if value else "false"
    if shape.type_name == "timestamp" and isinstance(value, datetime.datetime):
        return value.strftime("%Y-%m-%dT%H:%M:%S.000Z")
    return escape(str(value))


def _element(member: str, shape: Any, value: Any) -> str:
    name = shape.serialization.get("name") or member
    return f"<{name}>{_value(shape, value)}</{name}>"


def response(operation: str, data: dict[str, Any]) -> bytes:
    """The XML body of a successful ``operation`` answering ``data``."""
    shape = _model.operation_model(operation).output_shape
    body = _value(shape, data) if shape is not None else ""
    return (f'<?xml version="1.0" encoding="UTF-8"?>\n<{operation}Response xmlns="{NAMESPACE}">'
            f"<requestId>{uuid.uuid4()}</requestId>{body}</{operation}Response>").encode()


def error(code: str, message: str) -> bytes:
    return (f'<?xml version="1.0" encoding="UTF-8"?>\n<Response><Errors><Error>'
            f"<Code>{escape(code)}</Code><Message>{escape(message)}</Message></Error></Errors>"
            f"<RequestID>{uuid.uuid4()}</RequestID></Response>").encode()


def block_device_mappings(mappings: list[dict[str, Any]]) -> str:
    """The ``blockDeviceMapping`` element content for an image."""
    shape = _model.shape_for("BlockDeviceMappingList")
    return _value(shape, mappings)
