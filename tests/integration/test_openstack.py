"""`kova api` with real OpenStack clients (the `openstack` CLI, openstacksdk, glanceclient) on the local
cloud, authenticated with ServiceAccount tokens; a namespace is a project."""

from __future__ import annotations

import hashlib
import json
import os
import socket
import subprocess
import sys
import urllib.error
import urllib.request
from pathlib import Path
from typing import Any, ClassVar

import openstack
import pytest
import yaml

from tests.cloud.bench import REPO, LocalCloud, kubeconfig_dict
from tests.conftest import Kubectl, condition, tenant_token, wait_for
from tests.httpsource import Source
from tests.integration.test_e2e import flavor, instance, unique, wait_instance
from tests.integration.test_isolation import Tenant
from tests.qcow2 import make_qcow2

OPENSTACK = str(Path(sys.executable).parent / "openstack")
GLANCE = str(Path(sys.executable).parent / "glance")


def qcow2(tag: str, kib: int = 256) -> bytes:
    # 64 MiB of guest disk: CDI converts it to raw, and a snapshot of a server booted from it is that big.
    return make_qcow2(64 << 20, (tag.encode() * 1024)[:1024] * kib)


class Cli:
    """The `openstack` command through a clouds.yaml with auth_type v3token, as a user would run it (with
    `extra_env` in its environment: OS_COMPUTE_API_VERSION, say)."""

    extra_env: ClassVar[dict[str, str]] = {}

    def __init__(self, api: str, token: str, project: str, tmp: Path) -> None:
        self.config = tmp / "clouds.yaml"
        self.config.write_text(yaml.safe_dump({"clouds": {"kova": {
            "auth_type": "v3token", "region_name": "RegionOne", "identity_api_version": 3,
            "auth": {"auth_url": f"{api}/identity/v3", "token": token, "project_name": project,
                     "project_domain_name": "Default"}}}}))

    def run(self, *args: str, check: bool = True) -> subprocess.CompletedProcess[str]:
        env = {**os.environ, **self.extra_env, "OS_CLIENT_CONFIG_FILE": str(self.config),
               "HOME": str(self.config.parent)}
        res = subprocess.run([OPENSTACK, "--os-cloud", "kova", *args], capture_output=True, text=True, env=env,
                             stdin=subprocess.DEVNULL, timeout=120)
        if check and res.returncode != 0:
            debug = subprocess.run([OPENSTACK, "--debug", "--os-cloud", "kova", *args], capture_output=True, text=True,
                                   env=env, stdin=subprocess.DEVNULL, timeout=120)
            raise AssertionError(f"openstack {' '.join(args)}: {res.returncode}\n{res.stdout}\n{res.stderr}\n"
                                 f"--debug: {debug.stderr[-3000:]}")
        return res

    def json(self, *args: str) -> Any:
        return json.loads(self.run(*args, "-f", "json").stdout)


def active(kubectl: Kubectl, name: str) -> dict[str, Any] | None:
    status = kubectl.status("image", name)
    return status if status.get("status") == "active" else None


def test_openstack_cli_image_lifecycle(operator: Any, api: str, cloud: LocalCloud, kubectl: Kubectl, namespace: str,
                                       tmp_path: Path) -> None:
    cli = Cli(api, tenant_token(cloud, namespace), namespace, tmp_path)
    data = qcow2("cli")
    (tmp_path / "disk.qcow2").write_bytes(data)
    created = cli.json("image", "create", "--file", str(tmp_path / "disk.qcow2"), "--disk-format", "qcow2",
                       "Ubuntu 24.04 (test)")
    assert created["status"] == "active" and created["owner"] == namespace
    assert created["checksum"] == hashlib.md5(data).hexdigest()
    # The same image through kubectl: the Glance id is the uid, the Glance name is kept in spec.name.
    images = json.loads(kubectl("get", "images", "-o", "json"))["items"]
    obj = next(i for i in images if i["metadata"]["uid"] == created["id"])
    assert obj["spec"]["name"] == "Ubuntu 24.04 (test)" and obj["metadata"]["name"].startswith("ubuntu-24-04-test-")
    assert obj["spec"]["source"] == {"upload": {}} and obj["status"]["osHashValue"] == hashlib.sha512(data).hexdigest()
    # The bytes in the store are the file's, and `image save` (which checks os_hash_value) gives them back.
    stored = cloud.s3_client().get_object("kova-images", f"images/{created['id']}")
    assert stored.read() == data
    cli.run("image", "save", "--file", str(tmp_path / "saved"), created["id"])
    assert (tmp_path / "saved").read_bytes() == data

    # A kubectl-made Image shows up in the API at once, and what the API changes shows in kubectl.
    cli.json("image", "create", "--file", str(tmp_path / "disk.qcow2"), "--disk-format", "qcow2", "second")
    cli.json("image", "create", "--file", str(tmp_path / "disk.qcow2"), "--disk-format", "qcow2", "third")
    listed = cli.json("image", "list")
    assert {"Ubuntu 24.04 (test)", "second", "third"} <= {i["Name"] for i in listed}
    assert len(cli.json("image", "list", "--limit", "2")) == 2
    shown = cli.json("image", "show", "second")
    assert shown["disk_format"] == "qcow2" and shown["visibility"] == "shared"

    cli.run("image", "set", "--tag", "t1", "--property", "os_distro=ubuntu", "--min-disk", "2", "second")
    second = kubectl.get("image", "second")
    assert second is not None
    assert second["spec"]["tags"] == ["t1"] and second["spec"]["properties"]["os_distro"] == "ubuntu"
    assert second["spec"]["minDisk"] == 2
    cli.run("image", "set", "--private", "second")
    assert kubectl.get("image", "second")["spec"]["visibility"] == "private"  # type: ignore[index]
    cli.run("image", "set", "--shared", "second")
    cli.run("image", "add", "project", "second", "other-project")
    assert kubectl.get("image", "second")["spec"]["members"] == ["other-project"]  # type: ignore[index]

    cli.run("image", "delete", "third")
    wait_for(lambda: kubectl.get("image", "third") is None, what="the deleted image gone")
    assert "third" not in {i["Name"] for i in cli.json("image", "list")}


