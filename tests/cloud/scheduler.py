"""kube-scheduler's decision for a VMI's virt-launcher pod, as pure functions (no I/O: easy to unit-test).

In KubeVirt a VMI runs in a virt-launcher pod that carries the VMI's labels and its template's nodeSelector,
affinity, tolerations and resource requests; kube-scheduler places that pod. This module plays the default
profile's filters in their order (NodeUnschedulable, TaintToleration, NodeAffinity, NodeResourcesFit,
InterPodAffinity; the first that rejects a node gives its reason), kube-scheduler's FitError message, and
a simple, deterministic score: preferred node affinity and pod (anti-)affinity weights, then the node with
the fewest pods, then the name.

Modelled on kubernetes v1.37 pkg/scheduler: framework/types.go (FitError.Error), plugins/nodeaffinity,
plugins/noderesources/fit.go, plugins/interpodaffinity/filtering.go (satisfyPodAffinity and its "first pod
of a group" exception), plugins/defaultpreemption and dynamicresources (the PostFilter messages).
"""

from __future__ import annotations

import re
from collections import Counter
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

# Filter reasons, word for word as kube-scheduler's plugins say them.
NODE_UNSCHEDULABLE = "node(s) were unschedulable"
NODE_AFFINITY = "node(s) didn't match Pod's node affinity/selector"
POD_AFFINITY = "node(s) didn't match pod affinity rules"
POD_ANTI_AFFINITY = "node(s) didn't match pod anti-affinity rules"
EXISTING_ANTI_AFFINITY = "node(s) didn't satisfy existing pods anti-affinity rules"
TOO_MANY_PODS = "Too many pods"
# Which rejections preemption cannot help with (UnschedulableAndUnresolvable in the plugins).
_UNRESOLVABLE = {NODE_UNSCHEDULABLE, NODE_AFFINITY, POD_AFFINITY}
SCHEDULABLE_LABEL = "kubevirt.io/schedulable"  # virt-handler's node label; launcher pods select it

_UNITS = {"": 1, "k": 1000, "M": 1000**2, "G": 1000**3, "T": 1000**4,
          "Ki": 1024, "Mi": 1024**2, "Gi": 1024**3, "Ti": 1024**4}


def quantity(value: Any) -> float:
    """A Kubernetes quantity (500m, 2, 64Mi) as a number."""
    m = re.fullmatch(r"([0-9.]+)(m|[kMGT]i?|)", str(value))
    if not m:
        return 0.0
    num, unit = float(m.group(1)), m.group(2)
    return num / 1000 if unit == "m" else num * _UNITS[unit]


@dataclass(frozen=True)
class Node:
    name: str
    labels: Mapping[str, str]
    allocatable: Mapping[str, float]  # cpu (cores), memory (bytes), pods
    taints: Sequence[Mapping[str, Any]] = ()
    unschedulable: bool = False


@dataclass(frozen=True)
class Pod:
    """What kube-scheduler sees of a virt-launcher pod."""
    namespace: str
    name: str
    labels: Mapping[str, str]
    requests: Mapping[str, float]  # cpu (cores), memory (bytes)
    node_selector: Mapping[str, str] = field(default_factory=dict)
    affinity: Mapping[str, Any] = field(default_factory=dict)
    tolerations: Sequence[Mapping[str, Any]] = ()
    node: str = ""  # where it is bound; "" while pending


@dataclass(frozen=True)
class Decision:
    node: str | None  # None: unschedulable
    message: str = ""  # the FitError message when unschedulable
    reasons: Mapping[str, Sequence[str]] = field(default_factory=dict)  # node -> why it was filtered out
    scores: Mapping[str, int] = field(default_factory=dict)  # feasible node -> score


# ----------------------------------------------------------------------------------------- from objects
def node_from_object(obj: Mapping[str, Any]) -> Node:
    status, spec = obj.get("status") or {}, obj.get("spec") or {}
    alloc = status.get("allocatable") or status.get("capacity") or {}
    return Node(obj["metadata"]["name"], dict(obj["metadata"].get("labels") or {}),
                {k: quantity(v) for k, v in alloc.items()}, tuple(spec.get("taints") or ()),
                bool(spec.get("unschedulable")))


