"""The Helm chart, with a real helm and the bench's real API server."""

from __future__ import annotations

import json
import subprocess
from typing import Any

import pytest
import yaml

from kova.adapters.store import StoreConfig, parse_stores
from kova.api.quantity import parse_size
from tests.cloud.bench import REPO, LocalCloud, binary

pytestmark = pytest.mark.integration
CHART = REPO / "charts" / "kova"


def helm(*args: str, check: bool = True) -> subprocess.CompletedProcess[str]:
    res = subprocess.run([binary("helm"), *args], capture_output=True, text=True, timeout=120)
    if check:
        assert res.returncode == 0, res.stderr
    return res


def render(*sets: str, crds: bool = False) -> list[dict[str, Any]]:
    args = ["template", "kova", str(CHART), "--namespace", "kova-system", *(f"--set={s}" for s in sets)]
    out = helm(*args, *(["--include-crds"] if crds else [])).stdout
    return [d for d in yaml.safe_load_all(out) if d]


def find(docs: list[dict[str, Any]], kind: str, name: str | None = None) -> dict[str, Any]:
    return next(d for d in docs if d["kind"] == kind and (name is None or d["metadata"]["name"] == name))


def test_helm_lint_strict() -> None:
    out = helm("lint", "--strict", str(CHART)).stdout
    assert "0 chart(s) failed" in out


FILE_STORE = ("stores.extra[0].id=local", "stores.extra[0].type=file", "stores.extra[0].weight=50",
              "stores.extra[0].default=true", "stores.extra[1].id=archive", "stores.extra[1].type=s3",
              "stores.extra[1].endpoint=s3.example:443", "stores.extra[1].existingSecret=archive-keys")


@pytest.mark.parametrize("sets", [(), ("replicaCount=2", "minio.enabled=false", "s3.endpoint=s3.example:9000",
                                       "s3.existingSecret=store", "watchNamespaces={a,b}"), FILE_STORE])
def test_rendered_chart_is_accepted_by_the_api_server(cloud: LocalCloud, sets: tuple[str, ...]) -> None:
    cloud.kubectl("create", "namespace", "kova-system", check=False)
    manifest = yaml.safe_dump_all(render(*sets, crds=True))
    out = cloud.kubectl("apply", "--server-side", "--force-conflicts", "--dry-run=server", "-f", "-",
                        input=manifest)
    for kind in ("deployment.apps/kova", "clusterrole.rbac.authorization.k8s.io/kova", "serviceaccount/kova",
                 "customresourcedefinition.apiextensions.k8s.io/images.image.kova.dev",
                 "validatingadmissionpolicy.admissionregistration.k8s.io/kova-protected-images"):
        assert kind in out, out


def test_defaults_bundle_minio_and_harden_the_pods() -> None:
    docs = render()
    deploy = find(docs, "Deployment", "kova")
    pod = deploy["spec"]["template"]["spec"]
    container = pod["containers"][0]
    assert pod["securityContext"]["runAsNonRoot"] is True
    assert pod["securityContext"]["seccompProfile"] == {"type": "RuntimeDefault"}
    assert container["securityContext"]["readOnlyRootFilesystem"] is True
    assert container["securityContext"]["capabilities"] == {"drop": ["ALL"]}
    assert container["securityContext"]["allowPrivilegeEscalation"] is False
    assert container["livenessProbe"]["httpGet"]["path"] == "/healthz"
    assert container["readinessProbe"]["httpGet"]["path"] == "/healthz"
    assert not any(a.startswith("--peering") for a in container["args"])  # one replica: no peering
    env = {e["name"]: e for e in container["env"]}
    assert env["KOVA_S3_ENDPOINT"]["value"] == "kova-minio.kova-system.svc:9000"
    assert env["KOVA_S3_SECRET_KEY"]["valueFrom"]["secretKeyRef"]["name"] == "kova-s3"
    assert find(docs, "StatefulSet", "kova-minio")["spec"]["volumeClaimTemplates"][0]["spec"]["resources"]
    assert find(docs, "Secret", "kova-s3")["data"]["secretKey"]


