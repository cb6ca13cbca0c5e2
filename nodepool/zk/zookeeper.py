"""Every ZooKeeper path nodepool uses, and the operations on them.

Launchers, builders and the CLI go through this facade so the znode layout
and lock protocol (WIRE.md) live in one place.  Reads of records that fail
to parse are logged and treated as absent; they never raise to a caller.
"""

from __future__ import annotations

import logging
import time
import uuid
from collections.abc import Callable, Iterable, Iterator, Sequence
from typing import Any

from kazoo.exceptions import (
    BadVersionError,
    ConnectionLoss,
    KazooException,
    LockTimeout,
    NodeExistsError,
    NoNodeError,
    NotEmptyError,
)
from kazoo.protocol.paths import _prefix_root
from kazoo.protocol.serialization import Create
from kazoo.recipe.lock import Lock
from kazoo.security import OPEN_ACL_UNSAFE

from nodepool.zk import models
from nodepool.zk.client import ZooKeeperClient
from nodepool.zk.exceptions import LockOutcomeUnknown, ZKLockException
from nodepool.zk.models import ImageBuild, ImageUpload, ModelError, Node, NodeRequest

log = logging.getLogger("nodepool.zk")

ROOT = "/nodepool"
NODE_ROOT = f"{ROOT}/nodes"
REQUEST_ROOT = f"{ROOT}/requests"
REQUEST_LOCK_ROOT = f"{ROOT}/requests-lock"
IMAGE_ROOT = f"{ROOT}/images"
COMPONENT_ROOT = f"{ROOT}/components"
ELECTION_ROOT = f"{ROOT}/elections"
# Ours, not upstream's: locks that keep several of our launchers (or
# builders) from making the same decision at once.
POOL_COORDINATION_ROOT = f"{ROOT}/pool-coordination"
BUILDER_COORDINATION_ROOT = f"{ROOT}/builder-coordination"
# Ours, not upstream's: one lock per provider whose nodes are registered
# rather than launched (static hosts), see lock_registration().
REGISTRATION_ROOT = f"{ROOT}/registration"

# kazoo's Lock recipe names contenders "<uuid hex>__lock__<seq10>".
LOCK_MARKER = "__lock__"


def _id(record: Any) -> str:
    """A stored record's id (records only get one when first stored)."""
    if record.id is None:
        raise ValueError(f"{type(record).__name__} has not been stored yet")
    return record.id


def node_path(node_id: str) -> str:
    return f"{NODE_ROOT}/{node_id}"


def node_lock_path(node_id: str) -> str:
    return f"{NODE_ROOT}/{node_id}/lock"


def request_path(request_id: str) -> str:
    return f"{REQUEST_ROOT}/{request_id}"


def request_lock_path(request_id: str) -> str:
    return f"{REQUEST_LOCK_ROOT}/{request_id}"


def image_path(image: str) -> str:
    return f"{IMAGE_ROOT}/{image}"


def build_path(image: str, build_id: str | None = None) -> str:
    base = f"{IMAGE_ROOT}/{image}/builds"
    return f"{base}/{build_id}" if build_id else base


def upload_path(image: str, build_id: str, provider: str,
                upload_id: str | None = None) -> str:
    base = f"{build_path(image, build_id)}/providers/{provider}/images"
    return f"{base}/{upload_id}" if upload_id else base


def upload_validation_lock_path(image: str, build_id: str, provider: str,
                                upload_id: str) -> str:
    """The lock a launcher holds while it checks an upload (ours; under
    the upload's znode, beside upstream's ``lock``)."""
    return f"{upload_path(image, build_id, provider, upload_id)}/validation-lock"


def registration_lock_path(provider: str) -> str:
    return f"{REGISTRATION_ROOT}/{provider}"


def is_lock_child(name: str) -> bool:
    return LOCK_MARKER in name


class RecordLock(Lock):
    """kazoo's Lock recipe, except that it never creates the record it
    locks, and takes one round trip less.

    The stock recipe creates missing parents of the lock dir; locking a
    node that is being deleted would then resurrect it as an empty znode.
    Here only the lock dir itself is created, and locking a vanished
    record fails.

    A record's lock dir nearly always exists (it is made with the record,
    or by the first lock ever taken on it), so the contender is created
    straight away, and the dir only when that fails for want of it: the
    stock recipe would check for the dir before every lock.  What others
    see (the dir, the contender's name and data) is the same.
    """

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.assured_path = True
        self._dir_made = False

    def _ensure_path(self):
        try:
            self.client.create(self.path)
        except NodeExistsError:
            pass
        self.assured_path = True

    def _inner_acquire(self, blocking, timeout, ephemeral=True):
        try:
            return super()._inner_acquire(blocking, timeout, ephemeral=ephemeral)
        except NoNodeError:
            if self._dir_made:
                raise
        # No lock dir: make it (failing if the record is gone), then
        # contend as usual.
        self._dir_made = True
        self.create_tried = False
        self._ensure_path()
        return super()._inner_acquire(blocking, timeout, ephemeral=ephemeral)


class RequestLock(Lock):
    """kazoo's Lock recipe, creating its lock dir in one round trip (the
    stock recipe checks first, then creates: two round trips on every new
    request)."""

    def _ensure_path(self):
        try:
            self.client.create(self.path, makepath=True)
        except NodeExistsError:
            pass
        self.assured_path = True


class RecordTransaction:
    """A kazoo transaction (the same calls) whose record writes the
    caches take from the reply (:meth:`ZooKeeper._commit`)."""

    def __init__(self, zk: ZooKeeper) -> None:
        self._zk = zk
        self._transaction = zk.kazoo.transaction()
        self._writes: list[tuple[int, str, bytes]] = []

    def create(self, path: str, value: bytes = b"", ephemeral: bool = False,
               sequence: bool = False) -> None:
        if sequence and path.endswith("/"):
            # A child named by its sequence number alone: kazoo's
            # transactions drop the trailing slash (which would make a
            # sibling named "<parent>NNNN"), so add the operation as
            # kazoo's create() sends it.
            kazoo = self._zk.kazoo
            flags = (1 if ephemeral else 0) | 2
            self._transaction._add(Create(
                _prefix_root(kazoo.chroot, path, trailing=True), value,
                kazoo.default_acl or OPEN_ACL_UNSAFE, flags), None)
            return
        self._transaction.create(path, value, ephemeral=ephemeral, sequence=sequence)

    def delete(self, *args: Any, **kwargs: Any) -> None:
        self._transaction.delete(*args, **kwargs)

    def set_data(self, path: str, value: bytes, version: int = -1) -> None:
        self._writes.append((len(self._transaction.operations), path, value))
        self._transaction.set_data(path, value, version)

    def commit(self) -> list[Any]:
        return self._zk._commit(self._transaction, self._writes)


