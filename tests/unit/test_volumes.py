"""kova.compute.volumes: a Cinder volume's plan and status word from what the caches hold; no cluster."""

from __future__ import annotations

import datetime as dt
from typing import Any

from kova.api.conditions import Progress
from kova.api.models import VolumeWord
from kova.compute import volumes
from kova.image import cache
from tests.unit.test_server import NOW, SHA, Objects, obj

ACTIVE = {"status": "active", "size": 100, "virtualSize": 3 << 30, "osHashValue": SHA}


def vol(name: str = "data", **spec: Any) -> dict[str, Any]:
    v = obj(name, spec={"size": 4, **spec})
    v["apiVersion"], v["kind"] = "compute.kova.dev/v1alpha1", "Volume"
    return v


def world(volume: dict[str, Any] | None = None, **kw: Any) -> volumes.World:
    defaults: dict[str, Any] = {
        "datavolumes": Objects(), "pvcs": Objects(), "volumes": Objects(), "storage_class": "fast",
        "images": Objects(obj("cirros", spec={"diskFormat": "qcow2", "source": {"url": "http://x"}}, status=ACTIVE))}
    return volumes.World(volume=volume or vol(), now=NOW, **{**defaults, **kw})


def claim(gib: int, capacity: int, name: str = "volume-data") -> dict[str, Any]:
    return obj(name, spec={"resources": {"requests": {"storage": f"{gib}Gi"}}},
               status={"phase": "Bound", "capacity": {"storage": f"{capacity}Gi"}})


def test_a_blank_volume_is_a_blank_data_volume_of_its_size_owned_by_it() -> None:
    p = volumes.plan(world())
    assert (p.word, p.progress, p.reason) == (VolumeWord.creating, Progress.RECONCILING, "Creating")
    assert p.create is not None and p.create["metadata"]["name"] == "volume-data"
    assert p.create["spec"] == {"source": {"blank": {}}, "storage": {
        "storageClassName": "fast", "resources": {"requests": {"storage": "4Gi"}}}}
    assert p.create["metadata"]["ownerReferences"][0]["kind"] == "Volume"
    assert p.create["metadata"]["labels"][volumes.VOLUME_LABEL] == "data"
    assert p.fields["storageClass"] == "fast" and p.fields["claim"] == "volume-data"


def test_its_type_is_its_class_and_multiattach_is_read_write_many() -> None:
    p = volumes.plan(world(vol(volumeType="slow", multiattach=True)))
    assert p.create is not None and p.create["spec"]["storage"]["storageClassName"] == "slow"
    assert p.create["spec"]["storage"]["accessModes"] == ["ReadWriteMany"]


def test_from_an_image_it_is_imported_directly_without_the_cache_with_a_link_to_sign() -> None:
    p = volumes.plan(world(vol(source={"image": "cirros"})))
    assert p.create is not None and p.create["spec"]["source"]["http"]["checksum"] == f"sha512:{SHA}"
    assert p.url_for is not None and p.url_for.uid == "uid-cirros"


def test_from_an_image_through_the_cache_it_waits_for_the_entry_then_clones_it() -> None:
    on = cache.Settings("kova-image-cache")
    p = volumes.plan(world(vol(source={"image": "cirros"}), cache=on))
    name = cache.entry_name("uid-cirros", "fast")
    assert p.create is None and p.entry is not None and p.entry.state.state is cache.State.missing
    assert p.reason == "CachingImage" and p.wait_on == ("DataVolume", "kova-image-cache", name)
    ready = obj(name, "kova-image-cache", status={"phase": "Succeeded"})
    p = volumes.plan(world(vol(source={"image": "cirros"}), cache=on, datavolumes=Objects(ready)))
    assert p.create is not None and p.create["spec"]["sourceRef"] == {
        "kind": "DataSource", "namespace": "kova-image-cache", "name": name}
    assert p.create["metadata"]["labels"][cache.ENTRY_LABEL] == name


