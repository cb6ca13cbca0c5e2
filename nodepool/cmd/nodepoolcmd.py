"""The ``nodepool`` command line tool.

Every command but ``config-validate`` reads the configuration (for the
ZooKeeper servers and TLS files, and for the diskimages and providers some
commands check against) and opens its own ZooKeeper session.  Listings
read ZooKeeper directly, in a few bulk round trips, and never write;
commands that change a node lock it first, as every other actor does.

Failures exit 1 with one line on stderr saying what went wrong and what to
do about it.
"""

from __future__ import annotations

import argparse
import gc
import logging
import os
import signal
import sys
import time
from collections.abc import Callable
from typing import Any

from kazoo.exceptions import KazooException, NoNodeError

from nodepool import status
from nodepool.cmd import base_parser, setup_logging
from nodepool.cmd.config_validator import validate
from nodepool.cmd.context import (
    CommandError,
    Context,
    emit,
    error,
    print_nodes,
    znode_name,
)
from nodepool.exceptions import ConfigError
from nodepool.logconfig import log_warnings_to_stderr
from nodepool.zk import listing, models
from nodepool.zk.exceptions import ZKException, ZKLockException

log = logging.getLogger("nodepool.cmd")

# How long hold and delete wait for a node's lock (as upstream).
LOCK_TIMEOUT = 5.0


# --------------------------------------------------------------------------
# Listings


def cmd_list(ctx: Context) -> int:
    table = status.node_list(listing.iter_nodes(ctx.zk),
                             detail=ctx.args.detail or ctx.args.json)
    emit(ctx, table, None if ctx.args.detail else status.NODE_BASIC_FIELDS)
    return 0


def _config_paused(ctx: Context) -> list[str]:
    return [name for name, image in ctx.config.diskimages.items() if image.pause]


def cmd_image_list(ctx: Context) -> int:
    emit(ctx, status.image_list(listing.read_images(ctx.zk)))
    return 0


def cmd_dib_image_list(ctx: Context) -> int:
    images = listing.read_images(ctx.zk, with_uploads=False)
    emit(ctx, status.dib_image_list(images, _config_paused(ctx)))
    return 0


def cmd_image_status(ctx: Context) -> int:
    images = listing.read_images(ctx.zk, with_uploads=False)
    emit(ctx, status.image_status(images, _config_paused(ctx)))
    return 0


def cmd_request_list(ctx: Context) -> int:
    emit(ctx, status.request_list(listing.read_requests(ctx.zk)))
    return 0


def cmd_label_list(ctx: Context) -> int:
    emit(ctx, status.label_list(listing.read_components(ctx.zk, "pool")))
    return 0


# --------------------------------------------------------------------------
# Nodes


class _Unreadable(Exception):
    """The node's record cannot be read by this version; the message says
    why."""


def _locked_node(ctx: Context, node_id: str, action: str) -> models.Node:
    """The node, locked.  Raises _Unreadable when its record cannot be
    read, CommandError when it does not exist or another process holds
    it."""
    znode_name(node_id, "node id")
    zk = ctx.zk
    raw = zk.get_raw_node(node_id)
    if raw is None:
        raise CommandError(f"node {node_id} not found (see 'nodepool list')")
    try:
        node = models.Node.deserialize(raw[0], node_id)
        zk.lock_node(node, blocking=True, timeout=LOCK_TIMEOUT)
    except models.ModelError as e:
        raise _Unreadable(str(e)) from e
    except ZKLockException as e:
        if not zk.node_exists(node_id):
            raise CommandError(f"node {node_id} not found (see 'nodepool list')") from e
        raise CommandError(
            f"cannot {action} node {node_id}: it is locked by another process "
            f"(a launcher working on it or a Zuul executor using it) and the "
            f"lock was not free within {LOCK_TIMEOUT:g} s; try again later") from e
    return node


def cmd_hold(ctx: Context) -> int:
    node_id = ctx.args.id
    try:
        node = _locked_node(ctx, node_id, "hold")
    except _Unreadable as e:
        raise CommandError(f"node {node_id} cannot be held: this version cannot read "
                           f"its record ({e}); 'nodepool delete {node_id}' removes "
                           "it") from e
    try:
        if node.state in (models.DELETING, models.DELETED):
            raise CommandError(f"node {node_id} is being deleted ({node.state}) and "
                               "cannot be held")
        node.state = models.HOLD
        if ctx.args.reason is not None:
            node.comment = ctx.args.reason
        ctx.zk.store_node(node)
    finally:
        ctx.zk.unlock_node(node)
    print_nodes(ctx, [node_id])
    return 0


