"""kova.image.cache and the root disk's way through it (kova.compute.server): the golden-image cache as pure
rules; no cluster."""

from __future__ import annotations

import datetime as dt
from typing import Any

from kova.api.models import NovaStatus
from kova.api.quantity import GiB
from kova.compute import children, server
from kova.image import cache
from tests.unit.test_server import NOW, SHA, Objects, obj, world

ON = cache.Settings(namespace="kova-image-cache", max_entries=3, max_bytes=10 * GiB, min_age=dt.timedelta(hours=1))
ENTRY = cache.entry_name("uid-cirros", "fast")


def entry(name: str = ENTRY, *, phase: str = "Succeeded", image: str = "uid-cirros", gib: int = 1,
          used: dt.datetime = NOW - dt.timedelta(days=1), **status: Any) -> dict[str, Any]:
    dv = obj(name, "kova-image-cache", status={"phase": phase, **status})
    dv["metadata"]["labels"] = {cache.IMAGE_UID_LABEL: image}
    dv["metadata"]["annotations"] = {cache.BYTES_ANNOTATION: str(gib * GiB),
                                     cache.LAST_USED_ANNOTATION: cache.stamp(used)}
    return dv


def clone(of: str, phase: str) -> dict[str, Any]:
    dv = obj(f"disk-{of}-{phase}", status={"phase": phase})
    dv["metadata"]["labels"] = {cache.ENTRY_LABEL: of}
    return dv


def test_entry_names_are_one_per_image_and_class_and_fit_a_label() -> None:
    a, b = cache.entry_name("uid-1", "fast"), cache.entry_name("uid-1", "slow")
    assert a == cache.entry_name("uid-1", "fast") and a != b
    assert len(cache.entry_name("0" * 36, "x" * 253)) <= 63


def test_the_default_class_is_the_one_marked_so_the_newest_if_several() -> None:
    def sc(name: str, default: bool, created: str) -> dict[str, Any]:
        return {"metadata": {"name": name, "creationTimestamp": created, "annotations": {
            cache.DEFAULT_CLASS: "true" if default else "false"}}}
    assert cache.default_class([sc("a", False, "2026-01-01T00:00:00Z")]) is None
    assert cache.default_class([sc("a", True, "2026-01-01T00:00:00Z"), sc("b", True, "2026-02-01T00:00:00Z"),
                                sc("c", False, "2026-03-01T00:00:00Z")]) == "b"


def test_an_entry_is_a_checked_import_bound_at_once_and_a_data_source_naming_it() -> None:
    src = cache.Source("uid-1", "team-a", "cirros", SHA, 3)
    volume, source = cache.build_entry(src, "fast", "kova-image-cache", "http://store/x?sig", NOW)
    assert volume["metadata"]["name"] == source["metadata"]["name"] == cache.entry_name("uid-1", "fast")
    assert volume["spec"]["source"]["http"] == {"url": "http://store/x?sig", "checksum": f"sha512:{SHA}"}
    assert volume["spec"]["storage"] == {"storageClassName": "fast", "resources": {"requests": {"storage": "3Gi"}}}
    assert volume["metadata"]["annotations"][cache.IMMEDIATE_BIND] == "true"
    assert source["spec"] == {"source": {"pvc": {"namespace": "kova-image-cache", "name": volume["metadata"]["name"]}}}


def test_an_entry_is_as_big_as_the_image_disk_so_every_root_disk_can_hold_its_clone() -> None:
    assert cache.entry_gib(100, 1 << 30) == 1 and cache.entry_gib(100, (1 << 30) + 1) == 2
    assert cache.entry_gib(0, 0) == 1


def test_what_an_instance_reads_from_an_entry() -> None:
    assert cache.seen(None).state is cache.State.missing
    assert cache.seen(entry(phase="ImportInProgress", progress="40.00%")) == cache.Seen(cache.State.filling, "40.00%")
    assert cache.seen(entry()).state is cache.State.ready
    assert cache.seen(entry(phase="Failed")).state is cache.State.broken
    broken = cache.seen(entry(phase="ImportInProgress", restartCount=3, conditions=[
        {"type": "Running", "status": "False", "message": "Unable to connect to http data source"}]))
    assert broken == cache.Seen(cache.State.broken, why="Unable to connect to http data source")


