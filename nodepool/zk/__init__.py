"""The ZooKeeper layer shared by the launcher, the builder and the CLI.

It knows nothing of the layers above it: no config, driver or daemon code is
imported here.
"""

from nodepool.zk.client import ZooKeeperClient, build_hosts
from nodepool.zk.exceptions import (
    ZKConnectionError,
    ZKException,
    ZKLockException,
    ZKTLSRequired,
)
from nodepool.zk.zookeeper import ZooKeeper

__all__ = [
    "ZKConnectionError",
    "ZKException",
    "ZKLockException",
    "ZKTLSRequired",
    "ZooKeeper",
    "ZooKeeperClient",
    "build_hosts",
]