def test_a_volume_smaller_than_its_image_or_source_volume_is_an_error() -> None:
    p = volumes.plan(world(vol(size=2, source={"image": "cirros"})))
    assert (p.word, p.reason, p.create) == (VolumeWord.error, "VolumeTooSmall", None)
    assert "needs 3 GiB" in p.message
    src = vol("src", size=8)
    src["status"] = {"status": "available"}
    p = volumes.plan(world(vol(source={"volume": "src"}), volumes=Objects(src)))
    assert (p.word, p.reason) == (VolumeWord.error, "VolumeTooSmall")


def test_a_missing_image_or_volume_is_waited_for_an_invisible_one_too() -> None:
    p = volumes.plan(world(vol(source={"image": "other/secret"})))
    assert (p.word, p.reason, p.wait_on) == (VolumeWord.creating, "WaitingForImage", ("Image", "other", "secret"))
    p = volumes.plan(world(vol(source={"volume": "later"})))
    assert (p.word, p.reason, p.wait_on) == (VolumeWord.creating, "WaitingForVolume", ("Volume", "team-a", "later"))


def test_a_clone_of_an_available_volume_reads_its_claim() -> None:
    src = vol("src", size=4)
    src["status"] = {"status": "in-use"}
    p = volumes.plan(world(vol(source={"volume": "src"}), volumes=Objects(src)))
    assert p.create is not None and p.create["spec"]["source"] == {"pvc": {"namespace": "team-a", "name": "volume-src"}}


def test_from_a_snapshot_it_is_restored_at_the_snapshots_size_then_grown_to_its_own() -> None:
    p = volumes.plan(world(vol(size=6, source={"snapshot": "nightly"})))
    assert p.create is not None and p.create["spec"]["source"] == {
        "snapshot": {"namespace": "team-a", "name": "nightly"}}
    assert "resources" not in p.create["spec"]["storage"]  # CDI takes the snapshot's restoreSize
    restored = obj("volume-data", status={"phase": "Succeeded"})
    p = volumes.plan(world(vol(size=6, source={"snapshot": "nightly"}), datavolumes=Objects(restored),
                           pvcs=Objects(claim(4, 4))))
    assert (p.word, p.grow) == (VolumeWord.extending, 6)
    # A snapshot bigger than the size asked: the volume holds the snapshot's size, and `gigabytes` counts it.
    p = volumes.plan(world(vol(size=2, source={"snapshot": "nightly"}), datavolumes=Objects(restored),
                           pvcs=Objects(claim(4, 4))))
    assert (p.word, p.grow, p.fields["size"], p.fields["allocated"]) == (VolumeWord.available, None, 4, 4)
    assert p.message == "the 4 GiB volume is available"


def test_status_words_follow_the_data_volume_and_the_claim() -> None:
    def word(dv: dict[str, Any] | None, pvc: dict[str, Any] | None, **spec: Any) -> volumes.Plan:
        return volumes.plan(world(vol(**spec), datavolumes=Objects(*[x for x in (dv,) if x]),
                                  pvcs=Objects(*[x for x in (pvc,) if x])))
    filling = obj("volume-data", status={"phase": "ImportInProgress", "progress": "40.00%"})
    p = word(filling, claim(4, 4))
    assert (p.word, p.fields["progress"], p.create) == (VolumeWord.creating, "40.00%", None)
    done = obj("volume-data", status={"phase": "Succeeded"})
    p = word(done, claim(4, 4))
    assert (p.word, p.progress, p.fields["size"]) == (VolumeWord.available, Progress.READY, 4)
    p = word(done, claim(4, 4), size=6)  # extend: the claim grows, then its capacity follows
    assert (p.word, p.grow) == (VolumeWord.extending, 6)
    p = word(done, claim(6, 4), size=6)
    assert (p.word, p.grow) == (VolumeWord.extending, None)
    failed = obj("volume-data", status={"phase": "ImportInProgress", "restartCount": 3, "conditions": [
        {"type": "Running", "status": "False", "message": "Unable to connect to http data source"}]})
    p = word(failed, claim(4, 4))
    assert (p.word, p.reason) == (VolumeWord.error, "FillFailed") and "Unable to connect" in p.message


