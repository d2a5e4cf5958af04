"""Per-namespace quotas with OpenStack's names, acting as a tenant (a ServiceAccount with `edit` in its own
namespace): the administrator lowers a project's limits in its Quota; the API server refuses the Instance
one too many (the ResourceQuota Kova keeps), an Instance over the cores quota is ERROR with Nova's fault and
nothing built, a resize over it is refused, the tenant reads use and limits with kubectl, an upload over
image_size_total gets Glance's 413 from `kova api` with nothing stored, and a web-download over it is killed
(QuotaExceeded)."""

from __future__ import annotations

import json
import urllib.error
import urllib.request
from typing import Any

import pytest

from tests.cloud.bench import S3_BUCKET, LocalCloud
from tests.conftest import Kubectl, Operator, condition, quota_limits, set_quota, tenant_token, wait_for
from tests.httpsource import Source
from tests.integration.test_e2e import disk, flavor, image, instance, unique, wait_instance
from tests.integration.test_isolation import Tenant, install_tenant_roles
from tests.integration.test_limits import call

pytestmark = pytest.mark.integration
MiB = 1 << 20


def test_counts_at_admission_sums_by_kova_usage_readable(cloud: LocalCloud, operator: Operator, source: Source,
                                                        kubectl: Kubectl) -> None:
    install_tenant_roles(cloud)
    fl = unique(kubectl, "q")
    kubectl.apply(flavor(fl, vcpus=2))  # flavors are the cloud administrator's
    set_quota(kubectl, instances=3, cores=4)
    tenant = Tenant(cloud, str(kubectl.namespace))
    tenant.apply(image("os", source.add(f"/{kubectl.namespace}/os", disk("quota"))))
    # Three servers of 2 cores at once, 4 cores allowed: the decision is the namespace's, oldest (then by name)
    # first, so exactly the third is refused, before anything of it is made.
    tenant.apply([instance(n, fl, "os") for n in ("a", "b", "c")])
    refused = wait_instance(tenant, "c", "ERROR")
    assert refused["status"]["fault"] == {
        "code": 403, "message": "Quota exceeded for cores: Requested 2, but already used 4 of 4 cores"}
    assert condition(refused)["reason"] == "QuotaExceeded"
    for name in ("a", "b"):
        wait_instance(tenant, name, "ACTIVE", timeout=90)
    assert kubectl.get("vm", "c") is None and kubectl.get("dv", "c-root") is None, "nothing of it is built"
    # The fourth is refused by the API server itself: three Instances exist (an ERROR server counts, as in Nova).
    rq = wait_for(lambda: (o := kubectl.get("resourcequota", "kova")) and o.get("status", {}).get("used", {}).get(
        "count/instances.compute.kova.dev") == "3" and o, 60, "the ResourceQuota's use to be counted")
    assert rq["spec"]["hard"]["count/instances.compute.kova.dev"] == "3"
    out = tenant("apply", "-f", "-", input=json.dumps(instance("d", fl, "os")), check=False)
    assert ('exceeded quota: kova, requested: count/instances.compute.kova.dev=1, used: '
            'count/instances.compute.kova.dev=3, limited: count/instances.compute.kova.dev=3') in out, out
    # A resize that grows past the quota is refused before it starts (Nova checks the growth only); the server
    # keeps running as it was.
    kubectl.apply(flavor(f"{fl}-l"[:63], vcpus=4))
    tenant("patch", "instance", "a", "--type=merge", "-p", json.dumps({"spec": {"flavorRef": f"{fl}-l"[:63]}}))
    grown = wait_for(lambda: (o := tenant.get("instance", "a")) and condition(o)["reason"] == "QuotaExceeded" and o,
                     30, "the resize to be refused")
    assert condition(grown)["message"] == "Quota exceeded for cores: Requested 2, but already used 4 of 4 cores"
    assert grown["status"]["status"] == "ACTIVE" and grown["status"]["flavor"]["name"] == fl
    # The refusal is final, as Nova's: it stays ERROR though it holds nothing.
    assert wait_instance(tenant, "c", "ERROR")["status"]["fault"]["code"] == 403
    # Use and limits, as the tenant reads them.
    wait_for(lambda: {k: v for k, v in quota_limits(tenant).items() if k in ("cores", "instances")}
             == {"cores": (4, 4), "instances": (3, 3)}, 30, "the Quota's status to show the use")
    table = tenant("get", "quotas")
    assert "3/3" in table and "4/4" in table, table
    assert quota_limits(tenant)["ram"] == (1024, 51200) and quota_limits(tenant)["image_count_total"] == (1, 100)
    # The tenant may not change its own limits.
    denied = tenant("patch", "quotas.compute.kova.dev", "default", "--type=merge", "-p", '{"spec":{"cores":100}}',
                    check=False)
    assert "forbidden" in denied.lower(), denied


