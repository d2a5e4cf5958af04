"""Nova's server life cycle over KubeVirt, as pure functions: what to do next, and what Nova would say.

`decide` takes the Instance's spec, its last status, the Flavor and Image it names, and its children
(DataVolume, PersistentVolumeClaim, VirtualMachine, VirtualMachineInstance), and returns one `Step`: the
VirtualMachine to want (flavor, running or not), the disk to create, delete or grow, at most one KubeVirt
action to call (pause, softreboot, restart, ...), and the status to write. The handler carries a step out
and asks again until a step has nothing left to do now; everything else waits for the next watch event.

The status is the state machine's memory: an action that takes several steps (reboot, resize, rebuild)
writes its `task` before it acts, so a crash at any point resumes the same action at the same step. Nova's
words follow the actions: REBOOT / HARD_REBOOT, PAUSED, SUSPENDED, RESIZE → VERIFY_RESIZE → ACTIVE (confirm)
or REVERT_RESIZE → ACTIVE (revert), REBUILD; `taskState` while it runs; and a bounded history of actions
(Nova's os-instance-actions).
"""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass, field
from typing import Any

from kova.api import clock
from kova.api.conditions import Progress
from kova.api.models import (
    MAX_ACTIONS,
    AppliedFlavor,
    Fault,
    FlavorSpec,
    InstanceAction,
    InstanceSpec,
    InstanceStatus,
    NovaStatus,
    PowerState,
    RebootType,
    ResizeAction,
    ResizeState,
    ServedRequests,
    Task,
)
from kova.api.quantity import GiB, gib_ceil, parse_size
from kova.compute import actions
from kova.compute.children import DISK_IMAGE_ANNOTATION, Guest

Body = dict[str, Any]

# spec.powerState transitions → Nova's action names.
POWER_ACTIONS = {
    (PowerState.running, PowerState.stopped): "stop", (PowerState.stopped, PowerState.running): "start",
    (PowerState.running, PowerState.paused): "pause", (PowerState.paused, PowerState.running): "unpause",
    (PowerState.running, PowerState.suspended): "suspend", (PowerState.suspended, PowerState.running): "resume",
}
VM_STATES = {NovaStatus.active: "active", NovaStatus.shutoff: "stopped", NovaStatus.paused: "paused",
             NovaStatus.suspended: "suspended", NovaStatus.verify_resize: "resized", NovaStatus.error: "error",
             NovaStatus.build: "building"}


def applied(name: str, flavor: FlavorSpec) -> AppliedFlavor:
    return AppliedFlavor(name=name, vcpus=flavor.vcpus, ram=flavor.ram, disk=flavor.disk,
                         ephemeral=flavor.ephemeral, swap=flavor.swap, extra_specs=dict(flavor.extra_specs))


def flavor_spec(flavor: AppliedFlavor) -> FlavorSpec:
    return FlavorSpec(vcpus=flavor.vcpus, ram=flavor.ram, disk=flavor.disk, ephemeral=flavor.ephemeral,
                      swap=flavor.swap, extra_specs=flavor.extra_specs)


# ---------------------------------------------------------------------------------------------- inputs
@dataclass
class ImageInfo:
    """An Image the instance may boot (or rebuild onto): visible, active, its data checked."""

    ref: str
    uid: str
    sha512: str
    size: int
    virtual_size: int
    min_disk: int
    min_ram: int
    deactivated: bool = False
    disk_format: str | None = None
    properties: dict[str, str] = field(default_factory=dict)
    stores: tuple[str, ...] = ()  # where its data is, best first (status.stores): the store a disk reads
    volume: bool = False  # a Volume the server boots from: no disk of its own (root_disk_gib 0), nothing to check


@dataclass
class Blocked:
    """Why a Flavor or an Image cannot be used: waited for (it may come), or refused (Nova's 4xx)."""

    reason: str
    message: str
    refused: bool = False
    code: int = 400
    on: tuple[str, ...] | None = None  # what to wake on: ("Flavor", name) or ("Image", namespace, name)


@dataclass
class Children:
    dv: Body | None = None
    pvc: Body | None = None
    vm: Body | None = None
    vmi: Body | None = None
    # NetworkAttachmentDefinitions (`ns/name`) the VM names that do not exist, looked up when KubeVirt
    # cannot make its launcher pod (launch_failed): the failure's cause, read from the objects themselves.
    missing_networks: tuple[str, ...] = ()

    @property
    def vmi_uid(self) -> str | None:
        uid: str | None = (self.vmi or {}).get("metadata", {}).get("uid")
        return uid

    @property
    def running(self) -> bool:
        """A VMI that runs (and is not on its way out)."""
        vmi = self.vmi or {}
        return vmi.get("status", {}).get("phase") == "Running" and not vmi["metadata"].get("deletionTimestamp")

    @property
    def paused(self) -> bool:
        conds = (self.vmi or {}).get("status", {}).get("conditions") or []
        return any(c.get("type") == "Paused" and c.get("status") == "True" for c in conds)

    @property
    def ready(self) -> bool:
        """The VM says it runs and is ready (KubeVirt's printableStatus Running)."""
        st = (self.vm or {}).get("status", {})
        return self.running and st.get("printableStatus") == "Running" and bool(st.get("ready"))

    @property
    def halted(self) -> bool:
        return self.vm is not None and self.vmi is None

    @property
    def disk_image(self) -> str | None:
        """uid of the Image the DataVolume was made from (its annotation; None for disks made before it)."""
        annotations: dict[str, str] = (self.dv or {}).get("metadata", {}).get("annotations") or {}
        return annotations.get(DISK_IMAGE_ANNOTATION)

    @property
    def disk_claimed(self) -> bool:
        """CDI made the DataVolume's own claim (not one of a DataVolume deleted before, still going away)."""
        dv_uid = (self.dv or {}).get("metadata", {}).get("uid")
        md = (self.pvc or {}).get("metadata") or {}
        return (self.pvc is not None and dv_uid is not None and not md.get("deletionTimestamp")
                and any(o.get("uid") == dv_uid for o in md.get("ownerReferences") or []))

    @property
    def disk_gib(self) -> int | None:
        """The root disk's size: the claim's capacity once bound, in whole GiB rounded down (CDI asks for a few
        percent more than the disk, its filesystem overhead: 1 GiB is a claim of 1.06 GiB)."""
        cap = ((self.pvc or {}).get("status") or {}).get("capacity", {}).get("storage")
        return parse_size(cap) // GiB if cap else None