def test_an_entry_whose_link_expired_is_made_again_for_a_volume_too() -> None:
    on = cache.Settings("kova-image-cache")
    name = cache.entry_name("uid-cirros", "fast")
    stale = obj(name, "kova-image-cache", status={"phase": "ImportInProgress", "restartCount": 1})
    p = volumes.plan(world(vol(source={"image": "cirros"}), cache=on, datavolumes=Objects(stale),
                           presign_ttl=dt.timedelta(minutes=30)))
    assert p.entry is not None and p.entry.expired == f"uid-{name}" and p.create is None


def _sized(name: str, size: int, created: str, allocated: int | None = None, **status: Any) -> dict[str, Any]:
    v = vol(name, size=size)
    v["metadata"]["creationTimestamp"] = created
    v["status"] = {**({"allocated": allocated} if allocated is not None else {}), **status}
    return v


def test_gigabytes_admits_the_oldest_first_and_refuses_for_good_what_does_not_fit() -> None:
    held = _sized("held", 6, "2026-01-01T09:00:00Z", allocated=6)
    first, second = _sized("b", 3, "2026-01-01T10:00:00Z"), _sized("a", 3, "2026-01-01T11:00:00Z")
    refused = volumes.gigabytes([second, first, held], set(), 10)
    assert list(refused) == ["a"] and refused["a"].new
    assert refused["a"].message == ("VolumeSizeExceedsAvailableQuota: Requested volume or snapshot exceeds allowed "
                                    "gigabytes quota. Requested 3G, quota is 10G and 9G has been consumed.")
    # Whichever volume asks, the verdict is the same; unlimited refuses nothing.
    assert volumes.gigabytes([first, held, second], set(), 10) == refused
    assert volumes.gigabytes([first, held, second], set(), -1) == {}
    # Refused once, refused for good: room made later does not admit it (Cinder answered 413).
    said = _sized("a", 3, "2026-01-01T11:00:00Z", conditions=[
        {"type": "Ready", "status": "False", "reason": "QuotaExceeded", "message": refused["a"].message}])
    assert volumes.gigabytes([said], set(), 10)["a"].message == refused["a"].message
    # A volume made before it was counted holds its size.
    assert volumes.gigabytes([_sized("old", 8, "2026-01-01T08:00:00Z"), first], {"old"}, 10)["b"].new


def test_an_extend_over_quota_leaves_the_volume_as_it_is_and_says_so() -> None:
    grown = _sized("data", 8, "2026-01-01T09:00:00Z", allocated=4)
    other = _sized("other", 4, "2026-01-01T08:00:00Z", allocated=4)
    refusal = volumes.gigabytes([grown, other], set(), 10)["data"]
    assert not refusal.new and "Requested 4G, quota is 10G and 8G has been consumed" in refusal.message
    dv = obj("volume-data", status={"phase": "Succeeded"})
    p = volumes.plan(world(grown, datavolumes=Objects(dv), pvcs=Objects(claim(4, 4)), quota=refusal))
    assert (p.word, p.progress, p.reason, p.grow) == (VolumeWord.available, Progress.STALLED, "QuotaExceeded", None)
    assert p.fields["allocated"] == 4
    admitted = volumes.plan(world(grown, datavolumes=Objects(dv), pvcs=Objects(claim(4, 4))))
    assert (admitted.word, admitted.grow, admitted.fields["allocated"]) == (VolumeWord.extending, 8, 8)


def test_a_new_volume_over_quota_is_an_error_and_nothing_is_made() -> None:
    refusal = volumes.Refusal("VolumeSizeExceedsAvailableQuota: …", True)
    p = volumes.plan(world(quota=refusal))
    assert (p.word, p.reason, p.create) == (VolumeWord.error, "QuotaExceeded", None)
    made = volumes.plan(world())
    assert made.create is not None and made.fields["allocated"] == 4
