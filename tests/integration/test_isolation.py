"""One namespace never reaches another's networks or learns what it has, acting as a tenant: a
ServiceAccount with the built-in `edit` role in its own namespace (Kova's roles aggregate into it)."""

from __future__ import annotations

import json
import subprocess
from typing import Any

import yaml

from tests.cloud.bench import REPO, LocalCloud, binary, kubeconfig_dict
from tests.conftest import Kubectl, Operator, condition, tenant_token, wait_for
from tests.httpsource import Source
from tests.integration.test_e2e import disk, flavor, image, instance, unique, wait_image, wait_instance

NAD_PREFIX = "failed to render launch manifest: failed to locate network attachment definition"


class Tenant(Kubectl):
    """kubectl with a tenant's token instead of the bench's admin certificate."""

    def __init__(self, cloud: LocalCloud, namespace: str, token: str | None = None, user: str | None = None) -> None:
        super().__init__(cloud, namespace)
        user = user or f"tenant-{namespace}"
        self.kubeconfig = cloud.workdir / f"{user}.kubeconfig"
        self.kubeconfig.write_text(yaml.safe_dump(kubeconfig_dict(
            cloud.api_url, (cloud.workdir / "pki" / "ca.crt").read_text(),
            token=token or tenant_token(cloud, namespace), user=user)))

    @classmethod
    def with_token(cls, cloud: LocalCloud, namespace: str, token: str, user: str) -> Tenant:
        return cls(cloud, namespace, token, user)

    def __call__(self, *args: str, input: str | None = None, check: bool = True) -> str:
        res = subprocess.run([binary("kubectl"), f"--kubeconfig={self.kubeconfig}", "-n", str(self.namespace),
                              *args], input=input, capture_output=True, text=True, timeout=120)
        if check and res.returncode != 0:
            raise RuntimeError(f"kubectl {' '.join(args)} failed ({res.returncode}): {res.stderr.strip()}")
        return res.stdout if check else res.stdout + res.stderr


def install_tenant_roles(cloud: LocalCloud) -> None:
    """The chart's roles that aggregate Kova's kinds into the built-in view and edit roles."""
    rendered = subprocess.run([binary("helm"), "template", "kova", str(REPO / "charts" / "kova"), "--show-only",
                               "templates/compute-roles.yaml", "--show-only", "templates/image-roles.yaml"],
                              capture_output=True, text=True, check=True).stdout
    cloud.kubectl("apply", "-f", "-", input=rendered)


def nad(name: str, subnet: str) -> dict[str, Any]:
    return {"apiVersion": "k8s.cni.cncf.io/v1", "kind": "NetworkAttachmentDefinition", "metadata": {"name": name},
            "spec": {"config": json.dumps({"cniVersion": "0.3.1", "type": "bridge", "bridge": f"br-{name}",
                                           "ipam": {"type": "host-local", "subnet": subnet}})}}


def test_another_namespaces_network_is_refused_as_a_missing_one(cloud: LocalCloud, operator: Operator,
                                                                source: Source, kubectl: Kubectl) -> None:
    install_tenant_roles(cloud)
    other = Kubectl(cloud, f"{kubectl.namespace}-net")
    cloud.kubectl("create", "namespace", str(other.namespace))
    try:
        other.apply(nad("vlan100", "172.21.0.0/24"))
        tenant = Tenant(cloud, str(kubectl.namespace))
        fl = unique(kubectl, "f")
        kubectl.apply(flavor(fl))  # flavors are the cloud administrator's
        tenant.apply(image("os", source.add(f"/{kubectl.namespace}/os", disk("isolation"))))
        wait_image(tenant, "os", "active")
        tenant.apply([instance("intruder", fl, "os", networks=["pod", f"{other.namespace}/vlan100"]),
                      instance("lost", fl, "os", networks=["pod", "nowhere"])])
        intruder = wait_instance(tenant, "intruder", "ERROR")
        lost = wait_instance(tenant, "lost", "ERROR", timeout=150)  # KubeVirt's own answer for a missing one
        assert condition(intruder)["reason"] == condition(lost)["reason"] == "NetworkNotFound"
        assert intruder["status"]["fault"] == {"code": 500, "message": f"{NAD_PREFIX} {other.namespace}/vlan100"}
        assert lost["status"]["fault"] == {"code": 500, "message": f"{NAD_PREFIX} {kubectl.namespace}/nowhere"}
        # Nothing was attached: no VirtualMachine names the other namespace's VLAN (looked at as the admin:
        # the tenant has no right on KubeVirt's objects).
        assert kubectl.get("vm", "intruder") is None and kubectl.get("dv", "intruder-root") is None
    finally:
        cloud.kubectl("delete", "namespace", str(other.namespace), "--wait=false")


