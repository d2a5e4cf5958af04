"""Build structural CRDs for KubeVirt and CDI from their official OpenAPI (swagger 2.0) documents.

The bench has no KubeVirt or CDI installed, but the API server must still validate every VirtualMachine,
DataVolume and VirtualMachineExport exactly as a real cluster would. So the kinds are declared from the projects'
published schemas (vendored in third_party/, see its README), inlined into the structural form that
apiextensions requires.

    python -m tests.cloud.kubevirt_crds            # rewrite tests/cloud/crds/kubevirt-cdi.yaml
"""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Any

import yaml

HERE = Path(__file__).resolve().parent
REFERENCE = HERE.parents[1] / "third_party"
OUTPUT = HERE / "crds" / "kubevirt-cdi.yaml"

# (swagger file, definition, group, version, kind, plural, short names, printer columns)
KINDS: list[tuple[str, str, str, str, str, str, list[str], list[dict[str, str]]]] = [
    ("kubevirt", "v1.VirtualMachine", "kubevirt.io", "v1", "VirtualMachine", "virtualmachines",
     ["vm", "vms"], [
         {"name": "Status", "type": "string", "jsonPath": ".status.printableStatus"},
         {"name": "Ready", "type": "string", "jsonPath": ".status.conditions[?(@.type=='Ready')].status"},
     ]),
    ("kubevirt", "v1.VirtualMachineInstance", "kubevirt.io", "v1", "VirtualMachineInstance",
     "virtualmachineinstances", ["vmi", "vmis"], [
         {"name": "Phase", "type": "string", "jsonPath": ".status.phase"},
         {"name": "IP", "type": "string", "jsonPath": ".status.interfaces[0].ipAddress"},
     ]),
    # As virt-operator installs it (served as v1; v1beta1 is deprecated and left out).
    ("kubevirt", "v1.VirtualMachineExport", "export.kubevirt.io", "v1", "VirtualMachineExport",
     "virtualmachineexports", ["vmexport", "vmexports"], [
         {"name": "SourceKind", "type": "string", "jsonPath": ".spec.source.kind"},
         {"name": "SourceName", "type": "string", "jsonPath": ".spec.source.name"},
         {"name": "Phase", "type": "string", "jsonPath": ".status.phase"},
     ]),
    ("cdi", "v1beta1.DataVolume", "cdi.kubevirt.io", "v1beta1", "DataVolume", "datavolumes",
     ["dv", "dvs"], [
         {"name": "Phase", "type": "string", "jsonPath": ".status.phase"},
         {"name": "Progress", "type": "string", "jsonPath": ".status.progress"},
     ]),
]

# Vendor extensions the apiextensions schema accepts; the patch-strategy ones are for strategic merge only.
_KEEP_EXTENSIONS = {"x-kubernetes-list-type", "x-kubernetes-list-map-keys", "x-kubernetes-map-type"}
_KEEP_FORMATS = ("int32", "int64", "date-time", "byte", "float", "double")
_PRESERVE: dict[str, Any] = {"type": "object", "x-kubernetes-preserve-unknown-fields": True}


def _special(name: str, root: bool) -> dict[str, Any] | None:
    """Apimachinery types whose swagger form is not structural, mapped the way kubebuilder maps them."""
    short = name.rsplit(".", 1)[-1]
    if short in ("Quantity", "IntOrString"):
        return {"x-kubernetes-int-or-string": True,
                **({"anyOf": [{"type": "integer"}, {"type": "string"}]} if short == "Quantity" else {})}
    if short == "Time" or short == "MicroTime":
        return {"type": "string", "format": "date-time"}
    if short == "Duration":
        return {"type": "string"}
    if short == "ObjectMeta":
        # The server validates metadata itself; nested template metadata is kept as written.
        return {"type": "object"} if root else dict(_PRESERVE)
    if short in ("RawExtension", "FieldsV1"):
        return dict(_PRESERVE)
    return None


