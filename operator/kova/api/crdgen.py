"""Generate the CustomResourceDefinitions from the pydantic models (`kova crds`, `make crds`).

pydantic's JSON Schema is close to what apiextensions wants; this inlines `$ref`s, turns Optional into an
omitted field, drops `title`, and adds the kind-level parts (status subresource, printer columns, CEL).
"""

from __future__ import annotations

from typing import Any

import yaml

from kova.api.models import GROUP_COMPUTE, GROUP_IMAGE, KINDS, VERSION, KindInfo, Model

_DROP = {"title"}


def _inline(node: Any, defs: dict[str, Any]) -> Any:
    if isinstance(node, list):
        return [_inline(n, defs) for n in node]
    if not isinstance(node, dict):
        return node
    if "$ref" in node:
        target = _inline(defs[node["$ref"].split("/")[-1]], defs)
        # keep the field's own description/default/rules next to the referenced type
        extra = {k: _inline(v, defs) for k, v in node.items() if k != "$ref" and k not in _DROP}
        return {**target, **extra}
    if "anyOf" in node:
        variants = [v for v in node["anyOf"] if v.get("type") != "null"]
        if len(variants) == 1:  # Optional[X]: absent means unset; the API does not store nulls
            rest = {k: v for k, v in node.items() if k != "anyOf" and k not in _DROP}
            if rest.get("default", 0) is None:
                rest.pop("default")
            return {**_inline(variants[0], defs), **{k: _inline(v, defs) for k, v in rest.items()}}
    out: dict[str, Any] = {}
    for key, value in node.items():
        if key in _DROP or key == "$defs":
            continue
        if key == "properties":
            out[key] = {name: _inline(sub, defs) for name, sub in value.items()}
        else:
            out[key] = _inline(value, defs)
    if out.get("additionalProperties") is True:  # dict[str, Any]: free JSON, in the API server's words
        del out["additionalProperties"]
    if out.get("type") == "object" and "properties" not in out and "additionalProperties" not in out:
        out["x-kubernetes-preserve-unknown-fields"] = True
    if "enum" in out and "type" not in out:
        out["type"] = "string"
    return out


def schema_of(model: type[Model]) -> dict[str, Any]:
    raw = model.model_json_schema(by_alias=True, mode="serialization")
    return dict(_inline(raw, raw.get("$defs", {})))


def build_crd(info: KindInfo) -> dict[str, Any]:
    spec = schema_of(info.spec)
    if info.spec_rules:
        spec["x-kubernetes-validations"] = info.spec_rules
    status = schema_of(info.status)
    root = {
        "type": "object",
        "description": info.description,
        "required": ["spec"],
        "properties": {
            "apiVersion": {"type": "string"},
            "kind": {"type": "string"},
            "metadata": {"type": "object"},
            "spec": spec,
            "status": status,
        },
    }
    return {
        "apiVersion": "apiextensions.k8s.io/v1",
        "kind": "CustomResourceDefinition",
        "metadata": {"name": f"{info.plural}.{info.group}"},
        "spec": {
            "group": info.group,
            "scope": "Namespaced" if info.namespaced else "Cluster",
            "names": {"kind": info.kind, "listKind": f"{info.kind}List", "plural": info.plural,
                      "singular": info.singular, "shortNames": info.short_names, "categories": ["kova"]},
            "versions": [{
                "name": VERSION, "served": True, "storage": True,
                "schema": {"openAPIV3Schema": root},
                "subresources": {"status": {}},
                "additionalPrinterColumns": info.columns,
            }],
        },
    }


def all_crds() -> list[dict[str, Any]]:
    return [build_crd(info) for info in KINDS]


def render(crd: dict[str, Any]) -> str:
    return "# Generated from operator/kova/models.py by `make crds`. Do not edit.\n" + yaml.safe_dump(
        crd, sort_keys=False, width=110)


PROTECTION_POLICY = "kova-protected-images"
LOCK_POLICY = "kova-locked-instances"
METADEF_PROTECTION_POLICY = "kova-protected-metadefs"


