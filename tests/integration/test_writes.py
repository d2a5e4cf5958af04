"""What Kova writes to the shared API server, counted by kube-apiserver itself (apiserver_request_total, less
what its audit log says the cluster's own components wrote, virt-controller's VM patches say):
a boot costs at most 4 writes, and a restarted operator writes nothing to a world that did not change."""

from __future__ import annotations

import re
from collections import Counter

import pytest

from tests.cloud.bench import LocalCloud
from tests.conftest import Kubectl, Operator, scrape, wait_for, wait_settled
from tests.httpsource import Source
from tests.integration.test_e2e import disk, flavor, image, instance, unique, wait_image, wait_instance

pytestmark = pytest.mark.integration
# Kova's writes about Instances; DELETEs are left out (namespaces of earlier tests are being emptied).
COUNTED = {("instances", "status", "PATCH"), ("instances", "", "PATCH"), ("virtualmachines", "", "APPLY"),
           ("virtualmachines", "", "PATCH"), ("datavolumes", "", "POST")}


def writes(cloud: LocalCloud) -> Counter[tuple[str, str, str]]:
    return Counter({k: v for k, v in cloud.write_requests(kova_only=True).items() if k in COUNTED})


def reconciles(operator: Operator) -> tuple[float, float]:
    """(handler runs started, handler runs finished) of the operator, from its own metrics."""
    assert operator.proc is not None
    text = scrape(operator.proc)

    def total(name: str) -> float:
        return sum(float(v) for v in re.findall(rf"^{name}{{[^}}]*}} ([0-9.e+]+)$", text, re.M))
    return total("kova_reconciles_total"), total("kova_reconcile_duration_seconds_count")


def quiet_writes(cloud: LocalCloud, operator: Operator) -> Counter[tuple[str, str, str]]:
    """The write counts once the writes have stopped: neither they nor the operator's handler runs have
    moved for a while, and no handler run is under way (one may still be about to write)."""
    def now() -> tuple[Counter[tuple[str, str, str]], tuple[float, float]]:
        return writes(cloud), reconciles(operator)

    def idle(s: tuple[Counter[tuple[str, str, str]], tuple[float, float]]) -> bool:
        started, finished = s[1]
        # Earlier tests' namespaces are deleted without waiting: their Instances' last writes are not these.
        terminating = "Terminating" in cloud.kubectl("get", "namespaces", "-o", "jsonpath={.items[*].status.phase}")
        return started == finished and not terminating
    return wait_settled(now, 240, quiet=3, what="the API writes and the operator's reconciles to stop",
                        idle=idle)[0]


def test_a_boot_costs_at_most_four_writes(cloud: LocalCloud, operator: Operator, source: Source,
                                          kubectl: Kubectl) -> None:
    fl = unique(kubectl, "w1")
    kubectl.apply([flavor(fl), image("os", source.add(f"/{kubectl.namespace}/os", disk("writes")))])
    wait_image(kubectl, "os", "active")
    # Counted from a standstill: writes trailing earlier work (other tests' too) are not the boot's.
    before = quiet_writes(cloud, operator)
    kubectl.apply(instance("vm1", fl, "os"))
    wait_instance(kubectl, "vm1", "ACTIVE")
    spent = quiet_writes(cloud, operator) - before  # anything trailing the ACTIVE write is counted too
    assert spent[("datavolumes", "", "POST")] == 1, spent
    assert spent[("virtualmachines", "", "APPLY")] == 1, spent
    assert sum(spent.values()) <= 4, f"{spent}; its events: " + ", ".join(
        f"{e['reason']}: {e['message']}" for e in kubectl.events("vm1"))
    assert len([e for e in kubectl.events("vm1") if e["involvedObject"]["kind"] == "Instance"]) <= 3


def test_restart_writes_nothing_to_an_unchanged_world(cloud: LocalCloud, operator: Operator, source: Source,
                                                     kubectl: Kubectl) -> None:
    fl = unique(kubectl, "w2")
    kubectl.apply([flavor(fl), image("os", source.add(f"/{kubectl.namespace}/os", disk("restart-writes")))]
                  + [instance(f"vm{i}", fl, "os") for i in range(3)])
    for i in range(3):
        wait_instance(kubectl, f"vm{i}", "ACTIVE")
    before = quiet_writes(cloud, operator)
    operator.stop()
    operator.start()
    # The restarted operator has resumed every object once it handles a new one, and is done once its
    # handler runs and the API writes have stopped.
    kubectl.apply(instance("probe", fl, "os"))
    wait_instance(kubectl, "probe", "ACTIVE")
    spent = quiet_writes(cloud, operator) - before
    assert sum(spent.values()) <= 4, f"only the probe's boot may write: {spent}; its events: " + ", ".join(
        f"{e['reason']}: {e['message']}" for e in kubectl.events("probe"))
    # A hand-edit is still put back: the cache-based reconcile is not blind to drift.
    kubectl("patch", "vm", "vm0", "--type=merge", "-p", '{"spec":{"runStrategy":"Halted"}}')
    wait_for(lambda: (kubectl.get("vm", "vm0") or {}).get("spec", {}).get("runStrategy") == "Always", 30,
             "the hand-edit to be put back")
