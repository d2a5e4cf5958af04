"""Terraform's OpenStack provider against `kova api`: OpenTofu and terraform-provider-openstack v3.4.0 (built
from their Go modules by `make tofu`, installed from tests/cloud/tofu.py's offline mirror) apply
tests/terraform/main.tf as a tenant would: a key pair, the flavor and image data sources, a server without a
network and one on the pod network. The servers are ACTIVE Instances, a new flavor resizes them (the provider
confirms by itself), `tofu destroy` leaves nothing behind. The provider authenticates with a ServiceAccount
token of the project's namespace, as a token with tenant_name and a domain, and as an application credential
(id: the namespace, secret: the token)."""

from __future__ import annotations

import json
import shutil
import urllib.request
from pathlib import Path
from typing import Any

import pytest

from kova.compute.access import fingerprint, generate
from tests.cloud.bench import REPO, LocalCloud, bin_dir
from tests.cloud.tofu import Tofu
from tests.conftest import Kubectl, Operator, tenant_token, wait_for
from tests.httpsource import Source
from tests.integration.test_compute_api import setup_project
from tests.integration.test_isolation import Tenant, install_tenant_roles
from tests.integration.test_tofu_offline import NO_NETWORK

pytestmark = pytest.mark.integration


def pod_network_id(api: str, project: str, token: str) -> str:
    """The pod network's id, as a user finds it: the `pod` entry of the compute API's os-networks."""
    request = urllib.request.Request(f"{api}/projects/{project}/compute/v2.1/os-networks",
                                     headers={"X-Auth-Token": token, "Accept": "application/json"})
    with urllib.request.urlopen(request, timeout=30) as resp:
        networks = json.loads(resp.read())["networks"]
    return str(next(n["id"] for n in networks if n["label"] == "pod"))


def servers(tenant: Kubectl) -> dict[str, dict[str, Any]]:
    """The namespace's Instances as the tenant lists them with kubectl, by uid (a Nova server's id)."""
    items = json.loads(tenant("get", "instances", "-o", "json"))["items"]
    return {i["metadata"]["uid"]: i for i in items}


def test_tofu_apply_resize_and_destroy(operator: Operator, api: str, cloud: LocalCloud, source: Source,
                                       kubectl: Kubectl, namespace: str, tmp_path: Path) -> None:
    install_tenant_roles(cloud)
    small, big, os_image = setup_project(kubectl, source, "tf")
    token = tenant_token(cloud, namespace)
    tenant = Tenant.with_token(cloud, namespace, token, f"tofu-{namespace}")
    public_key, _private = generate("tofu")
    shutil.copy(REPO / "tests" / "terraform" / "main.tf", tmp_path / "main.tf")
    # Every request but to loopback (Go never proxies those) would go to a closed port: nothing leaves.
    tofu = Tofu(bin_dir(), tmp_path, env=NO_NETWORK)
    tofu.init()
    variables = {"auth_url": f"{api}/identity/v3", "token": token, "project": namespace, "image": os_image,
                 "flavor": small, "public_key": public_key,
                 "pod_network_id": pod_network_id(api, namespace, token)}

    tofu.apply(variables)
    out = tofu.output()
    assert out["flavor_id"] == small and out["flavor_vcpus"] == 1
    assert out["isolated_status"] == out["pod_status"] == "active"
    assert out["isolated_flavor"] == out["pod_flavor"] == small
    # The servers are the namespace's Instances, ACTIVE, with the names, image, flavor and key pair asked for.
    found = servers(tenant)
    assert set(found) == {out["isolated_id"], out["pod_id"]}
    isolated, pod = found[out["isolated_id"]], found[out["pod_id"]]
    for obj, name in ((isolated, "tofu-isolated"), (pod, "tofu-pod")):
        assert obj["status"]["status"] == "ACTIVE", obj["status"]
        # A Nova name that is a valid Kubernetes name is the object's name (spec.name holds any other).
        assert obj["spec"].get("name", obj["metadata"]["name"]) == name
        assert obj["spec"]["keyName"] == "tofu-key"
        assert obj["spec"]["flavorRef"] == small and obj["spec"]["imageRef"] == os_image
        assert obj["status"]["publicKey"] == public_key
    # network_mode = "none": no network, no address; the pod network: a pod address, the one Terraform shows.
    assert isolated["spec"]["networks"] == ["none"] and isolated["status"].get("addresses", []) == []
    assert out["isolated_ip"] == ""
    assert pod["spec"].get("networks", []) == []  # no networks named: the pod network
    addresses = [(a["interface"], a["ip"]) for a in pod["status"]["addresses"]]
    assert addresses == [("pod", out["pod_ip"])] and out["pod_ip"], addresses
    assert [(n["name"], n["uuid"], n["fixed_ip_v4"]) for n in out["pod_network"]] == [
        ("pod", variables["pod_network_id"], out["pod_ip"])]
    keypair = tenant.get("keypair", "tofu-key")
    assert keypair is not None and keypair["spec"]["publicKey"] == public_key
    assert out["keypair_fingerprint"] == fingerprint(public_key)  # Nova's, from the moment it is created

    # What tofu read back matches the configuration (no drift, nothing to replace), and the same state
    # refreshes with the other way to authenticate: the token as an application credential's secret.
    for auth in ("token", "application_credential"):
        plan = tofu.plan({**variables, "auth": auth})
        assert plan.returncode == 0 and "No changes." in plan.stdout, (auth, plan.stdout, plan.stderr)

    # A new flavor: both servers are resized in place (not replaced), the provider confirming each resize.
    resized = tofu.apply({**variables, "flavor": big})
    assert "Apply complete! Resources: 0 added, 2 changed, 0 destroyed." in resized.stdout, resized.stdout
    out = tofu.output()
    assert {out["isolated_id"], out["pod_id"]} == set(found)
    assert out["isolated_flavor"] == out["pod_flavor"] == big and out["flavor_vcpus"] == 2
    for obj in servers(tenant).values():
        assert obj["status"]["status"] == "ACTIVE" and obj["status"]["flavor"]["name"] == big, obj["status"]
        assert obj["status"]["flavor"]["vcpus"] == 2 and obj["status"].get("resize") is None, obj["status"]
        done = [(a["action"], a.get("result")) for a in obj["status"]["actions"]]
        assert done == [("create", "Success"), ("resize", "Success"), ("confirmResize", "Success")], done

    tofu.destroy()
    # The provider waited for each server to say DELETED; the Instances then go once their VMs are gone.
    wait_for(lambda: servers(tenant) == {}, 60, "the Instances to be gone")
    assert tenant.get("keypair", "tofu-key") is None
    assert tofu.run("state", "list", check=True).stdout == ""