def test_external_store_and_ha() -> None:
    docs = render("replicaCount=2", "minio.enabled=false", "s3.endpoint=s3.example:9000",
                  "s3.existingSecret=store")
    kinds = {d["kind"] for d in docs}
    assert "StatefulSet" not in kinds and "Secret" not in kinds
    container = find(docs, "Deployment", "kova")["spec"]["template"]["spec"]["containers"][0]
    assert "--peering=kova" in container["args"]
    lease = find(docs, "Role", "kova-leader")["rules"]
    assert {"apiGroups": ["coordination.k8s.io"], "resources": ["leases"], "resourceNames": ["kova"],
            "verbs": ["get", "update"]} in lease, "the replicas may renew their own Lease and no other"
    assert find(docs, "RoleBinding", "kova-leader")["subjects"][0]["name"] == "kova"
    env = {e["name"]: e for e in container["env"]}
    assert env["KOVA_S3_ENDPOINT"]["value"] == "s3.example:9000"
    assert env["KOVA_S3_ACCESS_KEY"]["valueFrom"]["secretKeyRef"]["name"] == "store"


def test_stores_reach_every_container_that_moves_image_bytes() -> None:
    """KOVA_STORES as the operator parses it; a file store's claim mounted into the operator, the API and both
    workers; an extra S3 store's keys from its Secret; the links' key from a Secret of the chart's."""
    docs = render(*FILE_STORE)
    claim = find(docs, "PersistentVolumeClaim", "kova-store-local")
    assert claim["spec"]["accessModes"] == ["ReadWriteMany"]
    assert find(docs, "Secret", "kova-store-links")["data"]["key"]
    for name in ("kova", "kova-api"):
        pod = find(docs, "Deployment", name)["spec"]["template"]["spec"]
        assert {"name": "store-local", "persistentVolumeClaim": {"claimName": "kova-store-local"}} in pod["volumes"]
        main, worker = pod["containers"][0], next(c for c in pod["containers"] if c["name"] == "worker")
        for container in (main, worker):
            env = {e["name"]: e for e in container["env"]}
            specs = parse_stores(env["KOVA_STORES"]["value"], StoreConfig("e:1", "a", "b", "kova-images"),
                                 {"KOVA_STORE_ARCHIVE_ACCESS_KEY": "x", "KOVA_STORE_ARCHIVE_SECRET_KEY": "y"})
            assert [(s.id, s.kind, s.default) for s in specs] == [("s3", "s3", False), ("local", "file", True),
                                                                 ("archive", "s3", False)]
            assert specs[1].url == "http://kova-api.kova-system.svc:8780"
            assert {"name": "store-local", "mountPath": specs[1].path} in container["volumeMounts"]
            assert env["KOVA_STORE_ARCHIVE_ACCESS_KEY"]["valueFrom"]["secretKeyRef"]["name"] == "archive-keys"
            assert env["KOVA_STORE_LINK_KEY"]["valueFrom"]["secretKeyRef"]["name"] == "kova-store-links"
    # Without extra stores: the S3 store alone, nothing to sign.
    default = {e["name"]: e for e in find(render(), "Deployment", "kova")["spec"]["template"]["spec"][
        "containers"][0]["env"]}
    assert "KOVA_STORE_LINK_KEY" not in default and '"id":"s3"' in default["KOVA_STORES"]["value"]


def test_import_filter_and_size_cap_values_reach_the_operator() -> None:
    """The chart's importFilter.* and imageSizeCap become the environment the operator parses."""
    from kova.image.filter import ImportFilter
    from kova.image.importer import DEFAULT_SIZE_CAP

    def env_of(*sets: str) -> dict[str, str]:
        container = find(render(*sets), "Deployment", "kova")["spec"]["template"]["spec"]["containers"][0]
        return {e["name"]: e.get("value", "") for e in container["env"]}

    default = env_of()
    assert ImportFilter.from_env(default) == ImportFilter()
    assert default["KOVA_IMAGE_SIZE_CAP"] == "1Ti" and parse_size(default["KOVA_IMAGE_SIZE_CAP"]) == DEFAULT_SIZE_CAP
    tight = env_of("importFilter.allowedSchemes={https}", "importFilter.allowedPorts={443,8443}",
                   "importFilter.allowedHosts={mirror.internal,10.20.0.0/16}",
                   "importFilter.deniedHosts={0.0.0.0/0,::/0}", "imageSizeCap=100Gi")
    rules = ImportFilter.from_env(tight)
    assert rules.schemes == {"https"} and rules.ports == {443, 8443}
    assert [r.text for r in rules.allowed] == ["mirror.internal", "10.20.0.0/16"]
    assert [r.text for r in rules.denied] == ["0.0.0.0/0", "::/0"]
    assert parse_size(tight["KOVA_IMAGE_SIZE_CAP"]) == 100 << 30
    assert default["KOVA_MAX_CONCURRENT_IMPORTS"] == "4"