def cmd_delete(ctx: Context) -> int:
    node_id = ctx.args.id
    zk = ctx.zk
    try:
        node = _locked_node(ctx, node_id, "delete")
    except _Unreadable as e:
        _delete_unreadable(ctx, node_id, str(e))
        return 0
    try:
        node.state = models.DELETING
        zk.store_node(node)
        if ctx.args.now:
            _delete_now(ctx, node)
    finally:
        # A no-op once the record is gone (the lock went with it).
        zk.unlock_node(node)
    print_nodes(ctx, [node_id])
    return 0


def _delete_now(ctx: Context, node: models.Node) -> None:
    """Delete the (locked, ``deleting``) node from here, through its
    provider as configured locally, as upstream does: works with no
    launcher running.  On failure the record stays ``deleting``, so a
    launcher serving the provider still deletes it."""
    from nodepool.driver.deletion import (
        SETTLE_TIMEOUT,
        DeleteFailed,
        delete_with_own_provider,
    )

    name = node.provider
    provider_config = ctx.config.providers.get(name) if name else None
    if provider_config is None:
        known = ", ".join(sorted(ctx.config.providers)) or "none"
        raise CommandError(
            f"cannot delete node {node.id} now: its provider {name!r} is not in "
            f"{ctx.args.config} (configured providers: {known}); the node stays "
            f"'deleting' and a launcher serving {name} deletes it, or run this "
            "command with a configuration that has that provider")
    try:
        settled = delete_with_own_provider(ctx.zk, provider_config, node)
    except DeleteFailed as e:
        raise CommandError(
            f"cannot delete node {node.id} now through provider {name}: {e}; the "
            f"node stays 'deleting': a launcher serving {name} retries, or run "
            f"'nodepool delete --now {node.id}' again once the cause is fixed") from e
    if not settled:
        print(f"nodepool: node {node.id} deleted, but provider {name} did not finish "
              "its follow-up work (such as registering a static host again) within "
              f"{SETTLE_TIMEOUT:g} s; a launcher serving it finishes it", file=sys.stderr)


def _delete_unreadable(ctx: Context, node_id: str, why: str) -> None:
    """Remove a node record this version cannot read.  Nothing can act on
    it (no launcher hands it out or deletes it), so the operator's delete
    removes the record itself, with or without ``--now``.  No cloud
    resource can be identified from it; the launchers' leak cleanup
    deletes a tagged server left behind."""
    zk = ctx.zk
    try:
        lock = zk.lock_raw_node(node_id, blocking=True, timeout=LOCK_TIMEOUT)
    except ZKLockException as e:
        raise CommandError(f"cannot delete node {node_id}: it is locked by another "
                           f"process ({e}); try again later") from e
    try:
        zk.delete_raw_node(node_id)
    finally:
        # Our contender znode went with the record.
        lock.is_acquired = False
    print(f"Removed the record of node {node_id}, which this version cannot read "
          f"({why}): nothing else can act on it.  No cloud resource was deleted; "
          "the launchers' leak cleanup removes a server left behind", file=sys.stderr)


# --------------------------------------------------------------------------
# Images


def _known_image(ctx: Context, image: str) -> None:
    znode_name(image, "image name")
    if image in ctx.config.diskimages:
        return
    if ctx.zk.image_exists(image):
        return
    known = ", ".join(sorted(ctx.config.diskimages)) or "none"
    raise CommandError(f"image {image!r} is neither a diskimage in {ctx.args.config} "
                       f"nor known in ZooKeeper (configured diskimages: {known})")


def cmd_image_build(ctx: Context) -> int:
    image = ctx.args.image
    diskimage = ctx.config.diskimages.get(image)
    if diskimage is None or diskimage.abstract:
        known = ", ".join(sorted(n for n, d in ctx.config.diskimages.items()
                                 if not d.abstract)) or "none"
        raise CommandError(f"{image!r} is not a diskimage in {ctx.args.config}; only "
                           f"diskimage-builder images can be built (configured: {known})")
    if diskimage.pause:
        raise CommandError(f"image {image} is paused in {ctx.args.config} (pause: true); "
                           "remove that setting to build it")
    if ctx.zk.is_image_paused(image):
        print(f"Image {image} is paused ('nodepool image-unpause {image}'); the build "
              "waits until it is unpaused", file=sys.stderr)
    ctx.zk.submit_build_request(image)
    return 0


