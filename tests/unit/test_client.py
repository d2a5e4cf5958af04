"""`kova crds --out` and `kova image upload/download`, without a server: the image API is a fake that answers
as kova api does (Glance's name filter, a GET by id that sees other projects' public images)."""

from __future__ import annotations

import hashlib
import io
import os
import urllib.parse
from pathlib import Path
from typing import Any

import pytest

from kova import cli
from kova.api import crdgen
from kova.openstack import client

ME, THEM = "team-a", "team-b"
MINE_ID, THEIRS_ID, TWIN_ID = (f"{n:08d}-0000-4000-8000-000000000000" for n in (1, 2, 3))


def image(image_id: str, name: str, owner: str, data: bytes = b"", status: str = "active",
          visibility: str = "public") -> dict[str, Any]:
    return {"id": image_id, "name": name, "owner": owner, "status": status, "visibility": visibility,
            "size": len(data) or None, "os_hash_algo": "sha512", "os_hash_value": hashlib.sha512(data).hexdigest(),
            "checksum": hashlib.md5(data).hexdigest()}


class Response:
    """What `ImageApi.call` returns for an image's data: `fail_after` bytes, then a dropped connection."""

    def __init__(self, data: bytes, fail_after: int | None = None) -> None:
        self.status, self.headers = 200, {"Content-Length": str(len(data))}
        self.body, self.fail_after, self.sent = io.BytesIO(data), fail_after, 0

    def read(self, n: int = -1) -> bytes:
        if self.fail_after is not None and self.sent >= self.fail_after:
            raise ConnectionResetError("connection reset by peer")
        size = n if self.fail_after is None else min(n, self.fail_after - self.sent)
        data = self.body.read(size)
        self.sent += len(data)
        return data

    def close(self) -> None:
        pass


class FakeApi(client.ImageApi):
    def __init__(self, images: list[dict[str, Any]], served: bytes = b"", fail_after: int | None = None) -> None:
        super().__init__("http://127.0.0.1:9", "token", ME)  # never connected to: call and json are replaced
        self.images, self.served, self.fail_after = images, served, fail_after
        self.uploaded: dict[str, bytes] = {}

    def json(self, method: str, path: str, body: Any = None, ok: tuple[int, ...] = (200,)) -> Any:
        url = urllib.parse.urlsplit(path)
        if method == "GET" and url.path == "/images":
            query = urllib.parse.parse_qs(url.query)
            return {"images": [i for i in self.images if i["name"] == query["name"][0]]}
        if method == "GET":
            found = [i for i in self.images if i["id"] == urllib.parse.unquote(url.path.removeprefix("/images/"))]
            if not found:
                raise client.ClientError("not found")
            return found[0]
        assert method == "POST" and url.path == "/images"
        new = image(f"{len(self.images) + 10:08d}-0000-4000-8000-000000000000", body["name"], ME, status="queued",
                    visibility=body["visibility"])
        self.images.append(new)
        return new

    def call(self, method: str, path: str, body: Any = None, headers: dict[str, str] | None = None,
             ok: tuple[int, ...] = (200,)) -> Any:
        image_id = path.split("/")[2]
        if method == "PUT":
            self.uploaded[image_id] = b"".join(body)
            return Response(b""), Response(b"")
        return Response(self.served, self.fail_after), Response(b"")


def files_in(folder: Path) -> dict[str, bytes]:
    return {p.name: p.read_bytes() for p in folder.iterdir()}


def open_files_under(folder: Path) -> list[str]:
    fds = Path("/proc/self/fd")  # Linux, as CI: a missing /proc fails the test rather than passing it unseen
    assert fds.is_dir(), "this test reads the open files from /proc"
    links = []
    for fd in fds.iterdir():
        try:
            links.append(os.readlink(fd))
        except OSError:
            continue
    return [link for link in links if link.startswith(str(folder))]


# kova crds --out


def test_crds_out_writes_its_files_and_leaves_other_yaml_alone(tmp_path: Path,
                                                               capsys: pytest.CaptureFixture[str]) -> None:
    (tmp_path / "my-notes.yaml").write_text("mine: true\n")
    (tmp_path / "kustomization.yaml").write_text("resources: []\n")
    assert cli.main(["crds", "--out", str(tmp_path)]) == 0
    expected = crdgen.files()
    on_disk = {p.name: p.read_text() for p in tmp_path.iterdir()}
    assert on_disk == {**expected, "my-notes.yaml": "mine: true\n", "kustomization.yaml": "resources: []\n"}
    assert f"wrote {len(expected)} files to {tmp_path}" in capsys.readouterr().out


def test_crds_help_says_what_out_writes_and_keeps(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit):
        cli.main(["crds", "--help"])
    text = " ".join(capsys.readouterr().out.split())
    assert "protected-images.policy.yaml" in text and "other files" in text


# which image a name means


def test_a_name_means_the_projects_own_image_not_another_projects_public_one() -> None:
    theirs, mine = image(THEIRS_ID, "ubuntu", THEM), image(MINE_ID, "ubuntu", ME)
    assert FakeApi([theirs, mine]).find("ubuntu") == mine
    assert FakeApi([theirs]).find("ubuntu") is None


def test_another_projects_image_is_found_by_its_id() -> None:
    theirs = image(THEIRS_ID, "ubuntu", THEM)
    assert FakeApi([theirs]).find(THEIRS_ID) == theirs