def test_entries_count_their_clones_in_flight() -> None:
    found = cache.entries([entry(), entry("img-other", image="uid-2")], "kova-image-cache",
                          [clone(ENTRY, "CloneInProgress"), clone(ENTRY, "Succeeded"), clone("img-other", "Succeeded")])
    assert {e.name: e.clones for e in found} == {ENTRY: 1, "img-other": 0}
    assert all(e.ready and e.bytes == GiB for e in found)


def evict(*volumes: dict[str, Any], images: set[str] | None = None, disks: tuple[dict[str, Any], ...] = (),
          s: cache.Settings = ON) -> list[str]:
    found = cache.entries(volumes, "kova-image-cache", disks)
    return cache.evictions(found, images if images is not None else {e.image_uid for e in found}, s, NOW)


def test_within_bounds_nothing_goes_and_an_image_gone_takes_its_entries() -> None:
    assert evict(entry("a"), entry("b", image="u2")) == []
    assert evict(entry("a"), entry("b", image="u2"), images={"u2"}) == ["a"]


def test_over_the_count_the_least_recently_used_goes() -> None:
    day = dt.timedelta(days=1)
    vols = [entry(n, image=n, used=NOW - k * day) for n, k in (("new", 1), ("old", 4), ("mid", 2), ("older", 3))]
    assert evict(*vols) == ["old"]


def test_over_the_bytes_as_many_go_as_needed() -> None:
    vols = [entry(n, image=n, gib=4, used=NOW - dt.timedelta(days=k)) for n, k in (("a", 1), ("b", 2), ("c", 3))]
    assert evict(*vols) == ["c"]  # 12 GiB over 10: one is enough
    assert evict(*vols, s=cache.Settings("kova-image-cache", 3, 4 * GiB, dt.timedelta(hours=1))) == ["c", "b"]


def test_never_an_entry_cloned_now_filling_or_used_within_the_minimum_age() -> None:
    day = dt.timedelta(days=1)
    vols = [entry("busy", image="1", used=NOW - 9 * day), entry("filling", image="2", phase="ImportInProgress",
                                                                used=NOW - 8 * day),
            entry("fresh", image="3", used=NOW - dt.timedelta(minutes=5)), entry("idle", image="4", used=NOW - day),
            entry("recent", image="5", used=NOW - dt.timedelta(minutes=1))]
    assert evict(*vols, disks=(clone("busy", "CloneInProgress"),)) == ["idle"]  # still 4 > 3: held until of age
    # An entry whose image is gone waits for its clone to end too.
    assert evict(entry("busy", image="1"), images=set(), disks=(clone("busy", "CloneScheduled"),)) == []


# ----- the root disk through the cache (kova.compute.server) -----
CLASSES = {"cache": ON, "storage_class": "fast"}


def test_without_an_entry_the_instance_waits_in_build_and_the_entry_is_made_once() -> None:
    plan = server.plan(world(**CLASSES))
    assert plan.disks == [] and plan.vm is not None  # the VM is there; its disk waits for the entry
    assert plan.entry is not None and plan.entry.state.state is cache.State.missing
    assert (plan.entry.name, plan.entry.namespace, plan.entry.storage_class) == (ENTRY, "kova-image-cache", "fast")
    assert plan.entry.source == cache.Source("uid-cirros", "team-a", "cirros", SHA, 1)
    assert plan.step.word is NovaStatus.build and plan.step.reason == "CachingImage"
    assert "cirros" in plan.step.message and "fast" in plan.step.message
    assert plan.step.wait_on == ("DataVolume", "kova-image-cache", ENTRY)


def test_a_filling_entry_is_waited_for_with_the_same_words() -> None:
    first = server.plan(world(**CLASSES))
    plan = server.plan(world(datavolumes=Objects(entry(phase="ImportInProgress", progress="12%")), **CLASSES))
    assert plan.disks == [] and plan.entry is not None and plan.entry.state.state is cache.State.filling
    assert plan.step.message == first.step.message  # the progress is not in it: no status write per percent


