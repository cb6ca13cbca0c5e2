"""Every OpenStack error gets one verdict: quota, gone, transient or permanent."""

from __future__ import annotations

import keystoneauth1.exceptions as ksa_exc
import openstack.exceptions as sdk_exc
import pytest

from nodepool.driver.openstack.errors import (
    GONE,
    PERMANENT,
    QUOTA,
    TRANSIENT,
    CloudError,
    classify,
    translate,
)
from nodepool.exceptions import NotFound, QuotaException


def http(status: int, message: str = "") -> sdk_exc.HttpException:
    return sdk_exc.HttpException(message=message, details=message, http_status=status)


@pytest.mark.parametrize("exc, kind", [
    (http(403, "Quota exceeded for instances: Requested 1, but already used 20 of 20"),
     QUOTA),
    (http(409, "Quota exceeded for resources: ['floatingip']."), QUOTA),
    (http(400, "No more ports: Maximum number of ports exceeded"), QUOTA),
    (http(403, "Policy doesn't allow os_compute_api:servers:create"), PERMANENT),
    (http(404, "Instance x could not be found."), GONE),
    (http(400, "Invalid input for field/attribute name."), PERMANENT),
    (http(401, "The request you have made requires authentication."), PERMANENT),
    (http(500, "Unexpected API Error."), TRANSIENT),
    (http(503, "Service Unavailable"), TRANSIENT),
    (http(409, "Cannot 'delete' instance while it is in task_state spawning"), TRANSIENT),
    (http(429, "Too Many Requests"), TRANSIENT),
    (ksa_exc.ConnectFailure("Unable to establish connection"), TRANSIENT),
    (ksa_exc.ConnectTimeout("timed out"), TRANSIENT),
    (sdk_exc.ResourceTimeout("Timeout waiting"), TRANSIENT),
    (ksa_exc.EndpointNotFound("no volume endpoint"), PERMANENT),
    (QuotaException("out of cores"), QUOTA),
    (NotFound("already gone"), GONE),
])
def test_classify(exc, kind):
    assert classify(exc) == kind


def test_translate_gives_project_exceptions_with_next_steps():
    assert isinstance(translate(http(403, "Quota exceeded for cores"), "creating", "c"),
                      QuotaException)
    assert isinstance(translate(http(404, "gone"), "deleting", "c"), NotFound)
    error = translate(http(401, "auth required"), "listing flavors", "mycloud")
    assert isinstance(error, CloudError) and error.kind == PERMANENT
    assert "credentials of cloud 'mycloud' in clouds.yaml" in str(error)
    assert translate(http(502, "bad gateway"), "x", "c").kind == TRANSIENT
