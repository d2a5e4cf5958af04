"""Stores (KOVA_STORES): the list as configured, a file store's layout and links, and how Glance names them."""

from __future__ import annotations

import datetime as dt
import hashlib
import json
from dataclasses import replace
from pathlib import Path

import pytest

from kova.adapters import env
from kova.adapters.store import FileStore, StoreConfig, Stores, StoreSpec, parse_stores, sign_link
from kova.image import importer
from kova.image.blob import Blob
from kova.openstack.image import glance
from kova.openstack.image.glance import GlanceError

PRIMARY = StoreConfig(endpoint="127.0.0.1:9000", access_key="a", secret_key="b", bucket="kova-images")


def test_without_kova_stores_the_primary_s3_store_is_the_only_one() -> None:
    (only,) = parse_stores("", PRIMARY, {})
    assert (only.id, only.kind, only.default, only.s3) == ("s3", "s3", True, PRIMARY)
    with pytest.raises(env.BadSetting):
        parse_stores("", None, {})


def test_kova_stores_lists_s3_and_file_stores_with_one_default() -> None:
    text = json.dumps([{"id": "fast", "type": "s3", "weight": 10},
                       {"id": "archive", "type": "s3", "endpoint": "10.0.0.1:9000", "bucket": "old"},
                       {"id": "local", "type": "file", "path": "/srv/images", "url": "http://kova-api:8780/",
                        "weight": 5, "default": True}])
    specs = parse_stores(text, PRIMARY, {"KOVA_STORE_ARCHIVE_ACCESS_KEY": "x", "KOVA_STORE_ARCHIVE_SECRET_KEY": "y"})
    by_id = {s.id: s for s in specs}
    assert by_id["fast"].s3 == PRIMARY and by_id["archive"].s3 is not None
    assert (by_id["archive"].s3.endpoint, by_id["archive"].s3.bucket, by_id["archive"].s3.access_key) == (
        "10.0.0.1:9000", "old", "x")
    assert by_id["local"].default and by_id["local"].url == "http://kova-api:8780"
    # The first is the default when none says.
    assert parse_stores(json.dumps([{"id": "a", "type": "s3"}, {"id": "b", "type": "s3"}]), PRIMARY, {})[0].default
    bad = [[{"id": "a", "type": "tape"}], [{"id": "A b", "type": "s3"}], [{"id": "a", "type": "file"}],
           [{"id": "a", "type": "s3"}, {"id": "a", "type": "s3"}],
           [{"id": "a", "type": "s3", "default": True}, {"id": "b", "type": "s3", "default": True}],
           [{"id": "a", "type": "s3", "endpoint": "x:1"}]]  # its keys are missing
    for stores in bad:
        with pytest.raises(env.BadSetting):
            parse_stores(json.dumps(stores), PRIMARY, {})
    with pytest.raises(env.BadSetting):
        parse_stores("{not json", PRIMARY, {})


def file_store(tmp_path: Path) -> FileStore:
    return FileStore(StoreSpec(id="local", kind="file", path=str(tmp_path), url="http://api:8780"), b"k" * 32)


def test_a_file_store_takes_the_pipelines_parts_and_its_record(tmp_path: Path) -> None:
    store = file_store(tmp_path)
    store.ensure_bucket()
    data = bytes(range(256)) * 8192  # 2 MiB
    blob = importer.import_chunks(store, "uid", iter([data[:MiB], data[MiB:]]), "raw", source="upload",
                                  size=len(data), part_size=MiB)
    assert (tmp_path / "images" / "uid").read_bytes() == data and store.read_record("uid") == blob
    assert blob.sha512 == hashlib.sha512(data).hexdigest() and store.pending_uploads("uid") == []
    assert store.open_blob("uid", 10, 5).read() == data[10:15] and store.data_size("uid") == len(data)
    # A refused import leaves nothing behind: no file under the image's name, no parts.
    with pytest.raises(importer.ImportFailed):
        importer.import_chunks(store, "bad", iter([b"not a qcow2" * 100]), "qcow2", source="upload")
    assert store.data_size("bad") is None and store.pending_uploads("bad") == []
    store.delete_image("uid")
    assert store.read_record("uid") is None and store.data_size("uid") is None


