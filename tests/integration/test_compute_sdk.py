"""Nova's compute API of `kova api` through openstacksdk's compute proxy (a server's whole life: boot, power,
reboot, pause, suspend, lock, resize and revert, rebuild, snapshot, delete), the `openstack` CLI pinned to
microversion 2.1, the microversion headers as plain HTTP sees them, and authorization as a tenant sees it
(no token, a reader, another project, a locked server)."""

from __future__ import annotations

import json
import urllib.error
import urllib.request
from pathlib import Path
from typing import Any, ClassVar

import openstack
import pytest
from openstack import exceptions as sdk_errors

from tests.cloud.bench import LocalCloud
from tests.conftest import Kubectl, Operator, tenant_token, wait_for
from tests.httpsource import Source
from tests.integration.test_e2e import disk, flavor, image, unique, wait_image
from tests.integration.test_openstack import Cli

pytestmark = pytest.mark.integration

# What Nova adds to a server after 2.1, each from the microversion named: none of it may show at 2.1.
AFTER_21 = {"locked": (2, 9), "description": (2, 19), "tags": (2, 26), "trusted_image_certificates": (2, 63),
            "server_groups": (2, 71), "locked_reason": (2, 73), "pinned_availability_zone": (2, 96),
            "scheduler_hints": (2, 100)}


def project(kubectl: Kubectl, source: Source, tag: str, images: tuple[str, ...] = ("os",)) -> tuple[str, str, str]:
    """Three flavors (the administrator's: cluster-scoped) and active images in the namespace: (small, big, and
    mid: big's disk with less of the rest)."""
    small, big, mid = (unique(kubectl, f"{tag}-{size}") for size in "sbm")
    kubectl.apply([flavor(small), flavor(big, vcpus=2, ram=1024, disk=2), flavor(mid, ram=768, disk=2)])
    kubectl.apply([image(name, source.add(f"/{kubectl.namespace}/{tag}-{name}", disk(f"{tag}-{name}")))
                   for name in images])
    for name in images:
        wait_image(kubectl, name, "active")
    return small, big, mid


def connect(api: str, token: str, namespace: str) -> openstack.connection.Connection:
    return openstack.connect(auth_type="v3token", auth={
        "auth_url": f"{api}/identity/v3", "token": token, "project_name": namespace,
        "project_domain_name": "Default"}, region_name="RegionOne")


def instance_of(kubectl: Kubectl, server_id: str) -> dict[str, Any]:
    """The Instance behind a server, as `kubectl get instances` shows it (the server id is its uid)."""
    items = json.loads(kubectl("get", "instances", "-o", "json"))["items"]
    found = [i for i in items if i["metadata"]["uid"] == server_id]
    assert len(found) == 1, [i["metadata"]["uid"] for i in items]
    return dict(found[0])


def http(method: str, url: str, token: str | None, body: Any = None,
         headers: dict[str, str] | None = None) -> tuple[int, Any, Any]:
    """(status, headers, JSON body or None) of one plain request, errors included."""
    sent = {**({"X-Auth-Token": token} if token else {}), **(headers or {})}
    data = None
    if body is not None:
        data = json.dumps(body).encode()
        sent["Content-Type"] = "application/json"
    req = urllib.request.Request(url, method=method, data=data, headers=sent)
    try:
        with urllib.request.urlopen(req, timeout=30) as resp:
            raw, status, got = resp.read(), resp.status, resp.headers
    except urllib.error.HTTPError as e:
        raw, status, got = e.read(), e.code, e.headers
    return int(status), got, json.loads(raw) if raw.strip() else None


