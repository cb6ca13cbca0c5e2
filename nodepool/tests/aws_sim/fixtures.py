"""pytest fixtures: one moto server per test module (``aws_server``), and
per test a fresh account state behind a new proxy (``aws``), with boto3
pointed at it through its standard settings and fake credentials in the
environment."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pytest

from nodepool.tests.aws_sim.server import MotoServer

REGION = "us-west-2"
ACCESS_KEY = "AKIANODEPOOLTEST0001"
SECRET_KEY = "nodepool-test-secret-Zq8vLw2Xk9"
SESSION_TOKEN = "nodepool-test-session-token-Hq7Pm3"


@pytest.fixture(scope="module")
def aws_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[MotoServer]:
    server = MotoServer(tmp_path_factory.mktemp("moto") / "moto.log")
    yield server
    server.stop()


@pytest.fixture
def aws(aws_server: MotoServer, monkeypatch: pytest.MonkeyPatch, tmp_path: Any
        ) -> Iterator[Any]:
    # boto3 is imported only by the tests that use AWS.
    from nodepool.tests.aws_sim.proxy import AwsProxy

    aws_server.reset()
    proxy = AwsProxy(aws_server.url)
    for name in ("AWS_PROFILE", "AWS_DEFAULT_PROFILE", "AWS_ROLE_ARN",
                 "AWS_WEB_IDENTITY_TOKEN_FILE", "AWS_CONTAINER_CREDENTIALS_RELATIVE_URI",
                 "AWS_CONTAINER_CREDENTIALS_FULL_URI"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("AWS_ENDPOINT_URL", proxy.url)
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", ACCESS_KEY)
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", SECRET_KEY)
    monkeypatch.setenv("AWS_SESSION_TOKEN", SESSION_TOKEN)
    # Never the machine's own ~/.aws, and never the instance metadata service.
    monkeypatch.setenv("AWS_CONFIG_FILE", str(tmp_path / "aws-config"))
    monkeypatch.setenv("AWS_SHARED_CREDENTIALS_FILE", str(tmp_path / "aws-credentials"))
    monkeypatch.setenv("AWS_EC2_METADATA_DISABLED", "true")
    yield proxy
    proxy.stop()
