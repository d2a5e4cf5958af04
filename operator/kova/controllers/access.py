"""KeyPair, SecurityGroup, ServerGroup and AvailabilityZone: the objects around an Instance.

- KeyPair: an imported key gets its fingerprint; a generated one is made here, its private key written
  once into a Secret the user owns (Kova never reads it back), its public key and fingerprint in status.
- SecurityGroup: one NetworkPolicy per group, owned by it (kova.compute.access); the namespace's `default`
  group is Neutron's, made when its first Instance boots, unless a SecurityGroup of that name exists. The
  deletion of a group that Instances name is held (Kova's finalizer) until none does: Neutron's 409 "in use".
- ServerGroup: its members in status.
- AvailabilityZone: one object per zone label value on the nodes, kept from the nodes' watch.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import kopf

from kova.adapters.runtime import Runtime
from kova.adapters.status import publish
from kova.api.conditions import Progress
from kova.api.errors import Refusal
from kova.api.models import KeyPairSpec
from kova.api.resources import (
    AVAILABILITY_ZONES,
    KEYPAIRS,
    MANAGED_BY,
    NETWORK_POLICIES,
    SECURITY_GROUPS,
    SERVER_GROUPS,
)
from kova.compute import access


async def reconcile_keypair(rt: Runtime, namespace: str, name: str) -> None:
    async with rt.lock("keypair", namespace, name):
        obj = await rt.kube.get(KEYPAIRS, name, namespace)
        if obj is None or obj["metadata"].get("deletionTimestamp"):
            return
        status = obj.get("status") or {}
        if status.get("fingerprint"):
            await publish(rt, KEYPAIRS, obj, word=None, progress=Progress.READY, reason="Ready",
                          message=f"fingerprint {status['fingerprint']}")
            return  # a KeyPair is immutable: done once
        spec = KeyPairSpec.model_validate(obj.get("spec") or {})
        if spec.public_key:
            try:
                fp = access.fingerprint(spec.public_key)
            except ValueError as e:
                await publish(rt, KEYPAIRS, obj, word=None, progress=Progress.STALLED, reason="InvalidPublicKey",
                              message=str(e))
                return
            await publish(rt, KEYPAIRS, obj, word=None, progress=Progress.READY, reason="Imported",
                          message=f"fingerprint {fp}", fields={"fingerprint": fp, "publicKey": spec.public_key.strip()})
            return
        secret = spec.private_key_secret or f"{name}-private-key"
        public, private = access.generate(f"{name}@{namespace}")
        created = await rt.kube.create_secret({
            "apiVersion": "v1", "kind": "Secret", "type": "kubernetes.io/ssh-auth",
            "metadata": {"name": secret, "namespace": namespace,
                         "labels": {**MANAGED_BY, "compute.kova.dev/keypair": name}},
            "stringData": {"ssh-privatekey": private, "ssh-publickey": public}})
        if not created:
            await publish(rt, KEYPAIRS, obj, word=None, progress=Progress.STALLED, reason="SecretExists",
                          message=f"Secret {secret} exists already: Kova does not overwrite it (nor read it). Delete "
                                  "it, or name another in spec.privateKeySecret, to get a new key")
            return
        fp = access.fingerprint(public)
        await publish(rt, KEYPAIRS, obj, word=None, progress=Progress.READY, reason="Generated",
                      message=f"fingerprint {fp}; the private key is in Secret {secret} (key ssh-privatekey)",
                      fields={"fingerprint": fp, "publicKey": public, "privateKeySecret": secret})


async def reconcile_security_group(rt: Runtime, namespace: str, name: str) -> None:
    async with rt.lock("securitygroup", namespace, name):
        obj = await rt.kube.get(SECURITY_GROUPS, name, namespace)
        if obj is None or obj["metadata"].get("deletionTimestamp"):
            return
        policy, notes, refusal = access.security_group(obj)
        await rt.writes.ensure(NETWORK_POLICIES, policy, None)
        if refusal is not None:
            await publish(rt, SECURITY_GROUPS, obj, word=None, progress=Progress.STALLED, reason=refusal.reason,
                          message=refusal.message, fields={"networkPolicy": policy["metadata"]["name"], "notes": []})
            return
        await publish(rt, SECURITY_GROUPS, obj, word=None, progress=Progress.READY, reason="Enforced",
                      message=f"NetworkPolicy {policy['metadata']['name']} selects its Instances"
                              + (f"; {len(notes)} note(s)" if notes else ""),
                      fields={"networkPolicy": policy["metadata"]["name"], "notes": notes})


HOLD_SECONDS = 60.0  # a held deletion is handed back to Kopf this often (its retry costs one touch PATCH)


@dataclass
class GroupDeletions:
    """SecurityGroup deletions held while Instances name the group. Each held deletion's handler waits here
    and is woken by any change of an Instance of its namespace (kova.controllers.wiring), then looks again."""

    users: Callable[[str, str], list[str]]  # (namespace, group) → the Instances that name it, from the cache
    woken: dict[tuple[str, str], asyncio.Event] = field(default_factory=dict)

    def instance_changed(self, namespace: str) -> None:
        for (ns, _), event in self.woken.items():
            if ns == namespace:
                event.set()


async def delete_security_group(rt: Runtime, deletions: GroupDeletions, namespace: str, name: str) -> None:
    """Kova's finalizer on a SecurityGroup: returns (the deletion completes) once no Instance names the group,
    having deleted its NetworkPolicy. Until then the group says why it stays, its NetworkPolicy keeps protecting
    the members, and after HOLD_SECONDS the handler raises kopf.TemporaryError, so that Kopf keeps the finalizer
    and calls it again."""
    key, shown = (namespace, name), None
    deadline = asyncio.get_running_loop().time() + HOLD_SECONDS
    try:
        while True:
            # Armed before the users are counted (nothing awaits in between): a change after it wakes the wait.
            woken = deletions.woken[key] = asyncio.Event()
            users = deletions.users(namespace, name)
            refusal = access.in_use(name, users)
            if refusal is None:
                # Its policy goes with it at once, not when the garbage collector gets to it (tens of seconds
                # after an owner that had a finalizer, on the local cloud).
                policy = access.policy_name(name)
                rt.writes.forget(NETWORK_POLICIES, namespace, policy)
                await rt.kube.delete(NETWORK_POLICIES, policy, namespace)
                return
            if users != shown:
                await _hold(rt, namespace, name, refusal)
                shown = users
            try:
                async with asyncio.timeout_at(deadline):
                    await woken.wait()
            except TimeoutError:
                raise kopf.TemporaryError(refusal.message, delay=1) from None
    finally:
        deletions.woken.pop(key, None)


async def _hold(rt: Runtime, namespace: str, name: str, refusal: Refusal) -> None:
    """A held group says so (a Warning Event the first time) and keeps its NetworkPolicy as its rules say:
    Kopf calls no update handler on an object being deleted."""
    async with rt.lock("securitygroup", namespace, name):
        obj = await rt.kube.get(SECURITY_GROUPS, name, namespace)
        if obj is None:
            return
        policy, notes, _ = access.security_group(obj)
        await rt.writes.ensure(NETWORK_POLICIES, policy, None)
        await publish(rt, SECURITY_GROUPS, obj, word=None, progress=Progress.STALLED, reason=refusal.reason,
                      message=refusal.message, fields={"networkPolicy": policy["metadata"]["name"], "notes": notes})


async def reconcile_server_group(rt: Runtime, namespace: str, name: str, members: list[str]) -> None:
    async with rt.lock("servergroup", namespace, name):
        obj = await rt.kube.get(SERVER_GROUPS, name, namespace)
        if obj is None or obj["metadata"].get("deletionTimestamp"):
            return
        policy = (obj.get("spec") or {}).get("policy")
        await publish(rt, SERVER_GROUPS, obj, word=None, progress=Progress.READY, reason="Ready",
                      message=f"{len(members)} member(s), policy {policy}", fields={"members": sorted(members)})


async def reconcile_zones(rt: Runtime, nodes: list[dict[str, Any]], existing: list[dict[str, Any]]) -> None:
    """AvailabilityZone objects follow the nodes' zone labels: one per zone, gone with its last node."""
    wanted = access.zones(nodes)
    for zone, (hosts, available) in wanted.items():
        current = next((z for z in existing if z["metadata"]["name"] == zone), None)
        if current is None:
            current = await rt.kube.apply(AVAILABILITY_ZONES, {
                "apiVersion": AVAILABILITY_ZONES.api_version, "kind": "AvailabilityZone",
                "metadata": {"name": zone, "labels": dict(MANAGED_BY)}, "spec": {}}) or await rt.kube.get(
                AVAILABILITY_ZONES, zone)
            if current is None:
                continue
        await publish(rt, AVAILABILITY_ZONES, current, word=None,
                      progress=Progress.READY if available else Progress.STALLED,
                      reason="Available" if available else "NoReadyHost",
                      message=f"{len(hosts)} host(s)" + ("" if available else ", none Ready and schedulable"),
                      fields={"hosts": hosts, "available": available})
    for obj in existing:
        if obj["metadata"]["name"] not in wanted and (obj["metadata"].get("labels") or {}).items() >= \
                MANAGED_BY.items():
            await rt.kube.delete(AVAILABILITY_ZONES, obj["metadata"]["name"], None)