def test_two_own_images_with_one_name_are_refused_naming_their_ids() -> None:
    images = [image(MINE_ID, "ubuntu", ME), image(TWIN_ID, "ubuntu", ME), image(THEIRS_ID, "ubuntu", THEM)]
    with pytest.raises(client.ClientError, match="give the id") as refused:
        FakeApi(images).find("ubuntu")
    assert MINE_ID in str(refused.value) and TWIN_ID in str(refused.value)
    assert THEIRS_ID not in str(refused.value)


def test_choose() -> None:
    theirs, mine, twin = image(THEIRS_ID, "ubuntu", THEM), image(MINE_ID, "ubuntu", ME), image(TWIN_ID, "x", ME)
    assert client.choose([theirs, mine], "ubuntu", ME) == mine
    assert client.choose([theirs], "ubuntu", ME) is None
    assert client.choose([theirs], THEIRS_ID, ME) == theirs
    assert client.choose([], "ubuntu", ME) is None
    with pytest.raises(client.ClientError, match=f"{MINE_ID}.*{TWIN_ID}"):
        client.choose([mine, {**twin, "name": "ubuntu"}], "ubuntu", ME)


def test_upload_by_name_creates_an_own_image_beside_another_projects_public_one(tmp_path: Path) -> None:
    theirs = image(THEIRS_ID, "ubuntu", THEM, b"their data", status="queued")
    api = FakeApi([theirs])
    (tmp_path / "disk.raw").write_bytes(b"my data")
    made = client.upload(api, "ubuntu", tmp_path / "disk.raw", "raw", "bare")
    assert made["owner"] == ME and made["id"] != THEIRS_ID
    assert api.uploaded == {made["id"]: b"my data"}


# kova image download -o FILE


def test_download_writes_the_file(tmp_path: Path) -> None:
    data = os.urandom(3 * client.CHUNK + 5)
    api = FakeApi([image(MINE_ID, "ubuntu", ME, data)], data)
    (tmp_path / "out.img").write_bytes(b"old")
    assert client.download(api, "ubuntu", None, tmp_path / "out.img") == len(data)
    assert files_in(tmp_path) == {"out.img": data}
    assert not open_files_under(tmp_path)


def test_download_that_fails_its_checksum_leaves_no_file(tmp_path: Path) -> None:
    data = os.urandom(1000)
    api = FakeApi([image(MINE_ID, "ubuntu", ME, data)], data[:-1] + b"!")
    with pytest.raises(client.ClientError, match="does not match"):
        client.download(api, "ubuntu", None, tmp_path / "out.img")
    assert files_in(tmp_path) == {}
    assert not open_files_under(tmp_path)


def test_download_that_fails_its_checksum_keeps_the_file_that_was_there(tmp_path: Path) -> None:
    data = os.urandom(1000)
    api = FakeApi([image(MINE_ID, "ubuntu", ME, data)], b"corrupt")
    (tmp_path / "out.img").write_bytes(b"yesterday's download")
    with pytest.raises(client.ClientError, match="does not match"):
        client.download(api, "ubuntu", None, tmp_path / "out.img")
    assert files_in(tmp_path) == {"out.img": b"yesterday's download"}


def test_download_cut_off_midway_is_an_error_and_leaves_nothing_open_or_behind(tmp_path: Path) -> None:
    data = os.urandom(2 * client.CHUNK)
    api = FakeApi([image(MINE_ID, "ubuntu", ME, data)], data, fail_after=client.CHUNK + 10)
    (tmp_path / "out.img").write_bytes(b"old")
    with pytest.raises(Exception) as failed:
        client.download(api, "ubuntu", None, tmp_path / "out.img")
    assert not open_files_under(tmp_path)  # while the error and its traceback are still held
    assert files_in(tmp_path) == {"out.img": b"old"}
    assert isinstance(failed.value, client.ClientError) and "connection reset" in str(failed.value)


def test_download_into_a_missing_folder_is_a_one_line_error(tmp_path: Path) -> None:
    api = FakeApi([image(MINE_ID, "ubuntu", ME, b"data")], b"data")
    with pytest.raises(client.ClientError, match="nowhere"):
        client.download(api, "ubuntu", None, tmp_path / "nowhere" / "out.img")


def test_download_to_standard_output_streams(tmp_path: Path) -> None:
    data = os.urandom(2 * client.CHUNK + 1)
    out = io.BytesIO()
    assert client.download(FakeApi([image(MINE_ID, "ubuntu", ME, data)], data), "ubuntu", out, None) == len(data)
    assert out.getvalue() == data


def test_download_to_a_pipe_writes_through_it(tmp_path: Path) -> None:
    # -o /dev/null or a named pipe: the device is written to, not replaced by a regular file.
    pipe = tmp_path / "pipe"
    os.mkfifo(pipe)
    reader = os.open(pipe, os.O_RDONLY | os.O_NONBLOCK)
    try:
        api = FakeApi([image(MINE_ID, "ubuntu", ME, b"data")], b"data")
        assert client.download(api, "ubuntu", None, pipe) == 4
        assert os.read(reader, 100) == b"data"
    finally:
        os.close(reader)
    assert pipe.is_fifo() and list(tmp_path.iterdir()) == [pipe]


def test_download_onto_a_link_replaces_what_it_points_at(tmp_path: Path) -> None:
    (tmp_path / "v1.img").write_bytes(b"old")
    (tmp_path / "current.img").symlink_to("v1.img")
    api = FakeApi([image(MINE_ID, "ubuntu", ME, b"new")], b"new")
    client.download(api, "ubuntu", None, tmp_path / "current.img")
    assert (tmp_path / "current.img").is_symlink() and (tmp_path / "v1.img").read_bytes() == b"new"
