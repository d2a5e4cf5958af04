"""OpenStack's limits, acting as a tenant (a ServiceAccount token with a project's rights, never cluster admin):
128 tags, properties and members per Image (Glance's image_tag_quota, image_property_quota, image_member_quota)
and 128 metadata items per Instance (Nova's metadata_items). The API server refuses more to kubectl, from the
CRDs; `kova api` answers as Glance does (413) before it writes. Only a project `member` answers a share."""

from __future__ import annotations

import json
import subprocess
import urllib.error
import urllib.request
from pathlib import Path
from typing import Any

import yaml

from tests.cloud.bench import LocalCloud, binary, kubeconfig_dict
from tests.conftest import tenant_token

LIMIT = 128
TAG_LIMIT = "The limit has been exceeded on the number of allowed image tags. Attempted: 129, Maximum: 128"
PROPERTY_LIMIT = ("The limit has been exceeded on the number of allowed image properties. Attempted: 129, "
                  "Maximum: 128")
MEMBER_LIMIT = ("The limit has been exceeded on the number of allowed image members for this image. "
                "Attempted: 129, Maximum: 128")


class TenantKubectl:
    """kubectl with a tenant's token (its own kubeconfig: no client certificate of the bench's admin)."""

    def __init__(self, cloud: LocalCloud, namespace: str, token: str, path: Path) -> None:
        path.write_text(yaml.safe_dump(kubeconfig_dict(
            cloud.api_url, (cloud.workdir / "pki" / "ca.crt").read_text(), token=token, user="tenant")))
        self.kubeconfig, self.namespace = path, namespace

    def run(self, *args: str, input: str | None = None) -> subprocess.CompletedProcess[str]:
        return subprocess.run([binary("kubectl"), f"--kubeconfig={self.kubeconfig}", "-n", self.namespace, *args],
                              input=input, capture_output=True, text=True, timeout=120)

    def apply(self, manifest: dict[str, Any]) -> subprocess.CompletedProcess[str]:
        return self.run("apply", "-f", "-", input=yaml.safe_dump(manifest))

    def names(self, resource: str) -> set[str]:
        res = self.run("get", resource, "-o", "json")
        assert res.returncode == 0, res.stderr
        return {i["metadata"]["name"] for i in json.loads(res.stdout)["items"]}


def image(name: str, **spec: Any) -> dict[str, Any]:
    return {"apiVersion": "image.kova.dev/v1alpha1", "kind": "Image", "metadata": {"name": name},
            "spec": {"diskFormat": "qcow2", "source": {"upload": {}}, **spec}}


def instance(name: str, metadata: dict[str, str]) -> dict[str, Any]:
    return {"apiVersion": "compute.kova.dev/v1alpha1", "kind": "Instance", "metadata": {"name": name},
            "spec": {"flavorRef": "m1.tiny", "imageRef": "cirros", "metadata": metadata}}


def tenant(cloud: LocalCloud, namespace: str, tmp_path: Path) -> TenantKubectl:
    """The project's `edit` user, who may also write Instances (a Role of its own: this test does not rely on
    the chart's aggregated compute roles being installed)."""
    token = tenant_token(cloud, namespace)
    cloud.kubectl("-n", namespace, "create", "role", "servers", "--verb=get,list,create,update,patch,delete",
                  "--resource=instances.compute.kova.dev")
    cloud.kubectl("-n", namespace, "create", "rolebinding", "servers", "--role=servers",
                  f"--serviceaccount={namespace}:os-edit")
    kubectl = TenantKubectl(cloud, namespace, token, tmp_path / "tenant.kubeconfig")
    # A tenant, not an administrator: what it may do is its namespace's.
    assert kubectl.run("auth", "can-i", "create", "namespaces").stdout.strip() == "no"
    assert kubectl.run("auth", "can-i", "patch", "images.image.kova.dev", "--subresource=status").stdout.strip() == "no"
    assert kubectl.run("auth", "can-i", "create", "instances.compute.kova.dev").stdout.strip() == "yes"
    return kubectl


