"""Errors raised by the ZooKeeper layer."""

from typing import Any

from kazoo.exceptions import ConnectionLoss


class ZKException(Exception):
    """Base class for ZooKeeper layer errors."""


class ZKConnectionError(ZKException):
    """ZooKeeper cannot be reached; the message names the hosts."""


class ZKTLSRequired(ZKConnectionError):
    """The configuration lacks the mandatory zookeeper-tls settings."""


class ZKLockException(ZKException):
    """A lock could not be taken (held by someone else, or timed out)."""


class LockOutcomeUnknown(ConnectionLoss):
    """The connection dropped before the reply to a write that takes a
    lock: it may have landed.  ``lock`` finds our contender by its unique
    prefix when it is acquired again (kazoo's recipe does so after a
    failed create), instead of waiting behind it."""

    def __init__(self, lock: Any) -> None:
        super().__init__(f"connection lost while taking {lock.path}")
        self.lock = lock
