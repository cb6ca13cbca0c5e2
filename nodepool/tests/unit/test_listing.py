"""The shared listing: one list call however many launches wait on it."""

from __future__ import annotations

import threading
import time
from types import SimpleNamespace

import pytest

from nodepool.driver.listing import SharedListing


def listing(fetch, ttl, **kw):
    return SharedListing(fetch, lambda s: s.id, ttl, **kw)


def test_server_listing_is_fetched_once_for_concurrent_waiters():
    calls = []

    def fetch():
        calls.append(time.monotonic())
        time.sleep(0.1)
        return [SimpleNamespace(id="a"), SimpleNamespace(id="b")]

    cache = listing(fetch, ttl=10)
    results = []
    threads = [threading.Thread(target=lambda: results.append(cache.get()))
               for _ in range(8)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert len(calls) == 1
    assert all(set(servers) == {"a", "b"} for servers, _ in results)
    # The listing is dated when it was asked for, not when it arrived.
    assert results[0][1] <= calls[0]
    assert cache.next_refresh() > 9


def test_slow_server_listing_serves_everyone_who_waited_for_it():
    # A listing that takes longer than its lifetime to arrive (a slow API)
    # must still serve the callers queued behind it, not send each of them
    # to ask again in turn.
    clock = [0.0]
    fetching, release = threading.Event(), threading.Event()
    calls = []

    def fetch():
        calls.append(clock[0])
        fetching.set()
        release.wait(10)
        return [SimpleNamespace(id="a")]

    cache = listing(fetch, ttl=1, clock=lambda: clock[0])
    results = []
    first = threading.Thread(target=lambda: results.append(cache.get()))
    first.start()
    assert fetching.wait(10)
    clock[0] = 5.0  # the answer takes five lifetimes to come
    others = [threading.Thread(target=lambda: results.append(cache.get()))
              for _ in range(3)]
    for thread in others:
        thread.start()
    release.set()
    for thread in [first, *others]:
        thread.join(10)
    assert calls == [0.0]
    # Dated when it was asked for, however long it took.
    assert results == [({"a": results[0][0]["a"]}, 0.0)] * 4
    assert cache.next_refresh() == 1.0
    clock[0] = 6.0
    cache.get()
    assert calls == [0.0, 6.0]


def test_server_listing_requested_after_a_time_is_never_an_older_one():
    calls = []

    def fetch():
        calls.append(time.monotonic())
        return [SimpleNamespace(id=f"s{len(calls)}")]

    cache = listing(fetch, ttl=60)
    cache.get()
    cache.get()
    assert len(calls) == 1  # within its lifetime the listing is shared
    asked = time.monotonic()
    servers, listed_at = cache.get(requested_after=asked)
    assert len(calls) == 2 and set(servers) == {"s2"} and listed_at >= asked
    # A listing requested since serves such callers without a request.
    assert cache.get(requested_after=asked) == (servers, listed_at)
    assert cache.get() == (servers, listed_at)
    assert len(calls) == 2


def test_server_listing_failure_is_shared_for_its_lifetime():
    calls = []

    def fetch():
        calls.append(1)
        raise ConnectionError("cloud is down")

    clock = [0.0]
    cache = listing(fetch, ttl=0.2, clock=lambda: clock[0])
    for _ in range(3):
        with pytest.raises(ConnectionError):
            cache.get()
    assert len(calls) == 1
    clock[0] = 0.25
    with pytest.raises(ConnectionError):
        cache.get()
    assert len(calls) == 2
