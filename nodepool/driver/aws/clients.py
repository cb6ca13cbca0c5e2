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

import logging
import re
import threading
from typing import Any

import boto3
import botocore.config

from nodepool.version import version_string

# boto3 retries throttled and failed calls a few times with back-off
# before the driver sees the error.
RETRIES = {"mode": "standard", "total_max_attempts": 3}
CONNECT_TIMEOUT = 10
READ_TIMEOUT = 60

# botocore's DEBUG logs show whole requests, the session token among
# their headers; these loggers get a filter that blanks it out.
BOTOCORE_LOGGERS = ("botocore.endpoint", "botocore.hooks", "botocore.auth",
                    "botocore.retryhandler", "botocore.httpsession", "botocore.parsers",
                    "botocore.awsrequest", "botocore.credentials", "botocore.client",
                    "botocore.utils", "botocore.regions", "botocore.retries.standard",
                    "botocore.retries.adaptive", "boto3.resources.action")
_SECRET = re.compile(
    r"((?:x-amz-security-token|aws_session_token|aws_secret_access_key|SecretAccessKey|"
    r"SessionToken|Token)['\"]?\s*[:=]\s*b?['\"]?)([^'\"\s,}]+)", re.IGNORECASE)


class CredentialFilter(logging.Filter):
    """Blanks out secrets (session tokens, secret keys) in log records."""

    def filter(self, record: logging.LogRecord) -> bool:
        message = record.getMessage()
        redacted = _SECRET.sub(r"\1<redacted>", message)
        if redacted != message:
            record.msg, record.args = redacted, None
        return True


_filter = CredentialFilter()


def redact_botocore_logs() -> None:
    """Install :class:`CredentialFilter` on botocore's loggers (once)."""
    for name in BOTOCORE_LOGGERS:
        logger = logging.getLogger(name)
        if _filter not in logger.filters:
            logger.addFilter(_filter)


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
                redact_botocore_logs()
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
