"""The AWS driver (boto3): EC2 instances, fleets, spot and dedicated
hosts; AMIs imported by the builder through S3 or EBS direct."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from nodepool.driver import Driver, Provider, ProviderConfig
from nodepool.driver.aws.config import AwsProviderConfig, aws_schema


class AwsDriver(Driver):
    name = "aws"

    def get_schema(self) -> dict:
        return aws_schema()

    def getProviderConfig(self, provider: Mapping[str, Any]) -> ProviderConfig:
        return AwsProviderConfig(self, provider)

    def getProvider(self, provider_config: ProviderConfig) -> Provider:
        # boto3 is imported only when an AWS provider is used.
        from nodepool.driver.aws.provider import AwsProvider
        return AwsProvider(provider_config)