def _put(url: str, token: str, data: bytes) -> tuple[int, Any]:
    req = urllib.request.Request(url, method="PUT", data=data, headers={
        "X-Auth-Token": token, "Content-Type": "application/octet-stream", "Accept": "application/json"})
    try:
        with urllib.request.urlopen(req, timeout=60) as resp:
            return int(resp.status), None
    except urllib.error.HTTPError as e:
        return e.code, json.loads(e.read() or b"null")


def test_an_upload_over_image_size_total_gets_glances_413_and_stores_nothing(
        cloud: LocalCloud, operator: Operator, api: str, kubectl: Kubectl, namespace: str) -> None:
    install_tenant_roles(cloud)
    set_quota(kubectl, imageSizeTotal=1)  # MiB, as in Glance
    token = tenant_token(cloud, namespace)
    images = f"{api}/projects/{namespace}/image/v2/images"
    status, created = call("POST", images, token, {"name": "big", "disk_format": "raw", "container_format": "bare"})
    assert status == 201, created
    status, body = _put(f"{images}/{created['id']}/file", token, b"\1" * (2 * MiB))
    assert status == 413, body
    assert body["message"].endswith(f"Project {namespace} is over a limit for [Resource image_size_total is over "
                                    "limit of 1 due to current usage 0 and delta 2]"), body
    assert "quota threshold was breached" in body["message"]
    status, shown = call("GET", f"{images}/{created['id']}", token)
    assert shown["status"] == "queued", shown  # back to queued, as Glance after a refused upload
    assert [o.object_name for o in cloud.s3_client().list_objects(S3_BUCKET, prefix=f"images/{created['id']}")] == []
    # Within the quota, the same image takes its data.
    status, _ = _put(f"{images}/{created['id']}/file", token, b"\1" * (MiB // 2))
    assert status == 204
    wait_for(lambda: quota_limits(kubectl).get("image_count_total") == (1, 100), 30, "the image to be counted")


def test_a_web_download_over_image_size_total_is_killed_with_glances_words(
        cloud: LocalCloud, operator: Operator, source: Source, kubectl: Kubectl) -> None:
    install_tenant_roles(cloud)
    set_quota(kubectl, imageSizeTotal=1)
    tenant = Tenant(cloud, str(kubectl.namespace))
    tenant.apply(image("big", source.add(f"/{kubectl.namespace}/big", disk("over-quota", 2))))
    killed = wait_for(lambda: (s := tenant.status("image", "big")).get("status") == "killed" and s, 60,
                      "the import over quota to be killed")
    assert condition({"status": killed})["reason"] == "QuotaExceeded"
    assert (f"Project {kubectl.namespace} is over a limit for [Resource image_size_total is over limit of 1 due to "
            "current usage 0") in killed["message"], killed
    uid = tenant.get("image", "big")["metadata"]["uid"]  # type: ignore[index]
    assert [o.object_name for o in cloud.s3_client().list_objects(S3_BUCKET, prefix=f"images/{uid}")] == []
