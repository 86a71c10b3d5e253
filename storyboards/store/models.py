"""The metadata store's tables (SQLAlchemy 2 typed ORM). Alembic in infra/ owns the schema."""

from __future__ import annotations

import enum
import secrets
from datetime import UTC, datetime
from typing import Any

from sqlalchemy import JSON, BigInteger, DateTime, Enum, ForeignKey, Integer, String, Text, UniqueConstraint
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column, relationship


def utcnow() -> datetime:
    return datetime.now(UTC)


class Base(DeclarativeBase):
    type_annotation_map = {dict[str, Any]: JSON, list[Any]: JSON}


class TakeStatus(str, enum.Enum):  # noqa: UP042 - StrEnum would change str(member), which messages print
    running = "running"
    succeeded = "succeeded"
    failed = "failed"
    cancelled = "cancelled"
    stale = "stale"


class ReviewState(str, enum.Enum):  # noqa: UP042 - as TakeStatus
    pending = "pending"
    approved = "approved"
    needs_changes = "needs changes"
    rejected = "rejected"


# The words a person uses for a verdict (the CLI's commands, the dashboard's buttons) and the state each gives.
VERDICTS = {"approve": ReviewState.approved, "needs-changes": ReviewState.needs_changes,
            "reject": ReviewState.rejected}


class StoryboardRow(Base):
    __tablename__ = "storyboards"
    id: Mapped[int] = mapped_column(primary_key=True)
    name: Mapped[str] = mapped_column(String(255), unique=True)
    # The file this storyboard comes from: a different file with the same timeline name is refused
    # unless it names the storyboard explicitly (metadata `storyboard_id`).
    source_path: Mapped[str | None] = mapped_column(Text)
    current_revision: Mapped[int | None] = mapped_column(Integer)  # the revision the file on disk last matched
    # Its id in this store, also in its output folder's marker: another store's storyboard of the same name is
    # refused that folder (their take-001s would overwrite each other).
    uid: Mapped[str | None] = mapped_column(String(32), default=lambda: secrets.token_hex(8))
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), default=utcnow)
    revisions: Mapped[list[RevisionRow]] = relationship(back_populates="storyboard", order_by="RevisionRow.number")
    shots: Mapped[list[ShotRow]] = relationship(back_populates="storyboard", order_by="ShotRow.position")


class RevisionRow(Base):
    """One imported version of the storyboard file."""

    __tablename__ = "revisions"
    __table_args__ = (UniqueConstraint("storyboard_id", "number"), UniqueConstraint("storyboard_id", "content_hash"))
    id: Mapped[int] = mapped_column(primary_key=True)
    storyboard_id: Mapped[int] = mapped_column(ForeignKey("storyboards.id", ondelete="CASCADE"))
    number: Mapped[int] = mapped_column(Integer)
    source_path: Mapped[str] = mapped_column(Text)
    source_sha256: Mapped[str] = mapped_column(String(64))
    content_hash: Mapped[str] = mapped_column(String(64))  # file sha + every spec hash: what was imported
    imported_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), default=utcnow)
    storyboard: Mapped[StoryboardRow] = relationship(back_populates="revisions")


class ShotRow(Base):
    __tablename__ = "shots"
    __table_args__ = (UniqueConstraint("storyboard_id", "shot_id"),)
    id: Mapped[int] = mapped_column(primary_key=True)
    storyboard_id: Mapped[int] = mapped_column(ForeignKey("storyboards.id", ondelete="CASCADE"))
    shot_id: Mapped[str] = mapped_column(String(255))
    name: Mapped[str] = mapped_column(String(255))
    position: Mapped[int] = mapped_column(Integer)
    chain_index: Mapped[int] = mapped_column(Integer)
    predecessor_shot_id: Mapped[str | None] = mapped_column(String(255))
    active: Mapped[bool] = mapped_column(default=True)  # False once a later revision dropped the shot
    spec_hash: Mapped[str | None] = mapped_column(ForeignKey("specs.spec_hash"))
    current_take_id: Mapped[int | None] = mapped_column(ForeignKey("takes.id", use_alter=True, ondelete="SET NULL"))
    # Settings a rerender changed on top of the storyboard file (prompt, seed, steps, ...): they stay
    # in force for later renders, so "render" does not undo a rerender the editor's file never saw.
    overrides: Mapped[dict[str, Any] | None] = mapped_column(JSON, default=None)
    # A take a person chose (the dashboard's "pin"): it stays current, for conform, preview and the next shot's
    # handoff, even when its spec is not the shot's spec now, until a rerender or a new take replaces it.
    pinned_take_id: Mapped[int | None] = mapped_column(ForeignKey("takes.id", use_alter=True, ondelete="SET NULL"))
    pinned_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))
    pinned_by: Mapped[str | None] = mapped_column(String(255))  # who chose it (a pin or an approval)
    storyboard: Mapped[StoryboardRow] = relationship(back_populates="shots")