@pytest.mark.parametrize("bad", ["replicaCount=-1", "s3.endpoint=http://s3.example", "logFormat=xml",
                                 "unknownKey=1", "importFilter.allowedSchemes={ftp}", "imageSizeCap=lots",
                                 "importFilter.allowedPorts={70000}", "maxConcurrentImports=0"])
def test_values_schema_rejects_bad_values(bad: str) -> None:
    res = helm("template", "kova", str(CHART), f"--set={bad}", check=False)
    assert res.returncode != 0 and "schema" in res.stderr.lower(), res.stderr


def test_rbac_never_reads_secrets_and_has_no_wildcards() -> None:
    for role in (d for d in render() if d["kind"] == "ClusterRole"):
        for rule in role["rules"]:
            assert "*" not in rule["verbs"] and "*" not in rule["resources"], rule
            if "secrets" in rule["resources"]:
                # Snapshot export tokens: Kova writes the Secret it hands to KubeVirt, and never reads one.
                assert set(rule["verbs"]) == {"create", "delete"}, rule


def test_the_catalog_url_comes_from_the_ingress_when_none_is_given() -> None:
    def args(*values: str) -> list[str]:
        pod = find(render(*values), "Deployment", "kova-api")["spec"]["template"]["spec"]
        return list(pod["containers"][0]["args"])
    tls = ("api.ingress.enabled=true", "api.ingress.host=cloud.example", "api.ingress.tls[0].hosts[0]=cloud.example",
           "api.ingress.tls[0].secretName=cloud-tls")
    assert args(*tls)[-1] == "--public-url=https://cloud.example"
    assert args("api.ingress.enabled=true", "api.ingress.host=cloud.example")[-1] == "--public-url=http://cloud.example"
    assert args(*tls, "api.publicUrl=https://api.example:8443")[-1] == "--public-url=https://api.example:8443"
    assert not any(a.startswith("--public-url") for a in args())


def test_the_api_is_its_own_hardened_deployment_with_a_read_only_account() -> None:
    docs = render("api.publicUrl=https://cloud.example", "api.ingress.enabled=true", "api.ingress.host=cloud.example")
    deploy = find(docs, "Deployment", "kova-api")
    pod = deploy["spec"]["template"]["spec"]
    container = pod["containers"][0]
    assert deploy["spec"]["replicas"] == 2 and pod["serviceAccountName"] == "kova-api"
    assert container["args"] == ["api", "--listen=0.0.0.0:8780", "--public-url=https://cloud.example"]
    assert container["securityContext"]["readOnlyRootFilesystem"] is True and pod["securityContext"]["runAsNonRoot"]
    # Its pods are not the operator's: neither Deployment's selector matches the other's pods.
    operator = find(docs, "Deployment", "kova")
    assert operator["spec"]["selector"]["matchLabels"] != deploy["spec"]["selector"]["matchLabels"]
    assert not operator["spec"]["selector"]["matchLabels"].items() <= pod.get("labels", deploy["spec"]["template"][
        "metadata"]["labels"]).items()
    env = {e["name"]: e for e in container["env"]}
    assert env["KOVA_S3_SECRET_KEY"]["valueFrom"]["secretKeyRef"]["name"] == "kova-s3"
    assert find(docs, "Service", "kova-api")["spec"]["ports"][0]["port"] == 8780
    assert find(docs, "Ingress", "kova-api")["spec"]["rules"][0]["host"] == "cloud.example"
    rules = find(docs, "ClusterRole", "kova-api")["rules"]
    assert {v for r in rules if "images" in r["resources"] for v in r["verbs"]} == {"get", "list", "watch"}
    reader, editor = find(docs, "ClusterRole", "kova-image-reader"), find(docs, "ClusterRole", "kova-image-editor")
    assert reader["metadata"]["labels"]["rbac.authorization.k8s.io/aggregate-to-view"] == "true"
    assert editor["metadata"]["labels"]["rbac.authorization.k8s.io/aggregate-to-edit"] == "true"
    assert "images/file" in reader["rules"][0]["resources"] and editor["rules"][1] == {
        "apiGroups": ["image.kova.dev"], "resources": ["images/file"], "verbs": ["update"]}
    assert not [d for d in render("api.enabled=false") if d["metadata"]["name"] == "kova-api"]


