"""Tempest 47 `tempest.api.compute` against `kova api`'s Nova on the local cloud (with the operator booting the
servers), with pre-provisioned credentials: ServiceAccount tokens as passwords, a member (edit) and a reader
(view) account in each of two namespaces; `[service_available] neutron = false`, max_microversion 2.100.

tests/tempest/compute/include.txt names what runs; tests/tempest/compute/excluded.txt lists every other test of
the package with its reason. At least 40 must pass and none may fail.
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

import yaml

from tests.cloud.bench import REPO, LocalCloud
from tests.conftest import Kubectl, Operator
from tests.corpus import cases as corpus
from tests.httpsource import Source
from tests.integration.test_e2e import flavor, wait_image
from tests.integration.test_lifecycle import raw_disk
from tests.integration.test_tempest import common, run_tempest, write_accounts

HERE = REPO / "tests" / "tempest" / "compute"


def images_manifest(work: Path) -> Path:
    """Tempest's disk format tests (tempest.api.image.v2.test_images_formats, one scenario per image) read a
    manifest as os-test-images writes it; this one lists Kova's corpus (tests/corpus, made by qemu-img): each
    image once, usable when Kova must take it (under the format it is declared as there), unusable when
    Kova must refuse it under any format."""
    folder = work / "images"
    folder.mkdir()
    images: dict[str, dict[str, Any]] = {}
    for case in corpus.CASES:
        name = case.file.removesuffix(".img.gz")
        usable = case.outcome == corpus.ACTIVE
        if name in images and (images[name]["usable"] or not usable):
            continue
        images[name] = {"name": name, "format": case.declared, "filename": f"{name}.img", "usable": usable}
        (folder / f"{name}.img").write_bytes(corpus.load(case))
    path = folder / "manifest.yaml"
    path.write_text(yaml.safe_dump({"images": list(images.values())}))
    return path


def config(api: str, work: Path, image_ref: str, image_ref_alt: str, flavor_ref: str, flavor_ref_alt: str) -> Path:
    conf = common(api, work) + f"""
[service_available]
nova = True
glance = True
cinder = False
neutron = False
swift = False
horizon = False
[enforce_scope]
nova = False
glance = False
[image]
catalog_type = image
endpoint_type = public
container_formats = bare,ovf
disk_formats = raw
build_timeout = 120
images_manifest_file = {images_manifest(work)}
[image-feature-enabled]
api_v2 = True
import_image = True
# Kova refuses what Glance's format checks refuse, at upload: the format tests that need such an image
# registered (to see Nova refuse it) skip, as they do against Glance with enforcement on.
image_format_enforcement = True
image_conversion = False
[compute]
catalog_type = compute
endpoint_type = public
image_ref = {image_ref}
image_ref_alt = {image_ref_alt}
flavor_ref = {flavor_ref}
flavor_ref_alt = {flavor_ref_alt}
build_interval = 1
build_timeout = 120
max_microversion = 2.100
[compute-feature-enabled]
resize = True
pause = True
suspend = True
snapshot = True
disk_config = True
enable_instance_password = False
console_output = False
shelve = False
rescue = False
interface_attach = False
live_migration = False
cold_migration = False
metadata_service = False
config_drive = False
attach_encrypted_volume = False
ide_bus = False
change_password = False
personality = False
vnc_console = False
spice_console = False
serial_console = False
[validation]
run_validation = False
[volume-feature-enabled]
# Glance's image → server → snapshot dependency (tempest.api.image.v2.test_images_dependency); its
# boot-from-volume half needs Cinder and skips.
enable_volume_image_dep_tests = True
"""
    path = work / "tempest.conf"
    path.write_text(conf)
    return path


def test_tempest_compute(operator: Operator, api: str, cloud: LocalCloud, source: Source, tmp_path: Path) -> None:
    suffix = re.sub(r"[^a-z0-9]", "", tmp_path.name.lower())[-6:]
    projects = [f"tempest-c{p}-{suffix}" for p in ("a", "b")]
    images_ns = f"tempest-cimg-{suffix}"
    for ns in (*projects, images_ns):
        cloud.kubectl("create", "namespace", ns)
    admin = Kubectl(cloud, images_ns)
    small, big = f"tempest-tiny-{suffix}", f"tempest-small-{suffix}"
    try:
        admin.apply(flavor(small, vcpus=1, ram=512, disk=1))
        admin.apply(flavor(big, vcpus=1, ram=1024, disk=2))
        refs = []
        for name in ("cirros", "cirros-alt"):  # the cloud's public images, as an operator publishes them
            url = source.add(f"/{images_ns}/{name}", raw_disk(name))
            admin.apply({"apiVersion": "image.kova.dev/v1alpha1", "kind": "Image", "metadata": {"name": name},
                         "spec": {"diskFormat": "raw", "visibility": "public", "source": {"url": url}}})
            refs.append(wait_image(admin, name, "active")["metadata"]["uid"])
        for ns in projects:  # room for Tempest's servers beside what a class leaves while it cleans up
            Kubectl(cloud, ns).apply({"apiVersion": "compute.kova.dev/v1alpha1", "kind": "Quota",
                                      "metadata": {"name": "default"},
                                      "spec": {"instances": 40, "cores": 80, "ram": 81920}})
        write_accounts(cloud, projects, tmp_path)
        conf = config(api, tmp_path, refs[0], refs[1], small, big)
        run_tempest(conf, HERE, tmp_path, "tempest.api.compute", 40, 1800)
    finally:
        for ns in (*projects, images_ns):
            cloud.kubectl("delete", "namespace", ns, "--wait=false", check=False)
        for name in (small, big):
            cloud.kubectl("delete", "flavor", name, "--wait=false", check=False)
