"""Nova's compute API of `kova api` with real OpenStack clients on the local cloud: the `openstack` CLI
(through clouds.yaml, the SDK negotiating its microversion, and once pinned to 2.1), openstacksdk, and plain
HTTP for what a user sees of authorization. A namespace is a project, a ServiceAccount token the credential."""

from __future__ import annotations

import asyncio
import json
from pathlib import Path

import aiohttp
import pytest

from tests.cloud.bench import LocalCloud
from tests.conftest import Kubectl, Operator, tenant_token, wait_for
from tests.httpsource import Source
from tests.integration.test_e2e import disk, flavor, image, unique, wait_image
from tests.integration.test_openstack import Cli

pytestmark = pytest.mark.integration


def setup_project(kubectl: Kubectl, source: Source, tag: str) -> tuple[str, str, str]:
    """Two flavors (the administrator's) and an active image in the namespace: (small, big, image name)."""
    small, big = unique(kubectl, f"{tag}-s"), unique(kubectl, f"{tag}-b")
    kubectl.apply(flavor(small))
    kubectl.apply(flavor(big, vcpus=2, ram=1024, disk=2))
    kubectl.apply(image("os", source.add(f"/{kubectl.namespace}/{tag}", disk(tag))))
    wait_image(kubectl, "os", "active")
    return small, big, "os"