def root_disk_gib(flavor: FlavorSpec | AppliedFlavor, image: ImageInfo) -> int:
    """Nova's rule: the flavor's disk, or the image's own size when the flavor says 0; never below minDisk.
    An ISO is not the root disk but a CD-ROM beside a blank one: the flavor's size. A server booted from a
    volume has no disk of its own (Nova ignores the flavor's disk then)."""
    if image.volume:
        return 0
    if image.disk_format == "iso":
        return max(flavor.disk, image.min_disk, 1)
    return max(flavor.disk, gib_ceil(max(image.virtual_size, image.size)), image.min_disk, 1)


def shrink_refusal(name: str, flavor: FlavorSpec | AppliedFlavor, current_gib: int) -> str | None:
    """Why a resize to this flavor is refused: its disk is smaller than the root disk (Nova cannot shrink one)."""
    if flavor.disk and flavor.disk < current_gib:
        return (f"flavor {name} has a {flavor.disk} GiB disk, smaller than the instance's {current_gib} GiB root "
                "disk: a disk cannot shrink (Nova: unable to resize disk down)")
    return None


def boot_refusal(flavor: FlavorSpec | AppliedFlavor, image: ImageInfo) -> str | None:
    """Why this image cannot boot on this flavor (Nova's FlavorMemoryTooSmall / FlavorDiskTooSmall)."""
    if flavor.ram < image.min_ram:
        return f"flavor has {flavor.ram} MiB of RAM, the image needs minRam {image.min_ram} MiB"
    if flavor.disk and not image.volume:
        needed = max(image.min_disk, 0 if image.disk_format == "iso" else gib_ceil(image.virtual_size))
        if flavor.disk < needed:
            return f"flavor disk is {flavor.disk} GiB, the image needs {needed} GiB"
    return None


@dataclass
class Inputs:
    spec: InstanceSpec
    status: InstanceStatus
    children: Children
    flavor: FlavorSpec | Blocked  # the Flavor spec.flavorRef names
    image: ImageInfo | Blocked  # the Image spec.imageRef names
    disk_image: ImageInfo | Blocked | None = None  # the Image status.imageRef names, when it differs
    guest: Guest | Blocked | None = None  # keys, networks, placement, devices (kova.compute.guest)
    snapshots: list[str] = field(default_factory=list)  # Images being made from this instance, by name
    snapshot_uploading: bool = False  # KubeVirt exports the disk and Kova reads it
    now: dt.datetime = field(default_factory=clock.now)
    confirm_window: float = 0.0  # seconds; 0: resizes wait for a confirm (Nova's resize_confirm_window)


# ---------------------------------------------------------------------------------------------- output
@dataclass
class Step:
    """One step: the children to want, at most one KubeVirt action, and the status that describes it."""

    word: NovaStatus
    progress: Progress
    reason: str
    message: str
    status: InstanceStatus
    flavor: AppliedFlavor | None = None  # the VirtualMachine's flavor (None: no VM is wanted yet)
    running: bool = True
    disk: ImageInfo | None = None  # create the root DataVolume from this image if it is missing
    disk_gib: int = 0
    delete_disk: bool = False
    grow_disk: int | None = None  # GiB the claim should have
    call: tuple[str, str] | None = None  # ("vmi" | "vm", action), then `called` is the status
    called: InstanceStatus | None = None
    again: bool = False  # decide again at once: the step wrote a task and acts on it next
    fault: Fault | None = None
    task_state: str | None = None
    power_state: str | None = None
    warning: tuple[str, str] | None = None  # an Event (reason, message): a request refused
    wait_on: tuple[str, ...] | None = None
    wake_after: float | None = None  # seconds: decide again then (the resize confirm window)

    def fields(self) -> dict[str, Any]:
        """The status fields this step writes (publish adds the word, conditions and observedGeneration).
        Cleared fields are null, also inside objects: a merge patch leaves out what is absent."""
        st = self.status
        st.status, st.task_state, st.fault = self.word, self.task_state, self.fault
        st.vm_state = VM_STATES.get(self.word, st.vm_state)
        if self.power_state is not None:
            st.power_state = self.power_state
        out = st.model_dump(by_alias=True, mode="json")
        for key in ("conditions", "observedGeneration", "status"):
            out.pop(key, None)
        return out


def call_refused(step: Step, message: str, now: dt.datetime | None = None) -> Step:
    """KubeVirt refused the action a step called: the task it served ends with an error (nothing changed)."""
    st = step.status
    task = st.task
    if task is not None:
        st.task = None
        finish(st, task.action, now or clock.now(), "Error", message)
    step.word = _word_for(PowerState(st.requests.power or "Running")) if task is not None else step.word
    step.task_state, step.again = None, False
    step.warning = ("ActionFailed", message)
    return step


def record(status: InstanceStatus, action: str, request_id: str, now: dt.datetime, *,
           result: str | None = None, message: str | None = None) -> None:
    """Start an action in the history (finished at once when `result` is given); the oldest drop out."""
    t = clock.text(now)
    status.actions = [*status.actions, InstanceAction(
        action=action, request_id=request_id, start_time=t, finish_time=t if result else None,
        result=result, message=message)][-MAX_ACTIONS:]  # type: ignore[arg-type]


