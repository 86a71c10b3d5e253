"""Deliveries: what each take delivered in a profile's format and name, recorded as written (size, mtime, sha256,
path relative to the output root) so a second `milimo deliver` keeps what is still intact and writes what is not."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from sqlalchemy import delete, select

from .artifacts import artifact_problem, resolved_path, stored_path
from .base import StoreBase
from .models import DeliveryRow


@dataclass(frozen=True)
class DeliveredFile:
    """One file a delivery wrote: a movie, an image sequence (`path` its sha256 list) or a sequence's reference."""

    kind: str  # movie, sequence, reference
    path: Path
    bytes: int
    mtime_ns: int
    sha256: str
    frames: int
    first_frame: int | None = None
    profile: str = ""  # as read back; `record_delivery` is told it


class DeliveriesMixin(StoreBase):
    def record_delivery(self, take_id: int, profile: str, files: list[DeliveredFile]) -> None:
        """What take `take_id` delivered in `profile`, replacing what it delivered there before."""
        with self.session.begin() as s:
            s.execute(delete(DeliveryRow).where(DeliveryRow.take_id == take_id, DeliveryRow.profile == profile))
            s.add_all(DeliveryRow(take_id=take_id, profile=profile, kind=f.kind, path=stored_path(f.path, self.root),
                                  bytes=f.bytes, mtime_ns=f.mtime_ns, sha256=f.sha256, frames=f.frames,
                                  first_frame=f.first_frame) for f in files)

    def deliveries(self, take_ids: list[int], profile: str | None = None) -> dict[int, list[DeliveredFile]]:
        """By take: the files each delivered in `profile` (None: in every profile), as recorded (one query)."""
        roots = [r for r in (self.root,) if r is not None]
        out: dict[int, list[DeliveredFile]] = {}
        with self.session() as s:
            query = select(DeliveryRow).where(DeliveryRow.take_id.in_(take_ids))
            if profile is not None:
                query = query.where(DeliveryRow.profile == profile)
            for row in s.scalars(query.order_by(DeliveryRow.id)):
                path = Path(resolved_path(row.path, roots) or row.path)
                out.setdefault(row.take_id, []).append(DeliveredFile(row.kind, path, row.bytes, row.mtime_ns,
                                                                     row.sha256, row.frames, row.first_frame,
                                                                     row.profile))
        return out


def delivery_problem(f: DeliveredFile) -> str | None:
    """None when the delivered file is still what was recorded (size and mtime, the hash when the mtime moved)."""
    return artifact_problem(str(f.path), f.sha256, f.bytes, f.mtime_ns)