def vmi_requests(spec: Mapping[str, Any]) -> dict[str, float]:
    """The virt-launcher pod's requests: the VMI's, else KubeVirt's defaults (guest memory; a tenth of a
    core per vCPU, cpuAllocationRatio 10; whole cores with dedicatedCpuPlacement). The launcher's memory
    overhead is left out: a few hundred MiB would not change any decision the tests make."""
    domain = spec.get("domain") or {}
    requests = (domain.get("resources") or {}).get("requests") or {}
    cpu = domain.get("cpu") or {}
    vcpus = cpu.get("cores", 1) * cpu.get("sockets", 1) * cpu.get("threads", 1)
    memory = requests.get("memory") or (domain.get("memory") or {}).get("guest") or 0
    if "cpu" in requests:
        cores = quantity(requests["cpu"])
    else:
        cores = float(vcpus) if cpu.get("dedicatedCpuPlacement") else vcpus / 10
    return {"cpu": cores, "memory": quantity(memory)}


def pod_from_vmi(vmi: Mapping[str, Any]) -> Pod:
    md, spec = vmi["metadata"], vmi.get("spec") or {}
    return Pod(md["namespace"], md["name"], dict(md.get("labels") or {}), vmi_requests(spec),
               {**(spec.get("nodeSelector") or {}), SCHEDULABLE_LABEL: "true"}, spec.get("affinity") or {},
               tuple(spec.get("tolerations") or ()), (vmi.get("status") or {}).get("nodeName") or "")


# ---------------------------------------------------------------------------------------------- matching
def _expression(value: str | None, present: bool, op: str, values: Sequence[str]) -> bool:
    if op == "In":
        return present and value in values
    if op == "NotIn":
        return not present or value not in values
    if op == "Exists":
        return present
    if op == "DoesNotExist":
        return not present
    if op in ("Gt", "Lt") and present and values:
        try:
            a, b = int(value or ""), int(values[0])
        except ValueError:
            return False
        return a > b if op == "Gt" else a < b
    return False


def node_selector_term(node: Node, term: Mapping[str, Any]) -> bool:
    """One NodeSelectorTerm: its expressions and fields ANDed; a term with neither matches nothing."""
    exprs, fields = term.get("matchExpressions") or [], term.get("matchFields") or []
    if not exprs and not fields:
        return False
    return all(_expression(node.labels.get(e["key"]), e["key"] in node.labels, e["operator"], e.get("values") or [])
               for e in exprs) and all(
        e["key"] == "metadata.name" and _expression(node.name, True, e["operator"], e.get("values") or [])
        for e in fields)


def label_selector(selector: Mapping[str, Any] | None, labels: Mapping[str, str]) -> bool:
    """metav1.LabelSelector: None matches nothing, {} everything."""
    if selector is None:
        return False
    if any(labels.get(k) != v for k, v in (selector.get("matchLabels") or {}).items()):
        return False
    return all(_expression(labels.get(e["key"]), e["key"] in labels, e["operator"], e.get("values") or [])
               for e in selector.get("matchExpressions") or [])


def term_matches(term: Mapping[str, Any], owner: Pod, other: Pod,
                 namespace_labels: Mapping[str, Mapping[str, str]]) -> bool:
    """A PodAffinityTerm of `owner` selects `other`: namespaces (the owner's own when the term names none and
    has no namespaceSelector; a namespaceSelector adds the namespaces it selects), then the labelSelector."""
    names, ns_selector = term.get("namespaces") or [], term.get("namespaceSelector")
    if not names and ns_selector is None:
        in_scope = other.namespace == owner.namespace
    else:
        in_scope = other.namespace in names or (
            ns_selector is not None and label_selector(ns_selector, namespace_labels.get(other.namespace, {})))
    return in_scope and label_selector(term.get("labelSelector"), other.labels)


def _same_domain(key: str, a: Node | None, b: Node | None) -> bool:
    return a is not None and b is not None and key in a.labels and a.labels.get(key) == b.labels.get(key)