def test_an_image_one_cannot_see_is_said_as_one_that_does_not_exist(cloud: LocalCloud, operator: Operator,
                                                                   source: Source, kubectl: Kubectl) -> None:
    install_tenant_roles(cloud)
    other = Kubectl(cloud, f"{kubectl.namespace}-lib")
    cloud.kubectl("create", "namespace", str(other.namespace))
    try:
        other.apply(image("private-os", source.add(f"/{kubectl.namespace}/lib", disk("oracle"))))
        wait_image(other, "private-os", "active")
        tenant = Tenant(cloud, str(kubectl.namespace))
        fl = unique(kubectl, "f")
        kubectl.apply(flavor(fl))
        tenant.apply([instance("probe", fl, f"{other.namespace}/private-os"),
                      instance("ghost", fl, f"{other.namespace}/no-such-os")])
        probe = wait_instance(tenant, "probe", "BUILD")
        ghost = wait_instance(tenant, "ghost", "BUILD")
        said = {name: (condition(o)["reason"], condition(o)["message"].replace(ref, "<image>"))
                for name, o, ref in (("probe", probe, "private-os"), ("ghost", ghost, "no-such-os"))}
        assert said["probe"] == said["ghost"] == ("WaitingForImage", f"Image {other.namespace}/<image> does not "
                                                                     "exist (yet)")
        assert kubectl.get("vm", "probe") is None
        # Shared with the tenant's project, it is found: the waiting server boots.
        other("patch", "image", "private-os", "--type=merge", "-p",
              json.dumps({"spec": {"visibility": "shared", "members": [kubectl.namespace]}}))
        wait_instance(tenant, "probe", "ACTIVE", timeout=90)
    finally:
        cloud.kubectl("delete", "namespace", str(other.namespace), "--wait=false")


def test_a_security_group_with_rules_networkpolicy_refuses_fails_closed(cloud: LocalCloud, operator: Operator,
                                                                          kubectl: Kubectl) -> None:
    install_tenant_roles(cloud)
    tenant = Tenant(cloud, str(kubectl.namespace))
    group = {"apiVersion": "compute.kova.dev/v1alpha1", "kind": "SecurityGroup", "metadata": {"name": "db"},
             "spec": {"rules": [{"protocol": "tcp", "portRangeMin": 5432, "remoteIpPrefix": "10.0.0.0/33"}]}}
    tenant.apply(group)
    stalled = wait_for(lambda: (g := tenant.get("securitygroup", "db"))
                       and condition(g, "Stalled").get("status") == "True" and g, 60,
                       "the group to say its rules are invalid")
    assert condition(stalled)["reason"] == "InvalidRules" and "is not a CIDR" in condition(stalled)["message"]
    policy = kubectl.get("networkpolicy", "kova-sg-db")
    assert policy is not None, "no NetworkPolicy: the group's members would be open to the whole cluster"
    assert policy["spec"].get("ingress", []) == [] and policy["spec"].get("egress", []) == []
    assert policy["spec"]["policyTypes"] == ["Ingress", "Egress"]
    # Fixed, the group's own rules replace the deny-all.
    group["spec"]["rules"][0]["remoteIpPrefix"] = "10.0.0.0/24"
    tenant.apply(group)
    wait_for(lambda: (p := kubectl.get("networkpolicy", "kova-sg-db")) and p["spec"].get("ingress"), 60,
             "the group's rules in its NetworkPolicy")
    assert condition(tenant.get("securitygroup", "db"))["status"] == "True"


