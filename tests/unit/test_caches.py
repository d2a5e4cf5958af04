"""kova.controllers.instance.Caches: which Instances wait for which Flavor or Image; what the caches keep."""

from __future__ import annotations

from kova.adapters.informer import trimmed
from kova.compute.access import zones
from kova.controllers.instance import Caches
from kova.controllers.wiring import NODE_FIELDS


def test_waiters_are_woken_once_and_deleted_instances_forgotten() -> None:
    caches = Caches(flavors={}, images={}, instances={}, datavolumes={}, vms={}, vmis={}, pvcs={},
                    keypairs={}, servergroups={}, zones={})  # type: ignore[arg-type]
    caches.wait_for(("Flavor", "m1"), "ns", "a")
    caches.wait_for(("Flavor", "m1"), "ns", "b")
    caches.wait_for(("Image", "ns", "os"), "ns", "b")
    caches.forget("ns", "b")
    assert caches.waiters(("Flavor", "m1")) == {("ns", "a")}
    assert caches.waiters(("Flavor", "m1")) == set()  # woken once; a reconcile that still waits says so again
    assert caches.waiting == {}  # b's wait for the image went with it


def test_the_node_cache_keeps_what_zones_read_and_drops_the_rest() -> None:
    node = {
        "apiVersion": "v1", "kind": "Node",
        "metadata": {"name": "n1", "resourceVersion": "7", "labels": {"topology.kubernetes.io/zone": "zone-a"},
                     "managedFields": [{"manager": "kubelet"}]},
        "spec": {"unschedulable": True, "podCIDR": "10.244.0.0/24", "taints": [{"key": "k", "effect": "NoSchedule"}]},
        "status": {"conditions": [{"type": "Ready", "status": "True"}],
                   "images": [{"names": ["quay.io/kubevirt/virt-launcher@sha256:" + "0" * 64], "sizeBytes": 1 << 30}],
                   "allocatable": {"cpu": "256", "devices.kubevirt.io/kvm": "1k"}, "capacity": {"cpu": "256"},
                   "addresses": [{"type": "InternalIP", "address": "10.0.0.1"}], "nodeInfo": {"kernelVersion": "6"}},
    }
    kept = trimmed(node, NODE_FIELDS)
    assert kept == {"apiVersion": "v1", "kind": "Node",
                    "metadata": {"name": "n1", "resourceVersion": "7",
                                 "labels": {"topology.kubernetes.io/zone": "zone-a"}},
                    "spec": {"unschedulable": True}, "status": {"conditions": [{"type": "Ready", "status": "True"}]}}
    assert zones([kept]) == zones([node]) == {"zone-a": (["n1"], False)}  # Ready, but cordoned
    uncordoned = {**node, "spec": {"podCIDR": "10.244.0.0/24"}}
    assert trimmed(uncordoned, NODE_FIELDS)["spec"] == {}  # a path the object lacks is left out, not made up
    assert zones([trimmed(uncordoned, NODE_FIELDS)]) == {"zone-a": (["n1"], True)}
    assert trimmed({"metadata": {"name": "n2"}}, NODE_FIELDS) == {
        "apiVersion": {}, "kind": {}, "metadata": {"name": "n2"}, "spec": {}, "status": {}}
    assert trimmed(node, ("spec",))["spec"] is node["spec"]  # a whole field, as before
