"""A reconcile the API server refuses is retried by the operator itself, with back-off, until it goes through
(kova.adapters.informer.Coalescer): no further event is needed, and none is given here.

The API server refuses the operator's status writes to Instances with a ValidatingAdmissionPolicy (bound to
this test's namespace only: the operator is shared with the other tests) while an Instance boots; its
children come up, but its status cannot say so. Once the policy is deleted, the Instance becomes ACTIVE
with no edit to it and no event from the test: only the operator's retry can have written it.
"""

from __future__ import annotations

import json
import re
import subprocess
from typing import Any

import pytest

from tests.cloud.bench import LocalCloud, binary
from tests.conftest import Kubectl, Operator, condition, sample, scrape, wait_for, wait_settled
from tests.httpsource import Source
from tests.integration.test_e2e import disk, flavor, image, instance, unique, wait_image, wait_instance

pytestmark = pytest.mark.integration

ERRORS = ("kova_reconcile_errors_total", '{error="unexpected",kind="Instance"}')  # labels sorted, as exposed
CAP = 60  # the Coalescer's longest back-off: the most a retry can be away once the policy is gone


def operator_user(operator: Operator) -> str:
    """The name the API server knows the operator by (its ServiceAccount token's), as admission sees it."""
    out = subprocess.run([binary("kubectl"), f"--kubeconfig={operator.kubeconfig}", "auth", "whoami", "-o", "json"],
                         capture_output=True, text=True, check=True, timeout=60).stdout
    return str(json.loads(out)["status"]["userInfo"]["username"])


def refusal(name: str, namespace: str, user: str) -> list[dict[str, Any]]:
    """A policy and its binding that deny `user`'s writes of Instance status in `namespace` (a PATCH is an
    UPDATE to admission)."""
    policy = {
        "apiVersion": "admissionregistration.k8s.io/v1", "kind": "ValidatingAdmissionPolicy",
        "metadata": {"name": name},
        "spec": {"failurePolicy": "Fail",
                 "matchConstraints": {"resourceRules": [{
                     "apiGroups": ["compute.kova.dev"], "apiVersions": ["*"], "operations": ["UPDATE"],
                     "resources": ["instances/status"]}]},
                 "validations": [{"expression": f"request.userInfo.username != '{user}'",
                                  "message": f"{name}: status writes refused by the test"}]}}
    binding = {
        "apiVersion": "admissionregistration.k8s.io/v1", "kind": "ValidatingAdmissionPolicyBinding",
        "metadata": {"name": name},
        "spec": {"policyName": name, "validationActions": ["Deny"],
                 "matchResources": {"namespaceSelector": {"matchLabels": {"kubernetes.io/metadata.name": namespace}}}}}
    return [policy, binding]


def untouched(obj: dict[str, Any]) -> dict[str, Any]:
    """What an edit of the Instance (by a user, or Kopf's retry `touch` annotation) would change."""
    md = obj["metadata"]
    return {"spec": obj["spec"], "generation": md["generation"], "labels": md.get("labels"),
            "annotations": md.get("annotations")}


def test_refused_status_writes_are_retried_until_they_go_through(cloud: LocalCloud, operator: Operator,
                                                                 source: Source, kubectl: Kubectl) -> None:
    assert operator.proc is not None
    namespace = str(kubectl.namespace)
    fl = unique(kubectl, "f")
    kubectl.apply(image("os", source.add(f"/{namespace}/os", disk("retry"))))
    wait_image(kubectl, "os", "active")
    # The Instance first waits for its Flavor: its status says so before any write is refused, so the
    # operator's Kopf handler for it succeeds, and only the Coalescer (woken by the Flavor) meets the refusals.
    kubectl.apply(instance("vm", fl, "os"))
    waiting = wait_for(lambda: (o := kubectl.get("instance", "vm")) and condition(o, "Reconciling").get("reason")
                       == "WaitingForFlavor" and o, 30, "the Instance to wait for its Flavor")
    before = untouched(waiting)

    user = operator_user(operator)
    name = f"refuse-{namespace}"[:63]
    try:
        kubectl.apply(refusal(name, namespace, user))
        # The API server loads policies asynchronously: in force once a dry run of the operator's write is
        # denied. The probe has the operator's user name, in the masters group: kubectl reads the status before
        # it patches, which the operator's RBAC does not allow; admission looks at the name only.
        wait_for(lambda: name in kubectl("patch", "instance", "vm", "--subresource=status", "--type=merge",
                                         "-p", '{"status":{"status":"BUILD"}}', "--dry-run=server", f"--as={user}",
                                         "--as-group=system:masters", check=False),
                 30, "the admission policy to be in force")
        errors = sample(scrape(operator.proc), *ERRORS)
        logged = len(operator.log())
        kubectl.apply(flavor(fl))  # wakes the Instance: from here on, the test gives it no event

        def failures() -> list[tuple[int, float]]:
            """(failures in a row, seconds to the next retry), as the operator logged them."""
            return [(int(n), float(secs)) for n, secs in re.findall(
                rf"Instance reconcile \('{namespace}', 'vm'\) failed \((\d+) in a row\); retrying in ([0-9.]+) s",
                operator.log()[logged:])]
        # Its children come up (it would be ACTIVE) and stop changing, while every status write is refused.
        wait_for(lambda: (kubectl.get("vmi", "vm") or {}).get("status", {}).get("phase") == "Running", 90,
                 "the VMI to run")

        def children() -> tuple[Any, ...]:
            return tuple((kubectl.get(kind, child) or {}).get("metadata", {}).get("resourceVersion")
                         for kind, child in (("vm", "vm"), ("vmi", "vm"), ("dv", "vm-root"), ("pvc", "vm-root")))
        wait_settled(children, timeout=60, quiet=3, what="the Instance's children to stop changing")
        # Retried by the back-off's timer too, not only by the children's events: the delay grew from 0.5 s
        # (two timer retries failed: 0.5 s, then 1 s, then 2 s less the jitter).
        wait_for(lambda: any(delay >= 1.8 for _, delay in failures()), 60, "refused retries, waiting longer")
        seen = failures()
        assert [n for n, _ in seen] == list(range(1, len(seen) + 1)), "one key's failures, counted in a row"
        assert seen[0][1] <= 0.5
        refused = kubectl.get("instance", "vm")
        assert refused is not None
        assert refused["status"] == waiting["status"], "no status write went through"
        assert refused["status"]["status"] == "BUILD"
        assert sample(scrape(operator.proc), *ERRORS) - errors >= 3
        assert f"{name}: status writes refused by the test" in operator.log()[logged:]
    finally:
        kubectl("delete", "validatingadmissionpolicybinding,validatingadmissionpolicy", name,
                "--ignore-not-found", check=False)

    # No edit, no event: the next retry (at most CAP seconds away, after the policy is gone) writes it.
    active = wait_instance(kubectl, "vm", "ACTIVE", timeout=CAP + 30)
    assert untouched(active) == before, "the Instance was not edited (nor touched by Kopf's own retry)"
    assert condition(active)["status"] == "True" and active["status"]["powerState"] == "Running"