def call(method: str, url: str, token: str, body: Any = None,
         content_type: str = "application/json") -> tuple[int, Any]:
    """One request to `kova api` (loopback), with Glance's JSON error body asked for."""
    data = json.dumps(body).encode() if body is not None else None
    headers = {"X-Auth-Token": token, "Accept": "application/json",
               **({"Content-Type": content_type} if data is not None else {})}
    req = urllib.request.Request(url, data=data, method=method, headers=headers)
    try:
        with urllib.request.urlopen(req, timeout=30) as resp:
            raw = resp.read()
            return int(resp.status), json.loads(raw) if raw else None
    except urllib.error.HTTPError as e:
        raw = e.read()
        return e.code, json.loads(raw) if raw else None


def test_the_api_server_refuses_more_than_openstacks_limits_to_a_tenant(api: str, cloud: LocalCloud, namespace: str,
                                                                       tmp_path: Path) -> None:
    kubectl = tenant(cloud, namespace, tmp_path)
    many = {str(n): {f"k{i}": "v" for i in range(n)} for n in (LIMIT, LIMIT + 1)}
    words = {str(n): [f"p{i}" for i in range(n)] for n in (LIMIT, LIMIT + 1)}
    over = [(image("too-many-tags", tags=words["129"]), "spec.tags"),
            (image("too-many-properties", properties=many["129"]), "spec.properties"),
            (image("too-many-members", visibility="shared", members=words["129"]), "spec.members"),
            (instance("too-much-metadata", many["129"]), "spec.metadata")]
    for manifest, field in over:
        res = kubectl.apply(manifest)
        assert res.returncode != 0, f"{manifest['metadata']['name']} was accepted"
        # The API server's own words, naming the field and the limit (the CRD's maxItems / maxProperties).
        assert f"{field}: Too many: 129: must have at most 128 items" in res.stderr, res.stderr
    # Nothing was created; the same objects at the limit are (so the refusals above were not RBAC's).
    assert kubectl.names("images.image.kova.dev") == set() and kubectl.names("instances.compute.kova.dev") == set()
    at_limit = [image("tags", tags=words["128"]), image("properties", properties=many["128"]),
                image("members", visibility="shared", members=words["128"]), instance("metadata", many["128"])]
    for manifest in at_limit:
        res = kubectl.apply(manifest)
        assert res.returncode == 0, res.stderr
    assert kubectl.names("images.image.kova.dev") == {"tags", "properties", "members"}
    assert kubectl.names("instances.compute.kova.dev") == {"metadata"}
    # An update past the limit is refused the same way, and the object keeps what it had.
    res = kubectl.run("patch", "images.image.kova.dev", "tags", "--type=json",
                      "-p", json.dumps([{"op": "add", "path": "/spec/tags/-", "value": "one-more"}]))
    assert res.returncode != 0 and "spec.tags: Too many: 129: must have at most 128 items" in res.stderr, res.stderr
    res = kubectl.run("get", "images.image.kova.dev", "tags", "-o", "jsonpath={.spec.tags}")
    assert len(json.loads(res.stdout)) == LIMIT


