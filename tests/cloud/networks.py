"""A VMI's network interfaces as KubeVirt reports them (status.interfaces), as pure functions.

The pod network (`pod: {}`) gets an address from the node's podCIDR (10.244.<node index>.0/24, out of
10.244.0.0/16), as a CNI plugin's host-local IPAM hands them out. A Multus network (`multus.networkName`,
`<ns>/<nad>` or `<nad>` in the VMI's namespace) gets one from its NetworkAttachmentDefinition's IPAM when
`spec.config` has one (whereabouts `range`, host-local `subnet` or `ranges`), else from a /24 of its own
derived from the NAD's name: 192.168.<crc32(ns/name) % 250>.0/24. Addresses are the lowest free ones, so
they are unique per network among the VMIs the simulator knows. The MAC is the interface's `macAddress`,
else a stable one derived from the VMI's uid and the interface name.
"""

from __future__ import annotations

import hashlib
import ipaddress
import json
import zlib
from collections.abc import Mapping, MutableMapping
from typing import Any

POD_NETWORK = ipaddress.ip_network("10.244.0.0/16")
Subnet = ipaddress.IPv4Network | ipaddress.IPv6Network


def pod_cidr(node_index: int) -> str:
    """The podCIDR kube-controller-manager's node IPAM would give the n-th node (a /24 each)."""
    return str(list(POD_NETWORK.subnets(new_prefix=24))[node_index])


def nad_ref(namespace: str, network_name: str) -> tuple[str, str]:
    """multus.networkName: `ns/name`, or `name` in the VMI's namespace."""
    ns, _, name = network_name.rpartition("/")
    return ns or namespace, name


def network_key(namespace: str, network: Mapping[str, Any]) -> str:
    """What addresses are unique within: the pod network, or one NAD."""
    if "multus" in network:
        return "multus:" + "/".join(nad_ref(namespace, network["multus"].get("networkName", "")))
    return "pod"


def _ipam(config: Mapping[str, Any]) -> Mapping[str, Any]:
    ipam = config.get("ipam")
    for plugin in config.get("plugins") or []:  # a conflist: the first plugin with an IPAM section
        ipam = ipam or plugin.get("ipam")
    return ipam or {}


def nad_subnet(namespace: str, name: str, nad: Mapping[str, Any] | None) -> tuple[Subnet, int]:
    """The subnet a Multus network's addresses come from, and the offset of the first one to hand out
    (whereabouts starts at the range's first host; host-local after the gateway, .1)."""
    try:
        config = json.loads(((nad or {}).get("spec") or {}).get("config") or "{}")
    except ValueError:
        config = {}
    ipam = _ipam(config) if isinstance(config, dict) else {}
    try:
        if ipam.get("range"):
            return ipaddress.ip_network(ipam["range"], strict=False), 1
        if ipam.get("subnet"):
            return ipaddress.ip_network(ipam["subnet"], strict=False), 2
        ranges = ipam.get("ranges") or []
        if ranges and ranges[0] and ranges[0][0].get("subnet"):
            return ipaddress.ip_network(ranges[0][0]["subnet"], strict=False), 2
    except (ValueError, TypeError, AttributeError):
        pass
    third = zlib.crc32(f"{namespace}/{name}".encode()) % 250
    return ipaddress.ip_network(f"192.168.{third}.0/24"), 2


def allocate(subnet: Subnet, used: set[str], first: int = 2) -> str:
    """The lowest free address of `subnet` from its `first` host on, and mark it used."""
    last = subnet.num_addresses - 1  # the broadcast address (IPv4) is not handed out
    for offset in range(first, last):
        address = str(subnet.network_address + offset)
        if address not in used:
            used.add(address)
            return address
    raise ValueError(f"{subnet} is full")


def mac(uid: str, interface: str) -> str:
    digest = hashlib.sha256(f"{uid}/{interface}".encode()).digest()
    return "52:54:00:" + ":".join(f"{b:02x}" for b in digest[:3])  # libvirt's prefix, as guests get


def interfaces(vmi: Mapping[str, Any]) -> list[tuple[dict[str, Any], dict[str, Any]]]:
    """(interface, network) pairs in the guest's order. No interfaces and no networks: KubeVirt attaches
    the pod network as `default` (autoattachPodInterface)."""
    spec = vmi.get("spec") or {}
    nets = {n["name"]: n for n in spec.get("networks") or []}
    devices = (spec.get("domain") or {}).get("devices") or {}
    ifaces = devices.get("interfaces") or []
    if not ifaces and not nets:
        if devices.get("autoattachPodInterface") is False:
            return []
        return [({"name": "default", "masquerade": {}}, {"name": "default", "pod": {}})]
    if not ifaces:
        return [({"name": n}, net) for n, net in nets.items()]
    return [(i, nets.get(i["name"], {"name": i["name"], "pod": {}})) for i in ifaces]


def used_addresses(vmis: list[Mapping[str, Any]]) -> dict[str, set[str]]:
    """Addresses already handed out, by network key, from the VMIs' status.interfaces."""
    used: dict[str, set[str]] = {}
    for vmi in vmis:
        nets = {i["name"]: n for i, n in interfaces(vmi)}
        for status in (vmi.get("status") or {}).get("interfaces") or []:
            net = nets.get(status.get("name", ""))
            if net is not None:
                key = network_key(vmi["metadata"]["namespace"], net)
                used.setdefault(key, set()).update(status.get("ipAddresses") or [])
    return used


def interface_status(vmi: Mapping[str, Any], pod_subnet: str, nads: Mapping[str, Mapping[str, Any] | None],
                     used: MutableMapping[str, set[str]]) -> list[dict[str, Any]]:
    """status.interfaces for a VMI that starts: one entry per interface, eth0, eth1, ... as the guest
    names them. `nads` maps `ns/name` to the NAD (None if missing); `used` is updated."""
    ns, uid = vmi["metadata"]["namespace"], vmi["metadata"].get("uid", "")
    out = []
    for index, (iface, net) in enumerate(interfaces(vmi)):
        key = network_key(ns, net)
        if "multus" in net:
            nad_ns, nad_name = nad_ref(ns, net["multus"].get("networkName", ""))
            subnet, first = nad_subnet(nad_ns, nad_name, nads.get(f"{nad_ns}/{nad_name}"))
        else:
            subnet, first = ipaddress.ip_network(pod_subnet), 2
        address = allocate(subnet, used.setdefault(key, set()), first)
        out.append({"name": iface["name"], "interfaceName": f"eth{index}", "ipAddress": address,
                    "ipAddresses": [address], "mac": iface.get("macAddress") or mac(uid, iface["name"]),
                    "infoSource": "domain, guest-agent", "linkState": "up", "queueCount": 1})
    return out