def glance_call(api: str, token: str, project: str, method: str, path: str, body: Any = None) -> Any:
    """One Glance v2 call as its own HTTP request; the JSON answer (HTTPError for Glance's refusals)."""
    req = urllib.request.Request(f"{api}/projects/{project}/image/v2{path}", method=method,
                                 data=None if body is None else json.dumps(body).encode(),
                                 headers={"X-Auth-Token": token, "Content-Type": "application/json"})
    with urllib.request.urlopen(req, timeout=30) as resp:
        answer = resp.read()
    return json.loads(answer) if answer else None


def test_interoperable_import_glance_direct_and_web_download(operator: Any, api: str, cloud: LocalCloud,
                                                              kubectl: Kubectl, namespace: str, source: Source,
                                                              tmp_path: Path) -> None:
    token = tenant_token(cloud, namespace)
    cli = Cli(api, token, namespace, tmp_path)

    def queued(name: str, disk_format: str) -> Any:  # `image create` without --file would upload its stdin
        return glance_call(api, token, namespace, "POST", "/images", {
            "name": name, "disk_format": disk_format, "container_format": "bare"})
    data = qcow2("import")
    (tmp_path / "disk.qcow2").write_bytes(data)
    # `image create --import`: openstacksdk stages the bytes, then asks for glance-direct.
    made = cli.json("image", "create", "--import", "--file", str(tmp_path / "disk.qcow2"), "--disk-format", "qcow2",
                    "direct")
    image = wait_for(lambda: (i := cli.json("image", "show", made["id"]))["status"] == "active" and i,
                     what="the imported image active")
    assert image["checksum"] == hashlib.md5(data).hexdigest() and image["size"] == len(data)
    assert cloud.s3_client().get_object("kova-images", f"images/{made['id']}").read() == data

    # The same in two steps: staged, the image is `uploading` (verified, not usable) until its import.
    staged = queued("staged", "qcow2")
    cli.run("image", "stage", "--file", str(tmp_path / "disk.qcow2"), staged["id"])
    assert cli.json("image", "show", staged["id"])["status"] == "uploading"
    assert kubectl.status("image", "staged")["status"] == "uploading"

    def uploading() -> int:
        return int(glance_call(api, token, namespace, "GET", "/info/usage")["usage"]["image_count_uploading"]["usage"])
    wait_for(lambda: uploading() == 1, what="the stage counted in image_count_uploading")
    usage = glance_call(api, token, namespace, "GET", "/info/usage")["usage"]
    assert usage["image_stage_total"]["limit"] == 1048576 and usage["image_count_total"]["usage"] == 2
    cli.run("image", "import", "--method", "glance-direct", staged["id"])
    assert cli.json("image", "show", staged["id"])["status"] == "active"
    wait_for(lambda: uploading() == 0, what="the imported image no longer under way")
    res = cli.run("image", "import", "--method", "glance-direct", staged["id"], check=False)
    assert res.returncode != 0  # once imported, there is nothing staged any more

    # web-download: the operator downloads it through the import filter, as an Image with a source URL.
    url = source.add(f"/{namespace}/web.qcow2", data)
    web = queued("web", "qcow2")
    cli.run("image", "import", "--method", "web-download", "--uri", url, web["id"])
    web_image = wait_for(lambda: (i := cli.json("image", "show", web["id"]))["status"] == "active" and i,
                         timeout=60, what="the web-download active")
    assert web_image["checksum"] == hashlib.md5(data).hexdigest()
    assert kubectl.status("image", "web")["osHashValue"] == hashlib.sha512(data).hexdigest()
    assert (kubectl.get("image", "web") or {})["spec"]["source"] == {"url": url}
    # Into the file store only (`--store`): imported into the default store, copied, then removed from MinIO.
    web_file = queued("web-file", "qcow2")
    cli.run("image", "import", web_file["id"], "--method", "web-download", "--uri", url, "--store", "file")
    wait_for(lambda: (i := glance_call(api, token, namespace, "GET", f"/images/{web_file['id']}"))["status"] ==
             "active" and i["stores"] == "file" and i["os_glance_importing_to_stores"] == "", timeout=60,
             what="the web-download in the file store only")
    assert (kubectl.get("image", "web-file") or {})["spec"]["stores"] == ["file"]
    assert (cloud.file_store / "images" / web_file["id"]).read_bytes() == data
    assert web_file["id"] not in {o.object_name.split("/")[-1] for o in
                                  cloud.s3_client().list_objects("kova-images", prefix="images/")}

    # Glance's refusals: a method this site does not offer, glance-direct with nothing staged.
    other = queued("other", "raw")
    for name, code, words in (("glance-download", 400, b"not valid"), ("copy-image", 403, b"copy_image"),
                              ("glance-direct", 409, b"staged")):
        with pytest.raises(urllib.error.HTTPError) as e:
            glance_call(api, token, namespace, "POST", f"/images/{other['id']}/import", {"method": {"name": name}})
        assert e.value.code == code and words in e.value.read()
    # A URL the import filter refuses is refused at once, in Glance's words (nothing is fetched: the address
    # is checked as written, and the image stays queued).
    for uri in ("http://169.254.169.254/latest/meta-data/", f"http://127.0.0.1:{api.rsplit(':', 1)[1]}/"):
        with pytest.raises(urllib.error.HTTPError) as e:
            glance_call(api, token, namespace, "POST", f"/images/{other['id']}/import",
                        {"method": {"name": "web-download", "uri": uri}})
        assert e.value.code == 400 and b"does not pass filtering" in e.value.read()
    assert cli.json("image", "show", other["id"])["status"] == "queued"
    with pytest.raises(urllib.error.HTTPError) as e:
        glance_call(api, "not-a-token", namespace, "GET", "/info/import")
    assert e.value.code == 401
    info = glance_call(api, token, namespace, "GET", "/info/import")
    assert info["import-methods"]["value"] == ["glance-direct", "web-download", "copy-image"]