def _policy(name: str, group: str, resource: str, operations: list[str],
            validations: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """A ValidatingAdmissionPolicy and the binding that makes it deny."""
    return [
        {"apiVersion": "admissionregistration.k8s.io/v1", "kind": "ValidatingAdmissionPolicy",
         "metadata": {"name": name},
         "spec": {
             "failurePolicy": "Fail",
             "matchConstraints": {"resourceRules": [{
                 "apiGroups": [group], "apiVersions": ["*"], "operations": operations, "resources": [resource]}]},
             "validations": validations}},
        {"apiVersion": "admissionregistration.k8s.io/v1", "kind": "ValidatingAdmissionPolicyBinding",
         "metadata": {"name": name},
         "spec": {"policyName": name, "validationActions": ["Deny"]}},
    ]


def _deny_delete(name: str, group: str, resource: str, expression: str, message: str) -> list[dict[str, Any]]:
    return _policy(name, group, resource, ["DELETE"],
                   [{"expression": expression, "messageExpression": message, "reason": "Forbidden"}])


VOLUME_IN_USE_POLICY = "kova-volume-in-use"
HELD_WORDS = ("reserved", "attaching", "in-use", "detaching")  # Cinder's words of a volume a server holds
# Kubernetes' controllers that delete on a user's behalf: the garbage collector and the namespace controller,
# under their own accounts (--use-service-account-credentials) or the controller manager's.
KUBE_DELETERS = ("system:serviceaccount:kube-system:generic-garbage-collector",
                 "system:serviceaccount:kube-system:namespace-controller", "system:kube-controller-manager")


def protection_policy() -> list[dict[str, Any]]:
    """Glance refuses to delete a protected image or metadata definition namespace (403), and Nova a locked
    server (409). The API server does
    the same here, before any finalizer runs, with ValidatingAdmissionPolicies (CEL, no webhook to run). The
    operator's finalizer still keeps an image's data if the policy is missing."""
    return [
        *_deny_delete(PROTECTION_POLICY, GROUP_IMAGE, "images",
                      "!has(oldObject.spec.protected) || !oldObject.spec.protected",
                      "'Image ' + oldObject.metadata.name + ' is protected: set spec.protected to false before "
                      "deleting it'"),
        *_deny_delete(LOCK_POLICY, GROUP_COMPUTE, "instances",
                      "!has(oldObject.spec.locked) || !oldObject.spec.locked",
                      "'Instance ' + oldObject.metadata.name + ' is locked: set spec.locked to false before "
                      "deleting it'"),
        *_deny_delete(METADEF_PROTECTION_POLICY, GROUP_IMAGE, "metadefnamespaces",
                      "!has(oldObject.spec.protected) || !oldObject.spec.protected",
                      "'Metadata definition namespace ' + oldObject.spec.namespace + ' is protected and cannot be "
                      "deleted: set spec.protected to false first'"),
        # Cinder refuses to delete a volume a server holds (400). Kubernetes' own deletions pass: a namespace
        # being deleted, and the garbage collector deleting a volume whose server asked for it to go with it.
        *_deny_delete(VOLUME_IN_USE_POLICY, GROUP_COMPUTE, "volumes",
                      "!has(oldObject.status) || !has(oldObject.status.status) || "
                      f"!(oldObject.status.status in {list(HELD_WORDS)}) || "
                      "has(namespaceObject.metadata.deletionTimestamp) || "
                      f"request.userInfo.username in {list(KUBE_DELETERS)}",
                      "'Invalid volume: volume ' + oldObject.metadata.name + ' is ' + oldObject.status.status + "
                      "' (attached to ' + (has(oldObject.status.attachments) ? oldObject.status.attachments.map("
                      "a, a.server).join(', ') : 'a server') + '): detach it "
                      "from its servers (spec.volumeAttachments) before deleting it'"),
    ]


PUBLICIZE_POLICY = "kova-image-publicize"
SNAPSHOT_POLICY = "kova-image-snapshot"
SOURCE_POLICY = "kova-image-source"
STORES_POLICY = "kova-image-stores"
ADMIN_VERB = "admin"  # Keystone's admin role through kova api: the verb on images, checked cluster-wide (kova-admin)
PUBLICIZE_VERB = "publicize"  # a verb of Kova's on images, held by the kova-image-publisher ClusterRole


def image_policies() -> list[dict[str, Any]]:
    """Glance's and Nova's policy where kubectl reaches it, decided with the requester's identity (CEL's
    `authorizer`): making an image public is an administrator's decision (Glance's publicize_image), and
    making an image of a server needs the right to change that server (Nova's createImage)."""
    public = "has(object.spec.visibility) && object.spec.visibility == 'public'"
    return [
        *_policy(PUBLICIZE_POLICY, GROUP_IMAGE, "images", ["CREATE", "UPDATE"], [{
            "expression": f"!({public}) || (oldObject != null && has(oldObject.spec.visibility) && "
                          "oldObject.spec.visibility == 'public') || "
                          f"authorizer.group('{GROUP_IMAGE}').resource('images').namespace(object.metadata.namespace)"
                          f".check('{PUBLICIZE_VERB}').allowed()",
            "messageExpression": "'Image ' + object.metadata.name + ': only an administrator may make an image "
                                 "public (the Glance policy publicize_image; the kova-image-publisher role). Share it "
                                 "(visibility shared, members) or make it community instead'",
            "reason": "Forbidden"}]),
        *_policy(SNAPSHOT_POLICY, GROUP_IMAGE, "images", ["CREATE"], [{
            "expression": "!has(object.spec.source.instance) || "
                          f"authorizer.group('{GROUP_COMPUTE}').resource('instances')"
                          ".namespace(object.metadata.namespace).name(object.spec.source.instance)"
                          ".check('update').allowed()",
            "messageExpression": "'Image ' + object.metadata.name + ': an image of Instance ' + "
                                 "object.spec.source.instance + ' needs the right to update that Instance "
                                 "(the Nova action createImage)'",
            "reason": "Forbidden"}]),
        # The CRD's rule lets an Image waiting for an upload be given a url (web-download) but cannot see the
        # status: once its data has come (staged, saving, active…), a url would name other bytes.
        *_policy(SOURCE_POLICY, GROUP_IMAGE, "images", ["UPDATE"], [{
            "expression": "!has(object.spec.source.url) || has(oldObject.spec.source.url) || "
                          "!has(oldObject.status) || !has(oldObject.status.status) || "
                          "oldObject.status.status == 'queued'",
            "messageExpression": "'Image ' + object.metadata.name + ' already has data (status ' + "
                                 "oldObject.status.status + '): it cannot be given a url; create a new Image'",
            "reason": "Invalid"}]),
        # Glance's copy-image and deleting an image from a store are administrators' (storage is the cloud's):
        # once an image has data, changing where it is kept asks the same of a kubectl user.
        *_policy(STORES_POLICY, GROUP_IMAGE, "images", ["UPDATE"], [{
            "expression": "(has(object.spec.stores) ? object.spec.stores : []) == "
                          "(has(oldObject.spec.stores) ? oldObject.spec.stores : []) || "
                          "!has(oldObject.status) || !has(oldObject.status.status) || "
                          "!(oldObject.status.status in ['active', 'deactivated']) || "
                          f"authorizer.group('{GROUP_IMAGE}').resource('images').check('{ADMIN_VERB}').allowed()",
            "messageExpression": "'Image ' + object.metadata.name + ': changing spec.stores of an image that has "
                                 "data copies or removes it, which only administrators may do (as in Glance: "
                                 "copy-image, delete from a store; the kova-admin role)'",
            "reason": "Forbidden"}]),
    ]


def files() -> dict[str, str]:
    """crds/<plural>.<group>.yaml → content, plus the admission policy that goes with the Image API."""
    out = {f"{crd['metadata']['name']}.yaml": render(crd) for crd in all_crds()}
    out["protected-images.policy.yaml"] = "# Kova's admission policies. Generated by `make crds`. Do not edit.\n" + \
        yaml.safe_dump_all([*protection_policy(), *image_policies()], sort_keys=False, width=110)
    return out
