"""What the guest gets, as pure functions: cloud-init data with the KeyPair, its networks, the labels its
security groups select, its placement (server group, availability zone) and the devices its image's
`hw_*` properties ask for (Glance's standard metadata names).

Every value a user can get wrong is checked here and refused with a message a user understands, so the
API server never sees a VirtualMachine it would reject.
"""

from __future__ import annotations

import hashlib
import re
from dataclasses import dataclass
from email.mime.multipart import MIMEMultipart
from email.mime.text import MIMEText
from typing import Any

import yaml

from kova.api.errors import Refusal
from kova.api.models import GROUP_COMPUTE, ServerGroupPolicy

POD = "pod"  # the pod network's name in spec.networks
NONE = "none"  # spec.networks [none]: no network at all (Nova's `networks: none`)
SG_LABEL = f"sg.{GROUP_COMPUTE}/"  # + group name: an Instance's membership, selected by NetworkPolicies
SERVER_GROUP_LABEL = f"{GROUP_COMPUTE}/server-group"
ZONE_LABEL = "topology.kubernetes.io/zone"
HOST_LABEL = "kubernetes.io/hostname"
DEFAULT_GROUP = "default"


class Invalid(Refusal):
    """A value the guest cannot be given: the reason, a message, and Nova's fault code (400 by default)."""

    def __init__(self, reason: str, message: str, code: int = 400) -> None:
        super().__init__(reason, message)
        self.code = code


# ---------------------------------------------------------------------------------------------- cloud-init
def _part_type(data: str) -> str:
    """The MIME subtype cloud-init expects for a user-data part, from how it starts (cloud-init's own
    table); anything else is text/plain, which cloud-init also sniffs by its first line."""
    for start, subtype in (("#cloud-config", "cloud-config"), ("#!", "x-shellscript"),
                           ("#cloud-boothook", "cloud-boothook"), ("#include", "x-include-url"),
                           ("## template: jinja", "jinja2")):
        if data.startswith(start):
            return subtype
    return "plain"


def user_data(user: str | None, keys: list[str]) -> str | None:
    """cloud-init user data carrying `keys` as ssh_authorized_keys. With the user's own data it becomes a
    MIME multipart, the user's part unchanged and first, then the keys with a merge rule that appends them
    to any keys the user's cloud-config has. The boundary is derived from the content: the same inputs give
    the same bytes, so the VirtualMachine does not change on every reconcile."""
    if not keys:
        return user
    listed = yaml.safe_dump({"ssh_authorized_keys": keys}, sort_keys=True, width=1 << 20)  # one key per line
    keys_part = "#cloud-config\n" + listed
    if user is None:
        return keys_part
    if user.startswith("Content-Type: multipart/"):
        raise Invalid("InvalidUserData", "userData is already MIME multipart: add the key to it yourself, or "
                                         "leave keyName out")
    merged = "#cloud-config\nmerge_how:\n - name: list\n   settings: [append]\n - name: dict\n   settings: " \
             "[no_replace, recurse_list]\n" + listed
    msg = MIMEMultipart()
    msg.set_boundary("==kova-" + hashlib.sha256((user + merged).encode()).hexdigest()[:24] + "==")
    for part, subtype in ((user, _part_type(user)), (merged, "cloud-config")):
        # ASCII stays readable in the VirtualMachine (7bit); anything else travels as base64.
        msg.attach(MIMEText(part, subtype, "us-ascii" if part.isascii() else "utf-8"))
    return msg.as_string()


# ---------------------------------------------------------------------------------------------- networks
@dataclass(frozen=True)
class Nic:
    network: str  # `pod`, or the NetworkAttachmentDefinition as written in spec.networks
    interface: str  # the name KubeVirt's interface and network get (a DNS label)


