"""Who gets a free import slot: KOVA_MAX_CONCURRENT_IMPORTS slots are shared by every namespace, and one
namespace must not keep the others waiting behind its queue (issue 17)."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass


@dataclass(frozen=True)
class Waiter:
    namespace: str
    arrival: int  # order in which the imports started to wait


def next_import(waiting: Sequence[Waiter], running: Mapping[str, int], last_served: Mapping[str, int]) -> int:
    """The index in `waiting` of the import that gets the free slot: that of the namespace with the fewest
    running imports; among equals, the namespace that got a slot longest ago (never: first), so namespaces
    take turns; then first come, first served. Slots are not taken back: a namespace alone uses them all,
    and gives them up one by one, as its imports end, to namespaces that wait."""
    if not waiting:
        raise ValueError("nobody waits")
    return min(range(len(waiting)), key=lambda i: (running.get(waiting[i].namespace, 0),
                                                   last_served.get(waiting[i].namespace, -1), waiting[i].arrival))
