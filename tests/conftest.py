"""Fixtures for tests on the local cloud: one cloud per session, one namespace per test."""

from __future__ import annotations

import json
import re
import subprocess
import time
import urllib.error
import urllib.request
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any, TypeVar

import pytest
import yaml

from tests.cloud.bench import REPO, LocalCloud, Proc, binary, kubeconfig_dict
from tests.httpsource import Source

T = TypeVar("T")


def http_status(url: str) -> int:
    """The status of a GET (a presigned link's 403 once it expired, say); loopback URLs only."""
    try:
        with urllib.request.urlopen(url, timeout=5) as resp:
            return int(resp.status)
    except urllib.error.HTTPError as e:
        return e.code


def wait_for(check: Callable[[], T | None], timeout: float = 60, what: str = "condition",
              interval: float = 0.2) -> T:
    """Poll until `check` returns something truthy; fail with the last value otherwise."""
    deadline = time.monotonic() + timeout
    last: Any = None
    while time.monotonic() < deadline:
        last = check()
        if last:
            return last
        time.sleep(interval)
    raise AssertionError(f"timed out after {timeout}s waiting for {what}; last value: {last!r}")


def wait_settled(sample: Callable[[], T], timeout: float = 120, quiet: float = 3.0, what: str = "activity to stop",
                 interval: float = 0.5, idle: Callable[[T], bool] = lambda _: True) -> T:
    """Poll `sample` until it gives the same value, and `idle` says yes to it, for `quiet` seconds on end
    (three samples in a row at least); that value. A bounded wait for activity to stop: on timeout it fails
    with the last change it saw."""
    deadline = time.monotonic() + timeout
    previous: Any = None
    last = sample()
    since, streak = time.monotonic(), 1 if idle(last) else 0
    while True:
        if streak >= 3 and time.monotonic() - since >= quiet:
            return last
        if time.monotonic() >= deadline:
            raise AssertionError(f"timed out after {timeout}s waiting for {what} (no change for {quiet}s); "
                                 f"it last changed from {previous!r} to {last!r} (idle: {idle(last)})")
        time.sleep(interval)
        current = sample()
        if current == last and streak:
            streak += 1
        else:
            if current != last:
                previous = last
            last, since, streak = current, time.monotonic(), 1 if idle(current) else 0


def scrape(proc: Proc) -> str:
    """The operator's Prometheus metrics, from the port `start_operator` gave it."""
    with urllib.request.urlopen(f"http://127.0.0.1:{proc.ports['metrics']}/metrics", timeout=5) as resp:
        return str(resp.read().decode())


def sample(text: str, name: str, labels: str = "") -> float:
    match = re.search(rf"^{re.escape(name)}{re.escape(labels)} ([0-9.e+]+)$", text, re.M)
    return float(match.group(1)) if match else 0.0


class Kubectl:
    """kubectl against the bench, in one namespace."""

    def __init__(self, cloud: LocalCloud, namespace: str | None = None) -> None:
        self.cloud = cloud
        self.namespace = namespace

    def __call__(self, *args: str, input: str | None = None, check: bool = True) -> str:
        ns = ["-n", self.namespace] if self.namespace else []
        return self.cloud.kubectl(*ns, *args, input=input, check=check)

    def apply(self, manifest: str | dict[str, Any] | list[dict[str, Any]], check: bool = True) -> str:
        text = manifest if isinstance(manifest, str) else yaml.safe_dump_all(
            manifest if isinstance(manifest, list) else [manifest])
        return self("apply", "-f", "-", input=text, check=check)

    def get(self, kind: str, name: str) -> dict[str, Any] | None:
        out = self("get", kind, name, "-o", "json", "--ignore-not-found")
        return json.loads(out) if out.strip() else None

    def status(self, kind: str, name: str) -> dict[str, Any]:
        return (self.get(kind, name) or {}).get("status", {})

    def events(self, name: str) -> list[dict[str, Any]]:
        out = self("get", "events", "--field-selector", f"involvedObject.name={name}", "-o", "json")
        return list(json.loads(out)["items"])


def condition(obj: dict[str, Any] | None, type_: str = "Ready") -> dict[str, Any]:
    return next((c for c in (obj or {}).get("status", {}).get("conditions", []) if c["type"] == type_), {})


def quota_limits(kubectl: Kubectl) -> dict[str, tuple[int, int]]:
    """name → (in use, limit), from the namespace's Quota as `kubectl get` shows it."""
    items = (kubectl.get("quotas.compute.kova.dev", "default") or {}).get("status", {}).get("quotas", [])
    return {i["name"]: (i["inUse"], i["limit"]) for i in items}


def set_quota(kubectl: Kubectl, **spec: int) -> None:
    """The administrator's override of a project's limits; returns once Kova enforces it."""
    kubectl.apply({"apiVersion": "compute.kova.dev/v1alpha1", "kind": "Quota", "metadata": {"name": "default"},
                   "spec": spec})
    names = {k: re.sub(r"[A-Z]", lambda m: f"_{m.group(0).lower()}", k) for k in spec}  # imageSizeTotal: Glance's
    wait_for(lambda: all(quota_limits(kubectl).get(names[k], (0, None))[1] == v for k, v in spec.items()), 30,
             f"the Quota {spec} to be in force")