def nics(networks: list[str], namespace: str | None = None, shared: frozenset[str] = frozenset()) -> list[Nic]:
    """One interface per network, in order; the pod network is `default`, as in KubeVirt's own examples.

    A NetworkAttachmentDefinition of another namespace is used only when that namespace's networks are
    shared (Neutron's shared networks; KOVA_SHARED_NETWORK_NAMESPACES): Kova creates the VM with its own
    account, so without this check a tenant could attach its VM to another tenant's VLAN. A refused one
    is said exactly as a missing one, so nobody learns which networks other namespaces have."""
    out: list[Nic] = []
    if networks == [NONE]:
        return out
    for net in networks or [POD]:
        owner, _, name = net.rpartition("/")
        if namespace is not None and owner and owner != namespace and owner not in shared:
            raise Invalid("NetworkNotFound", "failed to render launch manifest: failed to locate network "
                                             f"attachment definition {owner}/{name}", code=500)
        name = "default" if net == POD else re.sub(r"[^a-z0-9-]", "-", net)[:63].strip("-")
        if any(n.network == net for n in out):
            raise Invalid("InvalidNetworks", f"network {net} is named twice")
        out.append(Nic(net, name))
    return out


def mac_address(seed: str, interface: str) -> str:
    """A locally administered MAC fixed per server and interface, as a Nova port keeps its MAC: a reboot, a
    rebuild or a resize (each a new VMI) leaves the guest's address, its DHCP lease and its licences alone."""
    digest = hashlib.sha256(f"{seed}/{interface}".encode()).digest()
    return "52:54:00:" + ":".join(f"{b:02x}" for b in digest[:3])  # libvirt's prefix, as guests get


def interfaces(nic_list: list[Nic], model: str | None,
               seed: str | None = None) -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
    """KubeVirt interfaces and networks: masquerade on the pod network, bridge on a Multus network. Without
    the pod network, the first Multus network is the default one (KubeVirt needs one). With a `seed` (the
    Instance's uid) each interface gets its fixed MAC."""
    ifaces, nets = [], []
    has_pod = any(n.network == POD for n in nic_list)
    for i, nic in enumerate(nic_list):
        binding = "masquerade" if nic.network == POD else "bridge"
        iface: dict[str, Any] = {"name": nic.interface, binding: {}}
        if seed is not None:
            iface["macAddress"] = mac_address(seed, nic.interface)
        if model:
            iface["model"] = model
        ifaces.append(iface)
        if nic.network == POD:
            nets.append({"name": nic.interface, "pod": {}})
        else:
            multus: dict[str, Any] = {"networkName": nic.network}
            if not has_pod and i == 0:
                multus["default"] = True
            nets.append({"name": nic.interface, "multus": multus})
    return ifaces, nets


# ---------------------------------------------------------------------------------------------- placement
def group_labels(groups: list[str]) -> dict[str, str]:
    """The labels NetworkPolicies select an Instance's VMI (its virt-launcher pod) by."""
    return {f"{SG_LABEL}{g}": "" for g in (groups or [DEFAULT_GROUP])}


def affinity(group: str | None, policy: ServerGroupPolicy | None) -> dict[str, Any] | None:
    """Nova's server group policies as pod (anti-)affinity per node: required for the hard policies,
    preferred for the soft ones."""
    if group is None or policy is None:
        return None
    term = {"labelSelector": {"matchLabels": {SERVER_GROUP_LABEL: group}}, "topologyKey": HOST_LABEL}
    kind = "podAffinity" if policy in (ServerGroupPolicy.affinity, ServerGroupPolicy.soft_affinity) \
        else "podAntiAffinity"
    if policy in (ServerGroupPolicy.affinity, ServerGroupPolicy.anti_affinity):
        return {kind: {"requiredDuringSchedulingIgnoredDuringExecution": [term]}}
    return {kind: {"preferredDuringSchedulingIgnoredDuringExecution": [{"weight": 100, "podAffinityTerm": term}]}}


# ---------------------------------------------------------------------------------------------- devices
@dataclass
class Devices:
    """What an image's hw_* properties ask of the virtual hardware (None: KubeVirt's default)."""

    disk_bus: str = "virtio"
    cdrom_bus: str = "sata"
    vif_model: str | None = None
    efi: dict[str, Any] | None = None
    machine_type: str | None = None
    rng: bool = False
    video: str | None = None
    graphics: bool = True