def finish(status: InstanceStatus, action: str, now: dt.datetime, result: str = "Success",
           message: str | None = None) -> None:
    """Finish the last unfinished `action` of the history."""
    for a in reversed(status.actions):
        if a.action == action and a.finish_time is None:
            a.finish_time, a.result, a.message = clock.text(now), result, message  # type: ignore[assignment]
            return


# ---------------------------------------------------------------------------------------------- decide
def decide(i: Inputs) -> Step:
    step = _decide(i)
    wait = unschedulable_wait(i.children, i.now)
    if wait is not None:  # decide again once KubeVirt's word is the scheduler's verdict, if it still stands
        step.wake_after = min(step.wake_after if step.wake_after is not None else wait, wait)
    return step


def _decide(i: Inputs) -> Step:
    st = i.status.model_copy(deep=True)
    if st.flavor is None or st.image_ref is None:
        return _boot(i, st)
    _bookkeeping(i, st)
    if st.task is not None:
        return _continue(i, st, st.task)
    if st.resize is not None and st.resize.finished_at is not None:
        return _verify_resize(i, st, st.resize)
    if i.snapshots and not i.spec.locked:  # a locked server is not imaged (the Image is refused), nor stopped
        return _snapshot(i, st)
    if not _built(st):
        # Requests made while it builds are served once it is built: at once, not at the next event.
        step = _steady(i, st)
        step.again = _built(st)
        return step
    return _new_request(i, st) or _steady(i, st)


def _built(st: InstanceStatus) -> bool:
    return any(a.action == "create" and a.finish_time for a in st.actions)


def _bookkeeping(i: Inputs, st: InstanceStatus) -> None:
    """Lock, unlock and power changes go to the history when first seen (they need no task)."""
    req = st.requests
    if req.locked is not None and req.locked != i.spec.locked:
        record(st, "lock" if i.spec.locked else "unlock", f"locked={str(i.spec.locked).lower()}", i.now,
               result="Success", message=i.spec.locked_reason if i.spec.locked else None)
    req.locked = i.spec.locked
    want = i.spec.power_state
    if req.power is not None and req.power != want.value and st.task is None and not (
            st.resize is not None and st.resize.finished_at is not None):
        old = PowerState(req.power)
        record(st, POWER_ACTIONS.get((old, want), f"power-{want.value.lower()}"), f"{old.value}->{want.value}",
               i.now)
        req.power = want.value


def _blocked_step(i: Inputs, st: InstanceStatus, b: Blocked) -> Step:
    if b.refused:
        return Step(NovaStatus.error, Progress.STALLED, b.reason, b.message, st, fault=Fault(code=b.code,
                    message=b.message), power_state="NOSTATE")
    return Step(NovaStatus.build, Progress.RECONCILING, b.reason, b.message, st, power_state="NOSTATE",
                wait_on=b.on)


def _boot(i: Inputs, st: InstanceStatus) -> Step:
    """First boot: wait for the Flavor and the Image, then a disk and a VirtualMachine."""
    if isinstance(i.flavor, Blocked):
        return _blocked_step(i, st, i.flavor)
    if isinstance(i.image, Blocked):
        return _blocked_step(i, st, i.image)
    if isinstance(i.guest, Blocked):
        return _blocked_step(i, st, i.guest)
    refusal = boot_refusal(i.flavor, i.image)
    if refusal:
        return _blocked_step(i, st, Blocked("FlavorTooSmall", refusal, refused=True))
    if i.children.dv is None and i.image.deactivated:
        return _blocked_step(i, st, Blocked("ImageDeactivated", f"Image {i.spec.image_ref} is deactivated: its "
                                            "data may not be used for new instances", refused=True, code=403))
    size = root_disk_gib(i.flavor, i.image)
    st.flavor = applied(i.spec.flavor_ref, i.flavor)
    st.image_ref, st.root_disk_gib = i.spec.image_ref or "", size  # "": booted from a volume, as Nova shows it
    st.image_checksum = i.image.sha512
    st.public_key = i.guest.keys[0] if i.guest is not None and i.guest.keys else None
    st.requests = ServedRequests(power=i.spec.power_state.value, locked=i.spec.locked,
                                 reboot=i.spec.reboot_request.token if i.spec.reboot_request else None,
                                 resize=i.spec.resize_request.token if i.spec.resize_request else None)
    if not any(a.action == "create" for a in st.actions):
        record(st, "create", i.spec.image_ref or "", i.now)
    step = _observe(i, st)
    if step.word is not NovaStatus.build:
        finish(st, "create", i.now, "Error" if step.word is NovaStatus.error else "Success",
               step.message if step.word is NovaStatus.error else None)
    return step


def _current_image(i: Inputs, st: InstanceStatus) -> ImageInfo | None:
    """The image of the instance's disk, to make the disk again from if it is missing."""
    image = i.disk_image if i.disk_image is not None else i.image if i.spec.image_ref == st.image_ref else None
    return image if isinstance(image, ImageInfo) and not image.deactivated else None


