"""Tempest 47 `tempest.api.image.v2` against `kova api` on the local cloud, with pre-provisioned credentials:
ServiceAccount tokens as passwords, a member (edit) and a reader (view) account in each of two namespaces, and
an administrator (a ClusterRoleBinding to kova-admin) in a third.

The include list (tests/tempest/include.txt) names what runs; tests/tempest/excluded.txt lists every other
test of the package with its reason. At least 60 must pass and none may fail.
"""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path
from typing import Any

import yaml

from tests.cloud.bench import REPO, LocalCloud
from tests.conftest import tenant_token

TEMPEST = str(Path(sys.executable).parent / "tempest")
HERE = REPO / "tests" / "tempest"


def common(api: str, work: Path) -> str:
    """The sections every Tempest run against `kova api` shares: logs, locks, pre-provisioned accounts, Keystone."""
    (work / "logs").mkdir()
    return f"""
[DEFAULT]
log_dir = {work / "logs"}
log_file = tempest.log
[oslo_concurrency]
lock_path = {work / "locks"}
[auth]
use_dynamic_credentials = False
test_accounts_file = {work / "accounts.yaml"}
default_credentials_domain_name = Default
[identity]
uri_v3 = {api}/identity/v3
auth_version = v3
region = RegionOne
v3_endpoint_type = public
[identity-feature-enabled]
api_v2 = False
api_v3 = True
"""


def config(api: str, work: Path) -> Path:
    conf = common(api, work) + """
[service_available]
glance = True
nova = False
cinder = False
neutron = False
swift = False
horizon = False
[enforce_scope]
glance = False
[image]
catalog_type = image
endpoint_type = public
# Random bytes are what Tempest uploads; only raw takes them (Kova refuses data that is not its format).
container_formats = bare,ovf
disk_formats = raw
image_caching_enabled = False
build_timeout = 60
[image-feature-enabled]
api_v2 = True
import_image = True
os_glance_reserved = True
manage_locations = False
image_format_enforcement = False
image_conversion = False
do_secure_hash = False
http_store_enabled = False
store_weight_enabled = False
"""
    path = work / "tempest.conf"
    path.write_text(conf)
    return path


def summary(output: str) -> dict[str, int]:
    return {k.lower(): int(v) for k, v in re.findall(r"- (Passed|Failed|Skipped): (\d+)", output)}


def write_accounts(cloud: LocalCloud, projects: list[str], work: Path, admin_project: str | None = None) -> None:
    """Pre-provisioned accounts: member accounts first (Tempest takes "alt" as the first free account), then the
    readers, and with `admin_project` an administrator (a ServiceAccount there bound to kova-admin, which
    Tempest's admin tests take and its other tests leave alone); ServiceAccount tokens as passwords."""
    accounts = [{"username": f"member-{ns}", "project_name": ns, "password": tenant_token(cloud, ns, "edit"),
                 "roles": ["member"]} for ns in projects]
    accounts += [{"username": f"reader-{ns}", "project_name": ns,
                  "password": tenant_token(cloud, ns, "view", name="os-reader"), "roles": ["reader"]}
                 for ns in projects]
    if admin_project:
        accounts.append({"username": f"admin-{admin_project}", "project_name": admin_project,
                         "password": tenant_token(cloud, admin_project, "kova-admin", name="os-admin"),
                         "roles": ["admin"]})
    (work / "accounts.yaml").write_text(yaml.safe_dump(accounts))


def run_tempest(conf: Path, lists: Path, work: Path, what: str, at_least: int, timeout: float) -> None:
    """Tempest with the include and exclude lists in `lists`: none may fail, `at_least` must pass."""
    run = subprocess.run(
        [TEMPEST, "run", "--config-file", str(conf), "--include-list", str(lists / "include.txt"),
         "--exclude-list", str(lists / "excluded.txt"), "--serial"],
        cwd=work, capture_output=True, text=True, timeout=timeout)
    figures = summary(run.stdout)
    print(f"Tempest {what}: {figures}")
    failed = [line for line in run.stdout.splitlines() if "... FAILED" in line]
    assert figures.get("failed", 0) == 0 and not failed, run.stdout[-8000:]
    assert figures.get("passed", 0) >= at_least, run.stdout[-8000:]


def test_tempest_image_v2(operator: Any, api: str, cloud: LocalCloud, tmp_path: Path) -> None:
    projects = []
    for suffix in ("a", "b", "admin"):
        ns = f"tempest-{suffix}-{tmp_path.name[-6:].lower().strip('_')}"
        ns = re.sub(r"[^a-z0-9-]", "-", ns).strip("-")
        cloud.kubectl("create", "namespace", ns)
        projects.append(ns)
    *tenants, admin = projects
    try:
        write_accounts(cloud, tenants, tmp_path, admin)
        run_tempest(config(api, tmp_path), HERE, tmp_path, "tempest.api.image.v2", 60, 900)
    finally:
        cloud.kubectl("delete", "clusterrolebinding", f"{admin}-os-admin", check=False)
        for ns in projects:
            cloud.kubectl("delete", "namespace", ns, "--wait=false", check=False)
