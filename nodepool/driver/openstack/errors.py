"""Sorting OpenStack errors into what the launcher should do about them.

Operators' most common complaint about nodepool on OpenStack is a request
failed for an error that only meant "not now" (OPERATORS.md row 1).  So
every cloud error the driver sees passes through :func:`classify` once and
gets one of four kinds:

* ``quota``: the cloud refused for lack of quota; the request waits for
  room instead of failing (:class:`~nodepool.exceptions.QuotaException`).
* ``gone``: the resource does not exist (a delete is then done).
* ``transient``: worth trying again as is (5xx, 409, 429, timeouts, a
  cloud that does not answer).
* ``permanent``: the request itself is wrong or not allowed (other 4xx,
  a missing service endpoint); trying again unchanged will not help.
"""

from __future__ import annotations

import keystoneauth1.exceptions as ksa_exc
import openstack.exceptions as sdk_exc

from nodepool.exceptions import LaunchError, NotFound, QuotaException

QUOTA = "quota"
GONE = "gone"
TRANSIENT = "transient"
PERMANENT = "permanent"

# Statuses a retry may cure: conflicts with a resource in transition,
# request timeouts and rate limiting.
_RETRYABLE_4XX = {408, 409, 429}


def is_quota_message(text: str | None) -> bool:
    """Whether an error text (API answer or a server's fault) says quota.

    Nova answers ``Quota exceeded for cores: ...``; Neutron
    ``Quota exceeded for resources: ['floatingip']`` or ``No more ports
    ... number of ports exceeded``; a boot-from-volume server that Cinder
    refused ends in ERROR with ``VolumeSizeExceedsAvailableQuota``.
    """
    text = (text or "").lower()
    return ("quota exceeded" in text
            or "number of ports exceeded" in text
            or ("exceeds" in text and "quota" in text))


def http_status(exc: BaseException) -> int | None:
    """The HTTP status of a failed API call, None when there was no answer."""
    for attr in ("status_code", "http_status"):
        value = getattr(exc, attr, None)
        if isinstance(value, int):
            return value
    return None


def classify(exc: BaseException) -> str:
    """The kind (``quota``, ``gone``, ``transient`` or ``permanent``) of an
    error raised by openstacksdk or keystoneauth."""
    if isinstance(exc, QuotaException):
        return QUOTA
    if isinstance(exc, NotFound):
        return GONE
    status = http_status(exc)
    if status in (400, 403, 409, 413) and is_quota_message(str(exc)):
        return QUOTA
    if status == 404 or isinstance(exc, sdk_exc.NotFoundException):
        return GONE
    if isinstance(exc, (ksa_exc.ConnectionError, sdk_exc.ResourceTimeout, TimeoutError,
                        ConnectionError)):
        return TRANSIENT
    if isinstance(exc, ksa_exc.EndpointNotFound):
        return PERMANENT
    if status is None:
        # An SDK-side failure without an HTTP answer (a dropped
        # connection mid-response, an unexpected body): try again.
        return TRANSIENT
    if status >= 500 or status in _RETRYABLE_4XX:
        return TRANSIENT
    return PERMANENT


class CloudError(LaunchError):
    """A cloud API call failed; ``kind`` is :func:`classify`'s verdict.

    Counted as ``error.unknown`` in ``nodepool.launch.*`` whatever its
    kind, as upstream counts a failed API call: the metric keys are
    upstream's exception kinds (quota, server status, timeouts), which
    :func:`translate` and the adapter raise as their own exceptions.
    """

    statsd_key = "error.unknown"

    def __init__(self, message: str, kind: str) -> None:
        super().__init__(message)
        self.kind = kind


def translate(exc: BaseException, what: str, cloud: str) -> Exception:
    """The project exception to raise for ``exc`` raised while doing
    ``what`` in ``cloud``, with the operator's next step where there is
    one."""
    kind = classify(exc)
    if kind == QUOTA:
        return QuotaException(f"{what} in {cloud}: {exc}")
    if kind == GONE:
        return NotFound(f"{what} in {cloud}: {exc}")
    status = http_status(exc)
    hint = ""
    if status == 401:
        hint = f" (check the credentials of cloud {cloud!r} in clouds.yaml)"
    elif status == 403:
        hint = f" (the account of cloud {cloud!r} is not allowed to do this)"
    elif isinstance(exc, ksa_exc.EndpointNotFound):
        hint = f" (cloud {cloud!r} has no such service in its catalog)"
    return CloudError(f"{what} in {cloud} failed ({kind}): {exc}{hint}", kind)