def _observe(i: Inputs, st: InstanceStatus) -> Step:
    """The steady state: the VirtualMachine runs with the applied flavor as spec.powerState asks, and the
    children say which of Nova's words fits. BUILD says the same all along (each change would be a write)."""
    assert st.flavor is not None
    ch, want = i.children, i.spec.power_state
    running = want in (PowerState.running, PowerState.paused)
    building = f"importing image {st.image_ref} into a {st.root_disk_gib} GiB root disk, then starting it" \
        if st.image_ref else "starting the virtual machine from its volume"
    base = {"status": st, "flavor": st.flavor, "running": running, "disk_gib": st.root_disk_gib or 0,
            "disk": _current_image(i, st)}
    failed = _failure(ch, st.fault.message if st.fault else None, i.now)
    if failed is not None:
        reason, message = failed
        finish(st, "create", i.now, "Error", message)
        return Step(NovaStatus.error, Progress.STALLED, reason, message, fault=Fault(code=500, message=message),
                    power_state="NOSTATE", **base)  # type: ignore[arg-type]
    booted = _built(st)
    if running:
        if ch.running and (booted or ch.ready):
            if want is PowerState.paused:
                if ch.paused:
                    finish(st, "create", i.now)
                    _finish_power(st, "pause", i.now)
                    return Step(NovaStatus.paused, Progress.READY, "Paused", "the instance is paused",
                                power_state="Paused", **base)  # type: ignore[arg-type]
                return Step(NovaStatus.active, Progress.RECONCILING, "Pausing", "pausing the virtual machine",
                            task_state="pausing", power_state="Running", call=("vmi", "pause"),
                            **base)  # type: ignore[arg-type]
            if ch.paused:
                return Step(NovaStatus.paused, Progress.RECONCILING, "Unpausing", "unpausing the virtual machine",
                            task_state="unpausing", power_state="Paused", call=("vmi", "unpause"),
                            **base)  # type: ignore[arg-type]
            if not ch.ready:  # the VMI runs; KubeVirt's VM status has not caught up yet
                return Step(NovaStatus.active, Progress.RECONCILING, "Starting", "the virtual machine is starting",
                            power_state="Running", **base)  # type: ignore[arg-type]
            for action in ("create", "start", "resume", "unpause"):
                _finish_power(st, action, i.now)
            return Step(NovaStatus.active, Progress.READY, "Active", "the instance is running",
                        power_state="Running", **base)  # type: ignore[arg-type]
        if not booted:
            return Step(NovaStatus.build, Progress.RECONCILING, "Spawning", building, power_state="NOSTATE",
                        task_state="spawning", **base)  # type: ignore[arg-type]
        resuming = _pending_power(st) == "resume"
        return Step(NovaStatus.suspended if resuming else NovaStatus.shutoff, Progress.RECONCILING,
                    "PoweringOn", "starting the virtual machine", task_state="resuming" if resuming else "powering-on",
                    power_state="Shutdown", **base)  # type: ignore[arg-type]
    suspended = want is PowerState.suspended
    if ch.halted and (ch.vm or {}).get("status", {}).get("printableStatus", "Stopped") in ("Stopped", ""):
        _finish_power(st, "suspend" if suspended else "stop", i.now)
        if not booted:
            finish(st, "create", i.now)
        return Step(NovaStatus.suspended if suspended else NovaStatus.shutoff, Progress.READY,
                    "Suspended" if suspended else "Shutoff",
                    "the instance is suspended" if suspended else "the instance is stopped",
                    power_state="Shutdown", **base)  # type: ignore[arg-type]
    if not booted and ch.vmi is None:
        return Step(NovaStatus.build, Progress.RECONCILING, "Spawning", building, power_state="NOSTATE",
                    task_state="spawning", **base)  # type: ignore[arg-type]
    return Step(NovaStatus.paused if ch.paused else NovaStatus.active, Progress.RECONCILING,
                "Suspending" if suspended else "PoweringOff",
                "suspending the virtual machine" if suspended else "stopping the virtual machine",
                task_state="suspending" if suspended else "powering-off", power_state="Running",
                **base)  # type: ignore[arg-type]


IMPORT_RESTARTS_FAULT = 3  # kubelet's back-off (10 s, 20 s, 40 s): about 70 s of failed imports on a real node
IMPORT_FAILED = "root disk import failed"


def import_failure(dv: Body | None, previous: str | None = None) -> str | None:
    """The fault of a root disk CDI cannot import: final (phase Failed: a checksum that does not match), or
    failed IMPORT_RESTARTS_FAULT times, which CDI keeps retrying (restartCount; the Running condition says
    why between attempts, and says "Pod is running" during one: the fault already given then stays). A
    retry that succeeds clears it."""
    status = (dv or {}).get("status") or {}
    cond: dict[str, Any] = next((c for c in status.get("conditions") or [] if c.get("type") == "Running"), {})
    said = f"{cond.get('reason') or 'Failed'}: {cond.get('message') or ''}".rstrip(": ")
    if status.get("phase") == "Failed":
        return f"{IMPORT_FAILED}: {said}"
    restarts = int(status.get("restartCount") or 0)
    if status.get("phase") == "Succeeded" or restarts < IMPORT_RESTARTS_FAULT:
        return None
    if cond.get("status") == "False" and cond.get("message"):
        return f"{IMPORT_FAILED} (CDI keeps retrying): {said}"
    if previous and previous.startswith(IMPORT_FAILED):
        return previous
    return f"{IMPORT_FAILED} {restarts} times (CDI keeps retrying)"