def cmd_image_delete(ctx: Context) -> int:
    a = ctx.args
    for value, what in ((a.provider, "provider name"), (a.image, "image name"),
                        (a.build_id, "build id"), (a.upload_id, "upload id")):
        znode_name(value, what)
    upload = ctx.zk.get_upload(a.image, a.build_id, a.provider, a.upload_id)
    if upload is None:
        raise CommandError(f"image upload {a.upload_id} of build {a.build_id} of image "
                           f"{a.image} to provider {a.provider} not found "
                           "(see 'nodepool image-list')")
    if upload.state == models.UPLOADING:
        raise CommandError("cannot delete an upload in progress (state uploading); "
                           "try again once it is ready or failed")
    upload.state = models.DELETING
    upload.state_time = time.time()
    ctx.zk.store_upload(a.image, a.build_id, a.provider, upload)
    return 0


def cmd_dib_image_delete(ctx: Context) -> int:
    build_ref = znode_name(ctx.args.id, "build id")
    image, sep, build_id = build_ref.rpartition("-")
    if not sep or not image or not build_id:
        raise CommandError(f"{build_ref!r} is not a build id; use the ID column of "
                           "'nodepool dib-image-list' (<image>-<build id>)")
    build = ctx.zk.get_build(image, build_id)
    if build is None:
        raise CommandError(f"build {build_ref} not found (see 'nodepool dib-image-list')")
    if build.state == models.BUILDING:
        raise CommandError(f"cannot delete build {build_ref}: it is still building")
    build.state = models.DELETING
    build.state_time = time.time()
    ctx.zk.store_build(image, build)
    return 0


def cmd_image_pause(ctx: Context) -> int:
    _known_image(ctx, ctx.args.image)
    ctx.zk.set_image_paused(ctx.args.image, True)
    return 0


def cmd_image_unpause(ctx: Context) -> int:
    _known_image(ctx, ctx.args.image)
    ctx.zk.set_image_paused(ctx.args.image, False)
    return 0


def cmd_alien_image_list(ctx: Context) -> int:
    from nodepool.cmd.provider_data import alien_images
    return alien_images(ctx)


# --------------------------------------------------------------------------
# Provider data, image data, requests


def cmd_info(ctx: Context) -> int:
    from nodepool.cmd.provider_data import info
    return info(ctx)


def cmd_erase(ctx: Context) -> int:
    from nodepool.cmd.provider_data import erase
    return erase(ctx)


def cmd_export_image_data(ctx: Context) -> int:
    from nodepool.cmd.image_data import export_image_data
    return export_image_data(ctx)


def cmd_import_image_data(ctx: Context) -> int:
    from nodepool.cmd.image_data import import_image_data
    return import_image_data(ctx)


def cmd_request(ctx: Context) -> int:
    from nodepool.cmd.node_request import request_nodes
    return request_nodes(ctx)


def cmd_config_validate(ctx: Context) -> int:
    return validate(ctx.args.config, ctx.args.secure)


# --------------------------------------------------------------------------
# Arguments


def _add(sub: Any, name: str, func: Callable[[Context], int], help: str,
         json_output: bool = False) -> argparse.ArgumentParser:
    parser = sub.add_parser(name, help=help, description=help)
    parser.set_defaults(func=func)
    if json_output:
        parser.add_argument("--json", action="store_true",
                            help="print one JSON document instead of a table")
    return parser


