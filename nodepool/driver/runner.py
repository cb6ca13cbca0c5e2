"""Advancing many cloud operations with a few threads.

A launch waits for its cloud most of the time: the server is building, the
host is booting.  Holding a thread per launch for that (upstream's legacy
drivers did, and so did ours) makes the thread count grow with the launches
in flight.  Instead each launch (and each delete) is a :class:`Task` whose
``step()`` does one short piece of work and says when it wants to be called
again; one :class:`StepRunner` per provider keeps the tasks in a time-ordered
queue and runs due steps on a small, fixed pool of threads.

The runner guarantees that a task is never stepped by two threads at once,
that a task woken with :meth:`StepRunner.wake` runs as soon as a thread is
free, and that :meth:`StepRunner.stop` returns promptly: steps in progress
finish (each is short by contract), nothing new starts.
"""

from __future__ import annotations

import heapq
import itertools
import logging
import threading
import time
from concurrent.futures import ThreadPoolExecutor

log = logging.getLogger("nodepool.driver.runner")

DEFAULT_WORKERS = 8
# Steps of one task run back to back on one thread when each asks for the
# next at once and no other task is due (then it queues like any other).
MAX_RUN_ON = 4


class Task:
    """Something advanced by a :class:`StepRunner` in short steps."""

    def step(self) -> float | None:
        """Do one short piece of work.  Return how many seconds to wait
        before the next step, or None when the task is over.

        Must not block for long (one cloud or ZooKeeper call is fine; a
        wait loop is not) and must not raise: a task handles its own
        failures.  If it raises anyway the runner logs it and calls
        :meth:`crashed`.
        """
        raise NotImplementedError

    def crashed(self, error: BaseException) -> None:
        """``step()`` raised: the task is dropped from the runner; clean up."""


class RateLimiter:
    """At most ``rate`` steps per second on average (None: unlimited),
    shared by every thread of one runner."""

    def __init__(self, rate: float | None) -> None:
        self.interval = 1.0 / rate if rate and rate > 0 else 0.0
        self._lock = threading.Lock()
        self._next = 0.0

    def delay(self) -> float:
        """Reserve the next slot; return how long to wait for it."""
        if not self.interval:
            return 0.0
        with self._lock:
            now = time.monotonic()
            slot = max(now, self._next)
            self._next = slot + self.interval
            return slot - now


class StepRunner:
    """Runs the steps of many tasks on ``workers`` threads."""

    def __init__(self, name: str, workers: int = DEFAULT_WORKERS,
                 rate: float | None = None) -> None:
        self.name = name
        self._cond = threading.Condition()
        self._queue: list[tuple[float, int, Task]] = []
        self._seq = itertools.count()
        # Tasks known to the runner (queued or being stepped) and the ones
        # woken while being stepped (run again at once afterwards).
        self._tasks: set[Task] = set()
        self._running_now: set[Task] = set()
        self._woken: set[Task] = set()
        self._limiter = RateLimiter(rate)
        self._running = True
        self._pool = ThreadPoolExecutor(max_workers=max(1, workers),
                                        thread_name_prefix=f"Step.{name}")
        self._thread = threading.Thread(target=self._schedule, daemon=True,
                                        name=f"StepRunner.{name}")
        self._thread.start()

    # Public -------------------------------------------------------------

    def add(self, task: Task, delay: float = 0.0) -> None:
        """Start stepping ``task`` after ``delay`` seconds."""
        with self._cond:
            if not self._running:
                raise RuntimeError(f"runner {self.name} is stopped")
            self._tasks.add(task)
            self._push(task, time.monotonic() + delay)

    def wake(self, task: Task) -> None:
        """Step ``task`` as soon as possible (no-op if it is not ours)."""
        with self._cond:
            if task not in self._tasks:
                return
            if task in self._running_now:
                self._woken.add(task)
                return
            self._queue = [e for e in self._queue if e[2] is not task]
            heapq.heapify(self._queue)
            self._push(task, time.monotonic())

    def __len__(self) -> int:
        with self._cond:
            return len(self._tasks)

    def stop(self) -> None:
        """Start no more steps; steps in progress finish on their own."""
        with self._cond:
            self._running = False
            self._queue.clear()
            self._cond.notify_all()
        self._pool.shutdown(wait=False, cancel_futures=True)

    def join(self, timeout: float | None = None) -> None:
        """Wait for the steps in progress after :meth:`stop`."""
        self._thread.join(timeout)
        deadline = None if timeout is None else time.monotonic() + timeout
        with self._cond:
            while self._running_now:
                remaining = None if deadline is None else deadline - time.monotonic()
                if remaining is not None and remaining <= 0:
                    break
                self._cond.wait(remaining)

    # Internals ------------------------------------------------------------

    def _push(self, task: Task, due: float) -> None:
        heapq.heappush(self._queue, (due, next(self._seq), task))
        if self._queue[0][2] is task:
            # Due before whatever the scheduler waits for: wake it.
            self._cond.notify_all()

    def _schedule(self) -> None:
        while True:
            with self._cond:
                while self._running:
                    now = time.monotonic()
                    if self._queue and self._queue[0][0] <= now:
                        break
                    timeout = self._queue[0][0] - now if self._queue else None
                    self._cond.wait(timeout)
                if not self._running:
                    return
                due: list[Task] = []
                now = time.monotonic()
                while self._queue and self._queue[0][0] <= now:
                    task = heapq.heappop(self._queue)[2]
                    self._running_now.add(task)
                    due.append(task)
            for task in due:
                try:
                    self._pool.submit(self._run, task)
                except RuntimeError:  # stopped meanwhile
                    with self._cond:
                        self._running_now.discard(task)
                        self._cond.notify_all()

    def _run(self, task: Task) -> None:
        for _ in range(MAX_RUN_ON):
            delay = self._step(task)
            with self._cond:
                woken = task in self._woken
                self._woken.discard(task)
                if delay is None:
                    self._running_now.discard(task)
                    self._tasks.discard(task)
                elif not self._running:
                    self._running_now.discard(task)
                elif delay <= 0 or woken:
                    if not self._queue or self._queue[0][0] > time.monotonic():
                        # Due now and nothing else is: step it again on
                        # this thread, without a hop through the
                        # scheduler and another worker.
                        continue
                    self._running_now.discard(task)
                    self._push(task, time.monotonic())
                else:
                    self._running_now.discard(task)
                    self._push(task, time.monotonic() + delay)
                if not self._running:
                    # join() waits for the steps in progress.
                    self._cond.notify_all()
                return
        with self._cond:
            self._running_now.discard(task)
            if self._running:
                self._push(task, time.monotonic())
            else:
                self._cond.notify_all()

    def _step(self, task: Task) -> float | None:
        """One step of ``task``: the delay it asks for, None when over."""
        wait = self._limiter.delay()
        if wait:
            time.sleep(wait)
        try:
            return task.step()
        except BaseException as e:  # a task must not take the runner down
            log.exception("Unexpected error in a step of %s (runner %s)", task, self.name)
            try:
                task.crashed(e)
            except Exception:
                log.exception("Error cleaning up after %s", task)
            return None
