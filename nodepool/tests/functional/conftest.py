"""Fixtures of the functional tests (the ZooKeeper ones are in
nodepool/tests/conftest.py)."""

from nodepool.tests.functional.builder_support import builder_factory, images

__all__ = ["builder_factory", "images"]