def test_a_ready_entry_is_cloned_into_a_root_disk_of_the_flavor_size() -> None:
    plan = server.plan(world(datavolumes=Objects(entry()), **CLASSES))
    assert [(d.name, d.gib, d.clone) for d in plan.disks] == [("web-root", 2, ("kova-image-cache", ENTRY))]
    dv = children.build_data_volume(obj("web"), None, SHA, 2, "uid-cirros", clone=plan.disks[0].clone)
    assert dv["spec"] == {"sourceRef": {"kind": "DataSource", "namespace": "kova-image-cache", "name": ENTRY},
                          "storage": {"resources": {"requests": {"storage": "2Gi"}}}}
    assert dv["metadata"]["labels"][cache.ENTRY_LABEL] == ENTRY
    assert plan.step.message == "cloning image cirros from the image cache into a 2 GiB root disk, then starting it"
    # Said the same while CDI clones it (no write per change of words).
    dv["status"] = {"phase": "CloneInProgress"}
    dv["metadata"]["uid"] = "uid-web-root"
    later = server.plan(world(datavolumes=Objects(entry(), dv), **CLASSES))
    assert later.disks == [] and later.step.message == plan.step.message


def test_a_broken_entry_is_not_waited_for_the_disk_is_imported_directly() -> None:
    plan = server.plan(world(datavolumes=Objects(entry(phase="Failed")), **CLASSES))
    assert [(d.name, d.clone) for d in plan.disks] == [("web-root", None)]


def test_an_entry_whose_link_expired_before_cdi_read_it_is_made_again() -> None:
    stale = entry(phase="ImportInProgress", restartCount=1)
    plan = server.plan(world(datavolumes=Objects(stale), presign_ttl=dt.timedelta(minutes=30), **CLASSES))
    assert plan.entry is not None and plan.entry.expired == "uid-" + ENTRY
    assert plan.entry.state.state is cache.State.missing and plan.disks == []


def test_a_class_set_to_import_directly_or_no_cache_or_an_iso_bypasses_it() -> None:
    direct = cache.Settings("kova-image-cache", direct_classes=frozenset({"fast"}))
    for kw in ({"cache": direct, "storage_class": "fast"}, {"storage_class": "fast"},
               {"cache": ON, "storage_class": None}):
        plan = server.plan(world(**kw))
        assert plan.entry is None and [(d.name, d.clone) for d in plan.disks] == [("web-root", None)]
    iso = Objects(obj("cirros", spec={"diskFormat": "iso", "source": {"url": "http://x"}},
                      status={"status": "active", "size": 100, "osHashValue": SHA}))
    plan = server.plan(world(images=iso, **CLASSES))
    assert plan.entry is None and {d.clone for d in plan.disks} == {None}


def test_an_image_lists_its_entries_by_class() -> None:
    a, b = entry("a"), entry("b", phase="ImportInProgress")
    a["metadata"]["annotations"][cache.CLASS_ANNOTATION] = "slow"
    b["metadata"]["annotations"][cache.CLASS_ANNOTATION] = "fast"
    listed = cache.listing([a, b, entry("c", image="other")], "kova-image-cache")
    assert [(i["storageClass"], i["entry"], i["state"]) for i in listed["uid-cirros"]] == [
        ("fast", "b", "filling"), ("slow", "a", "ready")]
    assert listed["uid-cirros"][0]["lastUsed"] == cache.stamp(NOW - dt.timedelta(days=1))


def test_the_upkeep_keeps_one_timer_however_often_it_runs() -> None:
    """Each run re-arms the once-a-minute look; events must not stack timers that each run it again."""
    import asyncio
    from typing import cast

    from kova.adapters.informer import View
    from kova.adapters.runtime import Runtime
    from kova.controllers import imagecache

    class Empty:
        def objects(self) -> Any:
            return iter(())

        def get(self, key: Any) -> None:
            return None

    class Rt:
        class settings:
            image_cache = ON

    async def runs() -> list[asyncio.TimerHandle]:
        keeper = imagecache.Keeper(cast(Runtime, Rt()), cast(View, Empty()), cast(View, Empty()),
                                   cast(View, Empty()))
        handles = []
        for _ in range(5):
            await keeper.reconcile("cache")
            assert keeper.timer is not None
            handles.append(keeper.timer)
        keeper.timer.cancel()
        return handles
    handles = asyncio.run(runs())
    assert all(h.cancelled() for h in handles) and len(set(map(id, handles))) == 5
