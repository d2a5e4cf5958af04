"""Instance: Nova's server over a KubeVirt VirtualMachine and a CDI DataVolume, through its whole life.

Functional core, imperative shell: `reconcile` gathers what the watches already delivered (`Caches`), asks
kova.compute.server for the whole plan (pure), and carries it out: DataVolumes deleted, the namespace's
default security group made, the VirtualMachine applied when its desired spec is not already there (a
hand-edit is put back), missing DataVolumes created once, the claim grown, at most one KubeVirt action
through virt-api, and the status written when a user would see a change (kova.adapters.writes). A reconcile
of an Instance whose world did not change makes no API call at all. It runs on the Instance's changes, on
every change of a child, when a snapshot of it starts or ends, and, for an Instance that waits, when what
it waits for changes.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from kova.adapters import metrics
from kova.adapters.kube import Refused
from kova.adapters.runtime import Runtime
from kova.adapters.status import publish
from kova.api.resources import (
    DATA_VOLUMES,
    INSTANCES,
    NETWORK_ATTACHMENT_DEFINITIONS,
    NETWORK_POLICIES,
    SECURITY_GROUPS,
    VIRTUAL_MACHINE_INSTANCES,
    VIRTUAL_MACHINES,
)
from kova.compute import access, attachments, children, guest, lifecycle, server
from kova.compute.guest import DEFAULT_GROUP
from kova.compute.lifecycle import Blocked
from kova.compute.server import Lookup as Cache
from kova.compute.server import Zones
from kova.controllers import imagecache
from kova.image import cache as image_cache


@dataclass
class Caches:
    """What the watches delivered, keyed (namespace, name), or (name,) for Flavors."""

    flavors: Cache
    images: Cache
    instances: Cache
    datavolumes: Cache
    vms: Cache
    vmis: Cache
    pvcs: Cache
    keypairs: Cache
    servergroups: Cache
    zones: Zones
    securitygroups: Cache = field(default_factory=dict[tuple[str, ...], dict[str, Any]])  # metadata: which exist
    cache_waited: set[tuple[str, str]] = field(default_factory=set)  # Instances that waited for the image cache
    storageclasses: Zones | None = None  # which class root disks get (the default one), for the image cache
    volumes: Cache = field(default_factory=dict[tuple[str, ...], dict[str, Any]])  # Volumes it attaches
    # Instance snapshots under way: (namespace, instance) → names of the Images being made from it.
    snapshots: dict[tuple[str, str], set[str]] = field(default_factory=dict)
    wake: Callable[[tuple[str, str], float], None] | None = None  # reconcile an Instance after some seconds
    # Which Instances wait for which Flavor, Image, KeyPair, ServerGroup, SecurityGroup or zone: that object's
    # next event wakes them.
    waiting: dict[tuple[str, ...], set[tuple[str, str]]] = field(default_factory=dict)
    # Whether an Instance (with its newest status) is over its namespace's quota (kova.controllers.quota).
    quota: Callable[[dict[str, Any], dict[str, Any]], Blocked | None] | None = None

    def wait_for(self, what: tuple[str, ...], namespace: str, name: str) -> None:
        self.waiting.setdefault(what, set()).add((namespace, name))

    def forget(self, namespace: str, name: str) -> None:
        """A deleted Instance waits for nothing."""
        for key in [k for k, v in self.waiting.items() if (namespace, name) in v]:
            self.waiting[key].discard((namespace, name))
            if not self.waiting[key]:
                del self.waiting[key]

    def waiters(self, what: tuple[str, ...]) -> set[tuple[str, str]]:
        """The Instances that wait for `what`, forgotten here: a reconcile that still waits says so again."""
        return self.waiting.pop(what, set())


MAX_STEPS = 8  # steps of one action carried out in a row (each writes its task before it acts)


async def reconcile(rt: Runtime, caches: Caches, namespace: str, name: str) -> None:
    async with rt.lock("instance", namespace, name):
        for _ in range(MAX_STEPS):
            inst = caches.instances.get((namespace, name))
            if inst is None or inst["metadata"].get("deletionTimestamp"):
                return
            if not await _step(rt, caches, inst):
                return


async def _missing_networks(rt: Runtime, vm: dict[str, Any] | None) -> tuple[str, ...]:
    """Only while KubeVirt cannot make or place the launcher pod: which of the VM's networks do not exist (a
    launcher that cannot be made keeps virt-controller's own Unschedulable, which must not read as NoValidHost)."""
    if vm is None or (lifecycle.launch_failed(vm) is None
                      and (vm.get("status") or {}).get("printableStatus") != "ErrorUnschedulable"):
        return ()
    return tuple([f"{ns}/{name}" for ns, name in guest.multus_networks(vm)
                  if await rt.kube.get(NETWORK_ATTACHMENT_DEFINITIONS, name, ns) is None])


