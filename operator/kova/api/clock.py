"""Timestamps as Kubernetes writes them (RFC 3339, UTC, whole seconds)."""

from __future__ import annotations

import datetime as dt


def now() -> dt.datetime:
    return dt.datetime.now(dt.UTC)


def text(t: dt.datetime) -> str:
    return t.astimezone(dt.UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def utcnow() -> str:
    return text(now())


def parse(value: str) -> dt.datetime:
    """A Kubernetes timestamp (`2026-01-02T03:04:05Z`, fractions allowed) as an aware datetime."""
    return dt.datetime.fromisoformat(value.replace("Z", "+00:00"))