def test_openstacksdk_server_lifecycle(operator: Operator, api: str, cloud: LocalCloud, source: Source,
                                       kubectl: Kubectl, namespace: str) -> None:
    small, big, mid = project(kubectl, source, "sdk", ("os", "os-next"))
    conn = connect(api, tenant_token(cloud, namespace), namespace)
    compute = conn.compute
    os_image, next_image = conn.image.find_image("os"), conn.image.find_image("os-next")
    assert os_image is not None and next_image is not None

    # Two servers: one on no network, one on the pod network named by its os-networks id.
    networks = compute.get("/os-networks").json()["networks"]
    pod = next(n["id"] for n in networks if n["label"] == "pod")
    web = compute.create_server(name="sdk web", image_id=os_image.id, flavor_id=small, networks="none")
    db = compute.create_server(name="sdk db", image_id=os_image.id, flavor_id=small, networks=[{"uuid": pod}])
    web = compute.wait_for_server(web, interval=1)
    db = compute.wait_for_server(db, interval=1)
    assert (web.status, web.name, web.addresses) == ("ACTIVE", "sdk web", {})
    assert web.flavor.original_name == small and web.flavor.vcpus == 1 and web.flavor.ram == 512
    assert web.image.id == os_image.id
    assert db.status == "ACTIVE" and list(db.addresses) == ["pod"]
    obj = instance_of(kubectl, web.id)
    assert obj["spec"]["name"] == "sdk web" and obj["spec"]["networks"] == ["none"]
    assert (obj["spec"]["flavorRef"], obj["spec"]["imageRef"]) == (small, "os")
    assert obj["status"]["status"] == "ACTIVE"
    assert instance_of(kubectl, db.id)["spec"].get("networks", []) == []  # the pod network: the default

    shown = compute.get_server(web.id)
    assert (shown.id, shown.name, shown.status, shown.power_state) == (web.id, "sdk web", "ACTIVE", 1)
    assert shown.project_id == namespace and shown.is_locked is False
    assert [s.id for s in compute.servers(details=True, name="sdk web")] == [web.id]
    assert {s.id for s in compute.servers(details=True, name="^sdk")} == {web.id, db.id}
    assert all(s.status == "ACTIVE" for s in compute.servers(details=True))

    def server(status: str) -> Any:
        return compute.wait_for_server(compute.get_server(web.id), status=status, interval=1, wait=90)

    compute.stop_server(web)
    assert server("SHUTOFF").power_state == 4
    assert instance_of(kubectl, web.id)["spec"]["powerState"] == "Stopped"
    with pytest.raises(sdk_errors.ConflictException, match="vm_state stopped"):
        compute.stop_server(web)
    compute.start_server(web)
    assert server("ACTIVE").power_state == 1

    compute.reboot_server(web, "HARD")
    server("ACTIVE")  # HARD_REBOOT until the operator has served it
    served = instance_of(kubectl, web.id)
    token = served["spec"]["rebootRequest"]["token"]
    assert served["status"]["requests"]["reboot"] == token and served["spec"]["rebootRequest"]["type"] == "HARD"
    history = {a.request_id: a.action for a in compute.server_actions(web)}
    assert history[token] == "reboot" and {"create", "stop", "start"} <= set(history.values()), history

    compute.pause_server(web)
    paused = server("PAUSED")
    assert (paused.vm_state, paused.power_state) == ("paused", 3)
    compute.unpause_server(web)
    server("ACTIVE")
    compute.suspend_server(web)
    suspended = server("SUSPENDED")  # saved and shut down, as libvirt's managed save shows it in Nova
    assert (suspended.vm_state, suspended.power_state) == ("suspended", 4)
    assert instance_of(kubectl, web.id)["spec"]["powerState"] == "Suspended"
    compute.resume_server(web)
    server("ACTIVE")

    compute.lock_server(web, locked_reason="maintenance")
    locked = compute.get_server(web.id)
    assert locked.is_locked is True and locked.locked_reason == "maintenance"
    assert instance_of(kubectl, web.id)["spec"]["locked"] is True
    with pytest.raises(sdk_errors.ConflictException, match="locked"):
        compute.pause_server(web)
    compute.unlock_server(web)
    assert compute.get_server(web.id).is_locked is False

    # Resize up and confirm: the new flavor stays.
    compute.resize_server(web, big)
    resized = server("VERIFY_RESIZE")
    assert resized.flavor.original_name == big and resized.flavor.vcpus == 2
    compute.confirm_server_resize(web)
    confirmed = server("ACTIVE")
    assert confirmed.flavor.original_name == big and confirmed.flavor.ram == 1024
    assert instance_of(kubectl, web.id)["status"]["flavor"]["name"] == big
    # Resize again (to a flavor whose disk is no smaller) and revert: the flavor it had comes back.
    compute.resize_server(web, mid)
    assert server("VERIFY_RESIZE").flavor.original_name == mid
    compute.revert_server_resize(web)
    reverted = server("ACTIVE")
    assert reverted.flavor.original_name == big and reverted.flavor.vcpus == 2
    assert instance_of(kubectl, web.id)["status"]["flavor"]["name"] == big

    # Rebuild onto the second image: same server, same flavor, the other image.
    rebuilt = compute.rebuild_server(web, next_image.id)
    assert rebuilt.id == web.id and rebuilt.image.id == next_image.id
    after = server("ACTIVE")
    assert after.image.id == next_image.id and after.flavor.original_name == big
    obj = instance_of(kubectl, web.id)
    assert obj["spec"]["imageRef"] == "os-next" and obj["status"]["imageRef"] == "os-next"

    # A snapshot: the SDK reads the Glance image the moment createImage answers, then waits for it.
    seen: list[tuple[int, str]] = []

    def record(resp: Any, *args: Any, **kwargs: Any) -> None:
        if resp.request.method == "GET" and "/image/v2/images/" in resp.url:
            seen.append((resp.status_code, resp.json().get("status") if resp.ok else ""))
    conn.session.session.hooks["response"].append(record)
    snap = compute.create_server_image(web, "sdk snap", wait=True, timeout=120)
    conn.session.session.hooks["response"].remove(record)
    assert snap.status == "active" and snap.name == "sdk snap"
    assert seen[0] == (200, "queued"), seen
    order = ["queued", "saving", "active"]
    assert {s for _, s in seen} <= set(order) and [s for _, s in seen] == sorted((s for _, s in seen),
                                                                                  key=order.index), seen
    snapshot = conn.image.get_image(snap.id)
    # Raw, as KubeVirt exports it: CDI converted the qcow2 image when it imported the root disk.
    assert snapshot.owner == namespace and snapshot.disk_format == "raw"
    images = json.loads(kubectl("get", "images", "-o", "json"))["items"]
    made = next(i for i in images if i["metadata"]["uid"] == snap.id)
    assert made["spec"]["source"] == {"instance": obj["metadata"]["name"]}
    server("ACTIVE")

    for s in (web, db):
        compute.delete_server(s)
    for s in (web, db):
        compute.wait_for_delete(s, interval=1, wait=90)
    assert list(compute.servers()) == []
    assert json.loads(kubectl("get", "instances", "-o", "json"))["items"] == []


