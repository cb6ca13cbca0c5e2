"""Deleting one locked node through its provider.

The launcher's delete worker and ``nodepool delete --now`` both remove a
node with :func:`delete_locked_node`, so a node goes the same way
whoever deletes it:

1. the record is marked ``deleting`` first, so if anything below fails
   (or this process dies) the record says what was going on and any
   launcher serving the provider finishes the job;
2. the provider releases the cloud resources (a server already gone
   counts as released);
3. the record is removed;
4. the provider's after-delete hook runs.

A registered endpoint's slot (a static host) is registered again by the
launcher's registrar, which sees the record go.  :func:`delete_with_own_provider`
is the one-shot form the command line uses when no launcher may be
running: it builds the node's provider from the local configuration
through the driver registry, deletes, waits for the provider's follow-up
work (or registers the endpoint's slot again itself) and stops the
provider again.
"""

from __future__ import annotations

import logging

from nodepool.driver import Provider, ProviderConfig, registry
from nodepool.driver.launch import NodeLogger
from nodepool.driver.registrar import refill_after_delete
from nodepool.exceptions import NodepoolError
from nodepool.zk import ZooKeeper, models
from nodepool.zk.models import Node

log = logging.getLogger("nodepool.driver.deletion")

# How long a one-shot deletion waits for the provider's follow-up work
# (a static host is checked over SSH before it is registered again).
SETTLE_TIMEOUT = 60.0


class DeleteFailed(NodepoolError):
    """The node could not be deleted now; the message says why, in the
    provider's or cloud's words.  The record is left ``deleting``."""


def delete_locked_node(zk: ZooKeeper, provider: Provider, node: Node,
                       logger: logging.Logger | None = None) -> None:
    """Delete ``node``, which the caller has locked, through ``provider``:
    cloud resources first, then the record, then the provider's
    after-delete hook.  Exceptions from the provider propagate and leave
    the record ``deleting``."""
    nlog = NodeLogger(logger or log, {"node": node.id})
    if node.state != models.DELETING:
        node.state = models.DELETING
        zk.store_node(node)
    nlog.info("Deleting node (%s, external id %s)", ",".join(node.type), node.external_id)
    provider.delete_node(node)
    zk.delete_node(node)
    nlog.info("Deleted node")
    provider.node_deleted(node)


def delete_with_own_provider(zk: ZooKeeper, provider_config: ProviderConfig,
                             node: Node, settle_timeout: float = SETTLE_TIMEOUT) -> bool:
    """Delete the locked ``node`` through a provider object of our own,
    built from ``provider_config`` and stopped again afterwards.

    Works whether or not a launcher runs.  Raises :class:`DeleteFailed`
    when the provider cannot start or refuses the deletion (the record
    stays ``deleting`` for a launcher).  Returns False when the deletion
    succeeded but the provider's follow-up work did not finish within
    ``settle_timeout`` (a launcher serving the provider finishes it).
    """
    name = provider_config.name
    try:
        provider = registry.get_driver(provider_config.driver_name).getProvider(
            provider_config)
        provider.start(zk)
    except Exception as e:
        log.debug("Provider %s could not start", name, exc_info=True)
        raise DeleteFailed(f"provider {name} could not start: {_describe(e)}") from e
    try:
        try:
            delete_locked_node(zk, provider, node)
        except Exception as e:
            log.debug("Deleting node %s through %s failed", node.id, name, exc_info=True)
            raise DeleteFailed(_describe(e)) from e
        if provider.registers_endpoints:
            return refill_after_delete(zk, provider, node, settle_timeout)
        return provider.settle(settle_timeout)
    finally:
        _stop(provider, name)


def _stop(provider: Provider, name: str) -> None:
    try:
        provider.stop()
        provider.join()
    except Exception:
        log.exception("Error stopping provider %s", name)


def _describe(e: BaseException) -> str:
    text = str(e).strip()
    return text if text else type(e).__name__
