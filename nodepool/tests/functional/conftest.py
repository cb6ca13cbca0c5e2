"""Fixtures of the functional tests (the ZooKeeper ones are in
nodepool/tests/conftest.py)."""

from nodepool.tests.aws_sim.fixtures import aws, aws_server
from nodepool.tests.functional.builder_support import builder_factory, images

__all__ = ["aws", "aws_server", "builder_factory", "images"]
