"""Observability and high availability: metrics, Events, and two replicas with one active."""

from __future__ import annotations

import json
import subprocess

import pytest

from tests.cloud.bench import REPO, LocalCloud, binary
from tests.conftest import Kubectl, Operator, sample, scrape, wait_for
from tests.httpsource import Source
from tests.integration.test_e2e import disk, image, wait_image

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


def peering_object(cloud: LocalCloud) -> None:
    rendered = subprocess.run(
        [binary("helm"), "template", "kova", str(REPO / "charts" / "kova"), "--set", "replicaCount=2",
         "--show-only", "templates/peering.yaml"], capture_output=True, text=True, check=True).stdout
    cloud.kubectl("apply", "-f", "-", input=rendered)


def test_two_replicas_one_active_and_failover(cloud: LocalCloud, operator: Operator, source: Source,
                                              kubectl: Kubectl) -> None:
    peering_object(cloud)
    operator.stop()  # the standalone operator of the other tests steps aside for the pair
    env = {**operator.env, "KOVA_PEERING_LIFETIME": "15"}
    first = second = None
    try:
        first = cloud.start_operator("replica-a", {**env, "KOVA_PEERING_PRIORITY": "200"},
                                     ("--peering", "kova", "--log-format", "json"))
        second = cloud.start_operator("replica-b", {**env, "KOVA_PEERING_PRIORITY": "100"}, ("--peering", "kova"))
        # Both replicas are in the peering object; the lower priority one starts paused and stays so.
        wait_for(lambda: len(json.loads(cloud.kubectl("get", "clusterkopfpeering", "kova", "-o", "json"))
                             .get("status", {})) == 2, 30, "both replicas to join the peering")
        kubectl.apply(image("one", source.add(f"/{kubectl.namespace}/1", disk("ha-1"))))
        wait_image(kubectl, "one", "active")
        assert sample(scrape(first), "kova_imports_total", '{result="active"}') == 1
        assert sample(scrape(second), "kova_imports_total", '{result="active"}') == 0, "only one replica works"
        records = [json.loads(line) for line in first.log.read_text().splitlines() if line.startswith("{")]
        assert any("imported" in r.get("message", "") for r in records), "--log-format json logs JSON"
        first.popen.kill()  # the active replica dies without a word
        first.popen.wait()
        kubectl.apply(image("two", source.add(f"/{kubectl.namespace}/2", disk("ha-2"))))
        wait_image(kubectl, "two", "active", timeout=90)
        assert "Resuming operations" in second.log.read_text()
        assert sample(scrape(second), "kova_imports_total", '{result="active"}') == 1
    finally:
        for proc in (first, second):
            if proc and proc.popen.poll() is None:
                proc.popen.terminate()
                proc.popen.wait(timeout=60)
        cloud.kubectl("delete", "clusterkopfpeering", "kova", check=False)
        operator.start()
