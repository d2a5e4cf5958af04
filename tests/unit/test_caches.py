"""handlers.instance.Caches: which Instances wait for which Flavor or Image."""

from __future__ import annotations

from kova.controllers.instance import Caches


def test_waiters_are_woken_once_and_deleted_instances_forgotten() -> None:
    caches = Caches(flavors={}, images={}, instances={}, datavolumes={}, vms={}, vmis={}, pvcs={},
                    keypairs={}, servergroups={}, zones={})  # type: ignore[arg-type]
    caches.wait_for(("Flavor", "m1"), "ns", "a")
    caches.wait_for(("Flavor", "m1"), "ns", "b")
    caches.wait_for(("Image", "ns", "os"), "ns", "b")
    caches.forget("ns", "b")
    assert caches.waiters(("Flavor", "m1")) == {("ns", "a")}
    assert caches.waiters(("Flavor", "m1")) == set()  # woken once; a reconcile that still waits says so again
    assert caches.waiting == {}  # b's wait for the image went with it
