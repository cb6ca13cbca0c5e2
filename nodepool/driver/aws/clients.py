"""boto3 clients for one provider: its ``profile-name`` (or the standard
credential chain: environment, ``~/.aws``, instance role...) in its
``region-name``.

Made on first use, not when the provider starts: a profile that does not
exist yet, or credentials that come later, make the first call fail (and
be retried), not the launcher.  Endpoints are boto3's own, so the usual
settings (``AWS_ENDPOINT_URL``, ``endpoint_url`` in ``~/.aws/config``)
point the driver at another endpoint without anything here knowing.
Credentials stay inside boto3: nothing here logs them.
"""

from __future__ import annotations

import threading
from typing import Any

import boto3
import botocore.config

from nodepool.version import version_string

# boto3 retries throttled and failed calls a few times with back-off
# before the driver sees the error.
RETRIES = {"mode": "standard", "max_attempts": 3}
CONNECT_TIMEOUT = 10
READ_TIMEOUT = 60


class AwsClients:
    def __init__(self, region_name: str, profile_name: str | None) -> None:
        self.region_name = region_name
        self.profile_name = profile_name
        self._lock = threading.Lock()
        self._session: boto3.Session | None = None
        self._clients: dict[str, Any] = {}

    def session(self) -> boto3.Session:
        with self._lock:
            if self._session is None:
                self._session = boto3.Session(region_name=self.region_name,
                                              profile_name=self.profile_name)
            return self._session

    def client(self, service: str) -> Any:
        """The client of ``service`` (``ec2``, ``s3``, ``ebs``,
        ``service-quotas``); boto3 clients are thread-safe."""
        client = self._clients.get(service)
        if client is not None:
            return client
        session = self.session()
        config = botocore.config.Config(
            retries=dict(RETRIES), connect_timeout=CONNECT_TIMEOUT, read_timeout=READ_TIMEOUT,
            max_pool_connections=32, user_agent_extra=f"nodepool/{version_string}")
        with self._lock:
            client = self._clients.get(service)
            if client is None:
                client = session.client(service, config=config)
                self._clients[service] = client
            return client

    @property
    def ec2(self) -> Any:
        return self.client("ec2")

    @property
    def s3(self) -> Any:
        return self.client("s3")

    @property
    def ebs(self) -> Any:
        return self.client("ebs")

    @property
    def quotas(self) -> Any:
        return self.client("service-quotas")

    def close(self) -> None:
        with self._lock:
            clients, self._clients = list(self._clients.values()), {}
        for client in clients:
            try:
                client.close()
            except Exception:
                pass