def test_upload_that_is_not_its_disk_format_gets_glances_error(operator: Any, api: str, cloud: LocalCloud,
                                                                kubectl: Kubectl, namespace: str,
                                                                tmp_path: Path) -> None:
    cli = Cli(api, tenant_token(cloud, namespace), namespace, tmp_path)
    (tmp_path / "raw.img").write_bytes(os.urandom(256 * 1024))
    res = cli.run("image", "create", "--file", str(tmp_path / "raw.img"), "--disk-format", "qcow2", "liar",
                  check=False)
    assert res.returncode != 0
    assert "415" in res.stderr or "does not match" in res.stderr, res.stderr
    # openstacksdk deletes the image after a failed upload, as it does with Glance; nothing is left in the store.
    wait_for(lambda: not [i for i in json.loads(kubectl("get", "images", "-o", "json"))["items"]
                          if i["spec"].get("name") == "liar"], what="the refused image removed")


def test_openstacksdk_password_auth_and_glanceclient_chunked_upload(operator: Any, api: str, cloud: LocalCloud,
                                                                   kubectl: Kubectl, namespace: str,
                                                                   tmp_path: Path) -> None:
    token = tenant_token(cloud, namespace)
    conn = openstack.connect(auth_type="password", auth={
        "auth_url": f"{api}/identity/v3", "username": "someone", "password": token, "project_name": namespace,
        "user_domain_name": "Default", "project_domain_name": "Default"}, region_name="RegionOne")
    data = qcow2("sdk")
    image = conn.image.create_image(name="sdk-image", data=data, disk_format="qcow2", container_format="bare")
    image = conn.image.get_image(image.id)
    assert image.status == "active" and image.checksum == hashlib.md5(data).hexdigest()
    assert conn.image.download_image(image).content == data  # checked against os_hash_value by the SDK
    assert any(i.id == image.id for i in conn.image.images())
    conn.image.update_image(image, name="renamed", min_ram=512)
    assert conn.image.get_image(image.id).min_ram == 512
    conn.image.delete_image(image)
    wait_for(lambda: conn.image.find_image(image.id) is None, what="image gone")

    # glanceclient uploads with chunked transfer encoding.
    chunked = qcow2("glance")
    (tmp_path / "g.qcow2").write_bytes(chunked)
    # Its shell takes a token and the image endpoint directly (as it does with Glance behind a proxy).
    env = {**os.environ, "OS_AUTH_TOKEN": token, "OS_IMAGE_URL": f"{api}/projects/{namespace}/image",
           "HOME": str(tmp_path)}
    out = subprocess.run([GLANCE, "image-create", "--name", "via-glanceclient", "--disk-format", "qcow2",
                          "--container-format", "bare", "--file", str(tmp_path / "g.qcow2")],
                         capture_output=True, text=True, env=env, timeout=120, stdin=subprocess.DEVNULL)
    assert out.returncode == 0, out.stderr
    obj = wait_for(lambda: active(kubectl, "via-glanceclient"), what="the glanceclient upload active")
    assert obj["checksum"] == hashlib.md5(chunked).hexdigest()


def _get(url: str, token: str | None) -> int:
    req = urllib.request.Request(url, headers={"X-Auth-Token": token} if token else {})
    try:
        with urllib.request.urlopen(req, timeout=10) as resp:
            return int(resp.status)
    except urllib.error.HTTPError as e:
        return e.code


def test_authorization(api: str, cloud: LocalCloud, kubectl: Kubectl, namespace: str, tmp_path: Path) -> None:
    editor = tenant_token(cloud, namespace)
    nobody = tenant_token(cloud, namespace, role="none")
    images = f"{api}/projects/{namespace}/image/v2/images"
    assert _get(images, None) == 401
    assert _get(images, "not-a-token") == 401
    assert _get(images, nobody) == 403
    assert _get(images, editor) == 200
    # Keystone refuses a token that may neither create nor list Images in the project.
    req = urllib.request.Request(f"{api}/identity/v3/auth/tokens", method="POST", data=json.dumps({"auth": {
        "identity": {"methods": ["token"], "token": {"id": nobody}},
        "scope": {"project": {"name": namespace}}}}).encode(), headers={"Content-Type": "application/json"})
    with pytest.raises(urllib.error.HTTPError) as refused:
        urllib.request.urlopen(req, timeout=10)
    assert refused.value.code == 401

    # Another namespace's private image is neither listed, shown nor downloadable.
    cli = Cli(api, editor, namespace, tmp_path)
    (tmp_path / "d").write_bytes(qcow2("private"))
    private = cli.json("image", "create", "--file", str(tmp_path / "d"), "--disk-format", "qcow2", "--private",
                       "mine")
    other = f"{namespace[:50]}-b"
    cloud.kubectl("create", "namespace", other)
    try:
        stranger = tenant_token(cloud, other)
        theirs = f"{api}/projects/{other}/image/v2/images"
        with urllib.request.urlopen(urllib.request.Request(theirs, headers={"X-Auth-Token": stranger})) as resp:
            assert private["id"] not in {i["id"] for i in json.loads(resp.read())["images"]}
        assert _get(f"{theirs}/{private['id']}", stranger) == 404
        assert _get(f"{theirs}/{private['id']}/file", stranger) == 404
        # ...nor reached through the owner's project URL with the stranger's token.
        assert _get(f"{images}/{private['id']}/file", stranger) == 403
    finally:
        cloud.kubectl("delete", "namespace", other, "--wait=false", check=False)
    # Without rights in the project: no download, no upload either.
    assert _get(f"{images}/{private['id']}/file", nobody) == 403
    put = urllib.request.Request(f"{images}/{private['id']}/file", method="PUT", data=b"x",
                                 headers={"X-Auth-Token": nobody, "Content-Type": "application/octet-stream"})
    with pytest.raises(urllib.error.HTTPError) as denied:
        urllib.request.urlopen(put, timeout=10)
    assert denied.value.code == 403
    # A reader (view) may download (a Range too) but not upload.
    reader = tenant_token(cloud, namespace, role="view")
    assert _get(f"{images}/{private['id']}/file", reader) == 200
    ranged = urllib.request.Request(f"{images}/{private['id']}/file",
                                    headers={"X-Auth-Token": reader, "Range": "bytes=4-11"})
    with urllib.request.urlopen(ranged, timeout=10) as resp:
        assert resp.status == 206 and resp.headers["Content-Range"] == f"bytes 4-11/{private['size']}"
        assert resp.read() == (tmp_path / "d").read_bytes()[4:12]
    req = urllib.request.Request(f"{images}/{private['id']}/file", method="PUT", data=b"x",
                                 headers={"X-Auth-Token": reader, "Content-Type": "application/octet-stream"})
    with pytest.raises(urllib.error.HTTPError) as forbidden:
        urllib.request.urlopen(req, timeout=10)
    assert forbidden.value.code == 403


