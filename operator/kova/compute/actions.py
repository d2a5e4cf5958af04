"""Which of Nova's server actions a server may take in its state: one table, read by the operator (which
refuses a request it finds in the spec) and by the compute API (which answers Nova's 409 before it writes
the spec, so a client hears the refusal instead of a request that the operator later drops)."""

from __future__ import annotations

from typing import Any

from kova.api.models import InstanceSpec, InstanceStatus, PowerState

# Nova's check_instance_state (nova/compute/api.py), in Kova's vm_state words. A hard reboot is Nova's
# ALLOW_HARD_REBOOT less what KubeVirt cannot restart (a stopped or suspended VM has nothing to restart).
ALLOWED_VM_STATES: dict[str, tuple[str, ...]] = {
    "stop": ("active", "error"), "start": ("stopped",),
    "pause": ("active",), "unpause": ("paused",), "suspend": ("active",), "resume": ("suspended",),
    "reboot": ("active",), "reboot-hard": ("active", "paused", "error"),
    "resize": ("active", "stopped"), "confirmResize": ("resized",), "revertResize": ("resized",),
    "rebuild": ("active", "stopped", "error"), "createImage": ("active", "stopped"),
}
# Actions a lock does not stop (Nova's lock and unlock, and reading).
UNLOCKED_ACTIONS = frozenset({"lock", "unlock"})
# The task_state each spec.powerState change shows while the operator has not carried it out yet.
POWER_TASKS = {
    (PowerState.running, PowerState.stopped): "powering-off", (PowerState.stopped, PowerState.running): "powering-on",
    (PowerState.running, PowerState.paused): "pausing", (PowerState.paused, PowerState.running): "unpausing",
    (PowerState.running, PowerState.suspended): "suspending",
    (PowerState.suspended, PowerState.running): "resuming",
}
# What a power action asks of spec.powerState.
POWER_TARGETS = {"stop": PowerState.stopped, "start": PowerState.running, "pause": PowerState.paused,
                 "unpause": PowerState.running, "suspend": PowerState.suspended, "resume": PowerState.running}


def wrong_state(action: str, vm_state: str) -> bool:
    """True when Nova would refuse `action` in `vm_state` (409)."""
    allowed = ALLOWED_VM_STATES.get(action)
    return allowed is not None and vm_state not in allowed


def pending_task(spec: InstanceSpec, status: InstanceStatus) -> str | None:
    """Nova's task_state for what the spec asks and the operator has not yet taken up: the API must not
    accept a second action on top of it, as Nova refuses one while a task runs."""
    if status.task_state:
        return status.task_state
    if status.vm_state in (None, "building") or status.flavor is None:
        return None  # still building: the spec is the boot itself
    # A request the operator refused (an Error action for it) is over: it no longer holds the server.
    refused = {(a.action, a.request_id) for a in status.actions if a.result == "Error"}
    served = PowerState(status.requests.power or PowerState.running.value)
    if spec.power_state is not served:
        return POWER_TASKS.get((served, spec.power_state), "powering-off")
    if status.image_ref and spec.image_ref != status.image_ref and ("rebuild", spec.image_ref) not in refused:
        return "rebuilding"
    if status.resize is not None and spec.flavor_ref == status.resize.old_flavor.name:
        return "resize_reverting"
    if (spec.flavor_ref not in (status.flavor.name, status.requests.reverted_flavor) and status.resize is None
            and ("resize", spec.flavor_ref) not in refused):
        return "resize_prep"
    if spec.reboot_request and spec.reboot_request.token != status.requests.reboot:
        return "rebooting_hard" if spec.reboot_request.type.value == "HARD" else "rebooting"
    if spec.resize_request and spec.resize_request.token != status.requests.resize:
        return "resize_reverting" if spec.resize_request.action.value == "Revert" else "resize_confirming"
    return None


# Nova's status word while a task runs (nova.api.openstack.common._STATE_MAP): the client that asked sees its
# request taken at once, as Nova shows it, before the operator has carried it out.
TASK_WORDS = {"rebooting": "REBOOT", "rebooting_hard": "HARD_REBOOT", "rebuilding": "REBUILD",
              "resize_prep": "RESIZE", "resize_reverting": "REVERT_RESIZE"}


def refusal(action: str, server_id: str, spec: InstanceSpec, status: InstanceStatus,
            hard: bool = False) -> str | None:
    """Nova's 409 message for `action` on this server now, or None when it may go ahead."""
    if spec.locked and action not in UNLOCKED_ACTIONS:
        return f"Instance {server_id} is locked"
    key = "reboot-hard" if action == "reboot" and hard else action
    if key not in ALLOWED_VM_STATES:
        return None
    task = pending_task(spec, status)
    # A hard reboot may interrupt a soft one, as Nova lets it.
    if task and not (key == "reboot-hard" and task in ("rebooting", "rebooting_hard")):
        return f"Cannot '{action}' instance {server_id} while it is in task_state {task}"
    vm_state = status.vm_state or "building"
    if wrong_state(key, vm_state):
        return f"Cannot '{action}' instance {server_id} while it is in vm_state {vm_state}"
    return None


def parse(body: dict[str, Any]) -> tuple[InstanceSpec, InstanceStatus]:
    """The spec and status models of an Instance object (status absent: a new one)."""
    return InstanceSpec.model_validate(body.get("spec") or {}), InstanceStatus.model_validate(body.get("status") or {})