class Cli21(Cli):
    """The `openstack` CLI pinned to compute microversion 2.1, as OS_COMPUTE_API_VERSION pins it."""

    extra_env: ClassVar[dict[str, str]] = {"OS_COMPUTE_API_VERSION": "2.1"}


def test_cli_at_microversion_2_1_and_the_version_headers(operator: Operator, api: str, cloud: LocalCloud,
                                                          source: Source, kubectl: Kubectl, namespace: str,
                                                          tmp_path: Path) -> None:
    small, _big, _mid = project(kubectl, source, "v21")
    token = tenant_token(cloud, namespace)
    cli = Cli21(api, token, namespace, tmp_path)
    # Below 2.37 the CLI asks for no network by name (it sends `networks: []`: see the test after this one).
    created = cli.json("server", "create", "--flavor", small, "--image", "os", "--wait", "old client")
    assert created["status"] == "ACTIVE" and created["name"] == "old client"
    assert created["flavor"] == f"{small} ({small})" and created["image"].startswith("os (")
    shown = cli.json("server", "show", created["id"])
    assert shown["id"] == created["id"] and shown["status"] == "ACTIVE"
    assert shown["OS-EXT-STS:vm_state"] == "active" and shown["project_id"] == namespace
    # The CLI fills what the API did not send with null: at 2.1 it got no lock, description or server groups.
    assert (shown["locked"], shown["description"], shown["server_groups"]) == (None, None, None)
    assert instance_of(kubectl, created["id"])["spec"]["name"] == "old client"
    assert [(s["ID"], s["Name"], s["Status"]) for s in cli.json("server", "list")] == [
        (created["id"], "old client", "ACTIVE")]

    # The same server in plain HTTP: what 2.1 shows, and the headers that say which version answered.
    url = f"{api}/projects/{namespace}/compute/v2.1/servers/{created['id']}"
    status, headers, body = http("GET", url, token, headers={"X-OpenStack-Nova-API-Version": "2.1"})
    assert status == 200
    assert headers["OpenStack-API-Version"] == "compute 2.1" and headers["X-OpenStack-Nova-API-Version"] == "2.1"
    assert {"OpenStack-API-Version", "X-OpenStack-Nova-API-Version"} <= {
        v.strip() for v in headers["Vary"].split(",")}
    assert not set(AFTER_21) & set(body["server"]), body["server"]
    assert set(body["server"]["flavor"]) == {"id", "links"} and body["server"]["flavor"]["id"] == small
    status, headers, body = http("GET", url, token, headers={"OpenStack-API-Version": "compute 2.79"})
    assert status == 200
    assert headers["OpenStack-API-Version"] == "compute 2.79" and headers["X-OpenStack-Nova-API-Version"] == "2.79"
    assert {k for k, v in AFTER_21.items() if v <= (2, 79)} <= set(body["server"])
    assert not {k for k, v in AFTER_21.items() if v > (2, 79)} & set(body["server"])
    assert body["server"]["locked"] is False and body["server"]["tags"] == []
    assert body["server"]["flavor"]["original_name"] == small
    status, headers, _ = http("GET", url, token, headers={"OpenStack-API-Version": "compute latest"})
    assert status == 200 and headers["OpenStack-API-Version"] == "compute 2.100"
    status, _, body = http("GET", url, token, headers={"OpenStack-API-Version": "compute 2.101"})
    assert status == 406 and "2.101" in body["computeFault"]["message"]

    cli.run("server", "delete", "--wait", created["id"])
    assert cli.json("server", "list") == []
    assert json.loads(kubectl("get", "instances", "-o", "json"))["items"] == []


