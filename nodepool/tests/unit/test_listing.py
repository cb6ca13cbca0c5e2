"""The shared listing: one list call however many launches wait on it."""

from __future__ import annotations

import threading
import time
from types import SimpleNamespace

import pytest

from nodepool.driver.listing import SharedListing


def listing(fetch, ttl):
    return SharedListing(fetch, lambda s: s.id, ttl)


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


def test_server_listing_failure_is_shared_for_its_lifetime():
    calls = []

    def fetch():
        calls.append(1)
        raise ConnectionError("cloud is down")

    cache = listing(fetch, ttl=0.2)
    for _ in range(3):
        with pytest.raises(ConnectionError):
            cache.get()
    assert len(calls) == 1
    time.sleep(0.25)
    with pytest.raises(ConnectionError):
        cache.get()
    assert len(calls) == 2


def test_newer_than_forces_a_new_listing():
    calls = []

    def fetch():
        calls.append(1)
        return [SimpleNamespace(id=str(len(calls)))]

    cache = listing(fetch, ttl=100)
    first, taken = cache.get()
    again, same = cache.get()
    assert same == taken and len(calls) == 1
    newer, later = cache.get(newer_than=taken)
    assert later > taken and len(calls) == 2
    assert set(newer) == {"2"}
