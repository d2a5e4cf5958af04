"""Access to servers, as pure functions: Neutron security groups as NetworkPolicies, Nova key pairs
(fingerprint, generation), availability zones from node labels.
"""

from __future__ import annotations

import base64
import datetime as dt
import hashlib
import ipaddress
from collections.abc import Iterable
from typing import Any

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec, ed25519
from cryptography.x509.oid import NameOID
from pydantic import ValidationError

from kova.api.errors import Refusal, one_line
from kova.api.models import Direction, Protocol, SecurityGroupRule, SecurityGroupSpec
from kova.api.resources import MANAGED_BY, owner_reference
from kova.compute.guest import DEFAULT_GROUP, SG_LABEL, ZONE_LABEL

NETWORK_POLICY_PREFIX = "kova-sg-"


# ---------------------------------------------------------------------------------------------- security groups
def policy_name(group: str) -> str:
    return f"{NETWORK_POLICY_PREFIX}{group}"[:253]


def members(group: str) -> dict[str, Any]:
    return {"matchLabels": {f"{SG_LABEL}{group}": ""}}


def _peer(rule: SecurityGroupRule) -> list[dict[str, Any]] | None:
    """The rule's remote side; None: anywhere (no `from`/`to`)."""
    if rule.remote_group:
        return [{"podSelector": members(rule.remote_group)}]
    if rule.remote_ip_prefix:
        return [{"ipBlock": {"cidr": rule.remote_ip_prefix}}]
    return None


def _ports(rule: SecurityGroupRule) -> list[dict[str, Any]] | None:
    if rule.protocol is None:
        return None
    port: dict[str, Any] = {"protocol": rule.protocol.value.upper()}
    if rule.port_range_min is not None:
        port["port"] = rule.port_range_min
        if rule.port_range_max is not None and rule.port_range_max > rule.port_range_min:
            port["endPort"] = rule.port_range_max
    return [port]


def network_policy(namespace: str, group: str, spec: SecurityGroupSpec) -> tuple[dict[str, Any], list[str]]:
    """The NetworkPolicy that enforces a group on its members, and notes where NetworkPolicy says less than
    Neutron. Rules are allow-lists in both, and several policies on one pod add up, as several groups on one
    port do. A group with no egress rule keeps the two allow-all egress rules Neutron gives every new group."""
    ingress: list[dict[str, Any]] = []
    egress: list[dict[str, Any]] = []
    notes: list[str] = []
    for n, rule in enumerate(spec.rules):
        if rule.protocol is Protocol.icmp:
            notes.append(f"rule {n}: NetworkPolicy cannot select ICMP; the rule is left out (nothing is opened)")
            continue
        entry: dict[str, Any] = {}
        peer, ports = _peer(rule), _ports(rule)
        if peer is not None:
            entry["from" if rule.direction is Direction.ingress else "to"] = peer
        if ports is not None:
            entry["ports"] = ports
        (ingress if rule.direction is Direction.ingress else egress).append(entry)
    if not any(r.direction is Direction.egress for r in spec.rules):
        egress = [{}]
    body = {
        "apiVersion": "networking.k8s.io/v1", "kind": "NetworkPolicy",
        "metadata": {"name": policy_name(group), "namespace": namespace},
        "spec": {"podSelector": members(group), "policyTypes": ["Ingress", "Egress"],
                 "ingress": ingress, "egress": egress},
    }
    return body, notes


def security_group(group: dict[str, Any]) -> tuple[dict[str, Any], list[str], Refusal | None]:
    """A SecurityGroup object's NetworkPolicy (owned by the group, so it goes with it), its notes, and why its
    rules cannot be enforced if they cannot. Then the policy denies everything to its members until the
    rules are fixed: a group fails closed, never open (Neutron refuses such a group outright)."""
    md = group["metadata"]
    refusal = None
    try:
        spec = SecurityGroupSpec.model_validate(group.get("spec") or {})
        problem = next((p for p in map(_rule_problem, enumerate(spec.rules)) if p), None)
    except ValidationError as e:
        problem = one_line(e, "spec")
    if problem is None:
        policy, notes = network_policy(md["namespace"], md["name"], spec)
    else:
        refusal = Refusal("InvalidRules", f"{problem}; its members get no traffic until the rules are fixed")
        policy, notes = deny_all(md["namespace"], md["name"]), []
    policy["metadata"]["labels"] = dict(MANAGED_BY)
    policy["metadata"]["ownerReferences"] = [owner_reference(group)]
    return policy, notes, refusal


def _rule_problem(numbered: tuple[int, SecurityGroupRule]) -> str | None:
    """What the CRD's schema cannot say about a rule and NetworkPolicy would refuse (Neutron's 400s)."""
    n, rule = numbered
    if rule.remote_ip_prefix is None:
        return None
    try:
        network = ipaddress.ip_network(rule.remote_ip_prefix, strict=False)
    except ValueError:
        return f"spec.rules.{n}.remoteIpPrefix: {rule.remote_ip_prefix} is not a CIDR"
    if network.version != (4 if rule.ethertype.value == "IPv4" else 6):
        return f"spec.rules.{n}.remoteIpPrefix: {rule.remote_ip_prefix} does not match ethertype {rule.ethertype.value}"
    return None


def deny_all(namespace: str, group: str) -> dict[str, Any]:
    return {"apiVersion": "networking.k8s.io/v1", "kind": "NetworkPolicy",
            "metadata": {"name": policy_name(group), "namespace": namespace},
            "spec": {"podSelector": members(group), "policyTypes": ["Ingress", "Egress"], "ingress": [], "egress": []}}