def test_authorization(operator: Operator, api: str, cloud: LocalCloud, source: Source, kubectl: Kubectl,
                       namespace: str) -> None:
    small, _big, _mid = project(kubectl, source, "authz")
    editor, reader = tenant_token(cloud, namespace), tenant_token(cloud, namespace, "view")
    base = f"{api}/projects/{namespace}/compute/v2.1"
    conn = connect(api, editor, namespace)
    image_id = conn.image.find_image("os").id  # type: ignore[union-attr]
    server = conn.compute.wait_for_server(conn.compute.create_server(
        name="guarded", image_id=image_id, flavor_id=small, networks="none"), interval=1)

    # No token, or one Kubernetes does not know: Keystone's 401.
    for token in (None, "not-a-token"):
        status, _, body = http("GET", f"{base}/servers", token)
        assert status == 401 and body["error"]["code"] == 401, body
    # A token with no rights in the project: Nova's 403.
    status, _, body = http("GET", f"{base}/servers", tenant_token(cloud, namespace, "none"))
    assert status == 403 and body["forbidden"]["code"] == 403, body

    # A reader lists and shows, and may change nothing: Nova's 403.
    status, _, body = http("GET", f"{base}/servers", reader)
    assert status == 200 and [s["id"] for s in body["servers"]] == [server.id]
    status, _, body = http("GET", f"{base}/servers/{server.id}", reader)
    assert status == 200 and body["server"]["status"] == "ACTIVE"
    new = {"server": {"name": "nope", "imageRef": image_id, "flavorRef": small}}  # valid at 2.1: no networks key
    status, _, body = http("POST", f"{base}/servers", reader, new)
    assert status == 403 and body["forbidden"]["code"] == 403, body
    for action in ({"os-stop": None}, {"reboot": {"type": "HARD"}}, {"lock": None}):
        status, _, body = http("POST", f"{base}/servers/{server.id}/action", reader, action)
        assert status == 403 and body["forbidden"]["code"] == 403, (action, body)
    status, _, body = http("DELETE", f"{base}/servers/{server.id}", reader)
    assert status == 403 and body["forbidden"]["code"] == 403, body
    assert len(json.loads(kubectl("get", "instances", "-o", "json"))["items"]) == 1
    assert conn.compute.get_server(server.id).status == "ACTIVE"

    # Another project's tenant: the server is not in its list, and its id is not found.
    other = f"{namespace[:50]}-o"
    cloud.kubectl("create", "namespace", other)
    try:
        stranger = tenant_token(cloud, other)
        theirs = f"{api}/projects/{other}/compute/v2.1"
        status, _, body = http("GET", f"{theirs}/servers/detail", stranger)
        assert status == 200 and body["servers"] == []
        status, _, body = http("GET", f"{theirs}/servers/{server.id}", stranger)
        assert status == 404 and body["itemNotFound"]["code"] == 404, body
        status, _, body = http("POST", f"{theirs}/servers/{server.id}/action", stranger, {"os-stop": None})
        assert status == 404 and body["itemNotFound"]["code"] == 404, body
        status, _, body = http("DELETE", f"{theirs}/servers/{server.id}", stranger)
        assert status == 404 and body["itemNotFound"]["code"] == 404, body
        # Nor through this project's URL with the stranger's token.
        status, _, body = http("GET", f"{base}/servers/{server.id}", stranger)
        assert status == 403 and body["forbidden"]["code"] == 403, body
        status, _, body = http("GET", f"{base}/servers", stranger)
        assert status == 403 and body["forbidden"]["code"] == 403, body
    finally:
        cloud.kubectl("delete", "namespace", other, "--wait=false", check=False)

    # A locked server refuses actions and delete with Nova's 409, naming the lock; unlocked, it goes.
    status, _, _ = http("POST", f"{base}/servers/{server.id}/action", editor, {"lock": None})
    assert status == 202
    for action in ({"os-stop": None}, {"reboot": {"type": "SOFT"}}, {"createImage": {"name": "x"}}):
        status, _, body = http("POST", f"{base}/servers/{server.id}/action", editor, action)
        assert status == 409 and body["conflictingRequest"]["code"] == 409, (action, body)
        assert body["conflictingRequest"]["message"] == f"Instance {server.id} is locked", body
    status, _, body = http("DELETE", f"{base}/servers/{server.id}", editor)
    assert status == 409 and body["conflictingRequest"]["message"] == f"Instance {server.id} is locked", body
    assert conn.compute.get_server(server.id).status == "ACTIVE"
    status, _, _ = http("POST", f"{base}/servers/{server.id}/action", editor, {"unlock": None})
    assert status == 202
    status, _, _ = http("DELETE", f"{base}/servers/{server.id}", editor)
    assert status == 204
    conn.compute.wait_for_delete(server, interval=1, wait=90)
    wait_for(lambda: not json.loads(kubectl("get", "instances", "-o", "json"))["items"], what="the Instance gone")