def _failure(ch: Children, previous: str | None = None, now: dt.datetime | None = None) -> tuple[str, str] | None:
    disk = import_failure(ch.dv, previous)
    if disk is not None:
        return "DiskImportFailed", disk
    vm_status = (ch.vm or {}).get("status", {})
    printable = vm_status.get("printableStatus", "")
    # Not DataVolumeError: virt-controller says it as soon as CDI's import failed once (the DataVolume's Running
    # condition, reason Error), and CDI retries it; the root disk's import rule above decides when it is a fault.
    # Nor ErrorPvcNotFound: a rebuild's new DataVolume has no claim for a moment, and Kova makes it itself.
    # KubeVirt keeps retrying a VMI whose launcher cannot be made (a NetworkAttachmentDefinition missing,
    # say) and says so only in a condition; Nova answers such a server with ERROR. It recovers by itself.
    # Only a missing network is a fault: other launch failures pass (a rebuild's disk is replaced under a VMI
    # for a moment) and KubeVirt retries them. It comes first: a launcher that cannot be made is never placed,
    # so virt-controller's own Unschedulable (said while the claim was missing) stands and would read as
    # NoValidHost.
    failed = launch_failed(ch.vm)
    if ch.missing_networks:  # KubeVirt's words, as for a network Kova refuses (no oracle)
        return ("NetworkNotFound", failed) if failed is not None else None
    if printable == "ErrorUnschedulable" and not _disk_made(ch):
        return None  # not the launcher's verdict yet: the scheduler retries a disk's pod once it sees its claim
    if printable == "ErrorUnschedulable" and now is not None and unschedulable_wait(ch, now) is not None:
        return None  # the scheduler retries first (a claim it has not seen bound yet, say): not a verdict yet
    if printable in ("ErrorUnschedulable", "CrashLoopBackOff", "ErrorImagePull", "ImagePullBackOff"):
        # The scheduler's words are on PodScheduled (mirrored from the VMI); Ready says only "Guest VM is not
        # reported as running" (pkg/virt-controller/watch/vm/vm.go).
        conds = sorted(vm_status.get("conditions") or [], key=lambda c: c.get("type") != "PodScheduled")
        detail = next((c.get("message") for c in conds if c.get("message")), "") or printable
        if printable == "ErrorUnschedulable":  # Nova's scheduler says it this way
            return "NoValidHost", f"No valid host was found. {detail}"
        return printable, f"{printable}: {detail}" if detail != printable else printable
    return None


# DataVolume phases past which the launcher pod is what the scheduler places: the disk is made, or waits for
# the launcher as its first consumer (a WaitForFirstConsumer StorageClass).
_DISK_MADE = ("Succeeded", "WaitForFirstConsumer", "PendingPopulation")
CDI_POD_PHASE = "cdi.kubevirt.io/storage.pod.phase"


def _disk_made(ch: Children) -> bool:
    """While the root disk is still being made, KubeVirt says ErrorUnschedulable for a moment (its claim not
    there yet, or CDI's importer placed before the scheduler saw the claim; both are retried): Nova's
    NoValidHost is the launcher's verdict only. Without its DataVolume (not seen yet, or collected after
    its import), the disk is made when CDI marked its claim's import Succeeded."""
    if ch.dv is not None:
        return (ch.dv.get("status") or {}).get("phase") in _DISK_MADE
    # CDI's own mark on the claim (a claim is Bound long before its import ends)
    return bool(((ch.pvc or {}).get("metadata") or {}).get("annotations", {}).get(CDI_POD_PHASE) == "Succeeded")


UNSCHEDULABLE_GRACE = 10.0  # seconds the scheduler's back-off takes to retry a pod (1 s doubling to 10 s)


def unschedulable_wait(ch: Children, now: dt.datetime) -> float | None:
    """Seconds until KubeVirt's ErrorUnschedulable counts as Nova's NoValidHost, or None if it does now (or
    the VM is not unschedulable). Kubernetes' scheduler retries an unschedulable pod, at once when what it
    waited for changes (a claim it saw unbound gets bound), and virt-controller says Unschedulable itself,
    without a time, while the root disk's claim does not exist yet (and keeps saying it while the launcher
    made later stays unplaced): a boot is often "unschedulable" for a moment, and Nova's NoValidHost is final.
    So the word must stand UNSCHEDULABLE_GRACE seconds past both its PodScheduled condition's time and the
    moment the disk was made (its DataVolume Ready)."""
    vm_status = (ch.vm or {}).get("status") or {}
    if vm_status.get("printableStatus") != "ErrorUnschedulable":
        return None
    cond: dict[str, Any] = next(
        (c for c in vm_status.get("conditions") or [] if c.get("type") == "PodScheduled"), {})
    ready: dict[str, Any] = next((c for c in ((ch.dv or {}).get("status") or {}).get("conditions") or []
                                  if c.get("type") == "Ready" and c.get("status") == "True"), {})
    stamps = [clock.parse(t) for t in (cond.get("lastTransitionTime"), ready.get("lastTransitionTime")) if t]
    if not stamps:
        return None
    left = UNSCHEDULABLE_GRACE - (now - max(stamps)).total_seconds()
    return left + 0.5 if left > 0 else None


def launch_failed(vm: Body | None) -> str | None:
    """KubeVirt's message when virt-controller cannot make the VMI's launcher pod: the Synchronized condition
    False with reason FailedCreate, mirrored from the VMI on the VM (pkg/virt-controller/watch/vmi)."""
    failed = next((c for c in ((vm or {}).get("status") or {}).get("conditions") or []
                   if c.get("reason") == "FailedCreate" and c.get("status") == "False"), None)
    if failed is None:
        return None
    return str(failed.get("message") or "KubeVirt cannot create the virtual machine's pod")


def _pending_power(st: InstanceStatus) -> str | None:
    return next((a.action for a in reversed(st.actions) if a.finish_time is None and a.action in
                 ("start", "stop", "pause", "unpause", "suspend", "resume")), None)


def _finish_power(st: InstanceStatus, action: str, now: dt.datetime) -> None:
    if action == "create" or _pending_power(st) == action:
        finish(st, action, now)


# ----- new requests: rebuild, resize, reboot -----
def _refuse(i: Inputs, st: InstanceStatus, action: str, request_id: str, reason: str, message: str,
            oneshot: bool = False) -> Step:
    """A request Nova would answer with 4xx: nothing changes; the history and an Event say why. The instance
    keeps running as it was. A refused change of the spec (a flavor, an image) is Stalled until the spec
    changes; a refused one-shot request (a reboot token) is over, and the instance stays Ready."""
    new = not any(a.action == action and a.request_id == request_id and a.result == "Error" for a in st.actions)
    if new:
        record(st, action, request_id, i.now, result="Error", message=message)
    step = _observe(i, st)
    if new:  # one Event per refusal, not one per reconcile while it stands
        step.warning = (reason, message)
    if not oneshot:
        step.progress, step.reason, step.message = Progress.STALLED, reason, message
    return step