async def _step(rt: Runtime, caches: Caches, inst: dict[str, Any]) -> bool:
    """One step of the life cycle: plan it, carry it out, write the status. True: decide again at once."""
    md = inst["metadata"]
    namespace, name = md["namespace"], md["name"]
    status = rt.writes.last_status(inst)
    plan = server.plan(server.World(
        instance=inst, status=status, flavors=caches.flavors, images=caches.images,
        datavolumes=caches.datavolumes, pvcs=caches.pvcs, vms=caches.vms, vmis=caches.vmis,
        keypairs=caches.keypairs, servergroups=caches.servergroups, zones=caches.zones,
        securitygroups=caches.securitygroups,
        snapshots=caches.snapshots.get((namespace, name), set()), presign_ttl=rt.settings.presign_ttl,
        shared_networks=rt.settings.shared_networks,
        confirm_window=rt.settings.resize_confirm_window,
        quota=caches.quota(inst, status) if caches.quota is not None else None,
        missing_networks=await _missing_networks(rt, caches.vms.get((namespace, name))),
        cache=rt.settings.image_cache, volumes=caches.volumes,
        storage_class=image_cache.default_class(caches.storageclasses.objects()) if caches.storageclasses else None))
    step = plan.step
    for what in ([step.wait_on] if step.wait_on else []) + plan.volumes.wait_on:
        caches.wait_for(what, namespace, name)
    if step.wake_after is not None and caches.wake is not None:
        caches.wake((namespace, name), step.wake_after)
    for child, uid in plan.delete:
        rt.writes.forget(DATA_VOLUMES, namespace, child)
        await rt.kube.delete(DATA_VOLUMES, child, namespace, uid=uid)
    if plan.default_group:
        await _default_group(rt, namespace)
    if plan.vm is not None:
        # The VirtualMachine first: it is what a user waits for, and KubeVirt holds it until its DataVolume is.
        await rt.writes.ensure(VIRTUAL_MACHINES, plan.vm, plan.children.vm,
                               stale=attachments.unwanted(plan.children.vm, plan.vm))
    if plan.entry is not None:
        await imagecache.ensure_entry(rt, inst, plan.entry)
        if plan.entry.state.state in (image_cache.State.missing, image_cache.State.filling):
            caches.cache_waited.add((namespace, name))
    for disk in plan.disks:
        if rt.writes.created(DATA_VOLUMES, namespace, disk.name):
            continue
        # Signing is local work (the signer's region is fixed, so minio asks the store nothing), from the store
        # the Image's status names first: no store is asked where the data is.
        url = rt.store.presigned_get(disk.image.uid, rt.settings.presign_ttl, disk.image.stores) \
            if disk.from_image and disk.clone is None else None
        await rt.writes.create(DATA_VOLUMES, children.build_data_volume(
            inst, url, disk.image.sha512, disk.gib, disk.image.uid, name=disk.name, clone=disk.clone))
        if disk.clone is not None:
            metrics.CACHE_LOOKUPS.labels("miss" if (namespace, name) in caches.cache_waited else "hit").inc()
            caches.cache_waited.discard((namespace, name))
            await imagecache.used(rt, disk.clone)
    if plan.grow is not None:
        await rt.kube.resize_claim(children.data_volume_name(name), namespace, plan.grow)
    if step.call is not None:
        plan.step = await _call(rt, inst, plan.children, step)
    step, fields = server.report(plan)
    await publish(rt, INSTANCES, inst, word=step.word.value, progress=step.progress, reason=step.reason,
                  message=step.message, fields=fields)
    for reason, message in ([step.warning] if step.warning else []) + plan.volumes.refused:
        rt.event(inst, type="Warning", reason=reason, message=message)
    return step.again


async def _call(rt: Runtime, inst: dict[str, Any], kids: lifecycle.Children, step: lifecycle.Step) -> lifecycle.Step:
    """One KubeVirt action through virt-api. pause/unpause are asked once per VMI until the VMI shows it (the
    watch lags behind the answer); a refusal ends the action it served, with virt-api's reason."""
    assert step.call is not None
    kind, action = step.call
    md = inst["metadata"]
    res = VIRTUAL_MACHINE_INSTANCES if kind == "vmi" else VIRTUAL_MACHINES
    once = (md["namespace"], md["name"])
    if action in ("pause", "unpause") and rt.writes.last_call.get(once) == (action, kids.vmi_uid):
        return step
    try:
        await rt.kube.put_subresource(res, md["name"], md["namespace"], action)
    except Refused as e:
        if action in ("pause", "unpause") and e.status == 409:
            return step  # already so: the VMI's next event shows it
        return lifecycle.call_refused(step, f"KubeVirt refused {action} (HTTP {e.status}): {e}")
    if action in ("pause", "unpause"):
        rt.writes.last_call[once] = (action, kids.vmi_uid)
    if step.called is not None:
        step.status = step.called
    return step


async def _default_group(rt: Runtime, namespace: str) -> None:
    """Neutron's `default` group, for Instances that name none: made once per namespace and process, and
    only when no SecurityGroup of that name says otherwise."""
    if namespace in rt.default_groups:
        return
    if await rt.kube.get(SECURITY_GROUPS, DEFAULT_GROUP, namespace) is None:
        await rt.writes.ensure(NETWORK_POLICIES, access.default_group_policy(namespace), None)
    rt.default_groups.add(namespace)
