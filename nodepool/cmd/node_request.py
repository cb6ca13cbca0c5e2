"""``nodepool request``: ask the launchers for nodes exactly as Zuul does.

The request is a persistent sequential znode ``/nodepool/requests/200-``
(Zuul's normal precedence) carrying every NodeRequest key, with requestor
``nodepool-cli:<hostname>``.  Once it is fulfilled the command takes each
node's lock and checks ``allocated_to``, as Zuul's executor does, then:

* with ``--hold``: sets each node ``hold`` with a comment, so it stays
  until ``nodepool delete``;
* otherwise: hands the nodes back untouched, still ``ready``.  That is
  what Zuul does when a build ends before using its nodes: they were never
  used, so the launcher clears ``allocated_to`` once the request is gone
  and serves them to the next request instead of deleting them.

The request is always deleted at the end (fulfilled, failed, timed out or
interrupted): nothing else would remove a CLI's request, and a launcher
unwinds the allocation of any node a vanished request had.
"""

from __future__ import annotations

import contextlib
import getpass
import json
import os
import signal
import socket
import sys
import threading
import time
from collections.abc import Iterator
from typing import Any

from nodepool import status
from nodepool.cmd.context import CommandError, Context
from nodepool.zk import ZooKeeper, listing, models
from nodepool.zk.exceptions import ZKLockException
from nodepool.zk.models import Node, NodeRequest

PRIORITY = "200"
# Zuul's executor waits this long for each node's lock.
NODE_LOCK_TIMEOUT = 30.0


def requestor() -> str:
    return f"nodepool-cli:{socket.gethostname()}"


def _user() -> str:
    try:
        return getpass.getuser()
    except Exception:
        return str(os.getuid())


def _offered_labels(zk: ZooKeeper) -> tuple[int, set[str]]:
    pools = listing.read_components(zk, "pool")
    labels = {row["label"] for row in status.label_list(pools).rows}
    return len(pools), labels


def _check_labels(zk: ZooKeeper, labels: list[str]) -> None:
    pool_count, offered = _offered_labels(zk)
    if not pool_count:
        print("No launcher pool is registered in ZooKeeper; the request waits "
              "until one starts", file=sys.stderr)
        return
    missing = sorted(set(labels) - offered)
    if missing:
        raise CommandError(
            f"label(s) {', '.join(missing)} are not offered by any running launcher "
            f"pool (offered: {', '.join(sorted(offered)) or 'none'})")


def submit(zk: ZooKeeper, labels: list[str], provider: str | None,
           reason: str | None, hold: bool) -> NodeRequest:
    """Create the request in one write with every key Zuul and the
    launchers read."""
    request = NodeRequest()
    request.state = models.REQUESTED
    request.node_types = list(labels)
    request.requestor = requestor()
    request.requestor_data = {"user": _user(), "pid": os.getpid(), "hold": hold,
                              "reason": reason}
    request.provider = provider
    request.relative_priority = 0
    request.created_time = request.state_time
    zk.store_request(request, priority=PRIORITY, ephemeral=False)
    return request


def wait_for_answer(zk: ZooKeeper, request: NodeRequest, timeout: float,
                    interrupts: Interrupts) -> dict[str, Any]:
    """The request's data once it is fulfilled or failed.

    Raises CommandError when it vanishes or ``timeout`` (0: none) passes.
    """
    assert request.id is not None
    changed = threading.Event()
    deadline = time.monotonic() + timeout if timeout > 0 else None
    state = None
    while True:
        changed.clear()
        data = zk.watch_request(request.id, lambda event: changed.set())
        if data is None:
            raise CommandError(f"request {request.id} was deleted by someone else")
        try:
            d = json.loads(data)
            state = d.get("state")
        except (ValueError, AttributeError):
            d, state = {}, None
        if state in (models.FULFILLED, models.FAILED):
            return d
        wait = 5.0
        if deadline is not None:
            wait = deadline - time.monotonic()
            if wait <= 0:
                raise CommandError(
                    f"request {request.id} was not answered within {timeout:g} s "
                    f"(state {state}); it has been withdrawn")
        with interrupts.waiting():
            changed.wait(min(wait, 5.0))