def _vm_state(i: Inputs) -> str:
    """Nova's vm_state as the actions check it, from what the instance is now."""
    ch = i.children
    if _failure(ch, now=i.now):
        return "error"
    if ch.running:
        return "paused" if ch.paused else "active"
    return "suspended" if i.spec.power_state is PowerState.suspended else "stopped"


def _new_request(i: Inputs, st: InstanceStatus) -> Step | None:
    assert st.flavor is not None
    spec, req = i.spec, st.requests
    # Rebuild: a new image (a server booted from a volume has none, and its spec cannot name one).
    if spec.image_ref is not None and spec.image_ref != st.image_ref:
        state = _vm_state(i)
        if actions.wrong_state("rebuild", state):
            return _refuse(i, st, "rebuild", spec.image_ref, "RebuildRefused",
                           f"Cannot 'rebuild' instance while it is in vm_state {state}")
        if isinstance(i.image, Blocked):
            if i.image.refused:
                return _refuse(i, st, "rebuild", spec.image_ref, i.image.reason, i.image.message)
            return _waiting(i, st, i.image)
        refusal = boot_refusal(st.flavor, i.image) or (
            f"Image {spec.image_ref} is deactivated: its data may not be used" if i.image.deactivated else None)
        if refusal:
            return _refuse(i, st, "rebuild", spec.image_ref, "RebuildRefused", refusal)
        record(st, "rebuild", spec.image_ref, i.now)
        st.task = Task(action="rebuild", request_id=spec.image_ref, step="stopping")
        return _continue(i, st, st.task)
    # Resize: a new flavor (a flavorRef a Revert request undid stays undone until it changes).
    if spec.flavor_ref not in (st.flavor.name, req.reverted_flavor):
        req.reverted_flavor = None
        state = _vm_state(i)
        if actions.wrong_state("resize", state):
            return _refuse(i, st, "resize", spec.flavor_ref, "ResizeRefused",
                           f"Cannot 'resize' instance while it is in vm_state {state}")
        if isinstance(i.flavor, Blocked):
            if i.flavor.refused:
                return _refuse(i, st, "resize", spec.flavor_ref, i.flavor.reason, i.flavor.message)
            return _waiting(i, st, i.flavor)
        image = i.disk_image if i.disk_image is not None else i.image
        if isinstance(image, ImageInfo):
            refusal = boot_refusal(i.flavor, image)
            if refusal:
                return _refuse(i, st, "resize", spec.flavor_ref, "FlavorTooSmall", refusal)
            new_size = root_disk_gib(i.flavor, image)
        else:
            new_size = max(i.flavor.disk, 1)
        current = max(st.root_disk_gib or 0, i.children.disk_gib or 0)
        shrink = shrink_refusal(spec.flavor_ref, i.flavor, current)
        if shrink:
            return _refuse(i, st, "resize", spec.flavor_ref, "ResizeDiskShrink", shrink)
        record(st, "resize", spec.flavor_ref, i.now)
        st.resize = ResizeState(old_flavor=st.flavor, new_flavor=spec.flavor_ref)
        st.task = Task(action="resize", request_id=spec.flavor_ref, step="grow" if new_size > current else "apply")
        st.root_disk_gib = max(current, new_size)
        return _continue(i, st, st.task)
    req.reverted_flavor = req.reverted_flavor if spec.flavor_ref == req.reverted_flavor else None
    # Resize answers with nothing to answer.
    if spec.resize_request and spec.resize_request.token != req.resize:
        req.resize = spec.resize_request.token
        name = "confirmResize" if spec.resize_request.action is ResizeAction.confirm else "revertResize"
        return _refuse(i, st, name, spec.resize_request.token, "NoResizeToAnswer",
                       f"Cannot '{name}' instance: it is not in VERIFY_RESIZE (no resize waits for an answer)",
                       oneshot=True)
    # Reboot.
    reboot = spec.reboot_request
    if reboot and reboot.token != req.reboot:
        req.reboot = reboot.token
        state, hard = _vm_state(i), reboot.type is RebootType.hard
        if actions.wrong_state("reboot-hard" if hard else "reboot", state):
            return _refuse(i, st, "reboot", reboot.token, "RebootRefused",
                           f"Cannot 'reboot' instance while it is in vm_state {state}"
                           + ("" if hard else " (a SOFT reboot needs an active instance)"), oneshot=True)
        record(st, "reboot", reboot.token, i.now, message=reboot.type.value)
        st.task = Task(action="reboot", request_id=reboot.token, step="call", hard=hard)
        return _continue(i, st, st.task)
    return None


def _waiting(i: Inputs, st: InstanceStatus, b: Blocked) -> Step:
    step = _observe(i, st)
    if step.progress is Progress.READY:
        step.progress, step.reason, step.message = Progress.RECONCILING, b.reason, b.message
    step.wait_on = b.on
    return step


# ----- tasks under way -----
def _continue(i: Inputs, st: InstanceStatus, task: Task) -> Step:
    if task.action == "reboot":
        return _reboot(i, st, task)
    if task.action in ("resize", "revertResize"):
        return _resize(i, st, task)
    if task.action == "rebuild":
        return _rebuild(i, st, task)
    st.task = None  # an action this version does not know: drop it rather than hang
    return _steady(i, st)


def _done(i: Inputs, st: InstanceStatus, action: str, result: str = "Success", message: str | None = None) -> Step:
    st.task = None
    finish(st, action, i.now, result, message)
    step = _steady(i, st)
    if result != "Success" and message:
        step.warning = (f"{action[0].upper()}{action[1:]}Failed", message)
    return step


