"""``nodepool info``, ``erase`` and ``alien-image-list``: a provider's data.

``info`` and ``erase`` work on ZooKeeper records alone, so they also serve
a provider already removed from the configuration (the usual reason to
erase one).  ``alien-image-list`` asks the cloud, through the provider's
driver.
"""

from __future__ import annotations

import json
import logging
import sys
from typing import Any

from nodepool import status
from nodepool.cmd.context import CommandError, Context, emit
from nodepool.zk import listing, models

log = logging.getLogger("nodepool.cmd")


def _provider_data(ctx: Context, provider: str) -> tuple[list[listing.RawImage],
                                                         list[listing.RawRecord]]:
    images = listing.read_images(ctx.zk)
    nodes = listing.read_nodes(ctx.zk, with_locks=False)
    return images, nodes


def _check_known(ctx: Context, provider: str, image_table: status.Table,
                 node_table: status.Table) -> None:
    if provider in ctx.config.providers:
        return
    if image_table.rows or node_table.rows:
        return
    known = ", ".join(sorted(ctx.config.providers)) or "none"
    raise CommandError(f"provider {provider!r} is not in {ctx.args.config} and has no "
                       f"data in ZooKeeper (configured providers: {known})")


def info(ctx: Context) -> int:
    provider = ctx.args.provider
    images, nodes = _provider_data(ctx, provider)
    image_table = status.info_images(images, provider)
    node_table = status.info_nodes(nodes, provider)
    _check_known(ctx, provider, image_table, node_table)
    if ctx.args.json:
        print(json.dumps({"provider": provider, "images": image_table.rows,
                          "nodes": node_table.rows}))
        return 0
    print(f"ZooKeeper data for provider {provider}\n")
    print("Image data:")
    print(status.render_text(image_table))
    print("\nNodes:")
    print(status.render_text(node_table))
    return 0


def erase(ctx: Context) -> int:
    provider = ctx.args.provider
    zk = ctx.zk
    images, nodes = _provider_data(ctx, provider)
    image_table = status.info_images(images, provider)
    node_table = status.info_nodes(nodes, provider)
    _check_known(ctx, provider, image_table, node_table)
    if not ctx.args.force:
        print("\nWARNING! This action is not reversible!")
        if provider in ctx.config.providers:
            print(f"Provider {provider} is still in {ctx.args.config}: a running "
                  "launcher or builder will keep using it and its cloud resources "
                  "will no longer be tracked.")
        try:
            answer = input(f"Erase ZooKeeper data for provider {provider}? [N/y] ")
        except EOFError:
            answer = ""
        if answer.strip().lower() != "y":
            print("Aborting. No data erased.")
            return 0
    print(f"Erasing build data for {provider}...")
    for row in image_table.rows:
        zk.erase_uploads(row["image"], row["build_id"], provider)
    print(f"Erasing node data for {provider}...")
    for row in node_table.rows:
        node = zk.get_node(row["id"])
        if node is not None and node.provider == provider:
            zk.delete_node(node)
    return 0


def _provider_object(pc: Any) -> Any:
    from nodepool.driver import registry
    return registry.get_driver(pc.driver_name).getProvider(pc)


def alien_images(ctx: Context) -> int:
    """Cloud images tagged with a ``nodepool_build_id`` that no READY
    upload record of that provider knows."""
    config = ctx.config
    wanted = ctx.args.provider
    if wanted is not None and wanted not in config.providers:
        known = ", ".join(sorted(config.providers)) or "none"
        raise CommandError(f"provider {wanted!r} is not in {ctx.args.config} "
                           f"(configured providers: {known})")
    images = listing.read_images(ctx.zk)
    table = status.Table(status.ALIEN_IMAGE_COLUMNS)
    failed = False
    for name, pc in sorted(config.providers.items()):
        if wanted is not None and name != wanted:
            continue
        known_ids = set()
        for image in images:
            for upload in image.uploads:
                if upload.provider != name:
                    continue
                try:
                    d = json.loads(upload.data or b"")
                except ValueError:
                    continue
                if isinstance(d, dict) and d.get("state") == models.READY:
                    known_ids.add(d.get("external_id"))
        try:
            cloud_images = _list_cloud_images(ctx, pc)
        except _NotSupported:
            print(f"alien-image-list is not supported by driver {pc.driver_name} "
                  f"(provider {name})", file=sys.stderr)
            if wanted is not None:
                failed = True
            continue
        except Exception as e:
            log.debug("Listing images of %s failed", name, exc_info=True)
            print(f"nodepool: cannot list the images of provider {name}: {e}",
                  file=sys.stderr)
            failed = True
            continue
        for image in cloud_images:
            metadata = image.metadata or {}
            if "nodepool_build_id" not in metadata or image.id in known_ids:
                continue
            table.rows.append({"provider": name, "name": image.name, "id": image.id})
    emit(ctx, table)
    return 1 if failed else 0


class _NotSupported(Exception):
    pass


def _list_cloud_images(ctx: Context, pc: Any) -> list:
    if not pc.manage_images:
        # Only providers the builder uploads to have images of ours.
        raise _NotSupported()
    provider = _provider_object(pc)
    provider.start(ctx.zk)
    try:
        return list(provider.list_images())
    finally:
        try:
            provider.stop()
        except Exception:
            log.debug("Error stopping provider %s", pc.name, exc_info=True)