def test_an_empty_networks_list_is_the_projects_network(operator: Operator, api: str, cloud: LocalCloud,
                                                        source: Source, kubectl: Kubectl, namespace: str) -> None:
    small, _big, _mid = project(kubectl, source, "nets")
    token = tenant_token(cloud, namespace)
    image_id = connect(api, token, namespace).image.find_image("os").id  # type: ignore[union-attr]
    # What `openstack server create` sends at OS_COMPUTE_API_VERSION=2.1 when no --nic is given.
    new: dict[str, Any] = {"server": {"name": "legacy", "imageRef": image_id, "flavorRef": small, "networks": []}}
    status, _, body = http("POST", f"{api}/projects/{namespace}/compute/v2.1/servers", token, new,
                           {"X-OpenStack-Nova-API-Version": "2.1"})
    assert status == 202, body
    assert instance_of(kubectl, body["server"]["id"])["spec"].get("networks", []) == []


def test_a_resize_to_a_smaller_disk_leaves_the_server_usable(operator: Operator, api: str, cloud: LocalCloud,
                                                            source: Source, kubectl: Kubectl, namespace: str) -> None:
    small, big, _mid = project(kubectl, source, "shrink")
    conn = connect(api, tenant_token(cloud, namespace), namespace)
    image_id = conn.image.find_image("os").id  # type: ignore[union-attr]
    server = conn.compute.wait_for_server(conn.compute.create_server(
        name="shrink", image_id=image_id, flavor_id=big, networks="none"), interval=1)
    # 2 GiB -> 1 GiB: a disk cannot shrink; Nova's 400 at once, decided by the operator's own rule.
    with pytest.raises(sdk_errors.BadRequestException, match="cannot shrink"):
        conn.compute.resize_server(server, small)
    assert conn.compute.get_server(server.id).status == "ACTIVE"
    assert conn.compute.get_server(server.id).flavor.original_name == big
    conn.compute.stop_server(server)  # and it takes the next action
    conn.compute.wait_for_server(server, status="SHUTOFF", interval=1, wait=60)


