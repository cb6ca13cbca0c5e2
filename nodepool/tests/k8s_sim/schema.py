"""Decoding request bodies the way the API server does.

The API server decodes JSON into typed Go structs: unknown fields are
dropped (and, depending on ``fieldValidation``, ignored, warned about or
refused), JSON nulls become absent fields, values of the wrong JSON type are
a 400, and resource quantities are canonicalized.  The simulator does the
same against a schema.

For built-in kinds the schema is the OpenAPI model set shipped inside the
``kubernetes`` client (``openapi_types`` / ``attribute_map`` of
``kubernetes.client.models``), i.e. the API of the Kubernetes release that
client was generated for, so no field list is maintained here by hand.  The
OpenShift kinds, which the client does not ship, are described in
``EXTRA_MODELS``.
"""

from __future__ import annotations

import base64
import binascii
import re
from dataclasses import dataclass, field
from typing import Any

import kubernetes.client.models as k8s_models

from nodepool.tests.k8s_sim import quantity
from nodepool.tests.k8s_sim.errors import ApiError

# Hand-written models: json key -> type string in the client's notation.
EXTRA_MODELS: dict[str, dict[str, str]] = {
    "ProjectRequest": {
        "apiVersion": "str", "kind": "str", "metadata": "V1ObjectMeta",
        "displayName": "str", "description": "str",
    },
    "Project": {
        "apiVersion": "str", "kind": "str", "metadata": "V1ObjectMeta",
        "spec": "ProjectSpec", "status": "ProjectStatus",
    },
    "ProjectSpec": {"finalizers": "List[str]"},
    "ProjectStatus": {"phase": "str", "conditions": "List[V1NamespaceCondition]"},
    # authorization.openshift.io/v1 RoleBinding
    "OpenShiftRoleBinding": {
        "apiVersion": "str", "kind": "str", "metadata": "V1ObjectMeta",
        "userNames": "List[str]", "groupNames": "List[str]",
        "subjects": "List[V1ObjectReference]", "roleRef": "V1ObjectReference",
    },
}

# Fields holding resource.Quantity values: numbers are accepted there and the
# stored value is canonical.
QUANTITY_FIELDS = {
    ("V1ResourceRequirements", "limits"),
    ("V1ResourceRequirements", "requests"),
    ("V1ResourceQuotaSpec", "hard"),
    ("V1ResourceQuotaStatus", "hard"),
    ("V1ResourceQuotaStatus", "used"),
    ("V1PodSpec", "overhead"),
    ("V1EmptyDirVolumeSource", "sizeLimit"),
}

_LIST = re.compile(r"^List\[(.+)\]$")
_DICT = re.compile(r"^Dict\[str, (.+)\]$")
_GO_TYPES = {"str": "string", "int": "int64", "bool": "bool", "float": "float64",
             "datetime": "Time", "bytes": "[]uint8"}


def model_fields(model: str) -> dict[str, str] | None:
    """json key -> type string for a model name, or None if it is not a model."""
    if model in EXTRA_MODELS:
        return EXTRA_MODELS[model]
    cls = getattr(k8s_models, model, None)
    types = getattr(cls, "openapi_types", None)
    names = getattr(cls, "attribute_map", None)
    if not isinstance(types, dict) or not isinstance(names, dict):
        return None
    return {names[attr]: type_ for attr, type_ in types.items()}


@dataclass
class Decoded:
    """The decoded object and what decoding found along the way."""

    obj: dict[str, Any]
    unknown: list[str] = field(default_factory=list)
    duplicates: list[str] = field(default_factory=list)


