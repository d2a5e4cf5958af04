"""The two shapes of error Kova passes around; each layer names its own subclass for what it means."""

from __future__ import annotations

from pydantic import ValidationError


class StatusError(Exception):
    """An HTTP answer instead of a document: kube-apiserver's to a caller, or Glance's to a client."""

    def __init__(self, status: int, message: str) -> None:
        super().__init__(message)
        self.status, self.message = status, message

    def __str__(self) -> str:
        return self.message

class Refusal(Exception):
    """A rule said no: a CamelCase `reason` (for a condition or an Event) and a one-line message."""

    def __init__(self, reason: str, message: str) -> None:
        super().__init__(message)
        self.reason, self.message = reason, message


def one_line(error: ValidationError, prefix: str = "") -> str:
    """A pydantic error as one line a status message or an Event can carry: each field and its rule, without
    pydantic's multi-line dump and documentation links (`spec.flavorRef: Field required`)."""
    parts = []
    for e in error.errors(include_url=False):
        where = ".".join(str(p) for p in (prefix, *e.get("loc", ())) if p != "")
        parts.append(f"{where}: {e.get('msg', 'invalid')}" if where else str(e.get("msg", "invalid")))
    return "; ".join(parts) or "invalid"