MiB = 1 << 20


def test_a_file_stores_link_is_signed_for_one_image_until_it_expires(tmp_path: Path) -> None:
    store = file_store(tmp_path)
    url = store.presigned_get("uid", dt.timedelta(minutes=5))
    assert url.startswith("http://api:8780/stores/local/images/uid?expires=")
    expires = int(url.split("expires=")[1].split("&")[0])
    assert url.endswith(f"signature={sign_link(b'k' * 32, 'local', 'uid', expires)}")
    assert sign_link(b"k" * 32, "local", "other", expires) != sign_link(b"k" * 32, "local", "uid", expires)
    assert sign_link(b"other key" * 4, "local", "uid", expires) != sign_link(b"k" * 32, "local", "uid", expires)


def test_stores_read_the_best_that_holds_an_image(tmp_path: Path) -> None:
    specs = (StoreSpec(id="low", kind="file", path=str(tmp_path / "low"), url="http://a", weight=1, default=True),
             StoreSpec(id="high", kind="file", path=str(tmp_path / "high"), url="http://a", weight=9))
    stores = Stores(specs, b"k" * 32)
    assert stores.order == ["high", "low"] and stores.default == "low"
    blob = Blob(size=1, md5="m", sha512="s", sha256=None, disk_format="raw", virtual_size=1, source="x")
    stores.get("low").write_record("uid", blob)
    assert stores.holding("uid") == ["low"] and stores.location("uid").startswith(f"file://{tmp_path / 'low'}")
    stores.get("high").write_record("uid", blob)
    assert stores.holding("uid") == ["high", "low"]
    stores.delete_image("uid")
    assert stores.holding("uid") == []


def test_glance_names_the_stores() -> None:
    assert glance.chosen_store(None, ["s3", "file"]) is None
    assert glance.chosen_store("file", ["s3", "file"]) == "file"
    with pytest.raises(GlanceError) as e:
        glance.chosen_store("tape", ["s3", "file"])
    assert e.value.status == 400
    specs = [StoreSpec(id="s3", kind="s3", description="MinIO"), StoreSpec(id="file", kind="file")]
    assert glance.stores_info(specs, "s3") == {"stores": [{"id": "s3", "description": "MinIO", "default": True},
                                                          {"id": "file", "description": "file store"}]}
    specs.append(StoreSpec(id="archive", kind="s3", weight=5, s3=PRIMARY))
    detail = glance.stores_detail(specs, "s3")["stores"]
    assert [(d["id"], d["type"], d["weight"]) for d in detail] == [("s3", "s3", 0), ("file", "file", 0),
                                                                    ("archive", "s3", 5)]
    assert detail[2]["properties"] == {"s3_store_host": "127.0.0.1:9000", "s3_store_bucket": "kova-images"}
    assert "secret" not in json.dumps(detail).lower() and "b" not in detail[2]["properties"].values()


def test_an_images_document_says_its_stores_best_first() -> None:
    obj = {"metadata": {"name": "x", "namespace": "a", "uid": "u", "creationTimestamp": "2026-01-01T00:00:00Z"},
           "spec": {"diskFormat": "raw", "source": {"upload": {}}},
           "status": {"status": "active", "size": 1, "stores": ["s3", "file"]}}
    assert glance.image_doc(obj)["stores"] == "s3,file"
    del obj["status"]["stores"]
    assert "stores" not in glance.image_doc(obj)  # no data yet: no store


