"""Errors raised by the ZooKeeper layer."""


class ZKException(Exception):
    """Base class for ZooKeeper layer errors."""


class ZKConnectionError(ZKException):
    """ZooKeeper cannot be reached; the message names the hosts."""


class ZKTLSRequired(ZKConnectionError):
    """The configuration lacks the mandatory zookeeper-tls settings."""


class ZKLockException(ZKException):
    """A lock could not be taken (held by someone else, or timed out)."""