def test_kova_api_answers_glances_413_past_its_quotas(api: str, cloud: LocalCloud, namespace: str,
                                                      tmp_path: Path) -> None:
    kubectl = tenant(cloud, namespace, tmp_path)
    token = tenant_token(cloud, namespace, name="os-glance")
    images = f"{api}/projects/{namespace}/image/v2/images"
    props = {f"k{i}": "v" for i in range(LIMIT)}

    # Create: 128 properties and 128 tags are fine; a 129th property is Glance's 413, and nothing is made.
    status, full = call("POST", images, token, {"name": "full", "disk_format": "qcow2", "container_format": "bare",
                                                "tags": [f"t{i}" for i in range(LIMIT)], **props})
    assert status == 201, full
    assert len(full["tags"]) == LIMIT and all(full[k] == "v" for k in props)
    status, body = call("POST", images, token, {"name": "over", "disk_format": "qcow2", **props, "k128": "v"})
    assert (status, body["code"], body["message"]) == (413, "413 Request Entity Too Large", PROPERTY_LIMIT), body
    status, body = call("POST", images, token, {"name": "over", "tags": [f"t{i}" for i in range(LIMIT + 1)]})
    assert (status, body["message"]) == (413, TAG_LIMIT), body
    assert kubectl.names("images.image.kova.dev") == {"full"}

    # Tags: the 129th PUT is Glance's 413 (its words for image-tag-update); a tag already there is a 204.
    tag = f"{images}/{full['id']}/tags"
    assert call("PUT", f"{tag}/t0", token)[0] == 204
    status, body = call("PUT", f"{tag}/t128", token)
    assert (status, body["message"]) == (413, f"Image tag limit exceeded for image {full['id']}: {TAG_LIMIT}:"), body
    # A PATCH that adds a property or a tag past the quota: the same 413, with Glance's LimitExceeded text.
    patch = "application/openstack-images-v2.1-json-patch"
    status, body = call("PATCH", f"{images}/{full['id']}", token, [{"op": "add", "path": "/k128", "value": "v"}],
                        content_type=patch)
    assert (status, body["message"]) == (413, PROPERTY_LIMIT), body
    status, body = call("PATCH", f"{images}/{full['id']}", token,
                        [{"op": "add", "path": "/tags/-", "value": "t128"}], content_type=patch)
    assert (status, body["message"]) == (413, TAG_LIMIT), body
    # ...while one that only changes what is there passes.
    status, body = call("PATCH", f"{images}/{full['id']}", token, [{"op": "replace", "path": "/k0", "value": "w"}],
                        content_type=patch)
    assert status == 200 and body["k0"] == "w", body
    status, shown = call("GET", f"{images}/{full['id']}", token)
    assert status == 200 and len(shown["tags"]) == LIMIT and "t128" not in shown["tags"] and "k128" not in shown

    # Members: a shared image with 128 of them (set with kubectl) takes no 129th.
    call("PATCH", f"{images}/{full['id']}", token, [{"op": "replace", "path": "/visibility", "value": "shared"}],
         content_type=patch)
    res = kubectl.run("patch", "images.image.kova.dev", "full", "--type=merge",
                      "-p", json.dumps({"spec": {"members": [f"p{i}" for i in range(LIMIT)]}}))
    assert res.returncode == 0, res.stderr
    status, body = call("POST", f"{images}/{full['id']}/members", token, {"member": "p128"})
    assert (status, body["message"]) == (413, f"Image member limit exceeded for image {full['id']}: {MEMBER_LIMIT}:")
    status, listed = call("GET", f"{images}/{full['id']}/members", token)
    assert status == 200 and len(listed["members"]) == LIMIT


def test_only_a_project_member_accepts_a_share(api: str, cloud: LocalCloud, namespace: str) -> None:
    owner = tenant_token(cloud, namespace)
    other = f"{namespace[:50]}-m"
    cloud.kubectl("create", "namespace", other)
    try:
        reader, member = tenant_token(cloud, other, role="view"), tenant_token(cloud, other)
        status, shared = call("POST", f"{api}/projects/{namespace}/image/v2/images", owner,
                              {"name": "shared", "disk_format": "qcow2", "visibility": "shared"})
        assert status == 201, shared
        status, added = call("POST", f"{api}/projects/{namespace}/image/v2/images/{shared['id']}/members", owner,
                             {"member": other})
        assert status == 200 and added["status"] == "pending", added
        answer = f"{api}/projects/{other}/image/v2/images/{shared['id']}/members/{other}"
        # The reader sees the share, but may not answer it (Glance's modify_member policy: 403).
        status, seen = call("GET", answer, reader)
        assert status == 200 and seen["status"] == "pending", seen
        for word in ("accepted", "rejected"):
            status, body = call("PUT", answer, reader, {"status": word})
            assert (status, body["message"]) == (403, "You are not authorized to complete modify_member action."), body
        assert call("GET", answer, reader)[1]["status"] == "pending"
        # The project's member may.
        status, body = call("PUT", answer, member, {"status": "accepted"})
        assert status == 200 and body["status"] == "accepted" and body["member_id"] == other, body
        assert call("GET", answer, reader)[1]["status"] == "accepted"
        status, page = call("GET", f"{api}/projects/{other}/image/v2/images", reader)
        assert status == 200 and shared["id"] in {i["id"] for i in page["images"]}  # accepted: listed there
        status, body = call("PUT", answer, reader, {"status": "rejected"})
        assert status == 403 and call("GET", answer, member)[1]["status"] == "accepted"
    finally:
        cloud.kubectl("delete", "namespace", other, "--wait=false", check=False)