def test_the_operator_under_test_has_only_the_charts_permissions(cloud: LocalCloud) -> None:
    from tests.conftest import chart_rbac_kubeconfig

    kubeconfig = chart_rbac_kubeconfig(cloud)

    def can(verb: str, resource: str) -> bool:
        out = cloud.kubectl(f"--kubeconfig={kubeconfig}", "auth", "can-i", verb, resource, "-A", check=False)
        return out.strip().splitlines()[0] == "yes"

    assert can("patch", "virtualmachines.kubevirt.io") and can("create", "datavolumes.cdi.kubevirt.io")
    assert can("patch", "images.image.kova.dev/status")
    assert not can("get", "secrets") and not can("list", "secrets") and not can("watch", "secrets")
    assert not can("delete", "virtualmachines.kubevirt.io")

    def can_sub(resource: str, subresource: str) -> bool:
        """(kubectl auth can-i cannot name a subresource of an aggregated API: ask the API server itself)"""
        review = {"apiVersion": "authorization.k8s.io/v1", "kind": "SelfSubjectAccessReview", "spec": {
            "resourceAttributes": {"verb": "update", "group": "subresources.kubevirt.io", "resource": resource,
                                   "subresource": subresource, "namespace": "any"}}}
        out = cloud.kubectl(f"--kubeconfig={kubeconfig}", "create", "-f", "-", "-o", "json", input=json.dumps(review))
        return bool(json.loads(out)["status"].get("allowed"))

    assert can_sub("virtualmachineinstances", "pause") and can_sub("virtualmachines", "restart")
    assert not can_sub("virtualmachineinstances", "vnc") and not can_sub("virtualmachines", "migrate")
    assert not can("create", "customresourcedefinitions.apiextensions.k8s.io")


@pytest.mark.parametrize("deployment", ["kova", "kova-api"])
def test_tenant_bytes_go_to_a_worker_container_without_a_kubernetes_token(deployment: str) -> None:
    pod = find(render(), "Deployment", deployment)["spec"]["template"]["spec"]
    assert pod["automountServiceAccountToken"] is False, "the kubelet would mount the token into every container"
    main, worker = pod["containers"]
    assert worker["name"] == "worker" and worker["args"] == ["worker", "--socket=/run/kova/worker.sock"]
    token = "/var/run/secrets/kubernetes.io/serviceaccount"
    assert any(m["mountPath"] == token for m in main["volumeMounts"])
    assert not any(m["mountPath"].startswith("/var/run/secrets") for m in worker["volumeMounts"])
    volumes = {v["name"]: v for v in pod["volumes"]}
    assert {"serviceAccountToken": {"path": "token", "expirationSeconds": 3607}} in \
        volumes["kube-api-access"]["projected"]["sources"]
    assert {"name": "KOVA_WORKER_SOCKET", "value": "/run/kova/worker.sock"} in main["env"]
    names = {e["name"] for e in worker["env"]}
    assert "KOVA_S3_SECRET_KEY" in names and "KOVA_IMPORT_DENIED_HOSTS" in names
    assert not any(n.startswith("KUBE") for n in names)
    assert worker["resources"]["limits"] == {"cpu": "2", "memory": "384Mi"}
    assert worker["securityContext"]["readOnlyRootFilesystem"] is True
