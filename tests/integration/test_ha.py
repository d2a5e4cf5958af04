"""Observability and high availability: metrics, Events, and two replicas with one active."""

from __future__ import annotations

import base64
import datetime
import json
import time
from pathlib import Path
from typing import Any

import pytest
import yaml

from tests.cloud.bench import LocalCloud, Proc
from tests.conftest import Kubectl, Operator, chart_rbac_kubeconfig, sample, scrape, wait_for
from tests.httpsource import Source
from tests.integration.test_e2e import disk, flavor, image, instance, unique, wait_image, wait_instance

pytestmark = pytest.mark.integration


def test_metrics_count_reconciles_and_imported_bytes(operator: Operator, source: Source,
                                                     kubectl: Kubectl) -> None:
    assert operator.proc is not None
    before = scrape(operator.proc)
    data = disk("metrics", 2)
    kubectl.apply(image("os", source.add(f"/{kubectl.namespace}/m", data)))
    wait_image(kubectl, "os", "active")
    after = scrape(operator.proc)
    assert sample(after, "kova_imported_bytes_total") - sample(before, "kova_imported_bytes_total") == len(data)
    assert sample(after, "kova_reconciles_total", '{kind="Image"}') > sample(
        before, "kova_reconciles_total", '{kind="Image"}')
    assert sample(after, "kova_imports_total", '{result="active"}') >= 1
    assert sample(after, "kova_imports_in_flight") == 0
    assert 'kova_reconcile_duration_seconds_count{kind="Image"}' in after


def credential(kubeconfig: Path) -> str:
    """The audit log's name for a ServiceAccount token: its JWT id (`authentication.kubernetes.io/credential-id`)."""
    token = yaml.safe_load(kubeconfig.read_text())["users"][0]["user"]["token"]
    claims = json.loads(base64.urlsafe_b64decode(token.split(".")[1] + "=="))
    return f"JTI={claims['jti']}"


def writes_by(cloud: LocalCloud, who: str, since: float) -> list[str]:
    """Writes kube-apiserver audited from credential `who` since `since` (epoch seconds): "verb resource name"."""
    out = []
    for event in cloud.audit():
        when = datetime.datetime.fromisoformat(event["requestReceivedTimestamp"].replace("Z", "+00:00"))
        ids = event["user"].get("extra", {}).get("authentication.kubernetes.io/credential-id", [])
        if who in ids and when.timestamp() >= since:
            ref = event.get("objectRef", {})
            out.append(f"{event['verb']} {ref.get('resource')}/{ref.get('subresource', '')} {ref.get('name', '')}")
    return out


def leader(proc: Proc) -> bool:
    return sample(scrape(proc), "kova_leader") == 1


def lease(cloud: LocalCloud) -> dict[str, Any]:
    return json.loads(cloud.kubectl("-n", "kova-system", "get", "lease", "kova", "-o", "json"))


def test_standby_writes_nothing_and_takes_over(cloud: LocalCloud, operator: Operator, source: Source,
                                               kubectl: Kubectl) -> None:
    """Two replicas of the chart's account (each its own token, told apart in kube-apiserver's audit log): the
    standby reconciles nothing and writes nothing while the leader boots servers; killed, the leader is
    replaced within the Lease's lifetime and the new one converges; stopped cleanly, it hands over at once."""
    operator.stop()  # the standalone operator of the other tests steps aside for the pair
    lifetime = 6.0
    configs = [chart_rbac_kubeconfig(cloud, "kova-system", "replicaCount=2", file=f"replica-{n}.kubeconfig")
               for n in "abc"]
    env = {**operator.env, "KOVA_PEERING_LIFETIME": str(lifetime), "KOVA_NAMESPACE": "kova-system"}
    args = ("--peering", "kova")
    procs: list[Proc] = []
    try:
        first = cloud.start_operator("replica-a", {**env, "KUBECONFIG": str(configs[0])},
                                     (*args, "--log-format", "json"))
        procs.append(first)
        wait_for(lambda: leader(first), 30, "the first replica to lead")
        second = cloud.start_operator("replica-b", {**env, "KUBECONFIG": str(configs[1])}, args)
        procs.append(second)
        since = time.time()
        fl = unique(kubectl, "ha")
        kubectl.apply([flavor(fl), image("os", source.add(f"/{kubectl.namespace}/1", disk("ha-1"))),
                       instance("vm-1", fl, "os"), instance("vm-2", fl, "os")])
        for name in ("vm-1", "vm-2"):
            wait_instance(kubectl, name, "ACTIVE")
        assert writes_by(cloud, credential(configs[0]), since), "the leader does the work"
        assert writes_by(cloud, credential(configs[1]), since) == [], "the standby writes nothing, not even its Lease"
        standby = scrape(second)
        assert sample(standby, "kova_leader") == 0
        assert "kova_reconciles_total{" not in standby, "the standby reconciles nothing"
        records = [json.loads(line) for line in first.log.read_text().splitlines() if line.startswith("{")]
        assert any("imported" in r.get("message", "") for r in records), "--log-format json logs JSON"

        first.popen.kill()  # the leader dies without a word
        first.popen.wait()
        killed = time.monotonic()
        wait_for(lambda: leader(second), 3 * lifetime, "the standby to take over")
        took = time.monotonic() - killed
        # Within the lifetime, plus the standby's read interval and the time its last read took.
        assert took <= lifetime + 2 * 0.8 + 2, f"took over after {took:.1f}s"
        kubectl("patch", "instance", "vm-1", "--type=merge", "-p", '{"spec":{"powerState":"Stopped"}}')
        kubectl.apply(instance("vm-3", fl, "os"))
        wait_instance(kubectl, "vm-1", "SHUTOFF")
        wait_instance(kubectl, "vm-3", "ACTIVE")
        assert lease(cloud)["spec"]["leaseTransitions"] >= 1

        third = cloud.start_operator("replica-c", {**env, "KUBECONFIG": str(configs[2])}, args)
        procs.append(third)
        second.popen.terminate()  # a clean stop (a rolling update) gives the Lease back
        second.popen.wait(timeout=60)
        stopped = time.monotonic()
        wait_for(lambda: leader(third), 3 * lifetime, "the third replica to take over")
        assert time.monotonic() - stopped < lifetime, "a released Lease is taken at once, not after its lifetime"
        kubectl("patch", "instance", "vm-1", "--type=merge", "-p", '{"spec":{"powerState":"Running"}}')
        wait_instance(kubectl, "vm-1", "ACTIVE")
    finally:
        for proc in procs:
            if proc.popen.poll() is None:
                proc.popen.terminate()
                proc.popen.wait(timeout=60)
        cloud.kubectl("-n", "kova-system", "delete", "lease", "kova", check=False)
        operator.start()
