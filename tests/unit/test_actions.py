"""kova.compute.actions: which server actions Nova lets a server take in its state, and Nova's 409 words.

The expectations are Nova's check_instance_lock / check_instance_state (nova/compute/api.py) and
raise_http_conflict_for_instance_invalid_state (nova/api/openstack/common.py):
"Cannot '<action>' instance <id> while it is in <vm_state|task_state> <state>", "Instance <id> is locked"."""

from __future__ import annotations

from typing import Any

import pytest

from kova.compute import actions

SERVER_ID = "0b6f7f5e-4c1d-4a57-9e25-3f0d2b1c9a01"
SMALL = {"name": "m1.small", "vcpus": 1, "ram": 512, "disk": 1}
LARGE = {"name": "m1.large", "vcpus": 4, "ram": 8192, "disk": 40}

# (Nova status, vm_state, observed power state, spec.powerState) of each settled state.
STATES = {"active": ("ACTIVE", "Running", "Running"), "stopped": ("SHUTOFF", "Shutdown", "Stopped"),
          "paused": ("PAUSED", "Paused", "Paused"), "suspended": ("SUSPENDED", "Suspended", "Suspended"),
          "error": ("ERROR", "NOSTATE", "Running")}


def instance(vm_state: str = "active", status: dict[str, Any] | None = None, **spec: Any) -> dict[str, Any]:
    """An Instance settled in `vm_state` (the operator has served everything its spec asks), then `spec`."""
    word, observed, wanted = STATES.get(vm_state, ("VERIFY_RESIZE", "Running", "Running"))
    body: dict[str, Any] = {
        "status": word, "vmState": vm_state, "powerState": observed, "flavor": SMALL, "imageRef": "cirros",
        "virtualMachine": "web", "node": "worker-1", "requests": {"power": wanted, "reboot": "t1", "resize": "r1"}}
    full_spec: dict[str, Any] = {"flavorRef": "m1.small", "imageRef": "cirros", "powerState": wanted}
    if vm_state == "resized":
        body.update(flavor=LARGE, resize={"oldFlavor": SMALL, "newFlavor": "m1.large",
                                          "finishedAt": "2026-03-01T10:05:00Z"})
        full_spec["flavorRef"] = "m1.large"
    body.update(status or {})
    full_spec.update(spec)
    return {"metadata": {"name": "web", "namespace": "demo", "uid": SERVER_ID}, "spec": full_spec, "status": body}


def refusal(action: str, obj: dict[str, Any], hard: bool = False) -> str | None:
    spec, status = actions.parse(obj)
    return actions.refusal(action, SERVER_ID, spec, status, hard=hard)


ACTIONS = ["stop", "start", "pause", "unpause", "suspend", "resume", "reboot", "resize", "confirmResize",
           "revertResize", "rebuild", "metadata"]


def test_a_locked_server_refuses_everything_but_lock_and_unlock() -> None:
    for vm_state in ("active", "stopped"):
        locked = instance(vm_state, locked=True, lockedReason="audit")
        for action in ACTIONS:
            assert refusal(action, locked) == f"Instance {SERVER_ID} is locked", action
        assert refusal("reboot", locked, hard=True) == f"Instance {SERVER_ID} is locked"
        assert refusal("lock", locked) is None and refusal("unlock", locked) is None
    assert refusal("lock", instance()) is None


def test_power_actions_follow_the_vm_state() -> None:
    assert refusal("stop", instance("stopped")) == (
        f"Cannot 'stop' instance {SERVER_ID} while it is in vm_state stopped")
    assert refusal("start", instance("active")) == (
        f"Cannot 'start' instance {SERVER_ID} while it is in vm_state active")
    assert refusal("stop", instance("active")) is None and refusal("start", instance("stopped")) is None
    assert refusal("stop", instance("error")) is None  # Nova stops an ERROR server too
    assert refusal("stop", instance("paused")) == (
        f"Cannot 'stop' instance {SERVER_ID} while it is in vm_state paused")
    assert refusal("pause", instance()) is None and refusal("suspend", instance()) is None
    assert refusal("unpause", instance("paused")) is None and refusal("resume", instance("suspended")) is None
    assert refusal("unpause", instance()) == f"Cannot 'unpause' instance {SERVER_ID} while it is in vm_state active"
    assert refusal("resume", instance("paused")) == (
        f"Cannot 'resume' instance {SERVER_ID} while it is in vm_state paused")


