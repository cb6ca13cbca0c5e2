"""Signal handling for the daemons, kept out of the way of the code it
interrupts.

Python runs a signal handler on the main thread between two bytecodes,
which may be in the middle of a logging call: the main thread may be
flushing a log line into the very stream a handler would write to.  A
handler that logs there raises "reentrant call" inside logging, which
reports that on stderr and drops the message; a stack dump would be
lost.  A handler that takes a lock the main thread holds would deadlock.

So a handler here does only what is safe at any point: it formats what it
must see at that moment (the stack dump) and hands the rest to the
``SignalRelay`` thread through a ``queue.SimpleQueue``, whose ``put`` may
interrupt another ``put`` safely.  The relay logs, and starts the threads
that stop or reload the daemon (stopping joins threads, which a handler
must never do).
"""

from __future__ import annotations

import logging
import queue
import sys
import threading
import traceback
from collections.abc import Callable

log = logging.getLogger("nodepool.signals")
stack_log = logging.getLogger("nodepool.stack_dump")


def format_stack_dump() -> str:
    """Every thread's stack, by thread name, as one log message."""
    # Frames first: a thread that starts in between is then still named.
    frames = sys._current_frames()
    threads = {t.ident: t for t in threading.enumerate()}
    lines = [f"Thread stack dump ({len(frames)} threads):"]
    for ident, stack in frames.items():
        thread = threads.get(ident)
        name = thread.name if thread is not None else "(unknown)"
        daemon = thread.daemon if thread is not None else "?"
        lines.append(f"\nThread: {name} ({ident}, daemon: {daemon})")
        lines.extend(line.rstrip("\n") for line in traceback.format_stack(stack))
    return "\n".join(lines)


class SignalRelay:
    """A thread that runs, in order, what signal handlers hand it."""

    def __init__(self) -> None:
        self._work: queue.SimpleQueue[Callable[[], None]] = queue.SimpleQueue()
        self._thread = threading.Thread(target=self._run, name="SignalRelay", daemon=True)

    def start(self) -> None:
        self._thread.start()

    def put(self, work: Callable[[], None]) -> None:
        """Safe inside a signal handler."""
        self._work.put(work)

    def start_thread(self, target: Callable[[], None], name: str) -> None:
        """Safe inside a signal handler: the relay starts the thread."""
        self.put(lambda: threading.Thread(target=target, name=name, daemon=True).start())

    def _run(self) -> None:
        while True:
            work = self._work.get()
            try:
                work()
            except Exception:
                log.exception("Error handling a signal")

    def dump_stacks(self, signum: int, frame: object) -> None:
        """The SIGUSR2 handler: the stacks as they are now, logged by the
        relay."""
        text = format_stack_dump()
        self.put(lambda: stack_log.warning("%s", text))
