"""OpenTofu with terraform-provider-openstack, offline, for the tests that drive `kova api` the way a Terraform
user does. Both binaries come from the Makefile (`make tofu`, pinned Go modules, in $KOVA_BIN_DIR).

No registry is ever asked: the CLI configuration this writes installs providers only from a filesystem mirror
that holds the one built provider under the made-up source `kova.local/terraform-provider-openstack/openstack`,
and it has no `direct` block, so any other provider fails to install instead of being downloaded.

    tofu = Tofu(bin_dir(), tmp_path)   # tmp_path holds the *.tf files
    tofu.init()
    tofu.apply({"auth_url": ..., "token": ...})
    tofu.output()                      # {"name": value}
    tofu.destroy()
"""

from __future__ import annotations

import json
import os
import subprocess
from collections.abc import Mapping
from pathlib import Path
from typing import Any

PROVIDER_SOURCE = "kova.local/terraform-provider-openstack/openstack"
PROVIDER_VERSION = "3.4.0"  # the Makefile's OPENSTACK_PROVIDER_VERSION (tests/integration/test_tofu_offline.py checks)
# Inherited variables that would change what tofu or the provider does: TF_CLI_CONFIG_FILE (set on some
# machines), TF_PLUGIN_CACHE_DIR, TF_CLI_ARGS, TF_VAR_*; OS_CLOUD, OS_AUTH_URL... (the provider's defaults).
_DROPPED_PREFIXES = ("TF_", "OS_")


def _binary(bin_dir: Path, name: str) -> Path:
    path = bin_dir / name
    if not path.exists():
        raise RuntimeError(f"{path} is missing: run `make tofu` first (it builds OpenTofu and the provider)")
    return path


class Tofu:
    """`tofu` in `work` (where the *.tf files are), with its CLI configuration and provider mirror in
    `work/.kova-tofu` (tofu reads only the *.tf files of the directory itself, not of its subdirectories)."""

    def __init__(self, bin_dir: Path, work: Path, env: Mapping[str, str] | None = None) -> None:
        self.tofu = _binary(bin_dir, "tofu")
        self.env = dict(env or {})  # added to every run's environment (a dead proxy, say)
        provider = _binary(bin_dir, "terraform-provider-openstack")
        self.work = work
        self.home = work / ".kova-tofu"
        self.mirror = self.home / "mirror"
        self.cli_config = self.home / "tofurc"
        self.vars: dict[str, str] = {}
        self.home.mkdir(parents=True, exist_ok=True)
        # No plugin_cache_dir (and TF_PLUGIN_CACHE_DIR is dropped): each work directory installs from the mirror.
        self.cli_config.write_text(
            "disable_checkpoint = true\n"
            "provider_installation {\n"
            "  filesystem_mirror {\n"
            f"    path    = {json.dumps(str(self.mirror))}\n"
            f'    include = ["{PROVIDER_SOURCE.split("/")[0]}/*/*"]\n'
            "  }\n"
            "}\n")
        # The unpacked layout: HOST/NAMESPACE/TYPE/VERSION/OS_ARCH/, with the platform tofu itself looks for.
        platform = json.loads(self.run("version", "-json", check=True).stdout)["platform"]
        package = self.mirror / PROVIDER_SOURCE / PROVIDER_VERSION / platform
        package.mkdir(parents=True, exist_ok=True)
        executable = package / f"terraform-provider-openstack_v{PROVIDER_VERSION}"
        if not executable.exists():
            executable.symlink_to(provider.resolve())  # a link, not a copy of 26 MB per test

    def environ(self, env: Mapping[str, str] | None = None) -> dict[str, str]:
        base = {k: v for k, v in os.environ.items() if not k.startswith(_DROPPED_PREFIXES)}
        return {**base, "TF_IN_AUTOMATION": "1", "CHECKPOINT_DISABLE": "1", "TF_INPUT": "0",
                "TF_CLI_CONFIG_FILE": str(self.cli_config),
                # tofu puts these after the subcommand, nested ones (`state list`) too, which args can't know.
                "TF_CLI_ARGS": "-no-color", **self.env, **(env or {})}

    def run(self, *args: str, env: Mapping[str, str] | None = None, check: bool = False,
            timeout: float = 300) -> subprocess.CompletedProcess[str]:
        """`tofu ARGS` in `work`; with check, a failure raises with tofu's output."""
        res = subprocess.run([str(self.tofu), *args], cwd=self.work, env=self.environ(env), capture_output=True,
                             text=True, timeout=timeout, stdin=subprocess.DEVNULL)
        if check and res.returncode != 0:
            raise AssertionError(f"tofu {' '.join(args)} exited {res.returncode}:\n{res.stdout}\n{res.stderr}")
        return res

    def init(self) -> subprocess.CompletedProcess[str]:
        return self.run("init", "-input=false", check=True)

    def apply(self, vars: Mapping[str, str], timeout: float = 300) -> subprocess.CompletedProcess[str]:
        """Apply with these variables, passed as TF_VAR_* (a token stays out of the process list); destroy
        reuses them."""
        self.vars = dict(vars)
        return self.run("apply", "-input=false", "-auto-approve", env=self._tf_vars(), check=True, timeout=timeout)

    def destroy(self, vars: Mapping[str, str] | None = None,
                timeout: float = 300) -> subprocess.CompletedProcess[str]:
        if vars is not None:
            self.vars = dict(vars)
        return self.run("destroy", "-input=false", "-auto-approve", env=self._tf_vars(), check=True,
                        timeout=timeout)

    def plan(self, vars: Mapping[str, str] | None = None,
             timeout: float = 300) -> subprocess.CompletedProcess[str]:
        """`tofu plan -detailed-exitcode` (0: no changes, 2: changes, 1: an error), with these variables or
        the last apply's; it refreshes every resource and data source first, so it also proves the
        credentials and the API."""
        env = self._tf_vars() if vars is None else {f"TF_VAR_{k}": v for k, v in vars.items()}
        return self.run("plan", "-input=false", "-detailed-exitcode", env=env, timeout=timeout)

    def output(self) -> dict[str, Any]:
        """The root module's outputs, name to value."""
        outputs = json.loads(self.run("output", "-json", check=True).stdout)
        return {name: o["value"] for name, o in outputs.items()}

    def _tf_vars(self) -> dict[str, str]:
        return {f"TF_VAR_{k}": v for k, v in self.vars.items()}