@pytest.fixture(scope="session")
def cloud(tmp_path_factory: pytest.TempPathFactory) -> Iterator[LocalCloud]:
    workdir = tmp_path_factory.mktemp("cloud")
    with LocalCloud(workdir) as c:
        c.install_kova_crds()
        yield c


def chart_rbac_kubeconfig(cloud: LocalCloud, namespace: str = "kova-system", *sets: str,
                          file: str = "operator.kubeconfig") -> Path:
    """Install the chart's ServiceAccount and roles (with `helm --set` values), and return a kubeconfig with a
    new token of that account: the operator under test has exactly the permissions a `helm install` gives it,
    and no more."""
    rendered = subprocess.run(
        [binary("helm"), "template", "kova", str(REPO / "charts" / "kova"), "--namespace", namespace,
         "--show-only", "templates/serviceaccount.yaml", "--show-only", "templates/rbac.yaml",
         *(arg for value in sets for arg in ("--set", value))],
        capture_output=True, text=True, check=True).stdout
    cloud.kubectl("create", "namespace", namespace, check=False)
    cloud.kubectl("apply", "-f", "-", input=rendered)
    token = cloud.kubectl("-n", namespace, "create", "token", "kova", "--duration=24h").strip()
    path = cloud.workdir / file
    path.write_text(yaml.safe_dump(kubeconfig_dict(
        cloud.api_url, (cloud.workdir / "pki" / "ca.crt").read_text(), token=token, user="kova")))
    return path


def tenant_token(cloud: LocalCloud, namespace: str, role: str = "edit", name: str | None = None) -> str:
    return cloud.tenant_token(namespace, role, name)


class Operator:
    """The operator under test, as a process that tests may kill and start again. It runs with the
    chart's RBAC (a token of the chart's ServiceAccount), not as cluster admin."""

    def __init__(self, cloud: LocalCloud, env: dict[str, str] | None = None) -> None:
        self.cloud = cloud
        self.proc: Proc | None = None
        self.kubeconfig = chart_rbac_kubeconfig(cloud)
        self.env = {"KUBECONFIG": str(self.kubeconfig), **(env or {})}

    def start(self, **env: str) -> None:
        self.proc = self.cloud.start_operator(extra_env={**self.env, **env})

    def kill(self) -> None:
        if self.proc and self.proc.popen.poll() is None:
            self.proc.popen.kill()
            self.proc.popen.wait()

    def stop(self) -> None:
        if self.proc and self.proc.popen.poll() is None:
            self.proc.popen.terminate()
            self.proc.popen.wait(timeout=60)

    def log(self) -> str:
        return self.proc.log.read_text() if self.proc else ""


def import_env(source: Source) -> dict[str, str]:
    """The test source listens on loopback, which the import filter refuses by default: allow exactly it
    (the operator's own ports stay refused). A small size cap lets a test reach it quickly."""
    return {"KOVA_IMPORT_ALLOWED_HOSTS": source.netloc, "KOVA_IMAGE_SIZE_CAP": SIZE_CAP,
            # Root disks imported directly, as on a StorageClass set so: the cache's tests turn it on
            # (tests/integration/test_image_cache.py).
            "KOVA_IMAGE_CACHE_NAMESPACE": "off"}


SIZE_CAP = "64Mi"


@pytest.fixture(scope="session")
def source() -> Iterator[Source]:
    src = Source()
    yield src
    src.close()


@pytest.fixture(scope="session")
def operator(cloud: LocalCloud, source: Source) -> Iterator[Operator]:
    op = Operator(cloud, import_env(source))
    op.start()
    yield op
    op.stop()


@pytest.fixture(scope="session")
def api(cloud: LocalCloud, source: Source) -> Iterator[str]:
    """`kova api` on loopback, with the chart's account and the operator's import filter; its base URL."""
    cloud.env()  # the port the file store's links name
    proc = cloud.start_api(cloud.api_kubeconfig(),
                           extra_env={"KOVA_IMPORT_ALLOWED_HOSTS": import_env(source)["KOVA_IMPORT_ALLOWED_HOSTS"]},
                           port=cloud.kova_api_port)
    yield f"http://127.0.0.1:{proc.ports['http']}"
    proc.popen.terminate()
    proc.popen.wait(timeout=30)


@pytest.fixture
def namespace(cloud: LocalCloud, request: pytest.FixtureRequest) -> Iterator[str]:
    name = f"t-{request.node.name[:40].lower().replace('_', '-').strip('-')}-{uuid.uuid4().hex[:5]}"
    name = "".join(ch for ch in name if ch.isalnum() or ch == "-")
    cloud.kubectl("create", "namespace", name)
    yield name
    # Unprotect and unlock first, or the admission policies would keep the namespace from being deleted (and
    # a namespace stuck terminating leaves objects behind that later tests would count).
    for kind, prefix, field in (("images.image.kova.dev", "image.image.kova.dev/", "protected"),
                                ("instances.compute.kova.dev", "instance.compute.kova.dev/", "locked")):
        listed = cloud.kubectl("-n", name, "get", kind, "-o", "name", check=False).split()
        for ref in (r for r in listed if r.startswith(prefix)):
            cloud.kubectl("-n", name, "patch", ref, "--type=merge", "-p", f'{{"spec":{{"{field}":false}}}}',
                          check=False)
    cloud.kubectl("delete", "namespace", name, "--wait=false", check=False)


@pytest.fixture
def kubectl(cloud: LocalCloud, namespace: str) -> Kubectl:
    return Kubectl(cloud, namespace)