class ZooKeeper:
    """Operations on nodepool's ZooKeeper data over one client session."""

    def __init__(self, client: ZooKeeperClient) -> None:
        self.zk_client = client
        # When each lock dir of a vanished request was made (epoch s), as
        # read by delete_stale_request_locks (a lock dir's data, and so
        # its mtime, never changes): each is looked up once, not on every
        # cleanup pass for as long as it is kept.
        self._lock_dir_times: dict[str, float] = {}
        # Caches told of the record writes made here (TreeCache's
        # own_write_started): they take them without reading them back.
        self._write_observers: list[Any] = []

    @property
    def kazoo(self):
        return self.zk_client.kazoo

    # Record writes the caches learn from the reply ---------------------------

    def add_write_observer(self, observer: Any) -> None:
        """``observer`` (a cache) is told of every record write made
        through this object to a path it :meth:`observes`."""
        if observer not in self._write_observers:
            self._write_observers.append(observer)

    def remove_write_observer(self, observer: Any) -> None:
        if observer in self._write_observers:
            self._write_observers.remove(observer)

    def _observer(self, path: str) -> Any:
        for observer in self._write_observers:
            if observer.observes(path):
                return observer
        return None

    def _set_record(self, path: str, data: bytes, version: int = -1) -> Any:
        """``kazoo.set``; the cache keeping ``path`` takes the data from
        the reply."""
        return self._observed(
            [(None, path, data)],
            lambda hook: self.kazoo.set_with_reply_hook(path, data, version, hook),
            lambda: self.kazoo.set(path, data, version=version))

    def _transaction(self) -> RecordTransaction:
        return RecordTransaction(self)

    def _commit(self, transaction: Any, writes: list[tuple[int, str, bytes]]) -> list[Any]:
        """Commit a kazoo transaction whose ``writes`` (operation index,
        path, data) set records; the caches keeping them take the data
        from the reply."""
        return self._observed(
            writes, lambda hook: self.kazoo.commit_with_reply_hook(transaction, hook),
            transaction.commit)

    def _observed(self, writes: Sequence[tuple[int | None, str, bytes]],
                  send: Callable[[Any], Any], plain: Callable[[], Any]) -> Any:
        """Send a write through ``send(reply_hook)`` when a cache keeps one
        of the records it sets (``writes``: the result's index of each, or
        None when the result is its stat, path and data), telling that
        cache before it goes and as its reply is read; otherwise just
        ``plain()``.  Returns the reply."""
        observed = [(key, path, data, observer) for key, path, data in writes
                    if (observer := self._observer(path)) is not None]
        if not observed:
            return plain()
        for _, path, _, observer in observed:
            observer.own_write_started(path)

        def replied(reply: Any, error: BaseException | None) -> None:
            landed = error is None and not (
                isinstance(reply, list) and any(isinstance(r, Exception) for r in reply))
            for key, path, data, observer in observed:
                if landed:
                    observer.own_write_replied(
                        path, data, reply if key is None else reply[key])
                else:
                    observer.own_write_replied(path, None, None)

        return send(replied).wait_reply()

    # Generic helpers -----------------------------------------------------

    def _children(self, path: str) -> list[str]:
        try:
            return self.kazoo.get_children(path)
        except NoNodeError:
            return []

    def _get(self, path: str) -> tuple[bytes, Any] | None:
        try:
            return self.kazoo.get(path)
        except NoNodeError:
            return None

    def get_many(self, paths: Iterable[str]) -> Iterator[tuple[str, bytes, Any] | None]:
        """Read many znodes pipelined on one session (one round trip's wait
        instead of one per znode).  Yields (path, data, stat) or None for
        each path, in order."""
        pending = [(p, self.kazoo.get_async(p)) for p in paths]
        for path, result in pending:
            try:
                data, stat = result.get()
            except NoNodeError:
                yield None
                continue
            yield path, data, stat

    def children_many(self, paths: Iterable[str]) -> Iterator[list[str]]:
        pending = [self.kazoo.get_children_async(p) for p in paths]
        for result in pending:
            try:
                yield result.get()
            except NoNodeError:
                yield []

    def _delete_recursive(self, path: str, attempts: int = 5) -> None:
        # Another process may try to lock a record while its tree is being
        # removed (a launcher's deleter seeing a node that ``nodepool
        # delete --now`` is deleting), adding a lock contender behind the
        # recursive delete's back.  That attempt fails once the tree is
        # gone, so the delete is simply tried again.
        for attempt in range(attempts):
            try:
                self.kazoo.delete(path, recursive=True)
                return
            except NoNodeError:
                return
            except NotEmptyError:
                if attempt == attempts - 1:
                    raise

    # Locks -------------------------------------------------------------

    def _lock(self, path: str, blocking: bool, timeout: float | None,
              identifier: str | None, ephemeral: bool = True,
              record_lock: bool = False, lock_class: type[Lock] | None = None,
              lock: Lock | None = None) -> Lock:
        if lock is None:
            cls = lock_class or (RecordLock if record_lock else Lock)
            lock = cls(self.kazoo, path, identifier=identifier)
        try:
            got = lock.acquire(blocking=blocking, timeout=timeout, ephemeral=ephemeral)
        except LockTimeout as e:
            raise ZKLockException(f"timeout trying to lock {path}") from e
        except NoNodeError as e:
            raise ZKLockException(f"{path.rsplit('/', 1)[0]} does not exist") from e
        except Exception as e:
            raise ZKLockException(f"error locking {path}: {e}") from e
        if not got:
            raise ZKLockException(f"{path} is locked by someone else")
        return lock

    @staticmethod
    def _release(lock: Lock | None) -> None:
        if lock is None:
            return
        try:
            lock.release()
        except Exception:
            log.exception("Error releasing lock %s", lock.path)

    def lock_contenders(self, lock_dir: str) -> list[str]:
        """Contender znode names, holder first (lowest sequence)."""
        names = [c for c in self._children(lock_dir) if is_lock_child(c)]
        return sorted(names, key=lambda c: c.rsplit(LOCK_MARKER, 1)[1])

    def force_unlock(self, lock_dir: str) -> bool:
        """Delete the current holder's contender node (admin/cleanup use)."""
        contenders = self.lock_contenders(lock_dir)
        if not contenders:
            return False
        try:
            self.kazoo.delete(f"{lock_dir}/{contenders[0]}")
        except NoNodeError:
            pass
        return True

    # Nodes --------------------------------------------------------------

    def node_ids(self) -> list[str]:
        return [c for c in self._children(NODE_ROOT) if not is_lock_child(c)]

    def get_node(self, node_id: str) -> Node | None:
        got = self._get(node_path(node_id))
        if got is None:
            return None
        return self._parse_node(node_id, *got)

    def node_exists(self, node_id: str) -> bool:
        """Whether a znode for ``node_id`` exists, readable or not (a leak
        verdict must not take a record we cannot read for no record)."""
        return self.kazoo.exists(node_path(node_id)) is not None

    def node_is_empty(self, node_id: str) -> bool:
        """Whether the node's znode exists and carries no data at all."""
        got = self._get(node_path(node_id))
        return got is not None and models.is_empty_znode(got[0])

    @staticmethod
    def parse_node(node_id: str, data: bytes, stat: Any) -> Node:
        """A node from its znode; raises ModelError when this version
        cannot read it."""
        node = Node.deserialize(data, node_id)
        node.version = stat.version
        node.mzxid = stat.mzxid
        return node

    @staticmethod
    def _parse_node(node_id: str, data: bytes, stat: Any) -> Node | None:
        # Direct reads skip what they cannot read; the node cache reports
        # such records (once each), so this does not repeat it.
        try:
            return ZooKeeper.parse_node(node_id, data, stat)
        except ModelError as e:
            log.debug("Skipping unreadable node record %s: %s", node_id, e)
            return None

    def get_nodes(self, with_locks: bool = False) -> list[Node]:
        """All parsable nodes, read in one pipelined pass."""
        ids = self.node_ids()
        nodes = []
        results = list(self.get_many(node_path(i) for i in ids))
        locks: list[list[str]] = (
            list(self.children_many(node_lock_path(i) for i in ids))
            if with_locks else [[] for _ in ids])
        for node_id, got, lock_children in zip(ids, results, locks, strict=True):
            if got is None:
                continue
            node = self._parse_node(node_id, got[1], got[2])
            if node is None:
                continue
            node.lock_contenders = sum(1 for c in lock_children if is_lock_child(c))
            nodes.append(node)
        return nodes

    def store_node(self, node: Node) -> None:
        """Create the node (assigning a sequential id) or overwrite it."""
        if node.id is None and node.created_time is None:
            node.created_time = node.state_time
        data = node.serialize()
        if node.id is None:
            path = self.kazoo.create(f"{NODE_ROOT}/", data, sequence=True, makepath=True)
            node.id = path.rsplit("/", 1)[1]
            node.version = 0
        else:
            stat = self._set_record(node_path(_id(node)), data)
            node.version = stat.version

    def create_locked_node(self, node: Node, prepare: Callable[[Node], None]) -> None:
        """Store a new node and lock it, in two round trips.

        The record is created unlocked in ``init`` (not a cleanup state,
        so no deleter takes it); then one transaction creates its lock
        dir, takes the lock (the only contender of a lock dir this very
        transaction creates: kazoo's Lock recipe, one step) and stores the
        record as ``prepare(node)`` leaves it.  Raises ZKLockException (the
        record is then left ``init``, for the deleter) if that fails.
        """
        node.state = models.INIT
        self.store_node(node)
        self.lock_new_node(node, prepare)

    def delete_unused_node(self, node: Node) -> None:
        """Remove a record stored by this process that was never used
        (``init``, unlocked, unchanged since).  A record someone locked or
        changed meanwhile is left to them (and to the deleter)."""
        try:
            self.kazoo.delete(node_path(_id(node)), version=node.version
                              if node.version is not None else -1)
        except (NoNodeError, BadVersionError, NotEmptyError):
            pass

    def lock_new_node(self, node: Node, prepare: Callable[[Node], None]) -> None:
        """The second round trip of :meth:`create_locked_node`, for a node
        stored (``init``, unlocked) by this process just before, by
        ``store_node`` or :meth:`claim_request`."""
        lock = RecordLock(self.kazoo, node_lock_path(_id(node)))
        prepare(node)
        transaction = self._transaction()
        transaction.create(lock.path)
        transaction.create(lock.create_path, lock.data, ephemeral=True, sequence=True)
        assert node.version is not None  # set by store_node
        transaction.set_data(node_path(_id(node)), node.serialize(), version=node.version)
        try:
            results = transaction.commit()
        except ConnectionLoss as e:
            # Landed or not, lock_node(lock=...) takes it from here.
            lock.create_tried = True
            raise LockOutcomeUnknown(lock) from e
        failed = [r for r in results if isinstance(r, Exception)]
        if failed:
            raise ZKLockException(f"could not lock new node {node.id}: {failed[0]!r}")
        lock.node = results[1].rsplit("/", 1)[1]
        lock.is_acquired = True
        lock.assured_path = True
        node.lock = lock
        node.version = results[2].version

    def _refresh(self, record: Any, path: str, what: str) -> bool:
        """Re-read ``record`` in place from ``path``; False if it no longer
        exists."""
        got = self._get(path)
        if got is None:
            return False
        record.updateFromDict(models.load_json(got[0], what))
        record.version = got[1].version
        record.mzxid = got[1].mzxid
        return True

    def refresh_node(self, node: Node) -> bool:
        """Re-read ``node`` in place; False if it no longer exists."""
        return self._refresh(node, node_path(_id(node)), f"node {node.id}")

    def lock_node(self, node: Node, blocking: bool = True, timeout: float | None = None,
                  identifier: str | None = None, lock: Lock | None = None,
                  ephemeral: bool = True) -> None:
        """Lock ``node`` and refresh its data from ZooKeeper.

        ``lock`` is the one of a :class:`LockOutcomeUnknown`, whose
        contender may exist already.  A lock taken with ``ephemeral``
        False outlives this session (a metastatic provider holds its
        backing nodes so across launcher restarts); only
        :meth:`force_unlock_node` removes it then.  Raises
        ZKLockException if the lock is held elsewhere (non-blocking),
        times out, or the node vanished meanwhile; ModelError (the lock
        released) if its record cannot be read.
        """
        if node.lock is not None:
            raise ZKLockException(f"node {node.id} is already locked by this process")
        lock = self._lock(node_lock_path(_id(node)), blocking, timeout, identifier,
                          ephemeral=ephemeral, record_lock=True, lock=lock)
        try:
            exists = self.refresh_node(node)
        except (ModelError, Exception):
            self._release(lock)
            raise
        if not exists:
            self._release(lock)
            raise ZKLockException(f"node {node.id} was deleted while locking it")
        node.lock = lock

    def _commit_claim(self, transaction: Any, lock: Any, record: Any, claimed: Any,
                      contender_at: int) -> list[Any] | None:
        """Commit a one-round-trip claim: ``transaction`` creates our lock
        contender in operation ``contender_at`` and ends by writing
        ``claimed`` (the changed copy of ``record``).  When every operation
        succeeded, ``record`` takes the claimed data, its new version and
        ``lock`` (held).  Returns the results; None when it is unknown
        whether the transaction landed (the lock recipe, which the caller
        falls back to, then finds our contender by its unique prefix)."""
        lock.create_tried = True
        try:
            results = transaction.commit()
        except KazooException:
            return None
        if any(isinstance(r, Exception) for r in results):
            lock.create_tried = False
            return results
        lock.node = results[contender_at].rsplit("/", 1)[1]
        lock.is_acquired = True
        record.updateFromDict(claimed.toDict())
        record.version = results[-1].version
        record.mzxid = results[-1].mzxid
        record.lock = lock
        return results

    def claim_node(self, node: Node, change: Callable[[Node], bool]) -> bool:
        """Lock ``node`` (the caller's own copy, updated in place) without
        waiting and store it as ``change`` leaves it, keeping the lock.

        ``change(node)`` edits the node in place and says whether to store
        it; when it says no, nothing is written, the lock is released and
        False returned.  Raises ZKLockException when the node is locked
        elsewhere or gone; on any other error the lock is released.

        A node read from a cache (its ``version`` set) takes one round
        trip: one transaction replaces the node's lock dir by a new one
        holding only our contender, and writes the change only if the
        record is still at ``version``.  Deleting a lock dir fails while
        it has any child, so the transaction only succeeds when nobody
        held or waited for the lock, and our contender is then provably
        the first (what kazoo's recipe, Zuul's and upstream's, finds).
        Otherwise, as usual: lock, re-read, change, write.
        """
        if node.lock is not None:
            raise ZKLockException(f"node {node.id} is already locked by this process")
        lock = RecordLock(self.kazoo, node_lock_path(_id(node)))
        if node.version is not None:
            cached = Node.fromDict(node.toDict(), node.id)
            if change(cached):
                transaction = self._transaction()
                transaction.delete(lock.path)
                transaction.create(lock.path)
                transaction.create(lock.create_path, lock.data, ephemeral=True,
                                   sequence=True)
                transaction.set_data(node_path(_id(node)), cached.serialize(),
                                     version=node.version)
                self._commit_claim(transaction, lock, node, cached, contender_at=2)
                if node.lock is lock:
                    return True
        self._lock(lock.path, False, None, None, lock=lock)
        try:
            exists = self.refresh_node(node)
        except Exception:
            self._release(lock)
            raise
        if not exists:
            self._release(lock)
            raise ZKLockException(f"node {node.id} was deleted while locking it")
        node.lock = lock
        try:
            if not change(node):
                self.unlock_node(node)
                return False
            self.store_node(node)
        except Exception:
            self.unlock_node(node)
            raise
        return True

    def try_lock_node(self, node_id: str, blocking: bool = False,
                      timeout: float | None = None) -> Node | None:
        """A fresh, locked copy of node ``node_id``, or None if it is gone
        or locked by someone else.  Workers use it to act on a node they
        saw in a cache (cached records must never be changed)."""
        node = Node(node_id)
        try:
            self.lock_node(node, blocking=blocking, timeout=timeout)
        except ZKLockException:
            return None
        except ModelError as e:
            # Rewritten meanwhile into something we cannot read: not ours
            # to act on (lock_node released the lock).
            log.debug("Not acting on node %s: %s", node_id, e)
            return None
        return node

    def unlock_node(self, node: Node) -> None:
        lock, node.lock = node.lock, None
        self._release(lock)

    def node_lock_contenders(self, node_id: str) -> list[str]:
        return self.lock_contenders(node_lock_path(node_id))

    def force_unlock_node(self, node: Node) -> bool:
        return self.force_unlock(node_lock_path(_id(node)))

    def node_lock_holder(self, node_id: str) -> str | None:
        """The identifier the holder of the node's lock gave (None when the
        node is not locked, "" when the holder gave none)."""
        return self.lock_holder(node_lock_path(node_id))

    def delete_node(self, node: Node) -> None:
        """Remove a node record.

        When we hold its lock and are its only contender, the record, the
        lock and the lock dir go in one transaction.  Otherwise the record
        is first marked ``deleted`` so that a worker that locks it between
        the steps finishes the removal instead of resurrecting it; then
        the znode and its lock dir are removed.
        """
        if self._delete_node_at_once(node):
            return
        try:
            node.state = models.DELETED
            self.store_node(node)
        except NoNodeError:
            pass
        self._delete_recursive(node_path(_id(node)))
        # Our own lock contender went with the tree.
        if node.lock is not None:
            node.lock.is_acquired = False
            node.lock = None

    def _delete_node_at_once(self, node: Node) -> bool:
        lock = node.lock
        if lock is None or not lock.is_acquired or lock.node is None:
            return False
        transaction = self._transaction()
        transaction.delete(f"{lock.path}/{lock.node}")
        transaction.delete(lock.path)
        transaction.delete(node_path(_id(node)))
        results = transaction.commit()
        if any(isinstance(r, Exception) for r in results):
            # Another contender waits (or the tree changed): step by step.
            return False
        lock.is_acquired = False
        lock.node = None
        node.lock = None
        return True

    def lock_raw_node(self, node_id: str, blocking: bool = True,
                      timeout: float | None = None) -> Lock:
        """Lock a node without reading its record, for records that cannot
        be parsed (an operator removing them).  Raises ZKLockException."""
        return self._lock(node_lock_path(node_id), blocking, timeout, None,
                          record_lock=True)

    def delete_raw_node(self, node_id: str) -> None:
        """Delete a node znode without touching its data (broken records)."""
        self._delete_recursive(node_path(node_id))

    # Node requests ------------------------------------------------------

    def request_ids(self) -> list[str]:
        return self._children(REQUEST_ROOT)

    @staticmethod
    def _parse_request(request_id: str, data: bytes, stat: Any) -> NodeRequest | None:
        try:
            request = NodeRequest.deserialize(data, request_id)
        except ModelError as e:
            log.warning("Skipping unparsable node request %s: %s", request_id, e)
            return None
        request.version = stat.version
        request.mzxid = stat.mzxid
        return request

    def request_exists(self, request_id: str) -> bool:
        """Whether the request's znode exists now (asks ZooKeeper)."""
        return self.kazoo.exists(request_path(request_id)) is not None

    def get_request(self, request_id: str) -> NodeRequest | None:
        got = self._get(request_path(request_id))
        if got is None:
            return None
        return self._parse_request(request_id, *got)

    def get_requests(self) -> list[NodeRequest]:
        ids = self.request_ids()
        out = []
        for request_id, got in zip(ids, self.get_many(request_path(i) for i in ids),
                                   strict=True):
            if got is None:
                continue
            request = self._parse_request(request_id, got[1], got[2])
            if request is not None:
                out.append(request)
        return sorted(out, key=NodeRequest.sort_key)

    def store_request(self, request: NodeRequest, priority: str = "100",
                      ephemeral: bool = False) -> None:
        """Create a request (one call, all keys) or overwrite an existing one.

        New requests get the id ``<priority>-<seq10>``; nodepool's own
        requests are ephemeral so they vanish with the launcher that made
        them.
        """
        if request.id is None:
            if request.event_id is None:
                request.event_id = uuid.uuid4().hex
            if request.created_time is None:
                request.created_time = time.time()
        data = request.serialize()
        if request.id is None:
            path = self.kazoo.create(
                f"{REQUEST_ROOT}/{priority}-", data, ephemeral=ephemeral,
                sequence=True, makepath=True)
            request.id = path.rsplit("/", 1)[1]
            request.version = 0
        else:
            stat = self._set_record(request_path(_id(request)), data)
            request.version = stat.version

    def refresh_request(self, request: NodeRequest) -> bool:
        """Re-read ``request`` in place; False if it no longer exists."""
        return self._refresh(request, request_path(_id(request)), f"request {request.id}")

    def delete_request(self, request: NodeRequest) -> None:
        """Delete a request nodepool created itself (never Zuul's)."""
        try:
            self.kazoo.delete(request_path(_id(request)))
        except NoNodeError:
            pass

    def lock_request(self, request: NodeRequest, blocking: bool = True,
                     timeout: float | None = None, identifier: str | None = None,
                     lock: Lock | None = None) -> None:
        """Lock a request and refresh its data; raises ZKLockException if
        it is held elsewhere or vanished.  (``lock``: a RequestLock to
        acquire, made by the caller.)"""
        if request.lock is not None:
            raise ZKLockException(f"request {request.id} is already locked by this process")
        lock = self._lock(request_lock_path(_id(request)), blocking, timeout, identifier,
                          lock_class=RequestLock, lock=lock)
        try:
            exists = self.refresh_request(request)
        except Exception:
            self._release(lock)
            raise
        if not exists:
            self._release(lock)
            raise ZKLockException(f"request {request.id} was deleted while locking it")
        request.lock = lock

    def claim_request(self, request: NodeRequest,
                      change: Callable[[NodeRequest], bool],
                      new_nodes: Sequence[Node] = ()) -> bool:
        """Lock ``request`` (the caller's own copy, updated in place)
        without waiting and store it as ``change`` leaves it, keeping the
        lock.

        ``change(request)`` edits the request in place and says whether to
        store it; when it says no, nothing is written, the lock is released
        and False returned.  Raises ZKLockException when the request is
        locked elsewhere or gone; on any other error the lock is released.

        A request read from a cache (its ``version`` set) that was never
        locked before takes one round trip: one transaction creates its
        lock dir (so the contender is provably the first: kazoo's recipe
        would find no predecessor) and the contender, and writes the
        change only if the request is still at ``version`` (so the copy
        that was changed is the current one).  Otherwise, as usual: lock,
        re-read, change, write.

        ``new_nodes`` (records without an id, in ``init``) are created by
        that same transaction, so they exist exactly when the request is
        ours; each gets its id.  When the claim takes the slower way they
        are left without one (their launches create them).
        """
        if request.lock is not None:
            raise ZKLockException(f"request {request.id} is already locked by this process")
        path = request_path(_id(request))
        lock = RequestLock(self.kazoo, request_lock_path(_id(request)))
        if request.version is not None:
            cached = NodeRequest.fromDict(request.toDict(), request.id)
            if change(cached):
                transaction = self._transaction()
                transaction.create(lock.path)
                transaction.create(lock.create_path, lock.data, ephemeral=True,
                                   sequence=True)
                for node in new_nodes:
                    if node.created_time is None:
                        node.created_time = node.state_time
                    transaction.create(f"{NODE_ROOT}/", node.serialize(), sequence=True)
                transaction.set_data(path, cached.serialize(), version=request.version)
                results = self._commit_claim(transaction, lock, request, cached,
                                             contender_at=1)
                if request.lock is lock:
                    lock.assured_path = True
                    assert results is not None
                    for node, created in zip(new_nodes, results[2:-1], strict=True):
                        node.id = created.rsplit("/", 1)[1]
                        node.version = 0
                    return True
                if results is not None and isinstance(results[0], NodeExistsError):
                    lock.assured_path = True
        self.lock_request(request, blocking=False, lock=lock)
        try:
            if not change(request):
                self.unlock_request(request)
                return False
            self.store_request(request)
        except Exception:
            self.unlock_request(request)
            raise
        return True

    def store_request_and_unlock(self, request: NodeRequest, nodes: Iterable[Node]) -> bool:
        """Store ``request`` and release its lock and the locks of
        ``nodes`` (those it holds), all in one transaction: whoever sees
        the new request (Zuul seeing it fulfilled) finds the nodes
        unlocked, as when they are unlocked first.  False when that could
        not be done (the request is gone, a lock was lost, the connection
        dropped): then nothing is changed, or it was and doing it again
        step by step is harmless; the caller does that."""
        lock = request.lock
        held = [node for node in nodes if node.lock is not None]
        locks = [node.lock for node in held] + [lock]
        if any(lk is None or not lk.is_acquired or lk.node is None for lk in locks):
            return False
        transaction = self._transaction()
        for node in held:
            transaction.delete(f"{node.lock.path}/{node.lock.node}")
        transaction.set_data(request_path(_id(request)), request.serialize())
        transaction.delete(f"{lock.path}/{lock.node}")
        try:
            results = transaction.commit()
        except KazooException:
            return False
        if any(isinstance(r, Exception) for r in results):
            return False
        for lk in locks:
            lk.is_acquired = False
            lk.node = None
        for node in held:
            node.lock = None
        request.lock = None
        request.version = results[len(held)].version
        request.mzxid = results[len(held)].mzxid
        return True

    def unlock_request(self, request: NodeRequest) -> None:
        lock, request.lock = request.lock, None
        self._release(lock)

    def request_lock_contenders(self, request_id: str) -> list[str]:
        return self.lock_contenders(request_lock_path(request_id))

    def delete_stale_request_locks(self, max_age: float) -> list[str]:
        """Remove lock dirs of requests that are gone, unlocked, and older
        than ``max_age`` seconds.  Returns the ids removed."""
        existing = set(self.request_ids())
        removed = []
        now = time.time()
        lock_dirs = self._children(REQUEST_LOCK_ROOT)
        times = self._lock_dir_times
        listed = set(lock_dirs)
        for request_id in [i for i in times if i not in listed]:
            del times[request_id]
        unknown = [i for i in lock_dirs if i not in existing and i not in times]
        pending = [(i, self.kazoo.exists_async(request_lock_path(i))) for i in unknown]
        for request_id, result in pending:
            stat = result.get()
            if stat is not None:
                times[request_id] = stat.mtime / 1000
        for request_id in lock_dirs:
            made = times.get(request_id)
            if request_id in existing or made is None or now - made < max_age:
                continue
            try:
                # Non-recursive: fails if someone holds it right now.
                self.kazoo.delete(request_lock_path(request_id))
                removed.append(request_id)
            except (NoNodeError, NotEmptyError):
                continue
            finally:
                times.pop(request_id, None)
        return removed

    # Images -------------------------------------------------------------

    def image_names(self) -> list[str]:
        return sorted(self._children(IMAGE_ROOT))

    def is_image_paused(self, image: str) -> bool:
        return self.kazoo.exists(f"{image_path(image)}/pause") is not None

    def set_image_paused(self, image: str, paused: bool) -> None:
        path = f"{image_path(image)}/pause"
        if paused:
            try:
                self.kazoo.create(path, b"", makepath=True)
            except NodeExistsError:
                pass
        else:
            try:
                self.kazoo.delete(path)
            except NoNodeError:
                pass

    def submit_build_request(self, image: str) -> None:
        try:
            self.kazoo.create(f"{image_path(image)}/request-build", b"", makepath=True)
        except NodeExistsError:
            pass

    def build_request_time(self, image: str) -> float | None:
        """When a manual build was requested (epoch s), or None."""
        stat = self.kazoo.exists(f"{image_path(image)}/request-build")
        return stat.ctime / 1000 if stat else None

    def remove_build_request(self, image: str) -> None:
        try:
            self.kazoo.delete(f"{image_path(image)}/request-build")
        except NoNodeError:
            pass

    def build_ids(self, image: str) -> list[str]:
        return [c for c in self._children(build_path(image))
                if c != "lock" and not is_lock_child(c)]

    def get_build(self, image: str, build_id: str) -> ImageBuild | None:
        got = self._get(build_path(image, build_id))
        if got is None:
            return None
        return self._parse_build(image, build_id, *got)

    @staticmethod
    def _parse_build(image: str, build_id: str, data: bytes, stat: Any) -> ImageBuild | None:
        try:
            build = ImageBuild.deserialize(data, build_id, image)
        except ModelError as e:
            log.warning("Skipping unparsable image build %s-%s: %s", image, build_id, e)
            return None
        build.version = stat.version
        build.mzxid = stat.mzxid
        return build

    def get_builds(self, image: str, states: Iterable[str] | None = None) -> list[ImageBuild]:
        """Builds of ``image``, newest first (by state_time)."""
        ids = self.build_ids(image)
        wanted = set(states) if states else None
        out = []
        for build_id, got in zip(ids, self.get_many(build_path(image, i) for i in ids),
                                 strict=True):
            if got is None:
                continue
            build = self._parse_build(image, build_id, got[1], got[2])
            if build and (wanted is None or build.state in wanted):
                out.append(build)
        return sorted(out, key=lambda b: b.state_time, reverse=True)

    def store_build(self, image: str, build: ImageBuild, create: bool = False) -> str:
        """Create (new uuid4-hex id) or overwrite a build record.

        With ``create`` the record is created under the ``build.id`` the
        caller chose (the builder names the build before taking the
        image's build lock, so the lock's identifier can name it too).
        """
        build.image_name = image
        data = build.serialize()
        if build.id is None or create:
            if build.id is None:
                build.id = uuid.uuid4().hex
            self.kazoo.create(build_path(image, build.id), data, makepath=True)
        else:
            self.kazoo.set(build_path(image, build.id), data)
        return build.id

    def delete_build(self, image: str, build_id: str) -> bool:
        """Delete a build once it has no uploads left; False otherwise."""
        for provider in self.build_providers(image, build_id):
            if self.upload_ids(image, build_id, provider):
                return False
        self._delete_recursive(build_path(image, build_id))
        return True

    def build_providers(self, image: str, build_id: str) -> list[str]:
        return self._children(f"{build_path(image, build_id)}/providers")

    def upload_ids(self, image: str, build_id: str, provider: str) -> list[str]:
        return [c for c in self._children(upload_path(image, build_id, provider))
                if c != "lock" and not is_lock_child(c)]

    @staticmethod
    def _parse_upload(image: str, build_id: str, provider: str, upload_id: str,
                      data: bytes, stat: Any) -> ImageUpload | None:
        try:
            upload = ImageUpload.deserialize(data, build_id, provider, image, upload_id)
        except ModelError as e:
            log.warning("Skipping unparsable image upload %s: %s",
                        upload_path(image, build_id, provider, upload_id), e)
            return None
        upload.version = stat.version
        upload.mzxid = stat.mzxid
        return upload

    def get_upload(self, image: str, build_id: str, provider: str,
                   upload_id: str) -> ImageUpload | None:
        got = self._get(upload_path(image, build_id, provider, upload_id))
        if got is None:
            return None
        return self._parse_upload(image, build_id, provider, upload_id, *got)

    def get_uploads(self, image: str, build_id: str, provider: str,
                    states: Iterable[str] | None = None) -> list[ImageUpload]:
        """Uploads of one build to one provider, newest first."""
        ids = self.upload_ids(image, build_id, provider)
        wanted = set(states) if states else None
        out = []
        paths = (upload_path(image, build_id, provider, i) for i in ids)
        for upload_id, got in zip(ids, self.get_many(paths), strict=True):
            if got is None:
                continue
            upload = self._parse_upload(image, build_id, provider, upload_id,
                                        got[1], got[2])
            if upload and (wanted is None or upload.state in wanted):
                out.append(upload)
        return sorted(out, key=lambda u: u.state_time, reverse=True)

    def store_upload(self, image: str, build_id: str, provider: str,
                     upload: ImageUpload) -> str:
        """Create (sequential id) or overwrite an upload record."""
        upload.image_name, upload.build_id, upload.provider_name = image, build_id, provider
        data = upload.serialize()
        if upload.id is None:
            path = self.kazoo.create(f"{upload_path(image, build_id, provider)}/", data,
                                     sequence=True, makepath=True)
            upload.id = path.rsplit("/", 1)[1]
        else:
            self.kazoo.set(upload_path(image, build_id, provider, upload.id), data)
        return upload.id

    def replace_upload(self, upload: ImageUpload) -> bool:
        """Overwrite an upload record read earlier, only if nobody changed
        it since (``upload.version``); False when it changed or is gone."""
        if upload.version is None or upload.id is None:
            raise ValueError("replace_upload needs a record read from ZooKeeper")
        path = upload_path(str(upload.image_name), str(upload.build_id),
                           str(upload.provider_name), upload.id)
        version = self.set_if_version(path, upload.serialize(), upload.version)
        if version is None:
            return False
        upload.version = version
        return True

    def delete_upload(self, image: str, build_id: str, provider: str,
                      upload_id: str) -> None:
        self._delete_recursive(upload_path(image, build_id, provider, upload_id))

    def most_recent_upload(self, image: str, provider: str,
                           state: str = models.READY) -> ImageUpload | None:
        """The newest upload of ``image`` to ``provider`` in ``state``."""
        best = None
        for build_id in self.build_ids(image):
            for upload in self.get_uploads(image, build_id, provider, [state]):
                if best is None or upload.state_time > best.state_time:
                    best = upload
        return best

    def serving_upload(self, image: str, provider: str) -> ImageUpload | None:
        """The newest upload of ``image`` to ``provider`` that nodes may
        boot from (ready, and not awaiting or failing a check)."""
        best = None
        for build_id in self.build_ids(image):
            for upload in self.get_uploads(image, build_id, provider, [models.READY]):
                if upload.in_service and (best is None or upload.state_time > best.state_time):
                    best = upload
        return best

    # Image locks (builder) ----------------------------------------------

    def lock_image_builds(self, image: str, blocking: bool = True,
                          timeout: float | None = None,
                          identifier: str | None = None) -> Lock:
        """Serialises builds of one image across builders; ``identifier``
        (the lock contender's data) tells others which build is underway."""
        return self._lock(f"{build_path(image)}/lock", blocking, timeout, identifier)

    def lock_build(self, image: str, build_id: str, blocking: bool = True,
                   timeout: float | None = None) -> Lock:
        """Lock one build record; fails (never re-creates it) if it is gone."""
        return self._lock(f"{build_path(image, build_id)}/lock", blocking, timeout, None,
                          record_lock=True)

    def lock_image_uploads(self, image: str, build_id: str, provider: str,
                           blocking: bool = True, timeout: float | None = None) -> Lock:
        """One uploader per build and provider.

        The ``providers/<provider>/images`` dirs are created as needed, but
        never the build itself: locking the uploads of a build that was
        just deleted fails instead of resurrecting an empty build znode.
        """
        base = build_path(image, build_id)
        for path in (f"{base}/providers", f"{base}/providers/{provider}",
                     upload_path(image, build_id, provider)):
            try:
                self.kazoo.create(path)
            except NodeExistsError:
                pass
            except NoNodeError as e:
                raise ZKLockException(f"build {image}-{build_id} does not exist") from e
        return self._lock(f"{upload_path(image, build_id, provider)}/lock",
                          blocking, timeout, None, record_lock=True)

    def lock_upload(self, image: str, build_id: str, provider: str, upload_id: str,
                    blocking: bool = True, timeout: float | None = None) -> Lock:
        """Lock one upload record; fails (never re-creates it) if it is gone."""
        return self._lock(f"{upload_path(image, build_id, provider, upload_id)}/lock",
                          blocking, timeout, None, record_lock=True)

    def lock_upload_validation(self, image: str, build_id: str, provider: str,
                               upload_id: str, identifier: str | None = None) -> Lock:
        """Take (without waiting) the lock one launcher holds while it
        checks an upload; fails (never re-creates the upload) if the
        upload is gone.  Ephemeral: it goes with the holder's session."""
        return self._lock(upload_validation_lock_path(image, build_id, provider, upload_id),
                          False, None, identifier, record_lock=True)

    def lock_holder(self, lock_dir: str) -> str | None:
        """The identifier (contender data) of whoever holds the lock at
        ``lock_dir``; None when nobody does, "" when the holder gave none."""
        for name in self.lock_contenders(lock_dir):
            got = self._get(f"{lock_dir}/{name}")
            if got is not None:
                return got[0].decode("utf8", "replace")
        return None

    def unlock(self, lock: Lock | None) -> None:
        self._release(lock)

    # Registered nodes (static hosts) ---------------------------------------

    def lock_registration(self, provider: str, timeout: float | None = None,
                          identifier: str | None = None) -> Lock:
        """Take the registration lock of ``provider`` (blocking up to
        ``timeout`` seconds; ZKLockException when it cannot be had).

        Every process that registers node records for a provider's
        endpoints (launchers, ``nodepool delete --now``) holds it while it
        compares the records with the endpoints' slots and writes, so two
        of them never fill one slot twice.  Only the comparison and the
        writes happen under it, never a contact with an endpoint.  The
        lock is ephemeral: it goes with the holder's session.
        """
        return self._lock(registration_lock_path(provider), True, timeout, identifier)

    # Versioned raw writes (used by component records) ------------------

    def set_if_version(self, path: str, data: bytes, version: int) -> int | None:
        """Write only if unchanged since ``version``; new version or None."""
        try:
            return self.kazoo.set(path, data, version=version).version
        except (BadVersionError, NoNodeError):
            return None

    # Raw records (for data this version cannot parse) ---------------------

    def get_raw_node(self, node_id: str) -> tuple[bytes, Any] | None:
        """(data, stat) of a node znode, None if it does not exist."""
        return self._get(node_path(node_id))

    def get_raw_request(self, request_id: str) -> tuple[bytes, Any] | None:
        """(data, stat) of a request znode, None if it does not exist."""
        return self._get(request_path(request_id))

    def replace_request_if_version(self, request: NodeRequest, version: int) -> bool:
        """Overwrite a request znode (whatever it held) with ``request``
        if it is unchanged since ``version``."""
        return self.set_if_version(request_path(_id(request)), request.serialize(),
                                   version) is not None

    def watch_request(self, request_id: str, watch: Any) -> bytes | None:
        """The request's data, with a one-shot ``watch(event)`` on its next
        change; None (and no watch) if it does not exist."""
        try:
            data, _ = self.kazoo.get(request_path(request_id), watch=watch)
        except NoNodeError:
            return None
        return data

    def image_exists(self, image: str) -> bool:
        return self.kazoo.exists(image_path(image)) is not None

    def erase_uploads(self, image: str, build_id: str, provider: str) -> None:
        """Remove every upload record of ``provider`` for a build (``nodepool
        erase``)."""
        try:
            self.kazoo.delete(f"{build_path(image, build_id)}/providers/{provider}",
                              recursive=True)
        except NoNodeError:
            pass

    # Coordination (ours) ---------------------------------------------------

    def pool_coordination_lock(self, provider: str, pool: str, identifier: str) -> Lock:
        """A lock (not yet taken) serialising capacity decisions of the
        launchers serving one provider pool."""
        return self.kazoo.Lock(f"{POOL_COORDINATION_ROOT}/{provider}/{pool}", identifier)

    def leaked_image_cleanup_lock(self, provider: str, identifier: str) -> Lock:
        """A lock (not yet taken) so one builder at a time cleans up a
        provider's leaked images."""
        return self.kazoo.Lock(
            f"{BUILDER_COORDINATION_ROOT}/leaked-images/{provider}", identifier)

    def election(self, name: str, identifier: str) -> Any:
        """kazoo's Election recipe at ``/nodepool/elections/<name>``."""
        return self.kazoo.Election(f"{ELECTION_ROOT}/{name}", identifier)

    # Image data export and import --------------------------------------------

    def advance_upload_sequence(self, image: str, build_id: str, provider: str,
                                number: int, keep: set[str]) -> None:
        """Make the provider's next upload id higher than ``number`` (the
        sequence counter lives in the parent znode), deleting the
        placeholder znodes this creates unless their path is in ``keep``."""
        parent = upload_path(image, build_id, provider, "x").rsplit("/", 1)[0]
        for _ in range(number):
            created = self.kazoo.create(parent + "/", b"", sequence=True, makepath=True)
            if created not in keep:
                self.kazoo.delete(created)

    def write_image_record(self, path: str, payload: bytes) -> None:
        """Create or overwrite an image record (build, upload or pause flag)
        at ``path``, which must be under the image root."""
        if not path.startswith(IMAGE_ROOT + "/"):
            raise ValueError(f"{path} is not an image record")
        if self.kazoo.exists(path):
            self.kazoo.set(path, payload)
            return
        try:
            self.kazoo.create(path, payload, makepath=True)
        except NodeExistsError:
            self.kazoo.set(path, payload)
