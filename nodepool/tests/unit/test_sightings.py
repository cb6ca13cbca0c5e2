"""The two-sightings rule: two listings, the second asked for after the
first was answered."""

from __future__ import annotations

from nodepool.driver.sightings import Sightings


def test_second_listing_confirms_what_the_first_showed():
    sightings: Sightings[str] = Sightings()
    assert sightings.confirm({"a", "b"}, requested_at=1.0, answered_at=2.0) == set()
    assert sightings.confirm({"a", "c"}, requested_at=3.0, answered_at=4.0) == {"a"}
    # "b" was missing from the second listing: it starts again.
    assert sightings.confirm({"a", "b", "c"}, requested_at=5.0, answered_at=6.0) == {"a", "c"}
    assert sightings.confirm({"b"}, requested_at=7.0, answered_at=8.0) == {"b"}


def test_overlapping_listings_are_not_two_looks():
    # A listing asked for before the first was answered may be the very
    # same answer (a shared cache, a request in flight): it proves nothing.
    sightings: Sightings[str] = Sightings()
    sightings.confirm({"a"}, requested_at=1.0, answered_at=3.0)
    assert sightings.confirm({"a"}, requested_at=2.0, answered_at=4.0) == set()
    # ...but the first sighting still stands for a later listing.
    assert sightings.confirm({"a"}, requested_at=3.5, answered_at=5.0) == {"a"}


def test_look_stamps_a_listing_with_when_it_was_asked_and_answered():
    sightings: Sightings[str] = Sightings()
    first, requested_at, answered_at = sightings.look(lambda: ["x"])
    assert first == ["x"] and requested_at <= answered_at
    assert sightings.confirm(first, requested_at, answered_at) == set()
    second, requested_at, answered_at = sightings.look(lambda: ["x"])
    assert sightings.confirm(second, requested_at, answered_at) == {"x"}
