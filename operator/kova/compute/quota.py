"""Nova's quotas of a project (a namespace), as pure functions: what its Instances use, and which of them
are over quota, with Nova's words.

Nova claims quota when a server is created and refuses the request (403) when it does not fit. Kova's
Instances are created by the API server, which counts them (a ResourceQuota Kova keeps refuses the 11th);
what it cannot count, cores, RAM and members of a server group, is decided here, before any child exists.
The decision must not depend on which Instance happens to reconcile first, or two Instances created at
once would both fit. So it is made for the whole namespace at once, in a fixed order: the booted
Instances hold what their flavor as applied (status.flavor) uses, whatever the limits are now; then the
others, oldest first (creationTimestamp, then name), are admitted while they fit and refused when they do
not. A refusal is final, as Nova's is: such an Instance stays ERROR with its fault, holds nothing, and is
skipped by the count of every later one.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any, Protocol

Body = dict[str, Any]

REASON = "QuotaExceeded"  # the Ready condition's reason of an Instance refused over quota
UNLIMITED = -1
NOVA_NAMES = ("instances", "cores", "ram", "key_pairs", "server_groups", "server_group_members")


class Lookup(Protocol):
    def get(self, key: tuple[str, ...]) -> Body | None: ...


@dataclass(frozen=True)
class Refusal:
    """Nova's answer to a server over quota (403; its TooManyInstances text, or the server group's)."""

    message: str
    code: int = 403
    reason: str = REASON


def over_quota(name: str, requested: int, used: int, allowed: int) -> Refusal:
    """Nova's TooManyInstances: "Quota exceeded for cores: Requested 4, but already used 18 of 20 cores"."""
    return Refusal(f"Quota exceeded for {name}: Requested {requested}, but already used {used} of {allowed} {name}")


GROUP_FULL = Refusal("Quota exceeded, too many servers in group")  # Nova's words for server_group_members


def unlimited(limits: Mapping[str, int]) -> bool:
    """No limit on what an Instance adds (instances, cores, ram, group members): nothing to decide."""
    return all(limits.get(name, UNLIMITED) == UNLIMITED for name in ("instances", "cores", "ram",
                                                                       "server_group_members"))


def fits(used: int, requested: int, limit: int) -> bool:
    return limit == UNLIMITED or used + requested <= limit


@dataclass
class Usage:
    """What a namespace's Instances use: Nova's instances, cores and ram (MiB), and members per group."""

    instances: int = 0
    cores: int = 0
    ram: int = 0
    members: dict[str, int] = field(default_factory=dict)

    def add(self, demand: tuple[int, int], group: str | None) -> None:
        self.instances += 1
        self.cores += demand[0]
        self.ram += demand[1]
        if group:
            self.members[group] = self.members.get(group, 0) + 1


@dataclass
class Verdict:
    usage: Usage
    refused: dict[str, Refusal]  # Instance name → why it is over quota


def booted(inst: Body) -> bool:
    return bool((inst.get("status") or {}).get("flavor"))


def refused_before(inst: Body) -> Refusal | None:
    """An Instance already refused over quota (its status says so): it stays refused, as in Nova."""
    st = inst.get("status") or {}
    if booted(inst):
        return None
    ready: Body = next((c for c in st.get("conditions") or [] if c.get("type") == "Ready"), {})
    if ready.get("reason") != REASON:
        return None
    fault = st.get("fault") or {}
    return Refusal(fault.get("message") or "Quota exceeded", int(fault.get("code") or 403))


def demand(inst: Body, flavors: Lookup) -> tuple[int, int]:
    """vCPUs and RAM (MiB) an Instance holds: its flavor as applied (during a resize, the larger of the old
    and the new: a revert must find its room), or as requested before the boot. A Flavor that does not exist
    yet is nothing yet (the Instance waits for it, and is counted once it is)."""
    st = inst.get("status") or {}
    applied = st.get("flavor")
    if applied:
        old = (st.get("resize") or {}).get("oldFlavor") or {}
        return (max(int(applied.get("vcpus") or 0), int(old.get("vcpus") or 0)),
                max(int(applied.get("ram") or 0), int(old.get("ram") or 0)))
    ref = (inst.get("spec") or {}).get("flavorRef")
    spec = ((flavors.get((ref,)) if ref else None) or {}).get("spec") or {}
    return int(spec.get("vcpus") or 0), int(spec.get("ram") or 0)


def _order(inst: Body) -> tuple[str, str]:
    md = inst["metadata"]
    return md.get("creationTimestamp") or "", md["name"]


def decide(instances: Iterable[Body], flavors: Lookup, limits: Mapping[str, int]) -> Verdict:
    """The namespace's usage and its Instances over quota (see the module's docstring)."""
    live = [i for i in instances if not i["metadata"].get("deletionTimestamp")]
    usage = Usage()
    for inst in live:
        if booted(inst):
            usage.add(demand(inst, flavors), (inst.get("spec") or {}).get("serverGroup"))
    refused: dict[str, Refusal] = {}
    for inst in sorted((i for i in live if not booted(i)), key=_order):
        name = inst["metadata"]["name"]
        before = refused_before(inst)
        if before is not None:
            refused[name] = before
            continue
        need = demand(inst, flavors)
        group = (inst.get("spec") or {}).get("serverGroup")
        refusal = check(usage, need, group, limits)
        if refusal is not None:
            refused[name] = refusal
        else:
            usage.add(need, group)
    return Verdict(usage, refused)