def test_the_api_account_cannot_write_images(cloud: LocalCloud, api: str) -> None:
    account = "system:serviceaccount:kova-system:kova-api"
    for verb in ("create", "update", "patch", "delete"):
        assert cloud.kubectl("auth", "can-i", verb, "images.image.kova.dev", "--as", account, "-A",
                             check=False).strip().startswith("no"), verb
    assert cloud.kubectl("auth", "can-i", "patch", "images.image.kova.dev", "--subresource=status", "--as", account,
                         "-A", check=False).strip() == "yes"
    assert cloud.kubectl("auth", "can-i", "get", "secrets", "--as", account, "-A", check=False).strip() == "no"
    # Metadefs: it reads them and creates the catalog's; changing or deleting one takes the caller's token.
    for verb, allowed in (("list", "yes"), ("create", "yes"), ("update", "no"), ("delete", "no")):
        assert cloud.kubectl("auth", "can-i", verb, "metadefnamespaces.image.kova.dev", "--as", account,
                             check=False).split()[0] == allowed, verb
    assert cloud.kubectl("auth", "can-i", "admin", "images.image.kova.dev", "--as", account, "-A",
                         check=False).strip() == "no"  # not an OpenStack administrator


def kova(*args: str, token: str, cwd: Path) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "KOVA_TOKEN": token, "KUBECONFIG": str(cwd / "none"), "PYTHONPATH": str(REPO / "operator")}
    return subprocess.run([sys.executable, "-m", "kova.cli", "image", *args], capture_output=True, text=True,
                          env=env, cwd=cwd, timeout=120, stdin=subprocess.DEVNULL)


def test_kova_image_upload_and_download(operator: Any, api: str, cloud: LocalCloud, kubectl: Kubectl,
                                        namespace: str, tmp_path: Path) -> None:
    token = tenant_token(cloud, namespace)
    data = qcow2("kova-cli", kib=2048)
    (tmp_path / "disk.qcow2").write_bytes(data)
    up = kova("upload", "cli-image", str(tmp_path / "disk.qcow2"), "--disk-format", "qcow2", "-n", namespace,
              "--api", api, token=token, cwd=tmp_path)
    assert up.returncode == 0, up.stderr
    assert "active" in up.stdout and hashlib.sha512(data).hexdigest() in up.stdout
    obj = kubectl.get("image", "cli-image")  # a valid Kubernetes name is kept as the Image's name
    assert obj is not None and obj["status"]["status"] == "active"
    down = kova("download", "cli-image", "-o", str(tmp_path / "back"), "-n", namespace, "--api", api, token=token,
                cwd=tmp_path)
    assert down.returncode == 0, down.stderr
    assert (tmp_path / "back").read_bytes() == data
    # With no $KOVA_TOKEN and no -n: the kubeconfig's user and its context's namespace, as kubectl uses them.
    config = kubeconfig_dict(cloud.api_url, (cloud.workdir / "pki" / "ca.crt").read_text(), token=token)
    config["contexts"][0]["context"]["namespace"] = namespace
    (tmp_path / "kubeconfig").write_text(yaml.safe_dump(config))
    env = {**os.environ, "KUBECONFIG": str(tmp_path / "kubeconfig"), "KOVA_API_URL": api,
           "PYTHONPATH": str(REPO / "operator")}
    env.pop("KOVA_TOKEN", None)
    via_kubeconfig = subprocess.run([sys.executable, "-m", "kova.cli", "image", "download", "cli-image", "-o",
                                     str(tmp_path / "again")], capture_output=True, text=True, env=env, timeout=120)
    assert via_kubeconfig.returncode == 0, via_kubeconfig.stderr
    assert (tmp_path / "again").read_bytes() == data
    # Clear errors: data that is not its format, an active image, an image that is not there, a bad token.
    (tmp_path / "junk").write_bytes(os.urandom(4096))
    bad = kova("upload", "junk", str(tmp_path / "junk"), "--disk-format", "qcow2", "-n", namespace, "--api", api,
               token=token, cwd=tmp_path)
    assert bad.returncode == 1 and "not what its disk format says" in bad.stderr, bad.stderr
    again = kova("upload", "cli-image", str(tmp_path / "junk"), "--disk-format", "qcow2", "-n", namespace,
                 "--api", api, token=token, cwd=tmp_path)
    assert again.returncode == 1 and "is active" in again.stderr, again.stderr
    missing = kova("download", "nope", "-o", str(tmp_path / "x"), "-n", namespace, "--api", api, token=token,
                   cwd=tmp_path)
    assert missing.returncode == 1 and "no image 'nope'" in missing.stderr, missing.stderr
    refused = kova("download", "cli-image", "-o", str(tmp_path / "x"), "-n", namespace, "--api", api,
                   token="not-a-token", cwd=tmp_path)
    assert refused.returncode == 1 and "token was refused" in refused.stderr, refused.stderr


