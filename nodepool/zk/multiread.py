"""Many ZooKeeper reads in one request (``multiRead``, ZooKeeper >= 3.6).

Listing 10,000 nodes needs 20,000 reads (each node's data and its lock
directory).  kazoo sends and answers one request per pass of its
connection loop, which costs a few hundred microseconds each, so even
pipelined reads take seconds.  ZooKeeper's ``multiRead`` operation
(opcode 22) carries any number of getData/getChildren operations in one
request and returns every result, failures included, in one reply: the
same listing then costs a few dozen round trips.

Unlike a write transaction, a multiRead does not fail as a whole when one
operation fails: each result is either the value or the error of that
operation.  Servers that do not know the opcode get the same reads
pipelined one by one instead.
"""

from __future__ import annotations

import logging
import struct
from collections.abc import Iterator, Sequence
from typing import Any

from kazoo.exceptions import (
    EXCEPTIONS,
    BadArgumentsError,
    KazooException,
    MarshallingError,
    UnimplementedError,
)
from kazoo.protocol.serialization import (
    ZnodeStat,
    int_struct,
    multiheader_struct,
    stat_struct,
)

log = logging.getLogger("nodepool.zk.multiread")

GET_DATA = 4
GET_CHILDREN = 8

# Operations per request.  Replies of node records are about a kilobyte per
# node; this keeps each reply well under ZooKeeper's default 1 MB packet
# limit (jute.maxbuffer) that other clients enforce.
BATCH = 400

_STAT_SIZE = stat_struct.size
_END = multiheader_struct.pack(-1, True, -1)


_op_structs: dict[int, struct.Struct] = {}


def _op_struct(path_length: int) -> struct.Struct:
    """One operation of a multiRead request as one struct: the multi
    header, the path and the (unset) watch flag."""
    op_struct = _op_structs.get(path_length)
    if op_struct is None:
        op_struct = _op_structs[path_length] = struct.Struct(f"!iBii{path_length}sB")
    return op_struct


class MultiRead:
    """The ``multiRead`` request: a list of ``(GET_DATA | GET_CHILDREN,
    path)`` operations, paths relative to ``chroot`` (the client's).

    The reply is a list in operation order: ``(data, ZnodeStat)`` for a
    getData, a list of child names for a getChildren, or an exception
    instance (e.g. ``NoNodeError``) for an operation that failed.  With
    ``stats=False`` the stat is None (saves time on large listings).
    """

    type = 22

    def __init__(self, ops: Sequence[tuple[int, str]], stats: bool = True,
                 chroot: str = "") -> None:
        self.ops = ops
        self.stats = stats
        self.chroot = chroot

    def serialize(self) -> bytes:
        # A listing sends tens of thousands of operations: one pack call
        # each (paths of a listing mostly share a length).
        chroot = self.chroot
        parts: list[bytes] = []
        append = parts.append
        for op, path in self.ops:
            if chroot:
                path = chroot if path == "/" else chroot + path
            encoded = path.encode()
            length = len(encoded)
            append(_op_struct(length).pack(op, False, -1, length, encoded, 0))
        append(_END)
        return b"".join(parts)

    def deserialize(self, buf: bytes, offset: int) -> list[Any]:
        out: list[Any] = []
        append = out.append
        unpack_int = int_struct.unpack_from
        unpack_header = multiheader_struct.unpack_from
        header_size = multiheader_struct.size
        stats = self.stats
        while True:
            op, done, err = unpack_header(buf, offset)
            offset += header_size
            if done:
                return out
            if op == GET_DATA:
                length = unpack_int(buf, offset)[0]
                offset += 4
                if length < 0:
                    data = None
                else:
                    data = buf[offset:offset + length]
                    offset += length
                if stats:
                    append((data, ZnodeStat._make(stat_struct.unpack_from(buf, offset))))
                else:
                    append((data, None))
                offset += _STAT_SIZE
            elif op == GET_CHILDREN:
                count = unpack_int(buf, offset)[0]
                offset += 4
                children = []
                for _ in range(count):
                    length = unpack_int(buf, offset)[0]
                    offset += 4
                    children.append(buf[offset:offset + length].decode())
                    offset += length
                append(children)
            else:
                code = unpack_int(buf, offset)[0]
                offset += 4
                append(EXCEPTIONS[code or err]())

    def __repr__(self) -> str:
        return f"MultiRead({len(self.ops)} operations)"


# Clients (by id) whose server answered that it does not know multiRead.
_unsupported: set[int] = set()


def read_many(client: Any, ops: Sequence[tuple[int, str]],
              timeout: float = 60.0, stats: bool = True) -> list[Any]:
    """Run ``ops`` (``(GET_DATA | GET_CHILDREN, path)``, paths relative to
    the client's chroot) and return their results in order, as described
    for :class:`MultiRead`."""
    return list(iter_many(client, ops, timeout, stats))


def iter_many(client: Any, ops: Sequence[tuple[int, str]],
              timeout: float = 60.0, stats: bool = True) -> Iterator[Any]:
    """Like :func:`read_many`, yielding results as their batch arrives so
    the caller can work on the first records while later ones are still
    on their way.

    All batches are sent before the first reply is awaited, so the whole
    read costs about one round trip plus the server's work.
    """
    if not ops:
        return
    if id(client) not in _unsupported and hasattr(client, "_call"):
        pending = _send(client, ops, stats)
        first = True
        for result in pending:
            try:
                batch = result.get(timeout=timeout)
            except (UnimplementedError, MarshallingError, BadArgumentsError) as e:
                if not first:
                    raise
                log.info("ZooKeeper does not support multiRead (%s); reading one "
                         "by one", type(e).__name__)
                _unsupported.add(id(client))
                break
            first = False
            yield from batch
        else:
            return
    yield from _pipelined(client, ops, timeout)


def _send(client: Any, ops: Sequence[tuple[int, str]], stats: bool) -> list[Any]:
    chroot = client.chroot or ""
    pending = []
    for start in range(0, len(ops), BATCH):
        result = client.handler.async_result()
        client._call(MultiRead(ops[start:start + BATCH], stats, chroot), result)
        pending.append(result)
    return pending


def _pipelined(client: Any, ops: Sequence[tuple[int, str]],
               timeout: float) -> Iterator[Any]:
    pending = []
    for op, path in ops:
        if op == GET_DATA:
            pending.append(client.get_async(path))
        else:
            pending.append(client.get_children_async(path))
    for result in pending:
        try:
            yield result.get(timeout=timeout)
        except KazooException as e:
            yield e
