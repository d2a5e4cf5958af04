"""What Kova writes to the shared API server, counted by kube-apiserver itself (apiserver_request_total):
a boot costs at most 4 writes, and a restarted operator writes nothing to a world that did not change."""

from __future__ import annotations

import time
from collections import Counter

import pytest

from tests.cloud.bench import LocalCloud
from tests.conftest import Kubectl, Operator, wait_for
from tests.httpsource import Source
from tests.integration.test_e2e import disk, flavor, image, instance, unique, wait_image, wait_instance

pytestmark = pytest.mark.integration
# Kova's writes about Instances; DELETEs are left out (namespaces of earlier tests are being emptied).
COUNTED = {("instances", "status", "PATCH"), ("instances", "", "PATCH"), ("virtualmachines", "", "APPLY"),
           ("virtualmachines", "", "PATCH"), ("datavolumes", "", "POST")}


def writes(cloud: LocalCloud) -> Counter[tuple[str, str, str]]:
    return Counter({k: v for k, v in cloud.write_requests().items() if k in COUNTED})


def test_a_boot_costs_at_most_four_writes(cloud: LocalCloud, operator: Operator, source: Source,
                                          kubectl: Kubectl) -> None:
    fl = unique(kubectl, "w1")
    kubectl.apply([flavor(fl), image("os", source.add(f"/{kubectl.namespace}/os", disk("writes")))])
    wait_image(kubectl, "os", "active")
    before = writes(cloud)
    kubectl.apply(instance("vm1", fl, "os"))
    wait_instance(kubectl, "vm1", "ACTIVE")
    time.sleep(2)  # anything trailing the ACTIVE write is counted too
    spent = writes(cloud) - before
    assert spent[("datavolumes", "", "POST")] == 1, spent
    assert spent[("virtualmachines", "", "APPLY")] == 1, spent
    assert sum(spent.values()) <= 4, spent
    assert len([e for e in kubectl.events("vm1") if e["involvedObject"]["kind"] == "Instance"]) <= 3


def test_restart_writes_nothing_to_an_unchanged_world(cloud: LocalCloud, operator: Operator, source: Source,
                                                     kubectl: Kubectl) -> None:
    fl = unique(kubectl, "w2")
    kubectl.apply([flavor(fl), image("os", source.add(f"/{kubectl.namespace}/os", disk("restart-writes")))]
                  + [instance(f"vm{i}", fl, "os") for i in range(3)])
    for i in range(3):
        wait_instance(kubectl, f"vm{i}", "ACTIVE")
    time.sleep(2)
    before = writes(cloud)
    operator.stop()
    operator.start()
    # The restarted operator has resumed every object once it handles a new one; give it that and a bit.
    kubectl.apply(instance("probe", fl, "os"))
    wait_instance(kubectl, "probe", "ACTIVE")
    time.sleep(3)
    spent = writes(cloud) - before
    assert sum(spent.values()) <= 4, f"only the probe's boot may write: {spent}"
    # A hand-edit is still put back: the cache-based reconcile is not blind to drift.
    kubectl("patch", "vm", "vm0", "--type=merge", "-p", '{"spec":{"runStrategy":"Halted"}}')
    wait_for(lambda: (kubectl.get("vm", "vm0") or {}).get("spec", {}).get("runStrategy") == "Always", 30,
             "the hand-edit to be put back")
