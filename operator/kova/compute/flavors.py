"""Flavor rules: who may use a flavor, and the extra_specs Kova understands."""

from __future__ import annotations

from typing import Any

from pydantic import ValidationError

from kova.api.errors import one_line
from kova.api.models import FlavorSpec

KNOWN_CPU_POLICIES = {"shared", "dedicated"}
KNOWN_PAGE_SIZES = {"small", "any", "large", "2MB", "2048", "1GB", "1048576"}


def verdict(spec: dict[str, Any]) -> tuple[FlavorSpec | None, list[str]]:
    """A Flavor object's spec and what is wrong with it (nothing: usable)."""
    try:
        flavor = FlavorSpec.model_validate(spec)
    except ValidationError as e:
        return None, [one_line(e, "spec")]
    return flavor, problems(flavor)


def problems(spec: FlavorSpec) -> list[str]:
    """extra_specs Kova would otherwise ignore silently."""
    out = []
    policy = spec.extra_specs.get("hw:cpu_policy")
    if policy is not None and policy not in KNOWN_CPU_POLICIES:
        out.append(f"hw:cpu_policy must be one of {sorted(KNOWN_CPU_POLICIES)}, not {policy!r}")
    page = spec.extra_specs.get("hw:mem_page_size")
    if page is not None and page not in KNOWN_PAGE_SIZES:
        out.append(f"hw:mem_page_size must be one of {sorted(KNOWN_PAGE_SIZES)}, not {page!r}")
    return out


def flavor_usable_in(spec: FlavorSpec, namespace: str) -> bool:
    """Nova's flavor access: a public flavor, or a private one whose access list has the project."""
    return spec.public or namespace in spec.access