def test_an_interrupted_stage_is_resumed_with_kova_image_upload(operator: Any, api: str, cloud: LocalCloud,
                                                                kubectl: Kubectl, namespace: str,
                                                                tmp_path: Path) -> None:
    """Beyond Glance: a stage whose client goes away keeps the parts that arrived whole (16 MiB each); `GET` on
    the stage says how much, and `kova image upload --resume` sends only the rest, byte-identical after."""
    token = tenant_token(cloud, namespace)
    data = os.urandom(48 << 20)
    (tmp_path / "disk.raw").write_bytes(data)
    image = glance_call(api, token, namespace, "POST", "/images", {"name": "resumable", "disk_format": "raw",
                                                                   "container_format": "bare"})
    host, port = api.removeprefix("http://").split(":")
    with socket.create_connection((host, int(port)), timeout=60) as sock:  # a link that breaks at 40 MiB
        sock.sendall((f"PUT /projects/{namespace}/image/v2/images/{image['id']}/stage HTTP/1.1\r\n"
                      f"Host: {host}\r\nX-Auth-Token: {token}\r\nContent-Type: application/octet-stream\r\n"
                      f"Content-Length: {len(data)}\r\nConnection: close\r\n\r\n").encode())
        sock.sendall(data[:40 << 20])
    expected = {"image_id": image["id"], "status": "queued", "size": 32 << 20, "complete": False}
    wait_for(lambda: glance_call(api, token, namespace, "GET", f"/images/{image['id']}/stage") == expected,
             what="the stage's first two parts kept, the image queued again")
    assert "33554432 bytes are kept" in kubectl.status("image", "resumable")["message"]
    # A resume from elsewhere than what is kept is refused, and says where to resume from.
    req = urllib.request.Request(f"{api}/projects/{namespace}/image/v2/images/{image['id']}/stage", method="PUT",
                                 data=data[:1024], headers={"X-Auth-Token": token, "Content-Type":
                                                            "application/octet-stream",
                                                            "Content-Range": f"bytes 0-1023/{len(data)}"})
    with pytest.raises(urllib.error.HTTPError) as e:
        urllib.request.urlopen(req, timeout=30)
    assert e.value.code == 416 and e.value.headers["Content-Range"] == f"bytes */{32 << 20}"
    up = kova("upload", "resumable", str(tmp_path / "disk.raw"), "--disk-format", "raw", "--resume", "-n", namespace,
              "--api", api, token=token, cwd=tmp_path)
    assert up.returncode == 0, up.stderr
    assert "active" in up.stdout and hashlib.sha512(data).hexdigest() in up.stdout
    down = kova("download", "resumable", "-o", str(tmp_path / "back"), "-n", namespace, "--api", api, token=token,
                cwd=tmp_path)
    assert down.returncode == 0, down.stderr
    assert (tmp_path / "back").read_bytes() == data


def test_kova_image_takes_another_projects_image_by_id_only(operator: Any, api: str, cloud: LocalCloud,
                                                           namespace: str, tmp_path: Path) -> None:
    other = f"{namespace[:50]}-p"
    cloud.kubectl("create", "namespace", other)
    try:
        theirs, mine = qcow2("theirs"), qcow2("mine")
        (tmp_path / "theirs.qcow2").write_bytes(theirs)
        (tmp_path / "mine.qcow2").write_bytes(mine)
        up = kova("upload", "base", str(tmp_path / "theirs.qcow2"), "--disk-format", "qcow2", "-n", other,
                  "--api", api, token=tenant_token(cloud, other), cwd=tmp_path)
        assert up.returncode == 0, up.stderr
        theirs_id = up.stdout.split()[1]
        cloud.kubectl("-n", other, "patch", "images.image.kova.dev", "base", "--type=merge",
                      "-p", '{"spec": {"visibility": "public"}}')
        token = tenant_token(cloud, namespace)
        listing = f"{api}/projects/{namespace}/image/v2/images?name=base"

        def listed() -> bool:
            with urllib.request.urlopen(urllib.request.Request(listing, headers={"X-Auth-Token": token})) as resp:
                return theirs_id in {i["id"] for i in json.loads(resp.read())["images"]}
        wait_for(listed, what="the other project's public image listed in this one")

        # By name: only this project's images; it has none called `base` yet.
        down = kova("download", "base", "-o", str(tmp_path / "got"), "-n", namespace, "--api", api, token=token,
                    cwd=tmp_path)
        assert down.returncode == 1 and "no image 'base'" in down.stderr, down.stderr
        assert not (tmp_path / "got").exists()
        # By id: the other project's public image.
        by_id = kova("download", theirs_id, "-o", str(tmp_path / "theirs-copy"), "-n", namespace, "--api", api,
                     token=token, cwd=tmp_path)
        assert by_id.returncode == 0, by_id.stderr
        assert (tmp_path / "theirs-copy").read_bytes() == theirs
        # Uploading `base` makes this project's own image, and the name then means it.
        own = kova("upload", "base", str(tmp_path / "mine.qcow2"), "--disk-format", "qcow2", "-n", namespace,
                   "--api", api, token=token, cwd=tmp_path)
        assert own.returncode == 0, own.stderr
        assert own.stdout.split()[1] != theirs_id
        again = kova("download", "base", "-o", str(tmp_path / "got"), "-n", namespace, "--api", api, token=token,
                     cwd=tmp_path)
        assert again.returncode == 0, again.stderr
        assert (tmp_path / "got").read_bytes() == mine
    finally:
        cloud.kubectl("delete", "namespace", other, "--wait=false", check=False)