class _Decoder:
    def __init__(self, kind: str, version: str) -> None:
        self.kind = kind
        self.version = version
        self.unknown: list[str] = []

    def type_error(self, value: Any, path: str, type_: str) -> ApiError:
        json_type = {bool: "bool", str: "string", list: "array", dict: "object"}.get(
            type(value), "number")
        go_type = _GO_TYPES.get(type_, type_)
        return ApiError(
            400,
            f'{self.kind} in version "{self.version}" cannot be handled as a {self.kind}: '
            f"json: cannot unmarshal {json_type} into Go struct field {path} of type {go_type}",
        )

    def value(self, value: Any, type_: str, path: str, quantity_field: bool = False) -> Any:
        if type_ == "object":
            return value
        m = _LIST.match(type_)
        if m:
            if not isinstance(value, list):
                raise self.type_error(value, path, type_)
            return [self.value(v, m.group(1), f"{path}[{i}]", quantity_field)
                    for i, v in enumerate(value) if v is not None]
        m = _DICT.match(type_)
        if m:
            if not isinstance(value, dict):
                raise self.type_error(value, path, type_)
            return {k: self.value(v, m.group(1), f"{path}[{k}]", quantity_field)
                    for k, v in value.items() if v is not None}
        if type_ == "str":
            if quantity_field:
                return quantity.canonicalize(value)
            if not isinstance(value, str):
                raise self.type_error(value, path, type_)
            return value
        if type_ == "int":
            if isinstance(value, bool) or not isinstance(value, int):
                raise self.type_error(value, path, type_)
            return value
        if type_ == "float":
            if isinstance(value, bool) or not isinstance(value, (int, float)):
                raise self.type_error(value, path, type_)
            return value
        if type_ == "bool":
            if not isinstance(value, bool):
                raise self.type_error(value, path, type_)
            return value
        if type_ == "datetime":
            if not isinstance(value, str):
                raise self.type_error(value, path, type_)
            return value
        if type_ == "bytes":
            if not isinstance(value, str):
                raise self.type_error(value, path, type_)
            try:
                base64.b64decode(value, validate=True)
            except (binascii.Error, ValueError) as e:
                raise ApiError(
                    400,
                    f'{self.kind} in version "{self.version}" cannot be handled as a '
                    f"{self.kind}: illegal base64 data at input byte 0 ({e})",
                ) from e
            return value
        fields = model_fields(type_)
        if fields is None:
            return value
        if not isinstance(value, dict):
            raise self.type_error(value, path, type_)
        return self.model(value, type_, fields, path)

    def model(self, value: dict[str, Any], model: str, fields: dict[str, str],
              path: str) -> dict[str, Any]:
        out: dict[str, Any] = {}
        for key, item in value.items():
            sub = f"{path}.{key}" if path else key
            type_ = fields.get(key)
            if type_ is None:
                self.unknown.append(sub)
                continue
            if item is None:
                continue
            out[key] = self.value(item, type_, sub, (model, key) in QUANTITY_FIELDS)
        return out


def decode(body: dict[str, Any], model: str, kind: str, version: str,
           duplicates: list[str] | None = None) -> Decoded:
    """Decode ``body`` as ``model``; raises ApiError(400) on type errors."""
    decoder = _Decoder(kind, version)
    fields = model_fields(model)
    if fields is None:  # pragma: no cover - a programming error in resources.py
        raise ApiError(500, f"no schema for {model}")
    obj = decoder.model(body, model, fields, "")
    return Decoded(obj, decoder.unknown, list(duplicates or []))


def apply_field_validation(decoded: Decoded, mode: str | None) -> list[str]:
    """Strict: 400 on unknown or duplicate fields; Warn (the default): the
    warnings to send; Ignore: nothing."""
    mode = mode or "Warn"
    if mode not in ("Ignore", "Warn", "Strict"):
        raise ApiError(400, f'fieldValidation must be one of "Ignore", "Warn", or "Strict", '
                            f'got "{mode}"')
    problems = [f'unknown field "{p}"' for p in decoded.unknown]
    problems += [f'duplicate field "{p}"' for p in decoded.duplicates]
    if not problems or mode == "Ignore":
        return []
    if mode == "Strict":
        raise ApiError(400, "strict decoding error: " + ", ".join(problems))
    return problems