def test_openstack_cli_server_lifecycle(operator: Operator, api: str, cloud: LocalCloud, source: Source,
                                        kubectl: Kubectl, namespace: str, tmp_path: Path) -> None:
    small, big, os_image = setup_project(kubectl, source, "cli")
    cli = Cli(api, tenant_token(cloud, namespace), namespace, tmp_path)
    key = cli.json("keypair", "create", "--public-key", str(_public_key(tmp_path)), "mykey")
    assert key["name"] == "mykey" and key["fingerprint"]
    assert [k["Name"] for k in cli.json("keypair", "list")] == ["mykey"]

    created = cli.json("server", "create", "--flavor", small, "--image", os_image, "--key-name", "mykey", "--wait",
                       "web 1")
    assert created["status"] == "ACTIVE" and created["name"] == "web 1"
    assert created["OS-EXT-STS:power_state"] in (1, "Running")
    # The same server through kubectl: its id is the Instance's uid, its Nova name is kept.
    items = json.loads(kubectl("get", "instances", "-o", "json"))["items"]
    obj = next(i for i in items if i["metadata"]["uid"] == created["id"])
    assert obj["spec"]["name"] == "web 1" and obj["spec"]["keyName"] == "mykey"
    assert obj["spec"]["flavorRef"] == small and obj["spec"]["imageRef"] == os_image

    listed = cli.json("server", "list", "--long")
    assert [(s["Name"], s["Status"]) for s in listed] == [("web 1", "ACTIVE")]
    shown = cli.json("server", "show", created["id"])
    assert shown["addresses"] and shown["key_name"] == "mykey"

    cli.run("server", "stop", created["id"])
    wait_for(lambda: cli.json("server", "show", created["id"])["status"] == "SHUTOFF", what="SHUTOFF")
    refused = cli.run("server", "stop", created["id"], check=False)
    assert refused.returncode != 0 and "vm_state stopped" in refused.stderr
    cli.run("server", "start", created["id"])
    wait_for(lambda: cli.json("server", "show", created["id"])["status"] == "ACTIVE", what="ACTIVE again")
    cli.run("server", "reboot", "--wait", created["id"])
    cli.run("server", "pause", created["id"])
    wait_for(lambda: cli.json("server", "show", created["id"])["status"] == "PAUSED", what="PAUSED")
    cli.run("server", "unpause", created["id"])
    wait_for(lambda: cli.json("server", "show", created["id"])["status"] == "ACTIVE", what="unpaused")
    cli.run("server", "suspend", created["id"])
    wait_for(lambda: cli.json("server", "show", created["id"])["status"] == "SUSPENDED", what="SUSPENDED")
    cli.run("server", "resume", created["id"])
    wait_for(lambda: cli.json("server", "show", created["id"])["status"] == "ACTIVE", what="resumed")
    cli.run("server", "resize", "--flavor", big, "--wait", created["id"])
    cli.run("server", "resize", "revert", created["id"])
    wait_for(lambda: cli.json("server", "show", created["id"])["status"] == "ACTIVE", what="resize reverted")
    assert small in json.dumps(cli.json("server", "show", created["id"])["flavor"])
    cli.run("server", "resize", "--flavor", big, "--wait", created["id"])
    assert cli.json("server", "show", created["id"])["status"] == "VERIFY_RESIZE"
    cli.run("server", "resize", "confirm", created["id"])
    wait_for(lambda: cli.json("server", "show", created["id"])["status"] == "ACTIVE", what="resize confirmed")
    assert kubectl.get("instance", obj["metadata"]["name"])["status"]["flavor"]["name"] == big  # type: ignore[index]
    kubectl.apply(image("os2", source.add(f"/{kubectl.namespace}/os2", disk("os2"))))
    os2 = wait_image(kubectl, "os2", "active")["metadata"]["uid"]
    cli.run("server", "rebuild", "--image", "os2", "--wait", created["id"])
    rebuilt = cli.json("server", "show", created["id"])
    assert rebuilt["status"] == "ACTIVE" and os2 in json.dumps(rebuilt["image"])
    assert cli.json("keypair", "show", "mykey")["fingerprint"] == key["fingerprint"]
    cli.run("server", "lock", "--reason", "maintenance", created["id"])
    refused = cli.run("server", "stop", created["id"], check=False)
    assert refused.returncode != 0 and "locked" in refused.stderr
    refused = cli.run("server", "delete", created["id"], check=False)
    assert refused.returncode != 0 and "locked" in refused.stderr
    cli.run("server", "unlock", created["id"])
    console = cli.json("console", "url", "show", "--serial", created["id"])
    assert console["type"] == "serial" and console["url"].startswith("ws://127.0.0.1")
    assert b"login:" in asyncio.run(_first_frame(console["url"]))  # the guest's serial port, through kova api
    snap = cli.json("server", "image", "create", "--name", "web-snap", "--wait", created["id"])
    assert snap["status"] == "active" and snap["name"] == "web-snap"
    wait_for(lambda: cli.json("server", "show", created["id"])["status"] == "ACTIVE", what="ACTIVE after the snapshot")

    none = cli.json("server", "create", "--flavor", small, "--image", os_image, "--nic", "none", "--wait", "isolated")
    assert none["status"] == "ACTIVE" and none["addresses"] in ({}, "")
    pod = cli.json("server", "create", "--flavor", small, "--image", os_image, "--network", "pod", "--wait", "podnet")
    assert pod["status"] == "ACTIVE" and "pod" in json.dumps(pod["addresses"])

    assert {f["Name"] for f in cli.json("flavor", "list")} >= {small, big}
    assert cli.json("flavor", "show", big)["vcpus"] == 2
    # The CLI names the limits as openstacksdk does (the API sends Nova's maxTotalInstances, totalInstancesUsed).
    def limits() -> dict[str, int]:
        return {row["Name"]: row["Value"] for row in cli.json("limits", "show", "--absolute")}
    assert limits()["instances"] == 10
    # The Quota's use is counted by the operator (at most every 10 s): three servers, once it has.
    wait_for(lambda: limits()["instances_used"] == 3, what="the three servers counted in /limits")
    assert cli.json("availability", "zone", "list", "--compute") is not None
    group = cli.json("server", "group", "create", "--policy", "anti-affinity", "apart")
    assert group["policy"] == "anti-affinity"
    assert [g["Name"] for g in cli.json("server", "group", "list")] == ["apart"]

    for server in (created["id"], none["id"], pod["id"]):
        cli.run("server", "delete", "--wait", server)
    assert cli.json("server", "list") == []
    cli.run("keypair", "delete", "mykey")
    assert cli.json("keypair", "list") == []


async def _first_frame(url: str) -> bytes:
    async with aiohttp.ClientSession() as session, session.ws_connect(url, timeout=aiohttp.ClientWSTimeout(
            ws_close=10)) as ws:
        message = await ws.receive(timeout=30)
        return message.data if isinstance(message.data, bytes) else str(message.data).encode()


def _public_key(tmp: Path) -> Path:
    from kova.compute.access import generate
    public, _private = generate("test")
    path = tmp / "id.pub"
    path.write_text(public + "\n")
    return path