def test_publicizing_and_snapshotting_need_their_rights(cloud: LocalCloud, operator: Operator, source: Source,
                                                      kubectl: Kubectl) -> None:
    """Glance's publicize_image and Nova's createImage, enforced by the API server for kubectl as well as
    for kova api: a project member may share an image or make it community, not public, and may take an
    image of a server it may change, not of a locked one."""
    install_tenant_roles(cloud)
    tenant = Tenant(cloud, str(kubectl.namespace))
    url = source.add(f"/{kubectl.namespace}/os", disk("policy"))
    refused = tenant.apply(image("ubuntu", url, visibility="public"), check=False)  # "Ubuntu 24.04 LTS", say
    assert "only an administrator may make an image public" in refused and tenant.get("image", "ubuntu") is None
    tenant.apply(image("os", url, visibility="community"))
    wait_image(tenant, "os", "active")
    patched = tenant("patch", "image", "os", "--type=merge", "-p", '{"spec": {"visibility": "public"}}', check=False)
    assert "only an administrator may make an image public" in patched
    assert (tenant.get("image", "os") or {})["spec"]["visibility"] == "community"
    # An administrator hands out the right (kova-image-publisher), and then it may.
    cloud.kubectl("-n", str(kubectl.namespace), "create", "rolebinding", "publisher",
                  "--clusterrole=kova-image-publisher", f"--serviceaccount={kubectl.namespace}:os-edit")
    wait_for(lambda: "patched" in tenant("patch", "image", "os", "--type=merge", "-p",
                                         '{"spec": {"visibility": "public"}}', check=False),
             30, "the publisher's patch to go through (RBAC's caches take the binding)")
    assert (tenant.get("image", "os") or {})["spec"]["visibility"] == "public"
    # createImage of a locked server: the image is killed, the server keeps running (not stopped for a copy).
    fl = unique(kubectl, "f")
    kubectl.apply(flavor(fl))
    tenant.apply(instance("srv", fl, "os", locked=True))
    wait_instance(tenant, "srv", "ACTIVE", timeout=90)
    tenant.apply({"apiVersion": "image.kova.dev/v1alpha1", "kind": "Image", "metadata": {"name": "srv-snap"},
                  "spec": {"source": {"instance": "srv"}}})
    snap = wait_image(tenant, "srv-snap", "killed")
    assert condition(snap)["reason"] == "InstanceLocked"
    assert (tenant.get("instance", "srv") or {})["status"]["status"] == "ACTIVE"
    # Someone who may create images but not change the server may not image it.
    reader = f"{kubectl.namespace}-imager"
    cloud.kubectl("-n", str(kubectl.namespace), "create", "role", "imager", "--verb=create,get,list,watch",
                  "--resource=images.image.kova.dev,instances.compute.kova.dev")
    cloud.kubectl("-n", str(kubectl.namespace), "create", "serviceaccount", "imager")
    cloud.kubectl("-n", str(kubectl.namespace), "create", "rolebinding", "imager", "--role=imager",
                  f"--serviceaccount={kubectl.namespace}:imager")
    imager = Tenant.with_token(cloud, str(kubectl.namespace), cloud.kubectl(
        "-n", str(kubectl.namespace), "create", "token", "imager").strip(), reader)
    denied = imager.apply({"apiVersion": "image.kova.dev/v1alpha1", "kind": "Image", "metadata": {"name": "theft"},
                           "spec": {"source": {"instance": "srv"}}}, check=False)
    assert "needs the right to update that Instance" in denied and kubectl.get("image", "theft") is None
