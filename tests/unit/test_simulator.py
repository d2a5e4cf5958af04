"""The simulator's pure parts: virt-api's discovery from the vendored schema, its error bodies, durations."""

from __future__ import annotations

import datetime as dt

import pytest

from tests.cloud import virtapi
from tests.cloud.sim import claim_names, duration, quantity


def test_discovery_comes_from_the_vendored_swagger() -> None:
    doc = virtapi.swagger()
    for version in virtapi.VERSIONS:
        listing = virtapi.resource_list(doc, version)
        names = [r["name"] for r in listing["resources"]]
        assert listing["groupVersion"] == f"subresources.kubevirt.io/{version}"
        assert {"virtualmachineinstances/pause", "virtualmachineinstances/unpause",
                "virtualmachineinstances/softreboot", "virtualmachines/start", "virtualmachines/stop",
                "virtualmachines/restart",
                "virtualmachineinstances/portforward", "expand-vm-spec"} <= set(names)
        assert not any("{" in n for n in names) and "healthz" not in names and len(names) == len(set(names))
        # As virt-api lists them: name and namespaced, with no kind and no verbs.
        assert all(r["namespaced"] and r["kind"] == "" and r["verbs"] is None for r in listing["resources"])


def test_openapi_is_the_groups_part_of_the_document() -> None:
    v2 = virtapi.openapi_v2(virtapi.swagger())
    assert v2["paths"] and all(p.startswith("/apis/subresources.kubevirt.io") for p in v2["paths"])
    assert {"v1.PauseOptions", "v1.RestartOptions", "v1.StopOptions"} <= set(v2["definitions"])
    v3 = virtapi.openapi_v3(v2)
    assert v3["openapi"] == "3.0.0" and "#/definitions/" not in str(v3)


def test_errors_read_like_virt_apis() -> None:
    status = virtapi.conflict("virtualmachineinstance", "vm", "VMI is already paused").status()
    assert status == {"kind": "Status", "apiVersion": "v1", "metadata": {}, "status": "Failure", "code": 409,
                      "reason": "Conflict",
                      "message": 'Operation cannot be fulfilled on virtualmachineinstance.kubevirt.io "vm": '
                                 'VMI is already paused',
                      "details": {"name": "vm", "group": "kubevirt.io", "kind": "virtualmachineinstance"}}
    assert virtapi.not_found("virtualmachine", "x").status()["message"] == 'virtualmachine.kubevirt.io "x" not found'


def test_restart_requests_are_guarded_like_kubevirts() -> None:
    vm = {"spec": {"runStrategy": "Always"}, "status": {"printableStatus": "Running"}}
    ops = virtapi.VirtAPI.change_requests(vm, {"action": "Stop", "uid": "u"}, {"action": "Start"})
    assert ops == [{"op": "test", "path": "/status/stateChangeRequests", "value": None},
                   {"op": "add", "path": "/status/stateChangeRequests",
                    "value": [{"action": "Stop", "uid": "u"}, {"action": "Start"}]}]
    vm["status"]["stateChangeRequests"] = [{"action": "Start"}]  # type: ignore[assignment]
    with pytest.raises(virtapi.StatusError, match="stop/start already underway"):
        virtapi.VirtAPI.change_requests(vm, {"action": "Start"})
    assert virtapi.VirtAPI.change_requests({"spec": {}, "status": {}}, {"action": "Start"}) == [
        {"op": "add", "path": "/status", "value": {"stateChangeRequests": [{"action": "Start"}]}}]


def test_durations_quantities_and_claims() -> None:
    assert duration("2h") == dt.timedelta(hours=2)
    assert duration("1h30m10s") == dt.timedelta(hours=1, minutes=30, seconds=10)
    assert duration("1.5s") == dt.timedelta(seconds=1.5)
    with pytest.raises(ValueError):
        duration("2 hours")
    assert quantity("3Gi") == 3 * 1024**3 and quantity("500m") == 0.5
    spec = {"volumes": [{"name": "a", "dataVolume": {"name": "dv"}},
                        {"name": "b", "persistentVolumeClaim": {"claimName": "pvc"}},
                        {"name": "c", "cloudInitNoCloud": {"userData": "x"}}]}
    assert claim_names(spec) == ["dv", "pvc"]