def test_a_hard_reboot_is_allowed_while_paused_a_soft_one_is_not() -> None:
    paused = instance("paused")
    assert refusal("reboot", paused, hard=True) is None
    assert refusal("reboot", paused) == f"Cannot 'reboot' instance {SERVER_ID} while it is in vm_state paused"
    assert refusal("reboot", instance()) is None and refusal("reboot", instance("error"), hard=True) is None


def test_nothing_but_the_boot_while_building() -> None:
    building = {"metadata": {"uid": SERVER_ID}, "spec": {"flavorRef": "m1.small", "imageRef": "cirros"}}
    assert refusal("stop", building) == f"Cannot 'stop' instance {SERVER_ID} while it is in vm_state building"
    assert refusal("reboot", building, hard=True) is not None


@pytest.mark.parametrize(("obj", "task"), [
    (instance(status={"taskState": "rebooting_hard"}), "rebooting_hard"),
    (instance(powerState="Stopped"), "powering-off"),
    (instance("stopped", powerState="Running"), "powering-on"),
    (instance(powerState="Paused"), "pausing"),
    (instance(flavorRef="m1.large"), "resize_prep"),
    (instance(imageRef="ubuntu"), "rebuilding"),
    (instance(rebootRequest={"type": "SOFT", "token": "t2"}), "rebooting"),
], ids=["status-task", "stop", "start", "pause", "resize", "rebuild", "reboot"])
def test_a_pending_task_refuses_a_second_action(obj: dict[str, Any], task: str) -> None:
    for action in ("stop", "pause", "resize", "rebuild"):
        assert refusal(action, obj) == f"Cannot '{action}' instance {SERVER_ID} while it is in task_state {task}"


def test_a_hard_reboot_may_interrupt_a_soft_one() -> None:
    soft = instance(rebootRequest={"type": "SOFT", "token": "t2"})
    assert refusal("reboot", soft, hard=True) is None
    assert refusal("reboot", soft) == f"Cannot 'reboot' instance {SERVER_ID} while it is in task_state rebooting"
    stopping = instance(powerState="Stopped")
    assert refusal("reboot", stopping, hard=True) == (
        f"Cannot 'reboot' instance {SERVER_ID} while it is in task_state powering-off")


def test_resize_from_active_or_stopped_and_its_answers_only_when_resized() -> None:
    assert refusal("resize", instance()) is None and refusal("resize", instance("stopped")) is None
    assert refusal("resize", instance("paused")) == (
        f"Cannot 'resize' instance {SERVER_ID} while it is in vm_state paused")
    for answer in ("confirmResize", "revertResize"):
        assert refusal(answer, instance("resized")) is None
        assert refusal(answer, instance()) == (
            f"Cannot '{answer}' instance {SERVER_ID} while it is in vm_state active")
    reverting = instance("resized", resizeRequest={"action": "Revert", "token": "r2"})
    assert refusal("confirmResize", reverting) == (
        f"Cannot 'confirmResize' instance {SERVER_ID} while it is in task_state resize_reverting")


def test_rebuild_from_active_stopped_or_error() -> None:
    for vm_state in ("active", "stopped", "error"):
        assert refusal("rebuild", instance(vm_state)) is None
    assert refusal("rebuild", instance("suspended")) == (
        f"Cannot 'rebuild' instance {SERVER_ID} while it is in vm_state suspended")
