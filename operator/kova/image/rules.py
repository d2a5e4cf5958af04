"""Glance's rules as pure functions: visibility across projects, the status word an Image shows, which
states allow which action, and the protected-delete rule. The operator, the image API and the admission
policy all decide from here."""

from __future__ import annotations

from collections.abc import Collection, Sequence
from dataclasses import dataclass, field
from typing import Any

from kova.api.conditions import Progress
from kova.api.models import GlanceStatus, ImageSpec, Visibility
from kova.image.blob import Blob

# The words after which an Image's data no longer changes: its import is over.
DONE = (GlanceStatus.active, GlanceStatus.killed, GlanceStatus.deactivated)


def parse_image_ref(ref: str, namespace: str) -> tuple[str, str]:
    """`name` → (namespace, name); `other/name` → (other, name)."""
    ns, _, name = ref.rpartition("/")
    return (ns or namespace, name)


def image_visible_to(spec: ImageSpec, image_namespace: str, namespace: str) -> bool:
    """Glance visibility across namespaces (a namespace plays the part of a Keystone project)."""
    if namespace == image_namespace or spec.visibility in (Visibility.public, Visibility.community):
        return True
    return spec.visibility is Visibility.shared and namespace in spec.members


def protected_refusal(spec: dict[str, Any], uid: str) -> str | None:
    """Glance's rule: a protected image cannot be deleted (the API answers 403, the admission policy refuses
    the delete, and the operator keeps the data until it is unprotected)."""
    return f"Image {uid} is protected and cannot be deleted." if spec.get("protected") else None


@dataclass
class ImageView:
    status: GlanceStatus
    progress: Progress
    reason: str
    message: str
    fields: dict[str, Any] = field(default_factory=dict)


def observe_image(blob: Blob | None, location: str, previous: dict[str, Any], importing: bool,
                  done: int, total: int | None, passing_error: str | None, deactivated: bool = False,
                  queued_message: str | None = None, upload_id: str | None = None,
                  unanswered: Sequence[str] = ()) -> ImageView:
    """Glance's status word and kstatus verdict, from what the store holds and what the importer is doing.

    The store's record is the truth for `active`; `killed` is kept from the previous status, since an
    image's source never changes and Glance does not retry a killed image. Progress moves in 10% steps
    and the message does not count bytes, so a status write happens only when a user sees a change.
    An image whose data comes through the image API (`upload_id`: its id there) waits in `queued` until it
    arrives; while the API receives it the API itself says `saving`, and the operator leaves that alone.
    `unanswered`: stores listed in the last status that did not answer now. Without a record from another
    store, an outage is not a loss: the last reading stands and the message says why it is not renewed.
    """
    if blob is None and unanswered and previous.get("status") in (GlanceStatus.active, GlanceStatus.deactivated):
        word = GlanceStatus.deactivated if deactivated else GlanceStatus.active
        return ImageView(word, Progress.READY, "StoreUnreachable",
                         f"store {', '.join(unanswered)} did not answer: the image's data is there by its last "
                         "reading; the status is renewed once the store answers")
    if blob is not None:
        word, reason = (GlanceStatus.deactivated, "Deactivated") if deactivated else (GlanceStatus.active, "Active")
        return ImageView(word, Progress.READY, reason, f"{blob.size} bytes stored", {
            "size": blob.size, "virtualSize": blob.virtual_size, "checksum": blob.md5, "osHashAlgo": "sha512",
            "osHashValue": blob.sha512, "detectedFormat": blob.disk_format, "progress": "100%",
            "location": location, "message": None})
    if previous.get("status") == GlanceStatus.killed:
        ready: dict[str, Any] = next(
            (c for c in previous.get("conditions", []) if c.get("type") == "Ready"), {})
        return ImageView(GlanceStatus.killed, Progress.STALLED, ready.get("reason", "ImportFailed"),
                         previous.get("message") or ready.get("message", "import failed"))
    if importing:
        pct = f"{min(100, 100 * done // total) // 10 * 10}%" if total else None
        message = f"importing {total} bytes from the source" if total else "importing from the source"
        if passing_error:
            message = f"import will be retried: {passing_error}"
        return ImageView(GlanceStatus.importing, Progress.RECONCILING, "Importing", message,
                         {"progress": pct, "message": passing_error})
    if upload_id is not None:
        if previous.get("status") == GlanceStatus.saving:
            return ImageView(GlanceStatus.saving, Progress.RECONCILING, "Saving",
                             "receiving the data through the image API")
        if previous.get("status") == GlanceStatus.uploading:  # staged; the API writes it, and its import
            return ImageView(GlanceStatus.uploading, Progress.RECONCILING, "Staged", previous.get("message") or
                             f"staged: import it (POST /v2/images/{upload_id}/import, method glance-direct)")
        return ImageView(GlanceStatus.queued, Progress.RECONCILING, "WaitingForData",
                         previous.get("message") or "waiting for the data: upload it through the image API "
                         f"(kova image upload, or PUT /v2/images/{upload_id}/file)")
    return ImageView(GlanceStatus.queued, Progress.RECONCILING, "Queued",
                     queued_message or "waiting for the import to start")


def held_stores(found: Sequence[str], unread: Collection[str], listed: Sequence[str],
                order: Sequence[str]) -> list[str]:
    """The stores an image is in, best first: those whose record was read, and those listed last time that
    did not answer now (a store that is down still holds what it held)."""
    return [s for s in order if s in found or (s in unread and s in listed)]


@dataclass(frozen=True)
class CopyPlan:
    copy: list[str]  # desired stores that lack the data and have not failed: the data goes there, in this order
    drop: list[str]  # stores that hold it but are not desired: emptied once a desired one holds it
    failed: list[str]  # desired stores a copy to has failed (Glance's os_glance_failed_import): not retried


def copy_plan(desired: Sequence[str] | None, held: Sequence[str], failed: Sequence[str],
              order: Sequence[str]) -> CopyPlan | None:
    """What brings an image's data to `spec.stores` (None when it is unset: the data stays where it arrived).
    A store that is not configured is left out; a failed copy is not retried until it is asked for again, as
    Glance; and the last copy is never removed: `drop` waits until a desired store holds the data."""
    if desired is None:
        return None
    wanted = [s for s in order if s in desired]
    failed_now = [s for s in wanted if s in failed and s not in held]
    copy = [s for s in wanted if s not in held and s not in failed_now]
    drop = [s for s in held if s not in wanted] if any(s in held for s in wanted) else []
    return CopyPlan(copy, drop, failed_now)


def killed_view(reason: str, message: str) -> ImageView:
    return ImageView(GlanceStatus.killed, Progress.STALLED, reason, message,
                     {"message": message, "progress": None, "location": None})