def test_novaclient_boots_lists_and_deletes(operator: Operator, api: str, cloud: LocalCloud, source: Source,
                                            kubectl: Kubectl, namespace: str) -> None:
    """python-novaclient (its Python API, on a keystoneauth session with the token) at 2.1 and at the latest
    version it and Kova both speak."""
    from keystoneauth1 import session as ks_session
    from keystoneauth1.identity import v3
    from novaclient import api_versions
    from novaclient import client as nova_client

    small, _big, _mid = project(kubectl, source, "novacl")
    token = tenant_token(cloud, namespace)
    auth = v3.Token(auth_url=f"{api}/identity/v3", token=token, project_name=namespace,
                    project_domain_name="Default")
    sess = ks_session.Session(auth=auth)
    image_id = connect(api, token, namespace).image.find_image("os").id  # type: ignore[union-attr]
    old = nova_client.Client("2.1", session=sess)
    # What `nova` does for 2.latest: the highest version both sides speak, from the version document (its 2.96).
    negotiated = api_versions.discover_version(old, api_versions.APIVersion("2.latest"))
    assert negotiated == api_versions.APIVersion("2.96")
    new = nova_client.Client(negotiated.get_string(), session=sess)
    assert small in {f.id for f in old.flavors.list()}
    server = new.servers.create("nova-cl", image_id, small, nics="none")
    wait_for(lambda: new.servers.get(server.id).status == "ACTIVE", 60, "the server ACTIVE")
    listed = old.servers.list(search_opts={"name": "^nova-"})
    assert [s.id for s in listed] == [server.id]
    assert instance_of(kubectl, server.id)["spec"]["networks"] == ["none"]
    old.servers.delete(server.id)
    wait_for(lambda: not old.servers.list(), 90, "the server gone")