def test_an_import_names_stores_as_glance_does() -> None:
    order = ["file", "s3"]
    assert glance.import_targets({}, order, ["s3"]) == []
    assert glance.import_targets({"all_stores": True}, order, ["s3"]) == ["file"]
    assert glance.import_targets({"stores": ["s3", "file"]}, order, ["s3"]) == ["file"]
    for bad in ({"stores": ["tape"]}, {"stores": ["file"], "all_stores": True}, {"stores": "file"}):
        with pytest.raises(GlanceError) as e:
            glance.import_targets(bad, order, ["s3"])
        assert e.value.status == 400
    active = {"metadata": {"uid": "u"}, "spec": {"source": {"upload": {}}, "diskFormat": "raw",
                                                 "containerFormat": "bare"}, "status": {"status": "active"}}
    copy = {"method": {"name": "copy-image"}, "all_stores": True}
    with pytest.raises(GlanceError) as e:
        glance.parse_import(active, copy)  # Glance's copy_image policy: administrators
    assert e.value.status == 403
    assert glance.parse_import(active, copy, admin=True) == ("copy-image", None)


def test_one_copy_is_deleted_never_the_last() -> None:
    active = {"metadata": {"uid": "u"}, "spec": {}, "status": {"status": "active"}}
    glance.check_store_delete(active, "file", ["file", "s3"], ["file", "s3"], admin=True)
    for store, held, admin, status in (("tape", ["s3"], True, 409), ("file", ["file", "s3"], False, 403),
                                       ("file", ["s3"], True, 404), ("s3", ["s3"], True, 403)):
        with pytest.raises(GlanceError) as e:
            glance.check_store_delete(active, store, ["file", "s3"], held, admin)
        assert e.value.status == status


def test_links_and_locations_ask_no_store(tmp_path: Path) -> None:
    """The operator signs a DataVolume's link on its event loop: from the Image's status.stores, never by asking
    a store (an S3 endpoint that does not answer would stall every reconcile)."""
    unreachable = StoreConfig(endpoint="127.0.0.1:9", access_key="a", secret_key="b", bucket="kova-images")
    specs = (StoreSpec(id="s3", kind="s3", s3=unreachable, default=True),
             StoreSpec(id="file", kind="file", path=str(tmp_path), url="http://api:8780"))
    stores = Stores(specs, b"k" * 32)
    assert stores.presigned_get("uid", dt.timedelta(minutes=1), ["file", "s3"]).startswith(
        "http://api:8780/stores/file/images/uid?")
    assert "127.0.0.1:9/kova-images/images/uid?" in stores.presigned_get("uid", dt.timedelta(minutes=1))
    assert stores.location("uid", ["s3"]) == "s3://kova-images/images/uid"
    assert stores.location("uid", ["file"]) == f"file://{tmp_path}/images/uid"


def test_a_store_that_does_not_answer_hides_no_other_store(tmp_path: Path) -> None:
    """One store down (an S3 endpoint refusing connections, a file store whose volume is gone) must not stop
    reconciles of images in the others: its answer is reported apart, and the others' records still count."""
    refusing = StoreConfig(endpoint="127.0.0.1:9", access_key="a", secret_key="b", bucket="kova-images")
    (tmp_path / "gone").write_text("a file where the volume's directory should be")
    specs = (StoreSpec(id="s3", kind="s3", s3=refusing, default=True, weight=9),
             StoreSpec(id="gone", kind="file", path=str(tmp_path / "gone"), url="http://api:8780", weight=5),
             StoreSpec(id="file", kind="file", path=str(tmp_path / "up"), url="http://api:8780"))
    stores = Stores(specs, b"k" * 32)
    blob = Blob(size=1, md5="m", sha512="s", sha256=None, disk_format="raw", virtual_size=1, source="x")
    stores.get("file").write_record("uid", blob)
    survey = stores.survey("uid")
    assert survey.records == [("file", blob)] and list(survey.unread) == ["s3", "gone"]
    assert "MaxRetryError" in survey.unread["s3"] and "NotADirectoryError" in survey.unread["gone"]
    assert stores.holding("uid") == ["file"] and stores.read_record("uid") == blob
    assert stores.survey("other").records == []
    # Kova starts with a store down, but not with its default store down (imports write there).
    with pytest.raises(Exception, match="Max retries"):
        stores.ensure_bucket()
    Stores((replace(specs[0], default=False), specs[1],
            replace(specs[2], default=True)), b"k" * 32).ensure_bucket()
    assert (tmp_path / "up" / "images").is_dir()
