"""Security groups fail closed, acting as a tenant: a server naming a group that does not exist waits for it
(Nova's "Unable to find security_group"), and a group servers use is not deleted under them (Neutron's 409
"Security Group in use"): its deletion is held until the last of them stops naming it."""

from __future__ import annotations

import json

import pytest

from tests.cloud.bench import LocalCloud
from tests.conftest import Kubectl, Operator, condition, wait_for
from tests.httpsource import Source
from tests.integration.test_e2e import flavor, instance, unique, wait_image, wait_instance
from tests.integration.test_isolation import Tenant, install_tenant_roles
from tests.integration.test_placement import compute, os_image

pytestmark = pytest.mark.integration


def test_a_missing_group_is_waited_for_and_a_used_one_is_kept_until_its_last_server_goes(
        cloud: LocalCloud, operator: Operator, source: Source, kubectl: Kubectl) -> None:
    install_tenant_roles(cloud)
    tenant = Tenant(cloud, str(kubectl.namespace))
    fl = unique(kubectl, "sg")
    kubectl.apply(flavor(fl))  # flavors are the cloud administrator's
    os_image(tenant, source)
    wait_image(tenant, "os", "active")

    # A server naming a group that does not exist does not boot: it waits, as for a missing flavor.
    tenant.apply([instance("a", fl, "os", securityGroups=["web"]), instance("b", fl, "os", securityGroups=["web"])])
    waiting = wait_for(lambda: (i := tenant.get("instance", "a")) and condition(i).get("reason")
                       == "WaitingForSecurityGroup" and i, 60, "a to wait for its security group")
    assert waiting["status"]["status"] == "BUILD" and condition(waiting, "Reconciling")["status"] == "True"
    assert "Unable to find security_group with name or id 'web'" in condition(waiting)["message"]
    assert kubectl.get("vm", "a") is None  # nothing made: the admin looks, the tenant has no right on VMs

    # The tenant makes the group: both boot, with no other event.
    tenant.apply(compute("SecurityGroup", "web", rules=[{"protocol": "tcp", "portRangeMin": 443}]))
    wait_instance(tenant, "a", "ACTIVE", timeout=90)
    wait_instance(tenant, "b", "ACTIVE", timeout=90)
    group = wait_for(lambda: (g := tenant.get("securitygroup", "web")) and g["metadata"].get("finalizers") and g,
                     30, "Kova's finalizer on the group")

    # Deleting it while servers use it leaves it there, saying why; its policy keeps protecting them.
    tenant("delete", "securitygroup", "web", "--wait=false")
    held = wait_for(lambda: (g := tenant.get("securitygroup", "web")) and condition(g).get("reason")
                    == "SecurityGroupInUse" and g, 30, "the group to say it is in use")
    assert held["metadata"]["deletionTimestamp"] and held["metadata"]["uid"] == group["metadata"]["uid"]
    assert condition(held)["message"].startswith("Security Group web in use by server(s) a, b")
    assert condition(held, "Stalled")["status"] == "True"
    events = [e for e in tenant.events("web") if e["involvedObject"]["kind"] == "SecurityGroup"]
    assert any(e["type"] == "Warning" and e["reason"] == "SecurityGroupInUse"
               and e["message"].startswith("Security Group web in use by server(s) a, b") for e in events), events
    policy = kubectl.get("networkpolicy", "kova-sg-web")
    assert policy is not None and policy["spec"]["ingress"][0]["ports"] == [{"protocol": "TCP", "port": 443}]
    assert tenant.status("instance", "a")["status"] == tenant.status("instance", "b")["status"] == "ACTIVE"

    # b stops naming it: a still holds it.
    tenant("patch", "instance", "b", "--type=merge", "-p", json.dumps({"spec": {"securityGroups": ["default"]}}))
    wait_for(lambda: condition(tenant.get("securitygroup", "web")).get("message", "").startswith(
        "Security Group web in use by server(s) a:"), 30, "the group to name only a")
    assert kubectl.get("networkpolicy", "kova-sg-web") is not None

    # The last server that names it goes: so does the group, and its policy with it, with nothing else done.
    tenant("delete", "instance", "a", "--wait=false")
    wait_for(lambda: tenant.get("securitygroup", "web") is None, 30, "the group to go with its last server")
    wait_for(lambda: kubectl.get("networkpolicy", "kova-sg-web") is None, 10, "the policy to go with its group")
    assert tenant.status("instance", "b")["status"] == "ACTIVE"
