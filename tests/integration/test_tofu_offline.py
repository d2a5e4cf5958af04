"""OpenTofu and the OpenStack provider that `make tofu` built work offline: `tofu init` installs the provider
from tests/cloud/tofu.py's mirror and `tofu validate` passes, with every HTTP proxy pointed at a closed port
on loopback, so any request to a registry would fail. Missing binaries fail the tests, they do not skip
them: the Makefile builds them before the tests."""

from __future__ import annotations

import re
import shutil
from pathlib import Path

import pytest

from tests.cloud.bench import REPO, bin_dir
from tests.cloud.tofu import PROVIDER_SOURCE, PROVIDER_VERSION, Tofu

pytestmark = pytest.mark.integration

# Go's HTTP client (tofu's and the provider's) sends every non-loopback request through these.
DEAD_PROXY = "http://127.0.0.1:1"
NO_NETWORK = {name: DEAD_PROXY for name in ("HTTPS_PROXY", "HTTP_PROXY", "https_proxy", "http_proxy")} | {
    "NO_PROXY": "", "no_proxy": ""}

SELF_CHECK = """
terraform {
  required_providers {
    openstack = {
      source  = "%s"
      version = "%s"
    }
  }
}

provider "openstack" {
  auth_url    = "http://127.0.0.1:1/identity/v3"
  token       = "unused"
  tenant_name = "default"
  region      = "RegionOne"
}
"""


def _init_and_validate(tofu: Tofu) -> None:
    init = tofu.run("init", "-input=false", env=NO_NETWORK, check=True)
    assert f"Installed {PROVIDER_SOURCE} v{PROVIDER_VERSION}" in init.stdout, init.stdout
    lock = (tofu.work / ".terraform.lock.hcl").read_text()
    assert f'provider "{PROVIDER_SOURCE}"' in lock and f'version     = "{PROVIDER_VERSION}"' in lock, lock
    validate = tofu.run("validate", env=NO_NETWORK, check=True)
    assert "The configuration is valid" in validate.stdout, validate.stdout


def test_provider_installs_from_the_mirror_only(tmp_path: Path) -> None:
    (tmp_path / "main.tf").write_text(SELF_CHECK % (PROVIDER_SOURCE, PROVIDER_VERSION))
    tofu = Tofu(bin_dir(), tmp_path)
    _init_and_validate(tofu)
    pin = re.search(r"^require github.com/opentofu/opentofu v(\S+)", (REPO / "tests/cloud/go-tofu/go.mod").read_text(),
                    re.M)
    assert pin, "no OpenTofu pin in tests/cloud/go-tofu/go.mod"
    # The release's ldflags were used: a plain build says 1.10.6-dev.
    assert tofu.run("version", check=True).stdout.startswith(f"OpenTofu v{pin.group(1)}\n")


def test_a_provider_not_in_the_mirror_is_not_downloaded(tmp_path: Path) -> None:
    (tmp_path / "main.tf").write_text(
        'terraform {\n  required_providers {\n    null = { source = "kova.local/hashicorp/null" }\n  }\n}\n')
    tofu = Tofu(bin_dir(), tmp_path)
    res = tofu.run("init", "-input=false", env=NO_NETWORK)
    said = " ".join(res.stderr.split())  # tofu wraps its messages at 78 columns
    assert res.returncode != 0
    # The mirror is the one place it looked.
    assert f"not found in any of the search locations - {tofu.mirror}" in said, res.stderr


def test_the_terraform_example_is_valid(tmp_path: Path) -> None:
    shutil.copy(REPO / "tests" / "terraform" / "main.tf", tmp_path / "main.tf")
    _init_and_validate(Tofu(bin_dir(), tmp_path))


def test_the_makefile_builds_the_provider_version_the_helper_mirrors() -> None:
    pin = re.search(r"^OPENSTACK_PROVIDER_VERSION := v(\S+)$", (REPO / "Makefile").read_text(), re.M)
    assert pin and pin.group(1) == PROVIDER_VERSION
