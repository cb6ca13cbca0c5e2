"""What an error from the API server means for a launch.

The kubernetes client raises :class:`kubernetes.client.ApiException` for
every answer that is not a success (its body is the server's ``Status``
object), urllib3's errors for connection problems and timeouts, and
pydantic's ``ValidationError`` for a request body its models refuse
before anything is sent.  For a launch these become:

* a refusal by a ResourceQuota ("exceeded quota"): QuotaException, so the
  request waits instead of failing;
* a passing problem (connection, timeout, 429, 5xx): the same call is
  tried again a few times before the attempt fails;
* anything else (403 Forbidden, 404, 422 Invalid...): the attempt fails
  with the server's message and what to do about it.
"""

from __future__ import annotations

import json

import urllib3
from kubernetes.client.exceptions import ApiException

from nodepool.exceptions import LaunchError

# Statuses worth asking again: timeouts, throttling, server trouble.
TRANSIENT_STATUSES = frozenset({0, 408, 429, 500, 502, 503, 504})


class ApiCallError(LaunchError):
    """An API call failed for a reason a new attempt may cure (or not:
    the message says)."""

    statsd_key = "error.unknown"


def status(error: BaseException) -> int | None:
    """The HTTP status of an ApiException (0: no answer), else None."""
    if isinstance(error, ApiException):
        return int(error.status or 0)
    return None


def message(error: BaseException) -> str:
    """The server's own words for an error (its Status message), or the
    exception's."""
    if isinstance(error, ApiException):
        text = None
        if error.body:
            try:
                body = json.loads(error.body)
            except (TypeError, ValueError):
                body = None
            if isinstance(body, dict):
                text = body.get("message")
        return f"{error.status} {error.reason}: {text or error.body or ''}".rstrip(": ")
    return f"{type(error).__name__}: {error}"


def is_transient(error: BaseException) -> bool:
    """Whether asking again soon may succeed."""
    if isinstance(error, ApiException):
        return status(error) in TRANSIENT_STATUSES
    return isinstance(error, (urllib3.exceptions.HTTPError, ConnectionError, TimeoutError))


def is_quota(error: BaseException) -> bool:
    """A refusal by the cluster's quota (ResourceQuota admission)."""
    return status(error) == 403 and "exceeded quota" in message(error).lower()


def is_api_error(error: BaseException) -> bool:
    """Whether ``error`` came from talking to the API server."""
    return isinstance(error, ApiException) or is_transient(error)


def hint(error: BaseException) -> str:
    """What the operator can do about ``error``."""
    code = status(error)
    if code == 401:
        return " (the credentials of the provider's context were refused: renew them)"
    if code == 403:
        return (" (the account of the provider's context lacks a permission: see the "
                "RBAC section of the driver's documentation)")
    if code == 422:
        return " (the cluster refused the object: check the label's settings)"
    return ""
