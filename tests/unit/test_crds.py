"""crds/ is generated from the models: it must match them, and carry what users rely on."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import yaml

from kova.api import crdgen
from kova.api.models import KINDS

CRDS = Path(__file__).resolve().parents[2] / "crds"


def test_crds_folder_matches_the_models() -> None:
    expected = crdgen.files()
    on_disk = {p.name: p.read_text() for p in CRDS.glob("*.yaml")}
    assert sorted(on_disk) == sorted(expected), "crds/ has missing or extra files: run `make crds`"
    for name, text in expected.items():
        assert on_disk[name] == text, f"crds/{name} is stale: run `make crds`"


def _schema(kind: str) -> dict[str, Any]:
    crd = next(c for c in crdgen.all_crds() if c["spec"]["names"]["kind"] == kind)
    return dict(crd["spec"]["versions"][0]["schema"]["openAPIV3Schema"])


def _walk(node: dict[str, Any]) -> list[dict[str, Any]]:
    """Every schema node, following properties / items / additionalProperties."""
    out = [node]
    for sub in node.get("properties", {}).values():
        out.extend(_walk(sub))
    for key in ("items", "additionalProperties"):
        if isinstance(node.get(key), dict):
            out.extend(_walk(node[key]))
    return out


def test_schemas_are_structural() -> None:
    for info in KINDS:
        for node in _walk(_schema(info.kind)):
            assert "$ref" not in node and "anyOf" not in node and "title" not in node, node
            if "properties" in node:
                assert node.get("type") == "object", node


def test_status_subresource_columns_and_category() -> None:
    for crd in crdgen.all_crds():
        version = crd["spec"]["versions"][0]
        assert version["subresources"] == {"status": {}}
        assert "kova" in crd["spec"]["names"]["categories"]
        columns = {c["name"] for c in version["additionalPrinterColumns"]}
        if crd["spec"]["names"]["kind"] == "MetadefNamespace":  # data, no controller: kstatus Current once stored
            assert "Ready" not in columns and {"Namespace", "Visibility", "Protected"} <= columns
        else:
            assert "Ready" in columns


def test_image_defaults_enums_and_immutable_source() -> None:
    spec = _schema("Image")["properties"]["spec"]
    assert spec["properties"]["visibility"]["default"] == "private"
    assert spec["properties"]["containerFormat"]["default"] == "bare"
    assert set(spec["properties"]["diskFormat"]["enum"]) == {"raw", "qcow2", "iso", "vmdk", "vhd", "vhdx", "vdi"}
    rules = [r["rule"] for r in spec["properties"]["source"]["x-kubernetes-validations"]]
    assert rules[0] == "self == oldSelf || (has(oldSelf.upload) && has(self.url))"
    assert any("has(self.instance)" in r for r in rules)
    assert "source" in spec["required"] and "diskFormat" not in spec["required"]  # an upload may set it later
    assert spec["x-kubernetes-validations"][0]["rule"] == "has(self.diskFormat) || !has(self.source.url)"


def test_flavor_is_cluster_scoped_with_immutable_sizes() -> None:
    crd = next(c for c in crdgen.all_crds() if c["spec"]["names"]["kind"] == "Flavor")
    assert crd["spec"]["scope"] == "Cluster"
    rules = _schema("Flavor")["properties"]["spec"]["x-kubernetes-validations"]
    assert "oldSelf.vcpus" in rules[0]["rule"]


def test_status_conditions_are_a_map_keyed_by_type() -> None:
    conditions = _schema("Instance")["properties"]["status"]["properties"]["conditions"]
    assert conditions["x-kubernetes-list-type"] == "map"
    assert conditions["x-kubernetes-list-map-keys"] == ["type"]


def test_protected_image_and_locked_instance_policies_guard_delete_only() -> None:
    images, image_binding, instances, instance_binding = list(yaml.safe_load_all(
        crdgen.files()["protected-images.policy.yaml"]))[:4]
    for policy, binding, resource in ((images, image_binding, "images"), (instances, instance_binding, "instances")):
        rule = policy["spec"]["matchConstraints"]["resourceRules"][0]
        assert rule["operations"] == ["DELETE"] and rule["resources"] == [resource]
        assert binding["spec"]["validationActions"] == ["Deny"]
        assert binding["spec"]["policyName"] == policy["metadata"]["name"]


def test_publicize_and_snapshot_policies_ask_the_requesters_rights() -> None:
    docs = {d["metadata"]["name"]: d for d in yaml.safe_load_all(crdgen.files()["protected-images.policy.yaml"])
            if d["kind"] == "ValidatingAdmissionPolicy"}
    publicize = docs[crdgen.PUBLICIZE_POLICY]["spec"]
    assert publicize["matchConstraints"]["resourceRules"][0]["operations"] == ["CREATE", "UPDATE"]
    assert ".check('publicize').allowed()" in publicize["validations"][0]["expression"]
    snapshot = docs[crdgen.SNAPSHOT_POLICY]["spec"]
    assert ".name(object.spec.source.instance).check('update')" in snapshot["validations"][0]["expression"]
    source = docs[crdgen.SOURCE_POLICY]["spec"]
    assert source["matchConstraints"]["resourceRules"][0]["operations"] == ["UPDATE"]
    assert "oldObject.status.status == 'queued'" in source["validations"][0]["expression"]
    stores = docs[crdgen.STORES_POLICY]["spec"]["validations"][0]["expression"]
    assert ".resource('images').check('admin').allowed()" in stores and "['active', 'deactivated']" in stores


def test_chart_carries_the_same_crds_and_policy() -> None:
    chart = CRDS.parent / "charts" / "kova"
    for path in CRDS.glob("*.yaml"):
        copy = chart / ("files" if path.name.endswith(".policy.yaml") else "crds") / path.name
        assert copy.exists() and copy.read_text() == path.read_text(), f"{copy} is stale: run `make crds`"
    assert sorted(p.name for p in (chart / "crds").glob("*.yaml")) == sorted(
        p.name for p in CRDS.glob("*.yaml") if not p.name.endswith(".policy.yaml"))


def test_metadef_namespaces_are_cluster_scoped_keyed_lists_and_protected_from_kubectl_delete() -> None:
    crd = next(c for c in crdgen.all_crds() if c["spec"]["names"]["kind"] == "MetadefNamespace")
    assert crd["spec"]["scope"] == "Cluster"
    spec = _schema("MetadefNamespace")["properties"]["spec"]
    for field in ("objects", "tags", "resourceTypeAssociations"):
        assert spec["properties"][field]["x-kubernetes-list-map-keys"] == ["name"]  # the API server refuses twins
    assert spec["properties"]["properties"]["additionalProperties"]["x-kubernetes-preserve-unknown-fields"]
    policy = next(d for d in crdgen.protection_policy() if d["metadata"]["name"] == crdgen.METADEF_PROTECTION_POLICY
                  and d["kind"] == "ValidatingAdmissionPolicy")
    assert policy["spec"]["matchConstraints"]["resourceRules"][0]["resources"] == ["metadefnamespaces"]
