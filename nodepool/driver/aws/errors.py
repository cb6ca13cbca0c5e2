"""Sorting AWS errors into what the launcher should do about them.

Every boto3 error the driver sees passes through :func:`translate` once:

* quota (``VcpuLimitExceeded``, ``InstanceLimitExceeded``, ...): the
  request waits for room (:class:`~nodepool.exceptions.QuotaException`);
* capacity (``InsufficientInstanceCapacity``, ...): AWS has none of this
  instance type in the zone right now; the request waits and the node is
  launched again later, like a quota refusal
  (:class:`~nodepool.exceptions.CapacityException`);
* throttled (``RequestLimitExceeded``, ``Throttling``, ...): boto3
  already retried; the caller slows down and tries the same step again
  (:class:`Throttled`), it never fails a launch for it;
* gone (``InvalidInstanceID.NotFound``, ...): a delete is then done
  (:class:`~nodepool.exceptions.NotFound`);
* anything else: :class:`AwsError`, a failed attempt that a retry may cure,
  with the operator's next step where there is one.
"""

from __future__ import annotations

import botocore.exceptions

from nodepool.exceptions import CapacityException, LaunchError, NotFound, QuotaException

QUOTA_CODES = frozenset({
    "InstanceLimitExceeded", "VcpuLimitExceeded", "VolumeLimitExceeded",
    "HostLimitExceeded", "MaxSpotInstanceCountExceeded", "MaxSpotFleetRequestCountExceeded",
    "InsufficientFreeAddressesInSubnet", "AddressLimitExceeded", "NetworkInterfaceLimitExceeded",
    "ResourceLimitExceeded",
})
CAPACITY_CODES = frozenset({
    "InsufficientInstanceCapacity", "InsufficientHostCapacity", "InsufficientCapacity",
    "InsufficientReservedInstanceCapacity", "SpotMaxPriceTooLow",
})
THROTTLE_CODES = frozenset({
    "RequestLimitExceeded", "Throttling", "ThrottlingException", "ThrottledException",
    "RequestThrottled", "RequestThrottledException", "TooManyRequestsException",
    "SlowDown", "EC2ThrottledException", "BandwidthLimitExceeded", "PriorRequestNotComplete",
    "ProvisionedThroughputExceededException",
})
NOT_FOUND_CODES = frozenset({
    "InvalidInstanceID.NotFound", "InvalidAMIID.NotFound", "InvalidAMIID.Unavailable",
    "InvalidSnapshot.NotFound", "InvalidVolume.NotFound", "InvalidHostId.NotFound",
    "InvalidHostID.NotFound", "NoSuchKey", "NoSuchBucket", "ResourceNotFoundException",
    "InvalidLaunchTemplateName.NotFoundException",
})
DENIED_CODES = frozenset({
    "AccessDenied", "AccessDeniedException", "UnauthorizedOperation", "AuthFailure",
    "UnrecognizedClientException", "InvalidClientTokenId", "SignatureDoesNotMatch",
    "ExpiredToken", "ExpiredTokenException",
})


class Throttled(LaunchError):
    """AWS asked us to slow down (after boto3's own retries)."""


class AwsError(LaunchError):
    """An AWS API call failed for a reason a retry may cure."""

    statsd_key = "error.unknown"

    def __init__(self, message: str, code: str | None) -> None:
        super().__init__(message)
        self.code = code


def error_code(exc: BaseException) -> str | None:
    """The AWS error code of a failed call (None when AWS did not answer)."""
    if isinstance(exc, botocore.exceptions.ClientError):
        code = exc.response.get("Error", {}).get("Code")
        return str(code) if code is not None else None
    return None


def is_throttle(exc: BaseException) -> bool:
    return isinstance(exc, Throttled) or error_code(exc) in THROTTLE_CODES


def is_denied(exc: BaseException) -> bool:
    return error_code(exc) in DENIED_CODES


def is_not_found(exc: BaseException) -> bool:
    return isinstance(exc, NotFound) or error_code(exc) in NOT_FOUND_CODES


def translate(exc: BaseException, what: str, provider: str) -> Exception:
    """The project exception to raise for ``exc``, raised by boto3 while
    doing ``what`` for ``provider``."""
    if isinstance(exc, (QuotaException, NotFound, Throttled, AwsError)):
        return exc  # type: ignore[return-value]
    code = error_code(exc)
    message = f"{what} in {provider}: {exc}"
    if code in QUOTA_CODES:
        return QuotaException(message)
    if code in CAPACITY_CODES:
        return CapacityException(message)
    if code in THROTTLE_CODES:
        return Throttled(message)
    if code in NOT_FOUND_CODES:
        return NotFound(message)
    hint = ""
    if isinstance(exc, botocore.exceptions.NoCredentialsError):
        hint = (" (no AWS credentials found: set the provider's profile-name, or give the "
                "daemon credentials through the environment, ~/.aws or an instance role)")
    elif isinstance(exc, botocore.exceptions.ProfileNotFound):
        hint = " (fix the provider's profile-name or add the profile to ~/.aws/config)"
    elif code in DENIED_CODES:
        hint = (" (the account's credentials or IAM policy do not allow this; see the "
                "IAM permissions the AWS driver needs in the documentation)")
    elif code == "InvalidParameterValue" or code == "InvalidParameterCombination":
        hint = " (check the label's settings against what EC2 accepts)"
    return AwsError(f"{message}{hint}", code)
