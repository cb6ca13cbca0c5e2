"""API errors as the Kubernetes API server reports them: ``Status`` objects.

Every failure leaves the simulator as a ``kind: Status`` body with the
``reason`` and ``code`` a real server would use, so clients (and drivers)
see the same ``ApiException.status`` and can parse the same body.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

REASONS = {
    400: "BadRequest",
    401: "Unauthorized",
    403: "Forbidden",
    404: "NotFound",
    405: "MethodNotAllowed",
    409: "AlreadyExists",
    410: "Expired",
    415: "UnsupportedMediaType",
    422: "Invalid",
    429: "TooManyRequests",
    500: "InternalError",
    503: "ServiceUnavailable",
}


@dataclass
class Cause:
    """One field error of a 422 Invalid (``details.causes[]``)."""

    field: str
    reason: str
    message: str

    def text(self) -> str:
        return f"{self.field}: {self.message}"


def required(path: str) -> Cause:
    return Cause(path, "FieldValueRequired", "Required value")


def invalid(path: str, value: Any, detail: str) -> Cause:
    return Cause(path, "FieldValueInvalid", f"Invalid value: {_go_repr(value)}: {detail}")


def unsupported(path: str, value: Any, supported: list[str]) -> Cause:
    values = ", ".join(f'"{v}"' for v in supported)
    return Cause(path, "FieldValueNotSupported",
                 f"Unsupported value: {_go_repr(value)}: supported values: {values}")


def duplicate(path: str, value: Any) -> Cause:
    return Cause(path, "FieldValueDuplicate", f"Duplicate value: {_go_repr(value)}")


def forbidden(path: str, detail: str) -> Cause:
    return Cause(path, "FieldValueForbidden", f"Forbidden: {detail}")


def _go_repr(value: Any) -> str:
    if isinstance(value, str):
        return f'"{value}"'
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "true" if value else "false"
    return str(value)


@dataclass
class ApiError(Exception):
    """An error response; ``status_body()`` renders the ``Status`` object."""

    code: int
    message: str
    reason: str = ""
    details: dict[str, Any] = field(default_factory=dict)
    headers: dict[str, str] = field(default_factory=dict)

    def __post_init__(self) -> None:
        if not self.reason:
            self.reason = REASONS.get(self.code, "Unknown")
        super().__init__(self.message)

    def status_body(self) -> dict[str, Any]:
        body: dict[str, Any] = {
            "kind": "Status",
            "apiVersion": "v1",
            "metadata": {},
            "status": "Failure",
            "message": self.message,
            "reason": self.reason,
            "code": self.code,
        }
        if self.details:
            body["details"] = self.details
        return body


def _details(resource: str, group: str, name: str | None) -> dict[str, Any]:
    details: dict[str, Any] = {}
    if name:
        details["name"] = name
    if group:
        details["group"] = group
    details["kind"] = resource
    return details


def qualified(resource: str, group: str) -> str:
    """``pods`` or ``rolebindings.rbac.authorization.k8s.io``, as messages name them."""
    return f"{resource}.{group}" if group else resource


def not_found(resource: str, group: str, name: str) -> ApiError:
    return ApiError(404, f'{qualified(resource, group)} "{name}" not found',
                    details=_details(resource, group, name))


def already_exists(resource: str, group: str, name: str) -> ApiError:
    return ApiError(409, f'{qualified(resource, group)} "{name}" already exists',
                    details=_details(resource, group, name))


def conflict(resource: str, group: str, name: str) -> ApiError:
    return ApiError(
        409,
        f'Operation cannot be fulfilled on {qualified(resource, group)} "{name}": '
        "the object has been modified; please apply your changes to the latest "
        "version and try again",
        reason="Conflict",
        details=_details(resource, group, name),
    )


def forbidden_error(resource: str, group: str, name: str, why: str) -> ApiError:
    return ApiError(403, f'{qualified(resource, group)} "{name}" is forbidden: {why}',
                    details=_details(resource, group, name))


def internal_error(detail: str) -> ApiError:
    return ApiError(500, f"Internal error occurred: {detail}",
                    details={"causes": [{"message": detail}]})


def invalid_error(kind: str, group: str, name: str, causes: list[Cause]) -> ApiError:
    """422 Invalid; the message lists the causes the way the API server does."""
    what = f"{kind}.{group}" if group else kind
    if len(causes) == 1:
        text = causes[0].text()
    else:
        text = "[" + ", ".join(c.text() for c in causes) + "]"
    details: dict[str, Any] = {"name": name, "kind": kind}
    if group:
        details["group"] = group
    details["causes"] = [
        {"reason": c.reason, "message": c.message, "field": c.field} for c in causes
    ]
    return ApiError(422, f'{what} "{name}" is invalid: {text}', details=details)


def bad_request(message: str) -> ApiError:
    return ApiError(400, message)


def success_status(resource: str, group: str, name: str, uid: str | None) -> dict[str, Any]:
    """What DELETE answers for kinds whose store does not return the deleted object."""
    details = _details(resource, group, name)
    if uid:
        details["uid"] = uid
    return {"kind": "Status", "apiVersion": "v1", "metadata": {},
            "status": "Success", "details": details}