def _reboot(i: Inputs, st: InstanceStatus, task: Task) -> Step:
    assert st.flavor is not None
    ch = i.children
    word = NovaStatus.hard_reboot if task.hard else NovaStatus.reboot
    base = {"status": st, "flavor": st.flavor, "running": True, "disk_gib": st.root_disk_gib or 0,
            "power_state": "Running"}
    if task.step == "call":
        # Wrote REBOOT first (this step); the next one asks KubeVirt and says what came of it.
        task.step = "calling"
        task.replaces_vmi = ch.vmi_uid
        return Step(word, Progress.RECONCILING, "Rebooting", f"{'hard' if task.hard else 'soft'} reboot requested",
                    task_state="rebooting_hard" if task.hard else "reboot_started", again=True,
                    **base)  # type: ignore[arg-type]
    if task.step == "calling":
        after = st.model_copy(deep=True)
        if task.hard:
            assert after.task is not None
            after.task.step = "restarting"
        else:
            after.task = None
            finish(after, "reboot", i.now)
        return Step(word, Progress.RECONCILING, "Rebooting", "rebooting the virtual machine",
                    task_state="rebooting_hard" if task.hard else "rebooting",
                    call=("vm", "restart") if task.hard else ("vmi", "softreboot"), called=after,
                    again=not task.hard, **base)  # type: ignore[arg-type]
    # A hard reboot: done once another VMI than the one it replaced is ready.
    if ch.ready and ch.vmi_uid != task.replaces_vmi:
        return _done(i, st, "reboot")
    return Step(word, Progress.RECONCILING, "Rebooting", "restarting the virtual machine",
                task_state="rebooting_hard", **base)  # type: ignore[arg-type]


def _resize(i: Inputs, st: InstanceStatus, task: Task) -> Step:
    """RESIZE: grow the disk, apply the new flavor, restart a running VM with it; then VERIFY_RESIZE.
    REVERT_RESIZE: apply the old flavor, restart a running VM; then ACTIVE with the old flavor."""
    assert st.flavor is not None and st.resize is not None
    ch, reverting = i.children, task.action == "revertResize"
    running = i.spec.power_state in (PowerState.running, PowerState.paused)
    word = NovaStatus.revert_resize if reverting else NovaStatus.resize
    if reverting:
        target: AppliedFlavor = st.resize.old_flavor
    else:
        if isinstance(i.flavor, Blocked) or i.spec.flavor_ref != task.request_id:
            # The new flavor went away, or flavorRef changed again mid-way: back to the old one.
            return _revert_now(i, st, task)
        target = applied(task.request_id, i.flavor)
    base = {"status": st, "running": running, "disk_gib": st.root_disk_gib or 0,
            "power_state": "Running" if ch.running else "Shutdown"}
    if task.step == "grow":
        size = st.root_disk_gib or 0
        if (ch.disk_gib or 0) >= size:
            task.step = "apply"
            return _resize(i, st, task)
        return Step(word, Progress.RECONCILING, "Resizing", f"growing the root disk to {size} GiB",
                    task_state="resize_migrating", flavor=st.flavor, grow_disk=size,
                    **base)  # type: ignore[arg-type]
    if task.step == "apply":
        task.step = "restart" if ch.running else "wait"
        task.replaces_vmi = ch.vmi_uid
        return Step(word, Progress.RECONCILING, "Resizing", f"applying flavor {target.name}",
                    task_state="resize_reverting" if reverting else "resize_migrated", flavor=target, again=True,
                    **base)  # type: ignore[arg-type]
    if task.step == "restart":
        after = st.model_copy(deep=True)
        assert after.task is not None
        after.task.step = "wait"
        return Step(word, Progress.RECONCILING, "Resizing", f"restarting the virtual machine with flavor "
                    f"{target.name}", task_state="resize_reverting" if reverting else "resize_finish",
                    flavor=target, call=("vm", "restart"), called=after, **base)  # type: ignore[arg-type]
    # wait: a running instance comes back on a new VMI; a stopped one has nothing to wait for.
    if running and not (ch.ready and ch.vmi_uid != task.replaces_vmi) and not (
            ch.running and ch.paused and ch.vmi_uid != task.replaces_vmi):
        return Step(word, Progress.RECONCILING, "Resizing", f"waiting for the virtual machine to run with flavor "
                    f"{target.name}", task_state="resize_reverting" if reverting else "resize_finish",
                    flavor=target, **base)  # type: ignore[arg-type]
    st.flavor = target
    st.task = None
    if reverting:
        st.resize = None
        finish(st, "revertResize", i.now)
        return _steady(i, st)
    st.resize.finished_at = clock.text(i.now)
    finish(st, "resize", i.now)
    return _verify_resize(i, st, st.resize)


def _revert_now(i: Inputs, st: InstanceStatus, task: Task) -> Step:
    assert st.resize is not None
    finish(st, "resize", i.now, "Error", f"flavor {task.request_id} is no longer wanted or usable; reverting")
    record(st, "revertResize", task.request_id, i.now)
    st.task = Task(action="revertResize", request_id=task.request_id, step="apply")
    return _resize(i, st, st.task)