def check(usage: Usage, need: tuple[int, int], group: str | None, limits: Mapping[str, int]) -> Refusal | None:
    """One more Instance needing `need` (vCPUs, MiB) on top of `usage`: None when it fits, else Nova's refusal
    for the first quota it exceeds, in Nova's order (instances, cores, ram, then the server group)."""
    for name, used, requested in (("instances", usage.instances, 1), ("cores", usage.cores, need[0]),
                                  ("ram", usage.ram, need[1])):
        allowed = limits.get(name, UNLIMITED)
        if not fits(used, requested, allowed):
            return over_quota(name, requested, used, allowed)
    if group and not fits(usage.members.get(group, 0), 1, limits.get("server_group_members", UNLIMITED)):
        return GROUP_FULL
    return None


def check_instance(inst: Body, instances: Iterable[Body], flavors: Lookup,
                   limits: Mapping[str, int]) -> Refusal | None:
    """Whether this Instance is over quota among its namespace's `instances` (which may or may not hold this
    very copy of it: the caller's copy wins). A booted Instance never is: it holds what it holds."""
    if booted(inst):
        return None
    name = inst["metadata"]["name"]
    others = [i for i in instances if i["metadata"]["name"] != name]
    return decide([*others, inst], flavors, limits).refused.get(name)


def check_resize(inst: Body, instances: Iterable[Body], flavors: Lookup,
                 limits: Mapping[str, int]) -> Refusal | None:
    """A resize asked for and not started yet (flavorRef names another flavor than the applied one): Nova
    checks only the growth (its upsize deltas), against what the namespace holds now."""
    st, spec = inst.get("status") or {}, inst.get("spec") or {}
    applied = st.get("flavor") or {}
    ref = spec.get("flavorRef")
    new = ((flavors.get((ref,)) if ref else None) or {}).get("spec")
    if (not applied or new is None or ref in (applied.get("name"), (st.get("requests") or {}).get("revertedFlavor"))
            or st.get("task") or st.get("resize")):
        return None
    usage = decide(instances, flavors, limits).usage
    for name, used, grow in (("cores", usage.cores, int(new.get("vcpus") or 0) - int(applied.get("vcpus") or 0)),
                             ("ram", usage.ram, int(new.get("ram") or 0) - int(applied.get("ram") or 0))):
        allowed = limits.get(name, UNLIMITED)
        if grow > 0 and not fits(used, grow, allowed):
            return over_quota(name, grow, used, allowed)
    return None


def counts(instances: Iterable[Body], keypairs: int, servergroups: int, usage: Usage) -> dict[str, int]:
    """Nova's usage by name, as a project's quota shows it: every Instance counts, an ERROR one too (as in
    Nova, and as the API server counts them); cores and RAM are what the admitted ones hold;
    server_group_members is the fullest group's."""
    live = sum(1 for i in instances if not i["metadata"].get("deletionTimestamp"))
    return {"instances": live, "cores": usage.cores, "ram": usage.ram, "key_pairs": keypairs,
            "server_groups": servergroups, "server_group_members": max(usage.members.values(), default=0)}


# ---------------------------------------------------------------------------------------------- the Quota object
RESOURCE_QUOTA = "kova"  # the ResourceQuota Kova keeps in each namespace that has a Quota
COUNTED = {  # quota name → the object count the API server enforces at admission
    "instances": "count/instances.compute.kova.dev",
    "key_pairs": "count/keypairs.compute.kova.dev",
    "server_groups": "count/servergroups.compute.kova.dev",
    "image_count_total": "count/images.image.kova.dev",
    "volumes": "count/volumes.compute.kova.dev",
}


def hard(limits: Mapping[str, int]) -> dict[str, str]:
    """The ResourceQuota's `spec.hard`: one count per limited kind (unlimited: no entry)."""
    return {key: str(limits[name]) for name, key in COUNTED.items() if limits.get(name, UNLIMITED) != UNLIMITED}


def resource_quota(quota: Body, limits: Mapping[str, int], labels: Mapping[str, str]) -> Body:
    """The ResourceQuota that lets the API server refuse one object too many, owned by the Quota."""
    md = quota["metadata"]
    return {"apiVersion": "v1", "kind": "ResourceQuota",
            "metadata": {"name": RESOURCE_QUOTA, "namespace": md["namespace"], "labels": dict(labels),
                         "ownerReferences": [{"apiVersion": quota["apiVersion"], "kind": quota["kind"],
                                              "name": md["name"], "uid": md["uid"], "controller": True,
                                              "blockOwnerDeletion": True}]},
            "spec": {"hard": hard(limits)}}


def items(limits: Mapping[str, int], used: Mapping[str, int]) -> list[dict[str, Any]]:
    """status.quotas: every limit with its use, as `kubectl get quotas` shows it ("3/10", "3/unlimited")."""
    return [{"name": name, "limit": limit, "inUse": used.get(name, 0),
             "usage": f"{used.get(name, 0)}/{'unlimited' if limit == UNLIMITED else limit}"}
            for name, limit in limits.items()]


def summary(limits: Mapping[str, int], used: Mapping[str, int]) -> tuple[bool, str]:
    """Whether any use is above its limit (a limit lowered below what exists), and a one-line message."""
    over = [name for name, limit in limits.items() if limit != UNLIMITED and used.get(name, 0) > limit]
    if over:
        return True, "over quota (existing objects stay; new ones are refused): " + ", ".join(
            f"{n} {used.get(n, 0)}/{limits[n]}" for n in over)
    return False, (f"instances {used.get('instances', 0)}, cores {used.get('cores', 0)}, ram "
                   f"{used.get('ram', 0)} MiB, images {used.get('image_count_total', 0)}")
