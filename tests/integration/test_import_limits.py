"""Imports are fair and finite (issue 17), on the local cloud through kubectl: a source that trickles is hung
up on and its Image killed (ImportTooSlow), one that never finishes is killed at the deadline
(ImportTimeout), and with one slot a namespace's second import waits behind another namespace's first."""

from __future__ import annotations

import time
import uuid
from collections.abc import Iterator

import pytest

from tests.cloud.bench import LocalCloud
from tests.conftest import Kubectl, Operator, condition, wait_for
from tests.httpsource import Source
from tests.integration.test_e2e import image, wait_image
from tests.integration.test_import_safety import assert_killed
from tests.integration.test_isolation import Tenant, install_tenant_roles

pytestmark = pytest.mark.integration
MiB = 1 << 20
DEADLINE = 10


def tenant(cloud: LocalCloud, kubectl: Kubectl) -> Tenant:
    """A member of the test's namespace (a ServiceAccount token with `edit` there): the attacks are a tenant's."""
    install_tenant_roles(cloud)
    return Tenant(cloud, str(kubectl.namespace))


def trickle(source: Source, path: str, per_second: int) -> str:
    """A source that announces a MiB and sends `per_second` bytes a second until it is hung up on."""
    return source.add(path, b"\0" * per_second, claimed_length=MiB, repeat=True, pause=1.0)


@pytest.fixture(scope="module")
def limited(operator: Operator, source: Source) -> Iterator[Operator]:
    """The operator with one import slot, a minimum rate of 1 KiB/s over 2 seconds and a short deadline."""
    operator.stop()
    operator.start(KOVA_MAX_CONCURRENT_IMPORTS="1", KOVA_IMPORT_MIN_RATE="1Ki", KOVA_IMPORT_MIN_RATE_WINDOW="2",
                   KOVA_IMPORT_DEADLINE=str(DEADLINE),
                   KOVA_IMPORT_ALLOWED_HOSTS=source.netloc)
    yield operator
    operator.stop()
    operator.start()


def test_a_source_that_trickles_is_hung_up_on(cloud: LocalCloud, limited: Operator, source: Source,
                                              kubectl: Kubectl) -> None:
    """A byte a second against a minimum of 1 KiB/s over 2 s: killed within seconds, the figures said, the
    source hung up on, nothing kept."""
    path = f"/{kubectl.namespace}/drip"
    tenant(cloud, kubectl).apply(image("drip", trickle(source, path, 1), diskFormat="raw"))
    start = time.monotonic()
    img = assert_killed(cloud, kubectl, "drip", "ImportTooSlow")
    assert time.monotonic() - start < 30
    message = img["status"]["message"]
    assert "bytes/s), under the minimum of 1024 bytes/s over 2 seconds" in message, message
    assert "KOVA_IMPORT_MIN_RATE" in message and f"of {MiB} bytes in all" in message
    wait_for(lambda: source.routes[path].hung_up, 10, "the source to be hung up on")


def test_an_import_that_never_finishes_is_killed_at_the_deadline(cloud: LocalCloud, limited: Operator,
                                                                 source: Source, kubectl: Kubectl) -> None:
    """Fast enough for the minimum rate (4 KiB/s), too slow to send its MiB before the deadline."""
    path = f"/{kubectl.namespace}/slow"
    tenant(cloud, kubectl).apply(image("slow", trickle(source, path, 4096), diskFormat="raw"))
    wait_image(kubectl, "slow", "killed", timeout=DEADLINE + 30)
    img = assert_killed(cloud, kubectl, "slow", "ImportTimeout")
    assert f"within {DEADLINE} seconds (KOVA_IMPORT_DEADLINE)" in img["status"]["message"]
    wait_for(lambda: source.routes[path].hung_up, 10, "the source to be hung up on")


def test_a_namespace_waits_behind_another_namespace_only_for_its_turn(cloud: LocalCloud, limited: Operator,
                                                                      source: Source, kubectl: Kubectl) -> None:
    """One slot; namespace A queues two slow imports, then B one: when A's first ends, B's runs before A's
    second. A namespace alone gets the slot whenever it is free (A's second runs after B's)."""
    other = f"{kubectl.namespace[:50]}-b{uuid.uuid4().hex[:4]}"
    cloud.kubectl("create", "namespace", other)
    a, b = tenant(cloud, kubectl), Tenant(cloud, other)  # each namespace's own member
    try:
        data = b"\x5a" * (4 * MiB)  # 4 s each at 1 s per MiB: well within the deadline, far above the rate
        routes = {n: f"/{ns}/{n}" for n, ns in (("a1", kubectl.namespace), ("a2", kubectl.namespace),
                                                 ("b1", other))}
        urls = {n: source.add(p, data, seconds_per_mib=1.0) for n, p in routes.items()}
        a.apply([image(n, urls[n], diskFormat="raw") for n in ("a1", "a2")])

        def queued(k: Kubectl, name: str) -> bool:
            return "waiting for an import slot" in (condition(k.get("image", name)).get("message") or "")
        first, second = wait_for(lambda: (("a1", "a2") if queued(kubectl, "a2") else ("a2", "a1") if queued(
            kubectl, "a1") else None), 30, "one of A's imports to run and the other to wait")
        b.apply(image("b1", urls["b1"], diskFormat="raw"))
        wait_for(lambda: queued(b, "b1"), 30, "B's import to wait")
        assert source.routes[routes[second]].hits == 0 and source.routes[routes[first]].hits == 1
        wait_image(kubectl, first, "active")
        wait_for(lambda: source.routes[routes["b1"]].hits or source.routes[routes[second]].hits, 30,
                 "the next import to start")
        assert source.routes[routes["b1"]].hits == 1 and source.routes[routes[second]].hits == 0, \
            "B's first import must run before A's second"
        wait_image(b, "b1", "active")
        wait_image(kubectl, second, "active")
    finally:
        cloud.kubectl("delete", "namespace", other, "--wait=false", check=False)
