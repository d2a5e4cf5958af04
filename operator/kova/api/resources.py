"""Every resource Kova reads or writes, named once, and the metadata it puts on what it owns."""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Any

from kova.api.models import (
    AVAILABILITY_ZONE,
    FLAVOR,
    IMAGE,
    INSTANCE,
    KEYPAIR,
    METADEF_NAMESPACE,
    QUOTA,
    SECURITY_GROUP,
    SERVER_GROUP,
    VERSION,
    VOLUME,
    KindInfo,
)


@dataclass(frozen=True)
class Resource:
    group: str
    version: str
    plural: str
    namespaced: bool = True

    @property
    def api_version(self) -> str:
        return f"{self.group}/{self.version}" if self.group else self.version


def resource(info: KindInfo) -> Resource:
    return Resource(info.group, VERSION, info.plural, info.namespaced)


# Kova's own kinds.
FLAVORS = resource(FLAVOR)
IMAGES = resource(IMAGE)
INSTANCES = resource(INSTANCE)
KEYPAIRS = resource(KEYPAIR)
SECURITY_GROUPS = resource(SECURITY_GROUP)
SERVER_GROUPS = resource(SERVER_GROUP)
AVAILABILITY_ZONES = resource(AVAILABILITY_ZONE)
QUOTAS = resource(QUOTA)
METADEF_NAMESPACES = resource(METADEF_NAMESPACE)
VOLUMES = resource(VOLUME)

# KubeVirt's, CDI's and Kubernetes' own.
VIRTUAL_MACHINES = Resource("kubevirt.io", "v1", "virtualmachines")
VIRTUAL_MACHINE_INSTANCES = Resource("kubevirt.io", "v1", "virtualmachineinstances")
DATA_VOLUMES = Resource("cdi.kubevirt.io", "v1beta1", "datavolumes")
DATA_SOURCES = Resource("cdi.kubevirt.io", "v1beta1", "datasources")
STORAGE_CLASSES = Resource("storage.k8s.io", "v1", "storageclasses", namespaced=False)
# v1beta1: the version both KubeVirt v1.7 (v1alpha1, v1beta1) and v1.9 (v1, v1beta1) serve.
VIRTUAL_MACHINE_EXPORTS = Resource("export.kubevirt.io", "v1beta1", "virtualmachineexports")
SERVICES = Resource("", "v1", "services")
NETWORK_ATTACHMENT_DEFINITIONS = Resource("k8s.cni.cncf.io", "v1", "network-attachment-definitions")
PODS = Resource("", "v1", "pods")
PERSISTENT_VOLUME_CLAIMS = Resource("", "v1", "persistentvolumeclaims")  # the core group
NODES = Resource("", "v1", "nodes", namespaced=False)
NAMESPACES = Resource("", "v1", "namespaces", namespaced=False)
NETWORK_POLICIES = Resource("networking.k8s.io", "v1", "networkpolicies")
RESOURCE_QUOTAS = Resource("", "v1", "resourcequotas")
SUBRESOURCES = "/apis/subresources.kubevirt.io/v1"  # virt-api's aggregated API: pause, softreboot, restart

# A Kubernetes object name that is also a DNS label: what a namespace (a project) can be called.
DNS_LABEL = re.compile(r"^[a-z0-9]([-a-z0-9]{0,61}[a-z0-9])?$")

MANAGED_BY = {"app.kubernetes.io/managed-by": "kova"}
MANAGED_BY_SELECTOR = ",".join(f"{k}={v}" for k, v in MANAGED_BY.items())


def owner_reference(owner: dict[str, Any]) -> dict[str, Any]:
    """A controller reference: the child goes with its owner (Kubernetes' garbage collector)."""
    return {"apiVersion": owner["apiVersion"], "kind": owner["kind"], "name": owner["metadata"]["name"],
            "uid": owner["metadata"]["uid"], "controller": True, "blockOwnerDeletion": True}


def object_names(display: str | None, fallback: str) -> tuple[str | None, str]:
    """(name, generateName) for an object made for an OpenStack name (Glance's image names, Nova's server
    names): the name itself when it is a valid Kubernetes name, else a lower-case slug of it (or `fallback`)
    as a prefix the API server completes. OpenStack names need not be unique, so a taken name also falls back
    to the prefix; the OpenStack name is kept in spec.name either way."""
    if display and DNS_LABEL.match(display):
        return display, f"{display[:50]}-"
    slug = re.sub(r"[^a-z0-9]+", "-", (display or "").lower()).strip("-")[:50].strip("-")
    return None, f"{slug or fallback}-"