def build_parser() -> argparse.ArgumentParser:
    parser = base_parser("nodepool", "Administer nodepool nodes, images and requests.")
    parser.add_argument("--debug", action="store_true", help="log debug output")
    sub = parser.add_subparsers(dest="command", title="commands",
                                description="valid commands", metavar="COMMAND")

    p = _add(sub, "list", cmd_list, "list nodes", json_output=True)
    p.add_argument("--detail", action="store_true", help="show every column")
    _add(sub, "image-list", cmd_image_list, "list image uploads to providers",
         json_output=True)
    _add(sub, "dib-image-list", cmd_dib_image_list,
         "list images built with diskimage-builder", json_output=True)
    _add(sub, "image-status", cmd_image_status,
         "list each image's pause flag and manual build request", json_output=True)
    p = _add(sub, "image-build", cmd_image_build, "request a build of a diskimage")
    p.add_argument("image", help="diskimage name")
    p = _add(sub, "alien-image-list", cmd_alien_image_list,
             "list cloud images tagged by nodepool that no upload record knows",
             json_output=True)
    p.add_argument("provider", nargs="?", help="only this provider")
    p = _add(sub, "delete", cmd_delete, "mark a node for deletion", json_output=True)
    p.add_argument("id", help="node id")
    p.add_argument("--now", action="store_true",
                   help="delete the server and the record from here, through the "
                   "provider (works without a running launcher)")
    p = _add(sub, "hold", cmd_hold, "put a node on hold (kept until deleted)",
             json_output=True)
    p.add_argument("id", help="node id")
    p.add_argument("--reason", help="why; stored as the node's comment")
    p = _add(sub, "image-delete", cmd_image_delete, "delete one image upload")
    p.add_argument("--provider", required=True, help="provider name")
    p.add_argument("--image", required=True, help="image name")
    p.add_argument("--build-id", required=True, help="build id")
    p.add_argument("--upload-id", required=True, help="upload id")
    p = _add(sub, "dib-image-delete", cmd_dib_image_delete,
             "delete a build, its files and all its uploads")
    p.add_argument("id", help="build id as dib-image-list shows it (<image>-<build id>)")
    _add(sub, "config-validate", cmd_config_validate, "validate the configuration file")
    _add(sub, "request-list", cmd_request_list, "list node requests", json_output=True)
    _add(sub, "label-list", cmd_label_list, "list the labels running launchers offer",
         json_output=True)
    p = _add(sub, "info", cmd_info, "show a provider's data in ZooKeeper",
             json_output=True)
    p.add_argument("provider", metavar="PROVIDER", help="provider name")
    p = _add(sub, "erase", cmd_erase, "erase a provider's data from ZooKeeper")
    p.add_argument("provider", metavar="PROVIDER", help="provider name")
    p.add_argument("--force", action="store_true", help="do not ask for confirmation")
    p = _add(sub, "image-pause", cmd_image_pause, "stop building an image")
    p.add_argument("image", help="image name")
    p = _add(sub, "image-unpause", cmd_image_unpause, "resume building an image")
    p.add_argument("image", help="image name")
    p = _add(sub, "export-image-data", cmd_export_image_data,
             "save image build and upload records to a file")
    p.add_argument("path", help="file to write (created mode 0600)")
    p = _add(sub, "import-image-data", cmd_import_image_data,
             "restore image records saved by export-image-data")
    p.add_argument("path", help="file to read")
    p = _add(sub, "request", cmd_request,
             "request nodes as Zuul does, wait, print them, then return or hold them",
             json_output=True)
    p.add_argument("labels", nargs="+", metavar="LABEL", help="one node per label")
    p.add_argument("--wait", type=float, default=300.0, metavar="SECONDS",
                   help="how long to wait for the request (default 300; 0: no limit)")
    p.add_argument("--hold", action="store_true",
                   help="keep the nodes on hold instead of returning them")
    p.add_argument("--provider", help="prefer this provider")
    p.add_argument("--reason", help="comment stored on held nodes")
    return parser


# --------------------------------------------------------------------------
# Entry point


def _interrupt(signum: int, frame: Any) -> None:
    raise KeyboardInterrupt


def run(args: argparse.Namespace) -> int:
    ctx = Context(args)
    try:
        return args.func(ctx)
    finally:
        ctx.close()


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    if not args.command:
        parser.print_help()
        return 1
    if args.debug or args.logconfig:
        setup_logging(args.logconfig, debug=args.debug)
    else:
        log_warnings_to_stderr()
    # A short-lived process building tens of thousands of small objects:
    # the cyclic garbage collector would only slow it down.
    gc.disable()
    # Cleanup (deleting a request, releasing locks) runs on TERM as on ^C.
    signal.signal(signal.SIGTERM, _interrupt)
    try:
        return run(args)
    except KeyboardInterrupt:
        print("nodepool: interrupted", file=sys.stderr)
        return 130
    except (CommandError, ConfigError, ZKException) as e:
        error(str(e))
        return 1
    except NoNodeError as e:
        error(f"a record vanished while the command ran ({e.__class__.__name__}); "
              "try again")
        return 1
    except KazooException as e:
        error(f"ZooKeeper error: {e.__class__.__name__} {e}; check that ZooKeeper "
              "is reachable and try again")
        return 1
    except BrokenPipeError:
        # Output piped into head & co.: stop quietly, and keep Python from
        # complaining when it flushes stdout at exit.
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, sys.stdout.fileno())
        return 0
    except Exception as e:
        log.debug("Unexpected error", exc_info=True)
        error(f"unexpected error: {e.__class__.__name__}: {e} (run with --debug for "
              "the traceback)")
        return 1


if __name__ == "__main__":
    sys.exit(main())