class SpecRow(Base):
    """Immutable: a changed shot gets a new spec, never an overwritten one."""

    __tablename__ = "specs"
    spec_hash: Mapped[str] = mapped_column(String(64), primary_key=True)
    model_id: Mapped[str] = mapped_column(String(255))
    data: Mapped[dict[str, Any]] = mapped_column(JSON)
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), default=utcnow)


class TakeRow(Base):
    __tablename__ = "takes"
    __table_args__ = (UniqueConstraint("shot_pk", "number"),)
    id: Mapped[int] = mapped_column(primary_key=True)
    shot_pk: Mapped[int] = mapped_column(ForeignKey("shots.id", ondelete="CASCADE"))
    number: Mapped[int] = mapped_column(Integer)
    status: Mapped[TakeStatus] = mapped_column(Enum(TakeStatus, name="take_status", native_enum=False, length=16))
    spec_hash: Mapped[str] = mapped_column(ForeignKey("specs.spec_hash"))
    handoff_in_take_id: Mapped[int | None] = mapped_column(ForeignKey("takes.id"))
    handoff_in_path: Mapped[str | None] = mapped_column(Text)
    handoff_in_sha256: Mapped[str | None] = mapped_column(String(64))
    handoff_out_path: Mapped[str | None] = mapped_column(Text)
    handoff_out_sha256: Mapped[str | None] = mapped_column(String(64))
    outputs: Mapped[dict[str, Any]] = mapped_column(JSON, default=dict)
    timings: Mapped[dict[str, Any]] = mapped_column(JSON, default=dict)
    host: Mapped[str | None] = mapped_column(String(255))
    error: Mapped[str | None] = mapped_column(Text)
    flow_run_id: Mapped[str | None] = mapped_column(String(64))
    task_run_id: Mapped[str | None] = mapped_column(String(64))
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), default=utcnow)
    started_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))
    progress: Mapped[dict[str, Any] | None] = mapped_column(JSON)  # stage, step, total while it renders
    # Who renders it (a farm worker `host/gpuN`, or host:pid on one host), from the moment it starts, and when its
    # worker last said it is alive: a take whose heartbeat is older than the timeout was lost with its host.
    worker: Mapped[str | None] = mapped_column(String(255))
    heartbeat_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))
    finished_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))
    # Who asked for the render that made it (a dashboard user, --by, MILIMO_USER or the login name), and who
    # asked it to stop and when: its render reads that between steps and stops this take only.
    requested_by: Mapped[str | None] = mapped_column(String(255))
    cancel_requested_by: Mapped[str | None] = mapped_column(String(255))
    cancel_requested_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))
    artifacts: Mapped[list[ArtifactRow]] = relationship(back_populates="take", cascade="all, delete-orphan")


class ArtifactRow(Base):
    __tablename__ = "artifacts"
    id: Mapped[int] = mapped_column(primary_key=True)
    take_id: Mapped[int] = mapped_column(ForeignKey("takes.id", ondelete="CASCADE"))
    kind: Mapped[str] = mapped_column(String(32))  # mp4, thumbnail, handoff, ...
    uri: Mapped[str] = mapped_column(Text)
    sha256: Mapped[str] = mapped_column(String(64))
    frames: Mapped[int | None] = mapped_column(Integer)
    fps: Mapped[float | None]
    bytes: Mapped[int | None] = mapped_column(BigInteger)
    mtime_ns: Mapped[int | None] = mapped_column(BigInteger)  # when unchanged, size + mtime vouch for the sha256
    take: Mapped[TakeRow] = relationship(back_populates="artifacts")