def default_group_policy(namespace: str) -> dict[str, Any]:
    """The NetworkPolicy of Neutron's `default` group in a namespace whose group has no object of its own."""
    policy, _ = network_policy(namespace, DEFAULT_GROUP, default_group())
    policy["metadata"]["labels"] = dict(MANAGED_BY)
    return policy


def default_group() -> SecurityGroupSpec:
    """Neutron's `default` group: ingress from its own members, any egress."""
    return SecurityGroupSpec(description="Default security group", rules=[
        SecurityGroupRule(direction=Direction.ingress, remote_group=DEFAULT_GROUP)])


def groups_of(instance: dict[str, Any]) -> list[str]:
    """The groups an Instance's pods are members of: those it names, else the namespace's `default`."""
    return list((instance.get("spec") or {}).get("securityGroups") or [DEFAULT_GROUP])


def users(namespace: str, group: str, instances: Iterable[dict[str, Any]]) -> list[str]:
    """The Instances of the namespace that are members of a group, by name."""
    return sorted(i["metadata"]["name"] for i in instances
                  if i["metadata"].get("namespace") == namespace and group in groups_of(i))


SHOWN_USERS = 10  # a status message names this many servers at most


def in_use(group: str, servers: list[str]) -> Refusal | None:
    """Why a group cannot be deleted now: Neutron answers 409 "Security Group <id> in use." while a port is
    in it. Here the deletion is held (a finalizer) and completes once no Instance names the group; its
    NetworkPolicy keeps protecting the members meanwhile."""
    if not servers:
        return None
    shown = ", ".join(servers[:SHOWN_USERS]) + (f" and {len(servers) - SHOWN_USERS} more"
                                                 if len(servers) > SHOWN_USERS else "")
    return Refusal("SecurityGroupInUse", f"Security Group {group} in use by server(s) {shown}: it is deleted once "
                   "no Instance names it")


# ---------------------------------------------------------------------------------------------- key pairs
def fingerprint(public_key: str) -> str:
    """Nova's fingerprint of an OpenSSH public key: MD5 of the key blob, colon-separated; ValueError if the
    text is not one."""
    if public_key.strip().startswith("-----BEGIN CERTIFICATE"):
        # Nova's x509 key pairs: the fingerprint is the SHA-1 of the certificate.
        try:
            cert = x509.load_pem_x509_certificate(public_key.strip().encode())
        except ValueError as e:
            raise ValueError(f"not a valid PEM certificate: {e}") from e
        digest = cert.fingerprint(hashes.SHA1()).hex()
        return ":".join(digest[i:i + 2] for i in range(0, 40, 2))
    parts = public_key.strip().split()
    if len(parts) < 2 or not parts[0].startswith(("ssh-", "ecdsa-", "sk-")):
        raise ValueError("not an OpenSSH public key (`ssh-ed25519 AAAA...`, `ssh-rsa AAAA...`)")
    try:
        blob = base64.b64decode(parts[1], validate=True)
        serialization.load_ssh_public_key(public_key.strip().encode())
    except (ValueError, TypeError) as e:
        raise ValueError(f"not a valid OpenSSH public key: {e}") from e
    digest = hashlib.md5(blob, usedforsecurity=False).hexdigest()
    return ":".join(digest[i:i + 2] for i in range(0, 32, 2))


def generate(comment: str) -> tuple[str, str]:
    """A new key pair: (OpenSSH public key, OpenSSH private key PEM). Ed25519, as ssh-keygen makes today."""
    key = ed25519.Ed25519PrivateKey.generate()
    public = key.public_key().public_bytes(serialization.Encoding.OpenSSH, serialization.PublicFormat.OpenSSH)
    private = key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.OpenSSH,
                                serialization.NoEncryption())
    return f"{public.decode()} {comment}", private.decode()


def generate_x509(name: str, now: dt.datetime) -> tuple[str, str]:
    """A new x509 key pair as Nova makes one for `type: x509`: (a self-signed certificate, its private key)."""
    key = ec.generate_private_key(ec.SECP256R1())
    subject = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, name[:64] or "keypair")])
    cert = (x509.CertificateBuilder().subject_name(subject).issuer_name(subject).public_key(key.public_key())
            .serial_number(x509.random_serial_number()).not_valid_before(now)
            .not_valid_after(now + dt.timedelta(days=3650)).sign(key, hashes.SHA256()))
    private = key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                                serialization.NoEncryption())
    return cert.public_bytes(serialization.Encoding.PEM).decode(), private.decode()


# ---------------------------------------------------------------------------------------------- zones
def zones(nodes: list[dict[str, Any]]) -> dict[str, tuple[list[str], bool]]:
    """zone → (its nodes, whether one of them is Ready and schedulable), from topology.kubernetes.io/zone."""
    out: dict[str, tuple[list[str], bool]] = {}
    for node in nodes:
        md = node.get("metadata") or {}
        zone = (md.get("labels") or {}).get(ZONE_LABEL)
        if not zone:
            continue
        ready = any(c.get("type") == "Ready" and c.get("status") == "True"
                    for c in (node.get("status") or {}).get("conditions") or [])
        usable = ready and not (node.get("spec") or {}).get("unschedulable")
        hosts, available = out.get(zone, ([], False))
        out[zone] = (sorted([*hosts, md["name"]]), available or usable)
    return out