def _convert(node: dict[str, Any], defs: dict[str, Any], stack: tuple[str, ...]) -> dict[str, Any]:
    if "$ref" in node:
        name = node["$ref"].split("/")[-1]
        special = _special(name, root=False)
        if special is not None:
            return special
        if name in stack:  # a recursive type: stop where the structure repeats
            return dict(_PRESERVE)
        return _convert(defs[name], defs, (*stack, name))
    out: dict[str, Any] = {}
    for key, value in node.items():
        if key in ("description", "default", "x-kubernetes-patch-strategy", "x-kubernetes-patch-merge-key",
                   "x-kubernetes-unions"):
            continue  # descriptions and defaults are not needed to validate, and keep the CRD small
        if key == "properties":
            out[key] = {k: _convert(v, defs, stack) for k, v in value.items()}
        elif key == "items":
            out[key] = _convert(value, defs, stack)
        elif key == "additionalProperties":
            out[key] = _convert(value, defs, stack) if isinstance(value, dict) else value
        elif (key.startswith("x-") and key not in _KEEP_EXTENSIONS) or (
                key == "format" and value not in _KEEP_FORMATS):
            continue
        else:
            out[key] = value
    if isinstance(out.get("type"), list):  # swagger's ["string", "number"] is Kubernetes' IntOrString
        out = {"x-kubernetes-int-or-string": True}
    if out.get("format") == "int-or-string":
        out = {"x-kubernetes-int-or-string": True}
    if out.get("type") == "object" and "properties" not in out and "additionalProperties" not in out:
        out["x-kubernetes-preserve-unknown-fields"] = True
    if "type" not in out and not out.get("x-kubernetes-int-or-string") and (
            "properties" in out or "additionalProperties" in out):
        out["type"] = "object"
    if "type" not in out and not out.get("x-kubernetes-int-or-string"):
        out.update(_PRESERVE)
    return out


def build_crd(swagger: dict[str, Any], definition: str, group: str, version: str, kind: str, plural: str,
              short_names: list[str], columns: list[dict[str, str]]) -> dict[str, Any]:
    defs = swagger["definitions"]
    schema = _convert(defs[definition], defs, (definition,))
    schema["properties"]["metadata"] = {"type": "object"}
    schema["required"] = [r for r in schema.get("required", []) if r != "status"]
    return {
        "apiVersion": "apiextensions.k8s.io/v1",
        "kind": "CustomResourceDefinition",
        "metadata": {"name": f"{plural}.{group}",
                     "annotations": {"kova.dev/generated-from": f"{swagger['info']['title']} {definition}"}},
        "spec": {
            "group": group,
            "scope": "Namespaced",
            "names": {"kind": kind, "listKind": f"{kind}List", "plural": plural,
                      "singular": kind.lower(), "shortNames": short_names, "categories": ["all", "kubevirt"]},
            "versions": [{
                "name": version, "served": True, "storage": True,
                "schema": {"openAPIV3Schema": schema},
                "subresources": {"status": {}},
                "additionalPrinterColumns": [
                    *columns, {"name": "Age", "type": "date", "jsonPath": ".metadata.creationTimestamp"}],
            }],
        },
    }


def build_all(reference: Path = REFERENCE) -> list[dict[str, Any]]:
    docs = {name: json.loads((reference / name / "swagger.json").read_text()) for name in ("kubevirt", "cdi")}
    return [build_crd(docs[src], *rest) for src, *rest in KINDS]  # type: ignore[arg-type]


def render(reference: Path = REFERENCE) -> str:
    version = {name: (reference / name / "VERSION").read_text().strip() for name in ("kubevirt", "cdi")}
    header = (f"# Generated by `python -m tests.cloud.kubevirt_crds` from the KubeVirt {version['kubevirt']} and "
              f"CDI {version['cdi']}\n# OpenAPI documents in third_party/. Do not edit by hand.\n")
    return header + yaml.safe_dump_all(build_all(reference), sort_keys=True, width=120)


def main() -> int:
    OUTPUT.write_text(render())
    print(f"wrote {OUTPUT.relative_to(Path.cwd()) if OUTPUT.is_relative_to(Path.cwd()) else OUTPUT}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