DISK_BUSES = ("virtio", "scsi", "sata", "usb")
CDROM_BUSES = ("sata", "scsi")
VIF_MODELS = ("virtio", "e1000", "e1000e", "igb", "rtl8139", "ne2k_pci", "pcnet")
VIDEO_MODELS = ("virtio", "vga", "bochs", "ramfb", "none")
_TRUE, _FALSE = ("yes", "true", "1", "on"), ("no", "false", "0", "off")


def _one_of(props: dict[str, str], key: str, allowed: tuple[str, ...], why: str = "") -> str | None:
    value = props.get(key)
    if value is None:
        return None
    if value.lower() not in allowed:
        raise Invalid("InvalidImageProperty", f"image property {key}={value} is not one of "
                                              f"{', '.join(allowed)}{why}")
    return value.lower()


def devices(props: dict[str, str]) -> Devices:
    """Glance's hw_* image properties as KubeVirt devices, or Invalid for a value KubeVirt cannot give."""
    d = Devices()
    d.disk_bus = _one_of(props, "hw_disk_bus", DISK_BUSES, " (KubeVirt has no IDE or Xen bus)") or d.disk_bus
    d.cdrom_bus = _one_of(props, "hw_cdrom_bus", CDROM_BUSES, " (KubeVirt's CD-ROMs are SATA or SCSI)") \
        or d.cdrom_bus
    d.vif_model = _one_of(props, "hw_vif_model", VIF_MODELS)
    firmware = _one_of(props, "hw_firmware_type", ("bios", "uefi"))
    secure = _one_of(props, "os_secure_boot", ("required", "disabled", "optional"))
    if secure == "required" and firmware != "uefi":
        raise Invalid("InvalidImageProperty", "os_secure_boot=required needs hw_firmware_type=uefi")
    if firmware == "uefi":
        d.efi = {"secureBoot": secure == "required"}
    machine = props.get("hw_machine_type")
    if machine is not None:
        if not re.fullmatch(r"[a-z0-9][a-z0-9._-]{0,62}", machine):
            raise Invalid("InvalidImageProperty", f"image property hw_machine_type={machine} is not a machine type "
                                                  "(such as q35 or pc-q35-rhel9.6.0)")
        d.machine_type = machine
    agent = props.get("hw_qemu_guest_agent")
    if agent is not None and agent.lower() not in _TRUE + _FALSE:
        raise Invalid("InvalidImageProperty", f"image property hw_qemu_guest_agent={agent} is not yes or no")
    # Either way nothing to set: KubeVirt always offers the guest agent channel.
    d.rng = _one_of(props, "hw_rng_model", ("virtio",), " (KubeVirt's RNG device is virtio)") == "virtio"
    video = _one_of(props, "hw_video_model", VIDEO_MODELS)
    if video == "none":
        d.graphics = False
    else:
        d.video = video
    return d


def apply_devices(domain: dict[str, Any], d: Devices) -> None:
    """Put `d` into a VirtualMachine template's `domain`."""
    if d.efi is not None:
        domain["firmware"] = {"bootloader": {"efi": dict(d.efi)}}
        if d.efi.get("secureBoot"):
            domain["features"] = {"smm": {"enabled": True}}  # KubeVirt requires SMM for secure boot
    if d.machine_type:
        domain["machine"] = {"type": d.machine_type}
    devices_ = domain["devices"]
    if d.rng:
        devices_["rng"] = {}
    if d.video:
        devices_["video"] = {"type": d.video}
    if not d.graphics:
        devices_["autoattachGraphicsDevice"] = False


def multus_networks(vm: dict[str, Any]) -> list[tuple[str, str]]:
    """(namespace, name) of the NetworkAttachmentDefinitions a VirtualMachine's template names (Multus reads
    `name` as one in the VM's own namespace)."""
    namespace = vm["metadata"]["namespace"]
    out = []
    for net in (((vm.get("spec") or {}).get("template") or {}).get("spec") or {}).get("networks") or []:
        ref = (net.get("multus") or {}).get("networkName")
        if ref:
            ns, _, name = ref.rpartition("/")
            out.append((ns or namespace, name))
    return out