def _token_roles(api: str, token: str, project: str) -> list[str]:
    body = {"auth": {"identity": {"methods": ["token"], "token": {"id": token}},
                     "scope": {"project": {"name": project, "domain": {"id": "default"}}}}}
    req = urllib.request.Request(f"{api}/identity/v3/auth/tokens", method="POST", data=json.dumps(body).encode(),
                                 headers={"Content-Type": "application/json"})
    with urllib.request.urlopen(req, timeout=30) as resp:
        return sorted(r["name"] for r in json.loads(resp.read())["token"]["roles"])


def test_metadefs_and_the_administrator(operator: Any, api: str, cloud: LocalCloud, kubectl: Kubectl,
                                        namespace: str, tmp_path: Path) -> None:
    """Glance's catalog of metadata definitions, listed with the CLI and glanceclient by a tenant; written only
    by an administrator (a ClusterRoleBinding to kova-admin), who also makes public images for another project."""
    token = tenant_token(cloud, namespace)
    admin = tenant_token(cloud, namespace, "kova-admin", name="os-admin")
    other = f"{namespace[:50]}-b"
    cloud.kubectl("create", "namespace", other)
    try:
        assert _token_roles(api, admin, other) == ["admin", "member", "reader"]  # admin in every project
        assert _token_roles(api, token, namespace) == ["member", "reader"]

        # Glance's catalog and Kova's own namespace, loaded at start, read by any project.
        cli = Cli(api, token, namespace, tmp_path)
        listed = {n["namespace"] for n in cli.json("image", "metadef", "namespace", "list")}
        assert {"OS::Compute::Watchdog", "OS::Compute::Hypervisor", "OS::Kova::KubeVirt"} <= listed
        # Glance's catalog has one private namespace, owned by no project: administrators only see it.
        assert "OS::Glance::CommonImageProperties" not in listed
        (tmp_path / "admin").mkdir()
        admin_cli = Cli(api, admin, namespace, tmp_path / "admin")
        assert "OS::Glance::CommonImageProperties" in {
            n["namespace"] for n in admin_cli.json("image", "metadef", "namespace", "list")}
        env = {**os.environ, "OS_AUTH_TOKEN": token, "OS_IMAGE_URL": f"{api}/projects/{namespace}/image",
               "HOME": str(tmp_path)}
        shown = subprocess.run([GLANCE, "--os-image-api-version", "2", "md-namespace-show", "OS::Kova::KubeVirt",
                                "--resource-type", "OS::Glance::Image"],
                               capture_output=True, text=True, env=env, timeout=120, stdin=subprocess.DEVNULL)
        assert shown.returncode == 0, shown.stderr
        assert "hw_disk_bus" in shown.stdout and "hw_video_model" in shown.stdout  # with the image's prefix
        kova_ns = glance_call(api, token, namespace, "GET", "/metadefs/namespaces/OS::Kova::KubeVirt")
        assert set(kova_ns["properties"]["disk_bus"]["enum"]) == {"virtio", "scsi", "sata", "usb"}
        types = {t["name"] for t in glance_call(api, token, namespace, "GET", "/metadefs/resource_types")[
            "resource_types"]}
        assert {"OS::Glance::Image", "OS::Nova::Flavor"} <= types

        # A tenant may not write definitions (RBAC on the kind, with its own token); an administrator may.
        res = cli.run("image", "metadef", "namespace", "create", f"Kova::Test::{namespace}", check=False)
        assert res.returncode != 0 and "403" in res.stderr + res.stdout
        name = f"Kova::Test::{namespace}"
        made = admin_cli.json("image", "metadef", "namespace", "create", "--private", "--protected",
                              "--description", "made by the test", name)
        assert made["namespace"] == name and made["visibility"] == "private" and made["protected"] is True
        glance_call(api, admin, namespace, "POST", f"/metadefs/namespaces/{name}/properties",
                    {"name": "speed", "title": "Speed", "type": "integer", "minimum": 1})
        glance_call(api, admin, namespace, "POST", f"/metadefs/namespaces/{name}/objects",
                    {"name": "Disk", "properties": {"bus": {"title": "Bus", "type": "string"}}})
        glance_call(api, admin, namespace, "POST", f"/metadefs/namespaces/{name}/tags/fast")
        detail = glance_call(api, admin, namespace, "GET", f"/metadefs/namespaces/{name}")
        assert detail["properties"]["speed"]["minimum"] == 1 and detail["objects"][0]["name"] == "Disk"
        assert detail["tags"] == [{"name": "fast"}] and detail["owner"] == namespace
        # The same namespace through kubectl: one cluster-scoped object.
        objs = json.loads(cloud.kubectl("get", "metadefnamespaces", "-o", "json"))["items"]
        obj = next(o for o in objs if o["spec"]["namespace"] == name)
        assert obj["spec"]["properties"]["speed"]["type"] == "integer"
        # Private: the owner's project and administrators see it, another project does not.
        other_token = tenant_token(cloud, other)
        with pytest.raises(urllib.error.HTTPError) as e:
            glance_call(api, other_token, other, "GET", f"/metadefs/namespaces/{name}")
        assert e.value.code == 404
        assert glance_call(api, admin, other, "GET", f"/metadefs/namespaces/{name}")["namespace"] == name
        # Protected: refused by the API and by kubectl, until an administrator unprotects it.
        with pytest.raises(urllib.error.HTTPError) as e:
            glance_call(api, admin, namespace, "DELETE", f"/metadefs/namespaces/{name}")
        assert e.value.code == 403 and b"protected" in e.value.read()
        refused = cloud.kubectl("--token", admin, "delete", "metadefnamespace", obj["metadata"]["name"], check=False)
        assert "protected" in refused
        admin_cli.run("image", "metadef", "namespace", "set", "--unprotected", name)
        admin_cli.run("image", "metadef", "namespace", "delete", name)
        assert name not in {n["namespace"] for n in admin_cli.json("image", "metadef", "namespace", "list")}

        # The administrator's images: public, and for another project (`owner`); a tenant may do neither.
        for body in ({"name": "pub", "visibility": "public"}, {"name": "theirs", "owner": other}):
            with pytest.raises(urllib.error.HTTPError) as e:
                glance_call(api, token, namespace, "POST", "/images", {**body, "disk_format": "raw"})
            assert e.value.code == 403
        public = glance_call(api, admin, namespace, "POST", "/images", {
            "name": "pub", "visibility": "public", "owner": other, "disk_format": "raw", "container_format": "bare"})
        assert public["owner"] == other and public["visibility"] == "public"
        assert public["id"] in {i["ID"] for i in cli.json("image", "list")}  # every project lists a public image
        assert (json.loads(cloud.kubectl("-n", other, "get", "images", "-o", "json"))["items"][0]["metadata"]["uid"]
                == public["id"])
        private = glance_call(api, token, namespace, "POST", "/images", {"name": "mine", "disk_format": "raw",
                                                                          "container_format": "bare"})
        # An administrator lists every project's images, and cannot move one to another owner (its namespace).
        assert private["id"] in {i["id"] for i in glance_call(api, admin, other, "GET", "/images")["images"]}
        req = urllib.request.Request(
            f"{api}/projects/{namespace}/image/v2/images/{private['id']}", method="PATCH",
            data=json.dumps([{"op": "replace", "path": "/owner", "value": other}]).encode(),
            headers={"X-Auth-Token": admin, "Content-Type": "application/openstack-images-v2.1-json-patch"})
        with pytest.raises(urllib.error.HTTPError) as e:
            urllib.request.urlopen(req, timeout=30)
        assert e.value.code == 409 and b"namespace" in e.value.read()
    finally:
        cloud.kubectl("delete", "clusterrolebinding", f"{namespace}-os-admin", check=False)
        cloud.kubectl("delete", "namespace", other, "--wait=false", check=False)


