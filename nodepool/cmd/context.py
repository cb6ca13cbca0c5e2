"""What every ``nodepool`` command works with: its arguments, the
configuration and a ZooKeeper session (each set up on first use), and the
table output."""

from __future__ import annotations

import argparse
import os
import sys
from typing import Any

from nodepool import status
from nodepool.exceptions import NodepoolError
from nodepool.zk import ZooKeeper, ZooKeeperClient, listing

# How long to wait for ZooKeeper before giving up (scripts and tests may
# shorten it with NODEPOOL_CONNECT_TIMEOUT).
CONNECT_TIMEOUT = 10.0


def connect_timeout() -> float:
    try:
        return float(os.environ.get("NODEPOOL_CONNECT_TIMEOUT", CONNECT_TIMEOUT))
    except ValueError:
        return CONNECT_TIMEOUT


class CommandError(NodepoolError):
    """A command cannot do what was asked; the message says why."""


class Context:
    """What a command works with: its arguments, and the configuration and
    ZooKeeper session, each set up on first use."""

    def __init__(self, args: argparse.Namespace) -> None:
        self.args = args
        self._config: Any = None
        self._client: ZooKeeperClient | None = None
        self._zk: ZooKeeper | None = None

    @property
    def config(self) -> Any:
        if self._config is None:
            from nodepool.config import load_config
            self._config = load_config(self.args.config, self.args.secure)
        return self._config

    @property
    def zk(self) -> ZooKeeper:
        if self._zk is None:
            from nodepool.config import zookeeper_client
            client = zookeeper_client(self.config)
            client.connect(timeout=connect_timeout())
            self._client = client
            self._zk = ZooKeeper(client)
        return self._zk

    def close(self) -> None:
        if self._client is not None:
            self._client.disconnect()
            self._client = None
            self._zk = None


def emit(ctx: Context, table: status.Table, fields: list[str] | None = None) -> None:
    """Print a table as text, or as one JSON document with ``--json``."""
    if getattr(ctx.args, "json", False):
        print(status.render_json(table))
    else:
        print(status.render_text(table, fields))


def print_nodes(ctx: Context, node_ids: list[str], fields: list[str] | None = None) -> None:
    records = listing.read_nodes(ctx.zk, node_ids=node_ids)
    emit(ctx, status.node_list(records), fields or status.NODE_BASIC_FIELDS)


def error(message: str) -> None:
    print(f"nodepool: {message}", file=sys.stderr)


def znode_name(value: str, what: str) -> str:
    """``value`` if it can be one znode name (a node id, an image name...);
    CommandError otherwise, before it is used to build a path."""
    if not value or "/" in value or value in (".", "..") or "\x00" in value:
        raise CommandError(f"{value!r} is not a valid {what}")
    return value