def _tolerated(taint: Mapping[str, Any], tolerations: Iterable[Mapping[str, Any]]) -> bool:
    for t in tolerations:
        if t.get("effect") and t["effect"] != taint.get("effect"):
            continue
        if t.get("operator") == "Exists" and (not t.get("key") or t["key"] == taint.get("key")):
            return True
        if t.get("key") == taint.get("key") and (t.get("value") or "") == (taint.get("value") or ""):
            return True
    return False


# ----------------------------------------------------------------------------------------------- filters
@dataclass(frozen=True)
class Usage:
    """What the placed pods hold, summed per node, and those of them with required anti-affinity: computed
    once per decision rather than once per node."""
    pods: Mapping[str, int]
    cpu: Mapping[str, float]
    memory: Mapping[str, float]
    anti: Sequence[Pod]


def usage(placed: Sequence[Pod]) -> Usage:
    pods: Counter[str] = Counter()
    cpu: dict[str, float] = {}
    memory: dict[str, float] = {}
    for p in placed:
        pods[p.node] += 1
        cpu[p.node] = cpu.get(p.node, 0.0) + p.requests.get("cpu", 0.0)
        memory[p.node] = memory.get(p.node, 0.0) + p.requests.get("memory", 0.0)
    anti = [p for p in placed if (p.affinity.get("podAntiAffinity") or {}).get(
        "requiredDuringSchedulingIgnoredDuringExecution")]
    return Usage(pods, cpu, memory, anti)


def filter_node(pod: Pod, node: Node, nodes: Mapping[str, Node], placed: Sequence[Pod],
                namespace_labels: Mapping[str, Mapping[str, str]] | None = None, used: Usage | None = None
                ) -> list[str]:
    """Why `node` cannot take `pod` (the first filter that rejects it: one or more reasons), or []."""
    ns_labels = namespace_labels or {}
    used = used or usage(placed)
    if node.unschedulable and not _tolerated({"key": "node.kubernetes.io/unschedulable", "effect": "NoSchedule"},
                                             pod.tolerations):
        return [NODE_UNSCHEDULABLE]
    for taint in node.taints:
        if taint.get("effect") in ("NoSchedule", "NoExecute") and not _tolerated(taint, pod.tolerations):
            return [f"node(s) had untolerated taint {{{taint.get('key', '')}: {taint.get('value', '')}}}"]
    # NodeAffinity: nodeSelector and the required node affinity must both match.
    required = ((pod.affinity.get("nodeAffinity") or {}).get("requiredDuringSchedulingIgnoredDuringExecution"))
    if any(node.labels.get(k) != v for k, v in pod.node_selector.items()) or (
            required is not None and not any(node_selector_term(node, t)
                                             for t in required.get("nodeSelectorTerms") or [])):
        return [NODE_AFFINITY]
    # NodeResourcesFit: all of its reasons at once.
    reasons = []
    if used.pods.get(node.name, 0) + 1 > node.allocatable.get("pods", 110):
        reasons.append(TOO_MANY_PODS)
    for resource, held in (("cpu", used.cpu), ("memory", used.memory)):
        if pod.requests.get(resource, 0.0) > node.allocatable.get(resource, 0.0) - held.get(node.name, 0.0):
            reasons.append(f"Insufficient {resource}")
    if reasons:
        return reasons
    # InterPodAffinity, in its order: the pod's affinity, its anti-affinity, the anti-affinity of others.
    def other(p: Pod) -> bool:
        return bool(p.node) and (p.namespace, p.name) != (pod.namespace, pod.name)
    affinity = (pod.affinity.get("podAffinity") or {}).get("requiredDuringSchedulingIgnoredDuringExecution") or []
    if affinity:
        if not all(t.get("topologyKey") in node.labels for t in affinity):
            return [POD_AFFINITY]
        # As the plugin counts them: a placed pod counts when it matches all the terms.
        matching = [o for o in placed if other(o) and all(term_matches(t, pod, o, ns_labels) for t in affinity)]
        satisfied = all(any(_same_domain(t["topologyKey"], node, nodes.get(o.node)) for o in matching)
                        for t in affinity)
        # The first pod of a group that has affinity to itself may go anywhere with the topology labels.
        first = not matching and all(term_matches(t, pod, pod, ns_labels) for t in affinity)
        if not satisfied and not first:
            return [POD_AFFINITY]
    anti = (pod.affinity.get("podAntiAffinity") or {}).get("requiredDuringSchedulingIgnoredDuringExecution") or []
    if anti and any(other(o) and term_matches(t, pod, o, ns_labels) and _same_domain(
            t.get("topologyKey", ""), node, nodes.get(o.node)) for o in placed for t in anti):
        return [POD_ANTI_AFFINITY]
    for o in (o for o in used.anti if other(o)):
        their = (o.affinity.get("podAntiAffinity") or {}).get("requiredDuringSchedulingIgnoredDuringExecution") or []
        if any(term_matches(t, o, pod, ns_labels) and _same_domain(t.get("topologyKey", ""), node, nodes.get(o.node))
               for t in their):
            return [EXISTING_ANTI_AFFINITY]
    return []