def test_stores_an_image_held_only_in_the_file_store_boots(operator: Any, api: str, cloud: LocalCloud,
                                                           kubectl: Kubectl, namespace: str, tmp_path: Path) -> None:
    """Two stores (the local cloud's KOVA_STORES: MinIO `s3`, the default, and a directory `file`): an upload
    names its store (`x-image-meta-store`), `image show` says where the data is, and a server boots from an
    image that only the file store holds, its importer reading it through kova api's signed link."""
    token = tenant_token(cloud, namespace)
    stores = glance_call(api, token, namespace, "GET", "/info/stores")["stores"]
    assert [(s["id"], s.get("default", False)) for s in stores] == [("s3", True), ("file", False)]
    data = qcow2("file-store", kib=1024)
    image = glance_call(api, token, namespace, "POST", "/images", {"name": "on-file", "disk_format": "qcow2",
                                                                   "container_format": "bare"})
    req = urllib.request.Request(f"{api}/projects/{namespace}/image/v2/images/{image['id']}/file", method="PUT",
                                 data=data, headers={"X-Auth-Token": token, "Content-Type": "application/octet-stream",
                                                     "x-image-meta-store": "file"})
    urllib.request.urlopen(req, timeout=60).close()
    shown = glance_call(api, token, namespace, "GET", f"/images/{image['id']}")
    assert shown["status"] == "active" and shown["stores"] == "file"
    env = {**os.environ, "OS_AUTH_TOKEN": token, "OS_IMAGE_URL": f"{api}/projects/{namespace}/image",
           "HOME": str(tmp_path)}
    glance_show = subprocess.run([GLANCE, "image-show", image["id"]], capture_output=True, text=True, env=env,
                                 timeout=120, stdin=subprocess.DEVNULL)
    assert glance_show.returncode == 0, glance_show.stderr
    assert any([c.strip() for c in line.split("|")[1:3]] == ["stores", "file"]
               for line in glance_show.stdout.splitlines()), glance_show.stdout
    assert (cloud.file_store / "images" / image["id"]).read_bytes() == data  # in the directory, not in MinIO
    assert image["id"] not in {o.object_name.split("/")[-1] for o in
                               cloud.s3_client().list_objects("kova-images", prefix="images/")}
    assert kubectl.status("image", "on-file")["stores"] == ["file"]
    # Its data has come: kubectl cannot give it a url now (only an Image waiting for an upload may be).
    out = kubectl("patch", "image", "on-file", "--type=merge", "-p",
                  '{"spec":{"source":{"upload":null,"url":"http://127.0.0.1:1/other"}}}', check=False)
    assert "already has data (status active): it cannot be given a url" in out
    assert "url" not in kubectl.get("image", "on-file")["spec"]["source"]
    # A store that is not configured is refused in Glance's words.
    other = glance_call(api, token, namespace, "POST", "/images", {"name": "nowhere", "disk_format": "raw",
                                                                   "container_format": "bare"})
    req = urllib.request.Request(f"{api}/projects/{namespace}/image/v2/images/{other['id']}/file", method="PUT",
                                 data=b"x" * 1024, headers={"X-Auth-Token": token, "x-image-meta-store": "tape",
                                                            "Content-Type": "application/octet-stream"})
    with pytest.raises(urllib.error.HTTPError) as e:
        urllib.request.urlopen(req, timeout=30)
    assert e.value.code == 400 and b"tape" in e.value.read()

    # Booted: the DataVolume's source is kova api's short-lived signed link, never store credentials.
    boot_from_file_store(kubectl, api, image["id"], other["id"])

    # copy-image (an administrator's): to MinIO as well, through the verified pipeline; then one copy removed.
    with pytest.raises(urllib.error.HTTPError) as e:  # openstacksdk's import_image ignores the answer's status
        glance_call(api, token, namespace, "POST", f"/images/{image['id']}/import",
                    {"method": {"name": "copy-image"}, "stores": ["s3"]})
    assert e.value.code == 403
    (tmp_path / "admin").mkdir()
    admin = tenant_token(cloud, namespace, "kova-admin", name="os-admin")
    try:
        Cli(api, admin, namespace, tmp_path / "admin").run("image", "import", image["id"], "--method", "copy-image",
                                                           "--store", "s3")
        copied = wait_for(lambda: (i := glance_call(api, token, namespace, "GET", f"/images/{image['id']}"))[
            "stores"] == "file,s3" and i, what="the copy in both stores")
        assert copied["os_glance_importing_to_stores"] == "" and copied["os_glance_failed_import"] == ""
        assert cloud.s3_client().get_object("kova-images", f"images/{image['id']}").read() == data
        glance_call(api, admin, namespace, "DELETE", f"/stores/file/{image['id']}")
        assert glance_call(api, token, namespace, "GET", f"/images/{image['id']}")["stores"] == "s3"
        assert not (cloud.file_store / "images" / image["id"]).exists()
        with pytest.raises(urllib.error.HTTPError) as e:  # never the last copy
            glance_call(api, admin, namespace, "DELETE", f"/stores/s3/{image['id']}")
        assert e.value.code == 403
        # The stores' detail (Glance's stores_info_detail policy: administrators): type, weight, properties.
        detail = {s["id"]: s for s in glance_call(api, admin, namespace, "GET", "/info/stores/detail")["stores"]}
        assert detail["file"]["properties"] == {"data_dir": str(cloud.file_store)} and detail["s3"]["type"] == "s3"
        assert "secret" not in json.dumps(detail).lower()
        with pytest.raises(urllib.error.HTTPError) as e:
            glance_call(api, token, namespace, "GET", "/info/stores/detail")
        assert e.value.code == 403
    finally:
        cloud.kubectl("delete", "clusterrolebinding", f"{namespace}-os-admin", check=False)


