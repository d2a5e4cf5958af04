"""Conditions as kstatus reads them: `Ready`, `Reconciling`, `Stalled`, each with observedGeneration.

Pure functions; lastTransitionTime moves only when a condition's status flips (as CDI and crossplane do),
so a re-reconcile that changes nothing writes nothing new.
"""

from __future__ import annotations

from enum import Enum
from typing import Any

Conditions = list[dict[str, Any]]


def set_condition(conditions: Conditions, type_: str, status: bool | str, reason: str, message: str,
                  generation: int | None, now: str) -> Conditions:
    """Return a new list with condition `type_` set; other conditions are kept as they are."""
    word = status if isinstance(status, str) else ("True" if status else "False")
    old = next((c for c in conditions if c.get("type") == type_), None)
    moved = old is None or old.get("status") != word
    new = {"type": type_, "status": word, "reason": reason, "message": message,
           "lastTransitionTime": now if moved or old is None else old.get("lastTransitionTime", now)}
    if generation is not None:
        new["observedGeneration"] = generation
    return [*(c for c in conditions if c.get("type") != type_), new] if old is None else [
        new if c.get("type") == type_ else c for c in conditions]


class Progress(Enum):
    """Where an object is, in kstatus terms."""

    READY = "ready"  # Ready=True, Reconciling=False, Stalled=False
    RECONCILING = "reconciling"  # Ready=False, Reconciling=True: working or waiting, will get there
    STALLED = "stalled"  # Ready=False, Stalled=True: cannot get there without a change from a person


def summarize(conditions: Conditions, progress: Progress, reason: str, message: str, generation: int | None,
              now: str) -> Conditions:
    """Set Ready, Reconciling and Stalled consistently from one verdict."""
    out = set_condition(conditions, "Ready", progress is Progress.READY, reason, message, generation, now)
    out = set_condition(out, "Reconciling", progress is Progress.RECONCILING,
                        reason if progress is Progress.RECONCILING else "Done",
                        message if progress is Progress.RECONCILING else "", generation, now)
    return set_condition(out, "Stalled", progress is Progress.STALLED,
                         reason if progress is Progress.STALLED else "NotStalled",
                         message if progress is Progress.STALLED else "", generation, now)