def score_node(pod: Pod, node: Node, nodes: Mapping[str, Node], placed: Sequence[Pod],
               namespace_labels: Mapping[str, Mapping[str, str]] | None = None) -> int:
    """Preferred node affinity: the weights of the terms the node matches. Preferred pod (anti-)affinity:
    each term's weight for every placed pod it selects in the node's topology domain (plus, minus)."""
    ns_labels = namespace_labels or {}
    score = 0
    for pref in (pod.affinity.get("nodeAffinity") or {}).get("preferredDuringSchedulingIgnoredDuringExecution") or []:
        if node_selector_term(node, pref.get("preference") or {}):
            score += int(pref.get("weight", 0))
    for kind, sign in (("podAffinity", 1), ("podAntiAffinity", -1)):
        for pref in (pod.affinity.get(kind) or {}).get("preferredDuringSchedulingIgnoredDuringExecution") or []:
            term = pref.get("podAffinityTerm") or {}
            hits = sum(1 for o in placed if o.node and term_matches(term, pod, o, ns_labels)
                       and _same_domain(term.get("topologyKey", ""), node, nodes.get(o.node)))
            score += sign * int(pref.get("weight", 0)) * hits
    return score


def fit_error(total: int, reasons: Mapping[str, Sequence[str]]) -> str:
    """FitError.Error(): "0/N nodes are available: <count reason, sorted>." then the PostFilter messages
    (DynamicResources' for a pod without claims, then DefaultPreemption's; all launcher pods have one
    priority, so preemption finds no victims where it could help)."""
    counts = Counter(r for node_reasons in reasons.values() for r in node_reasons)
    filtered = ", ".join(sorted(f"{n} {r}" for r, n in counts.items()))
    preemption = Counter("Preemption is not helpful for scheduling" if set(rs) & _UNRESOLVABLE
                         else "No preemption victims found for incoming pod" for rs in reasons.values())
    post = ", ".join(sorted(f"{n} {r}" for r, n in preemption.items()))
    return (f"0/{total} nodes are available: {filtered}. no new claims to deallocate, "
            f"preemption: 0/{total} nodes are available: {post}.")


def schedule(pod: Pod, nodes: Sequence[Node], placed: Sequence[Pod],
             namespace_labels: Mapping[str, Mapping[str, str]] | None = None) -> Decision:
    """Filter every node, score the feasible ones, pick the best: highest score, then fewest pods, then
    name. `placed` are the pods already bound (other VMIs' launcher pods)."""
    if not nodes:
        return Decision(None, "no nodes available to schedule pods")
    by_name, used = {n.name: n for n in nodes}, usage(placed)
    reasons = {n.name: r for n in nodes if (r := filter_node(pod, n, by_name, placed, namespace_labels, used))}
    feasible = [n for n in nodes if n.name not in reasons]
    if not feasible:
        return Decision(None, fit_error(len(nodes), reasons), reasons)
    scores = {n.name: score_node(pod, n, by_name, placed, namespace_labels) for n in feasible}
    best = min(feasible, key=lambda n: (-scores[n.name], used.pods.get(n.name, 0), n.name))
    return Decision(best.name, "", reasons, scores)