def test_spec_stores_brings_the_data_where_kubectl_says(operator: Any, cloud: LocalCloud, source: Source,
                                                      kubectl: Kubectl) -> None:
    """GitOps' multiple stores: `spec.stores` names where the data should be; the operator copies it there
    through the verified pipeline, and removes it from a store no longer named, never the last copy."""
    data = qcow2("spec-stores", kib=512)
    url = source.add(f"/{kubectl.namespace}/both", data)
    kubectl.apply({"apiVersion": "image.kova.dev/v1alpha1", "kind": "Image", "metadata": {"name": "both"},
                   "spec": {"diskFormat": "qcow2", "source": {"url": url}, "stores": ["s3", "file"]}})
    both = wait_for(lambda: (st := kubectl.status("image", "both")).get("stores") == ["file", "s3"] and
                    st.get("importingToStores") == [] and st, 60, "the image in both stores")
    assert both["status"] == "active" and both["failedImport"] == []
    uid = kubectl.get("image", "both")["metadata"]["uid"]
    assert (cloud.file_store / "images" / uid).read_bytes() == data
    assert cloud.s3_client().get_object("kova-images", f"images/{uid}").read() == data
    # Where an image's data is kept, once it has some, is an administrator's decision (Glance's copy-image and
    # delete from a store): the tenant who made it is refused, the cloud's administrator (here) is not.
    out = Tenant(cloud, kubectl.namespace)("patch", "image", "both", "--type=merge", "-p",
                                           '{"spec":{"stores":["file"]}}', check=False)
    assert "changing spec.stores of an image that has data copies or removes it" in out
    kubectl("patch", "image", "both", "--type=merge", "-p", '{"spec":{"stores":["file"]}}')
    wait_for(lambda: kubectl.status("image", "both").get("stores") == ["file"], 30, "the copy in MinIO removed")
    assert uid not in {o.object_name.split("/")[-1] for o in
                       cloud.s3_client().list_objects("kova-images", prefix="images/")}
    # A store that is not configured is no copy to make, and not a reason to remove one.
    kubectl("patch", "image", "both", "--type=merge", "-p", '{"spec":{"stores":["tape"]}}')
    seen = wait_for(lambda: (o := kubectl.get("image", "both")) and condition(o).get("observedGeneration") ==
                    o["metadata"]["generation"] and o, 30, "the operator to see the new spec")
    assert seen["status"]["stores"] == ["file"] and (cloud.file_store / "images" / uid).exists()


def boot_from_file_store(kubectl: Kubectl, api: str, image_id: str, other_id: str) -> None:
    """A server from an image only the file store holds: its DataVolume reads kova api's signed link."""
    fl = unique(kubectl, "file-store")
    kubectl.apply([flavor(fl), instance("from-file", fl, "on-file")])
    try:
        wait_instance(kubectl, "from-file", "ACTIVE", timeout=120)
        dv = kubectl.get("dv", "from-file-root") or {}
        url = dv["spec"]["source"]["http"]["url"]
        assert url.startswith(f"{api}/stores/file/images/{image_id}?expires=") and "signature=" in url
        tampered = url.replace(image_id, other_id)
        with pytest.raises(urllib.error.HTTPError) as e:
            urllib.request.urlopen(tampered, timeout=30)
        assert e.value.code == 403
    finally:
        kubectl.cloud.kubectl("delete", "flavor", fl, "--wait=false", check=False)