def test_the_projects_usage_quotas_and_read_only_catalogues(operator: Operator, api: str, cloud: LocalCloud,
                                                            source: Source, kubectl: Kubectl,
                                                            namespace: str) -> None:
    """What Horizon's overview and `openstack` read besides servers, as a tenant, over plain HTTP at 2.100."""
    small, _big, _mid = project(kubectl, source, "reads")
    kubectl.apply({"apiVersion": "compute.kova.dev/v1alpha1", "kind": "SecurityGroup", "metadata": {"name": "web"},
                   "spec": {"rules": [{"protocol": "tcp", "portRangeMin": 443, "portRangeMax": 443}]}})
    token = tenant_token(cloud, namespace)
    conn = connect(api, token, namespace)
    image_id = conn.image.find_image("os").id  # type: ignore[union-attr]
    base, latest = f"{api}/projects/{namespace}/compute/v2.1", {"OpenStack-API-Version": "compute 2.100"}
    server = conn.compute.wait_for_server(conn.compute.create_server(
        name="used", image_id=image_id, flavor_id=small, networks="none", security_groups=[{"name": "web"}]),
        interval=1)

    status, _, usage = http("GET", f"{base}/os-simple-tenant-usage/{namespace}", token, headers=latest)
    assert status == 200 and [u["instance_id"] for u in usage["tenant_usage"]["server_usages"]] == [server.id]
    assert usage["tenant_usage"]["server_usages"][0]["vcpus"] == 1
    assert http("GET", f"{base}/os-simple-tenant-usage/someone-else", token, headers=latest)[0] == 403
    status, _, quotas = http("GET", f"{base}/os-quota-sets/{namespace}/detail", token, headers=latest)
    assert status == 200 and quotas["quota_set"]["instances"]["limit"] == 10
    wait_for(lambda: http("GET", f"{base}/os-quota-sets/{namespace}/detail", token, headers=latest)[2]
             ["quota_set"]["instances"]["in_use"] == 1, what="the Quota's use counted")
    status, _, groups = http("GET", f"{base}/os-security-groups", token, headers=latest)
    web = next(g for g in groups["security_groups"] if g["name"] == "web")
    assert web["rules"][0]["from_port"] == 443 and web["rules"][0]["ip_protocol"] == "tcp"
    status, _, mine = http("GET", f"{base}/servers/{server.id}/os-security-groups", token, headers=latest)
    assert [g["name"] for g in mine["security_groups"]] == ["web"]
    status, _, nets = http("GET", f"{base}/os-networks", token, headers=latest)
    assert [n["label"] for n in nets["networks"]] == ["pod"]
    status, _, zones = http("GET", f"{base}/os-availability-zone", token, headers=latest)
    assert status == 200 and {z["zoneName"] for z in zones["availabilityZoneInfo"]} >= {"zone-a", "zone-b"}
    assert http("GET", f"{base}/flavors/{small}/os-extra_specs", token, headers=latest)[2] == {"extra_specs": {}}
    assert http("POST", f"{base}/flavors", token, {"flavor": {"name": "mine", "ram": 64, "vcpus": 1, "disk": 0}},
                latest)[0] == 403
    # An x509 key pair made by Kova (Nova's type x509 without a key): a certificate and its private key, once.
    status, _, made = http("POST", f"{base}/os-keypairs", token, {"keypair": {"name": "Cert Pair", "type": "x509"}},
                           {"OpenStack-API-Version": "compute 2.2"})
    assert status == 201 and made["keypair"]["public_key"].startswith("-----BEGIN CERTIFICATE")
    assert "PRIVATE KEY" in made["keypair"]["private_key"] and len(made["keypair"]["fingerprint"]) == 59
    status, _, shown = http("GET", f"{base}/os-keypairs/Cert%20Pair", token, headers=latest)
    assert status == 200 and "private_key" not in shown["keypair"] and shown["keypair"]["type"] == "x509"
    conn.compute.delete_server(server)
    conn.compute.wait_for_delete(server, interval=1, wait=90)
