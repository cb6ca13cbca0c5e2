"""The OpenStack driver's caches ask the cloud once."""

from __future__ import annotations

from nodepool.driver.openstack.caches import Memo, NameCache


def test_name_cache_keeps_hits_only():
    found = {"present": "id-1"}
    lookups = []

    def find(name):
        lookups.append(name)
        return found.get(name)

    cache = NameCache(find)
    assert cache.get("present") == "id-1"
    assert cache.get("present") == "id-1"
    assert cache.get("later") is None
    found["later"] = "id-2"
    assert cache.get("later") == "id-2"
    assert lookups == ["present", "later", "later"]
    cache.clear()
    cache.get("present")
    assert lookups[-1] == "present"


def test_memo_can_be_cleared_while_filling():
    memo = Memo(lambda: memo.clear() or "value")
    assert memo.get() == "value"