class ReviewRow(Base):
    """One review event on a take, never changed afterwards: a state given (approved, needs changes, rejected) or
    a note (text, on a frame or a frame range of the take's media, or on the whole take). The newest state row
    is the take's state; the rows together are its history."""

    __tablename__ = "reviews"
    id: Mapped[int] = mapped_column(primary_key=True)
    take_id: Mapped[int] = mapped_column(ForeignKey("takes.id", ondelete="CASCADE"), index=True)
    state: Mapped[ReviewState | None] = mapped_column(Enum(  # stored as its value ("needs changes")
        ReviewState, name="review_state", native_enum=False, length=16, values_callable=lambda e: [m.value for m in e]))
    text: Mapped[str | None] = mapped_column(Text)
    frame: Mapped[int | None] = mapped_column(Integer)  # the note's first frame in the take's media
    frame_end: Mapped[int | None] = mapped_column(Integer)  # its last frame, for a range
    author: Mapped[str] = mapped_column(String(255))
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), default=utcnow)


class DeliveryRow(Base):
    """One file (or image sequence) a take delivered in a delivery profile's format and name (`milimo deliver`):
    recorded as written, checked before it is trusted again. Its own table, not the take's artifacts: a delivered
    copy that is gone is delivered again, never a reason to render the take again."""

    __tablename__ = "deliveries"
    __table_args__ = (UniqueConstraint("take_id", "profile", "kind"),)
    id: Mapped[int] = mapped_column(primary_key=True)
    take_id: Mapped[int] = mapped_column(ForeignKey("takes.id", ondelete="CASCADE"), index=True)
    profile: Mapped[str] = mapped_column(String(64))
    kind: Mapped[str] = mapped_column(String(16))  # movie, sequence (its sha256 file), reference
    path: Mapped[str] = mapped_column(Text)  # relative to the output root, as the take's files
    bytes: Mapped[int] = mapped_column(BigInteger)
    mtime_ns: Mapped[int] = mapped_column(BigInteger)
    sha256: Mapped[str] = mapped_column(String(64))
    frames: Mapped[int] = mapped_column(Integer)
    first_frame: Mapped[int | None] = mapped_column(Integer)  # an image sequence's first frame number
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), default=utcnow)


class ShotLeaseRow(Base):
    """Who renders a shot right now. One row per shot (the primary key makes taking it atomic); the holder
    renews `expires_at` while it renders and deletes the row when done. A holder that died on this host is
    seen by its pid; one on another host by an expired lease."""

    __tablename__ = "shot_leases"
    shot_pk: Mapped[int] = mapped_column(ForeignKey("shots.id", ondelete="CASCADE"), primary_key=True)
    holder: Mapped[str] = mapped_column(String(255))
    acquired_at: Mapped[datetime] = mapped_column(DateTime(timezone=True))
    expires_at: Mapped[datetime] = mapped_column(DateTime(timezone=True))


class SeamRow(Base):
    """Seam QA of one join between two takes (a cut between shots, or a segment boundary inside one take:
    then both take ids are the same and `frame` is where the segment starts). Measured once per pair."""

    __tablename__ = "seams"
    __table_args__ = (UniqueConstraint("left_take_id", "right_take_id", "frame"),)
    id: Mapped[int] = mapped_column(primary_key=True)
    storyboard_id: Mapped[int] = mapped_column(ForeignKey("storyboards.id", ondelete="CASCADE"))
    kind: Mapped[str] = mapped_column(String(16))  # handoff, segment, hard
    left_take_id: Mapped[int] = mapped_column(ForeignKey("takes.id", ondelete="CASCADE"))
    right_take_id: Mapped[int] = mapped_column(ForeignKey("takes.id", ondelete="CASCADE"))
    frame: Mapped[int] = mapped_column(Integer, default=0)  # segment start inside the take; 0 for cuts
    metrics: Mapped[dict[str, Any]] = mapped_column(JSON)
    score: Mapped[float]
    flagged: Mapped[bool]
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), default=utcnow)


class FileSeenRow(Base):
    """LoRA / model / image files seen by path and content."""

    __tablename__ = "files_seen"
    __table_args__ = (UniqueConstraint("path", "sha256"),)
    id: Mapped[int] = mapped_column(primary_key=True)
    kind: Mapped[str] = mapped_column(String(32))
    path: Mapped[str] = mapped_column(Text)
    sha256: Mapped[str] = mapped_column(String(64))
    first_seen: Mapped[datetime] = mapped_column(DateTime(timezone=True), default=utcnow)