def _verify_resize(i: Inputs, st: InstanceStatus, resize: ResizeState) -> Step:
    assert st.flavor is not None
    spec, req = i.spec, st.requests
    answer = spec.resize_request if spec.resize_request and spec.resize_request.token != req.resize else None
    revert = spec.flavor_ref == resize.old_flavor.name or (answer is not None and answer.action is ResizeAction.revert)
    finished = clock.parse(resize.finished_at or clock.text(i.now))
    expired = i.confirm_window > 0 and (i.now - finished).total_seconds() >= i.confirm_window
    if answer is not None:
        req.resize = answer.token
    if revert:
        record(st, "revertResize", answer.token if answer else spec.flavor_ref, i.now)
        if spec.flavor_ref != resize.old_flavor.name:
            req.reverted_flavor = spec.flavor_ref  # reverted by request: flavorRef still names the new one
        st.task = Task(action="revertResize", request_id=resize.new_flavor, step="apply")
        return _resize(i, st, st.task)
    if answer is not None or expired:
        record(st, "confirmResize", answer.token if answer else "auto-confirm", i.now, result="Success",
               message=None if answer else f"confirmed after the {i.confirm_window:.0f} s confirm window")
        st.resize = None
        return _steady(i, st)
    step = _observe(i, st)
    if i.confirm_window > 0:
        step.wake_after = max(0.0, i.confirm_window - (i.now - finished).total_seconds()) + 0.5
    if step.word in (NovaStatus.active, NovaStatus.shutoff):
        step.word, step.reason = NovaStatus.verify_resize, "VerifyResize"
        step.message = (f"resized to {st.flavor.name}: confirm or revert it (spec.resizeRequest), or set flavorRef "
                        f"back to {resize.old_flavor.name} to revert"
                        + (f"; confirmed automatically {i.confirm_window:.0f} s after it finished"
                           if i.confirm_window > 0 else ""))
    if spec.flavor_ref not in (resize.new_flavor, resize.old_flavor.name):
        step.progress, step.reason = Progress.STALLED, "ResizeRefused"
        step.message = (f"Cannot 'resize' instance while it is in vm_state resized: confirm or revert the resize "
                        f"to {resize.new_flavor} first")
    return step


def _rebuild(i: Inputs, st: InstanceStatus, task: Task) -> Step:
    """REBUILD: stop, drop the old root disk, make a new one from the new image, start as before."""
    assert st.flavor is not None
    ch = i.children
    base = {"status": st, "flavor": st.flavor, "disk_gib": st.root_disk_gib or 0}
    image = i.image if i.spec.image_ref == task.request_id else None
    if not isinstance(image, ImageInfo):
        # The image went away meanwhile, or imageRef changed again: a rebuild of the disk still to do.
        if image is None and i.spec.image_ref != task.request_id:
            task.request_id = i.spec.image_ref or ""
            return _rebuild(i, st, task)
        blocked = image if isinstance(image, Blocked) else Blocked("WaitingForImage", "waiting for the image")
        return Step(NovaStatus.rebuild, Progress.RECONCILING, blocked.reason, blocked.message, running=False,
                    task_state="rebuilding", power_state="Shutdown", wait_on=blocked.on,
                    **base)  # type: ignore[arg-type]
    if task.step == "stopping":
        if ch.vmi is not None:
            return Step(NovaStatus.rebuild, Progress.RECONCILING, "Rebuilding", "stopping the virtual machine",
                        running=False, task_state="rebuilding", power_state="Running",
                        **base)  # type: ignore[arg-type]
        task.step = "disk"
    if task.step == "disk":
        if ch.dv is not None and ch.disk_image != image.uid:
            return Step(NovaStatus.rebuild, Progress.RECONCILING, "Rebuilding", "removing the old root disk",
                        running=False, delete_disk=True, task_state="rebuild_block_device_mapping",
                        power_state="Shutdown", **base)  # type: ignore[arg-type]
        size = max(root_disk_gib(st.flavor, image), st.root_disk_gib or 0)
        st.root_disk_gib, st.image_checksum = size, image.sha512
        # The key the new disk boots with is copied now, as at boot: a rebuild may name another one.
        st.public_key = i.guest.keys[0] if isinstance(i.guest, Guest) and i.guest.keys else None
        task.step = "spawning"
        return Step(NovaStatus.rebuild, Progress.RECONCILING, "Rebuilding", f"making a new {size} GiB root disk "
                    f"from image {image.ref}", running=False, disk=image, task_state="rebuild_spawning",
                    power_state="Shutdown", again=True, **{**base, "disk_gib": size})  # type: ignore[arg-type]
    # spawning: the new disk imports, the VM starts as spec.powerState wants.
    step = _observe(i, st)
    if step.progress is not Progress.RECONCILING:
        st.image_ref = task.request_id
        if step.progress is Progress.READY:
            return _done(i, st, "rebuild")
        return _done(i, st, "rebuild", "Error", step.message)
    # Started once the new disk has its claim: until then virt-controller may still see the old DataVolume
    # (Succeeded) and launch a pod on the old claim, which is going away (the scheduler: Unschedulable).
    return Step(NovaStatus.rebuild, Progress.RECONCILING, "Rebuilding", f"importing image {image.ref} and starting "
                "the virtual machine", running=step.running and ch.disk_claimed, disk=image,
                task_state="rebuild_spawning",
                power_state=step.power_state, **base)  # type: ignore[arg-type]


def _snapshot(i: Inputs, st: InstanceStatus) -> Step:
    """createImage: KubeVirt exports a volume only while no VMI uses it, so the instance is stopped for the
    copy (Nova's cold snapshot) and started again once the Image has its data."""
    step = _steady(i, st)
    step.running = False
    step.task_state = "image_uploading" if i.snapshot_uploading else "image_pending_upload"
    step.progress, step.reason = Progress.RECONCILING, "Snapshotting"
    step.message = f"taking a snapshot into Image {', '.join(sorted(i.snapshots))}"
    step.word = _word_for(i.spec.power_state)
    return step


def _word_for(power: PowerState) -> NovaStatus:
    return {PowerState.running: NovaStatus.active, PowerState.paused: NovaStatus.paused,
            PowerState.stopped: NovaStatus.shutoff, PowerState.suspended: NovaStatus.suspended}[power]


def _steady(i: Inputs, st: InstanceStatus) -> Step:
    step = _observe(i, st)
    if step.progress is Progress.READY and i.spec.resize_request is None and step.word is NovaStatus.active:
        step.message = "the instance is running"
    return step