def _take_nodes(zk: ZooKeeper, request_id: str, node_ids: list[str],
                locked: list[Node], interrupts: Interrupts) -> None:
    """Lock each node and check it is still ours (what Zuul checks)."""
    for node_id in node_ids:
        interrupts.check()
        node = zk.get_node(node_id)
        if node is None:
            raise CommandError(f"node {node_id} of request {request_id} is gone")
        if node.allocated_to != request_id:
            raise CommandError(f"node {node_id} is no longer allocated to request "
                               f"{request_id} (allocated to {node.allocated_to})")
        try:
            zk.lock_node(node, blocking=True, timeout=NODE_LOCK_TIMEOUT)
        except ZKLockException as e:
            raise CommandError(f"could not lock node {node_id} within "
                               f"{NODE_LOCK_TIMEOUT:g} s: {e}") from e
        locked.append(node)
        if node.allocated_to != request_id:
            raise CommandError(f"node {node_id} was reallocated while locking it")


class Interrupts:
    """^C and TERM for the length of a ``nodepool request``: noted by the
    handler, acted on only where this module waits or checks.

    Python's default handler raises KeyboardInterrupt at whatever line
    the main thread is on; inside kazoo (which wraps waking its
    connection thread in a bare ``except``) it can be swallowed, and the
    command then waits on as if nothing happened.  So the handler raises
    only while the command sits in a wait of its own (:meth:`waiting`);
    elsewhere the signal is kept for the next :meth:`check`.  A second ^C
    during the cleanup is only noted: it never cuts the cleanup short.
    """

    def __init__(self) -> None:
        self.received: list[int] = []
        self._in_wait = False

    def _note(self, signum: int, frame: Any) -> None:
        self.received.append(signum)
        if self._in_wait:
            raise KeyboardInterrupt

    def check(self) -> None:
        """Raise KeyboardInterrupt if a signal came."""
        if self.received:
            raise KeyboardInterrupt

    @contextlib.contextmanager
    def installed(self) -> Iterator[Interrupts]:
        old = {sig: signal.signal(sig, self._note) for sig in (signal.SIGINT, signal.SIGTERM)}
        try:
            yield self
        finally:
            for sig, handler in old.items():
                signal.signal(sig, handler)

    @contextlib.contextmanager
    def waiting(self) -> Iterator[None]:
        """A wait of the command's own (no kazoo call inside): a signal
        ends it at once."""
        try:
            self._in_wait = True
            # (Again after the flag is up: a signal in between was only noted.)
            self.check()
            yield
        finally:
            self._in_wait = False


def request_nodes(ctx: Context) -> int:
    args = ctx.args
    zk = ctx.zk
    _check_labels(zk, args.labels)
    request = NodeRequest()
    locked: list[Node] = []
    deleted = False
    interrupts = Interrupts()
    with interrupts.installed():
        try:
            request = submit(zk, args.labels, args.provider, args.reason, args.hold)
            interrupts.check()
            print(f"Submitted request {request.id} for {', '.join(args.labels)}; waiting"
                  + (f" up to {args.wait:g} s" if args.wait > 0 else ""), file=sys.stderr)
            answer = wait_for_answer(zk, request, args.wait, interrupts)
            if answer.get("state") == models.FAILED:
                declined = answer.get("declined_by") or []
                if args.json:
                    print(json.dumps({"request": request.id, "state": models.FAILED,
                                      "declined_by": declined, "nodes": []}))
                raise CommandError(
                    f"request {request.id} failed: every launcher pool declined it "
                    f"(declined by: {', '.join(declined) or 'none'})")
            node_ids = [str(n) for n in answer.get("nodes") or []]
            assert request.id is not None
            _take_nodes(zk, request.id, node_ids, locked, interrupts)
            if args.hold:
                comment = args.reason or (f"held by 'nodepool request' ({_user()}@"
                                          f"{socket.gethostname()}, request {request.id})")
                for node in locked:
                    node.state = models.HOLD
                    node.comment = comment
                    zk.store_node(node)
            # As Zuul's executor: the request goes once the nodes are locked.
            zk.delete_request(request)
            deleted = True
        finally:
            for node in locked:
                zk.unlock_node(node)
            if not deleted and request.id is not None:
                zk.delete_request(request)
        interrupts.check()
    table = status.node_list(listing.read_nodes(zk, node_ids=node_ids))
    if args.json:
        print(json.dumps({"request": request.id, "state": models.FULFILLED,
                          "held": bool(args.hold), "nodes": table.rows}))
    else:
        print(status.render_text(table, status.NODE_BASIC_FIELDS))
    if not args.hold:
        print("Nodes returned unused; the launcher will reuse them", file=sys.stderr)
    return 0
