"""The store's read models: what a take, a shot's status, a seam and an artifact check look like to its callers,
typed (frozen dataclasses); and the few helpers every part of the store shares to build them."""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass, field, fields, replace
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from .artifacts import artifact_problem, resolved_path
from .models import ArtifactRow, TakeRow, TakeStatus, utcnow


@dataclass(frozen=True)
class TakeOutputs:
    """What a finished take delivered, as recorded (the JSON `outputs` of its row, typed). Older takes may lack
    fields (None); fields this milimo does not know are kept in `extra`."""

    mp4: str | None = None  # the preview
    mov: str | None = None  # the QuickTime an editor conforms (takes before it have none: their mp4 serves)
    thumbnail: str | None = None
    frames: int | None = None
    fps: float | None = None
    rendered_frames: int | None = None
    audio_samples: int | None = None
    sample_rate: int | None = None
    device: str | None = None
    memory_mode: str | None = None  # the mode it rendered in (`milimo_engine.memory`)
    memory_peak: int | None = None  # the planner's peak for it in that mode, bytes
    device_memory: int | None = None  # what the device had for it, bytes (told, or reported free)
    speed: dict[str, Any] | None = None  # the opt-in speed-ups it rendered with (attention, compile, fused)
    loras: dict[str, Any] | None = None
    model_id: str | None = None
    recipe: str | None = None
    segments: int | None = None
    segment_starts: tuple[int, ...] = ()
    timecode: str | None = None
    reel: str | None = None  # the take's own reel (`editorial.take_reel`); older takes: the clip's
    source_reel: str | None = None  # the clip's reel or tape in the cut
    head: int | None = None  # handle frames before the cut: the media is head + cut + tail frames (`frames`)
    tail: int | None = None
    root: str | None = None  # the output root the take was written under; its paths are relative to it
    extra: dict[str, Any] = field(default_factory=dict)

    @classmethod
    def of(cls, data: dict[str, Any] | None) -> TakeOutputs:
        data = dict(data or {})
        known = {f.name for f in fields(cls)} - {"extra"}
        values = {k: data.pop(k) for k in list(data) if k in known}
        if values.get("segment_starts") is not None:
            values["segment_starts"] = tuple(int(s) for s in values["segment_starts"])
        else:
            values.pop("segment_starts", None)
        return cls(**values, extra=data)

    def as_dict(self) -> dict[str, Any]:
        out = {f.name: getattr(self, f.name) for f in fields(self) if f.name != "extra"}
        out["segment_starts"] = list(self.segment_starts)
        return {k: v for k, v in out.items() if v is not None} | self.extra


@dataclass(frozen=True)
class TakeView:
    id: int
    shot_id: str
    number: int
    status: str
    spec_hash: str
    handoff_in_take_id: int | None
    handoff_in_sha256: str | None
    handoff_out_path: str | None
    handoff_out_sha256: str | None
    outputs: TakeOutputs
    timings: dict[str, Any]
    error: str | None
    host: str | None
    flow_run_id: str | None
    task_run_id: str | None
    created_at: datetime | None
    finished_at: datetime | None
    progress: dict[str, Any] | None = None
    artifacts: tuple[dict[str, Any], ...] = ()
    worker: str | None = None
    heartbeat_at: datetime | None = None
    started_at: datetime | None = None
    requested_by: str | None = None  # who asked for the render that made it
    cancel_requested_by: str | None = None  # who asked it to stop (it stops at its next step)
    cancel_requested_at: datetime | None = None

    @property
    def seconds_running(self) -> float | None:
        """Seconds since the take started rendering, while it runs."""
        if self.status != "running" or self.started_at is None:
            return None
        return max(0.0, (datetime.now(UTC) - self.started_at).total_seconds())

    @property
    def eta_s(self) -> float | None:
        """Seconds left at the pace so far (its progress fraction over its time running), once it is 5 % in."""
        fraction, seconds = (self.progress or {}).get("fraction") or 0.0, self.seconds_running
        if seconds is None or fraction < 0.05:
            return None
        return seconds * (1 - fraction) / fraction


@dataclass(frozen=True)
class SeamView:
    """Seam QA of one join: between two shots' takes, or at a segment start inside one take."""

    kind: str  # handoff, segment, hard
    left_shot_id: str
    right_shot_id: str
    left_take: int  # take numbers, as people name them
    right_take: int
    frame: int  # the segment's first frame inside the take; 0 for cuts
    metrics: dict[str, Any]
    score: float
    flagged: bool

    @property
    def label(self) -> str:
        if self.kind == "segment":
            return f"{self.left_shot_id} t{self.left_take} @ frame {self.frame}"
        return f"{self.left_shot_id} t{self.left_take} | {self.right_shot_id} t{self.right_take}"


@dataclass(frozen=True)
class ArtifactCheck:
    """One artifact of a shot's current take that is not what was recorded (`milimo verify`, status)."""

    shot_id: str
    take_number: int
    kind: str
    path: str
    problem: str


@dataclass(frozen=True)
class ShotStatus:
    """One row of `milimo status`: a shot and its current take."""

    shot_id: str
    name: str
    position: int
    chain_index: int
    spec_hash: str | None
    take_id: int | None
    take_number: int | None
    status: str  # the current take's status, or "not rendered"
    seconds: float | None
    finished_at: datetime | None
    outputs: TakeOutputs
    overrides: dict[str, Any]
    prompt: str | None = None
    problem: str | None = None  # an artifact of the current take is missing or damaged
    running: dict[str, Any] | None = None  # a take rendering now: take, host, stage, step, total
    spec_is_current: bool = True  # False: the current take was rendered under another spec
    quality: str | None = None  # "final" or "draft", of the shot's spec now
    pinned: bool = False  # the current take was pinned by a person
    predecessor: str | None = None  # the shot it continues from (handoff), if any
    running_take: TakeView | None = None  # the take rendering now, whole (who asked, since when, a stop asked)
    take_spec_hash: str | None = None  # the current take's spec (a pinned take's may not be the shot's now)
    latest_status: str | None = None  # the shot's newest take's status: a try that did not become current shows


@dataclass(frozen=True)
class NoteView:
    """A note on a take: on frame `frame` of its media (to `frame_end`), or on the whole take (None)."""

    id: int
    text: str
    author: str
    created_at: datetime | None
    frame: int | None = None
    frame_end: int | None = None

    @property
    def where(self) -> str:
        if self.frame is None:
            return "take"
        return f"frame {self.frame}" + (f"-{self.frame_end}" if self.frame_end is not None else "")


@dataclass(frozen=True)
class TakeReview:
    """A take's review: its state now (the newest given; pending when none), who gave it and when, its notes and
    every state it was given (state, author, time), oldest first."""

    shot_id: str
    take_number: int
    take_id: int
    status: str  # the take's render status
    current: bool  # the shot's chosen take
    state: str
    by: str | None
    at: datetime | None
    notes: tuple[NoteView, ...] = ()
    history: tuple[tuple[str, str, datetime | None], ...] = ()

    @property
    def said(self) -> str:
        """The state with who gave it ("approved by Ada"); "pending" until someone says."""
        return f"{self.state} by {self.by}" if self.by else self.state


@dataclass(frozen=True)
class DecisionMark:
    """Where a shot's decisions stand (its chosen take, its newest pin and review verdict), as a page saw them:
    `token` goes back with the page's form, so a decision made meanwhile in another tab is not overwritten
    unseen; `said` tells what that decision was."""

    token: str
    said: str | None


def frame_span(text: str) -> tuple[int, int | None]:
    """`N` or `A-B`: a frame of a take's media, or a range of them (first to last, both included), counted
    from 0. ValueError says what is wrong."""
    first, dash, last = text.strip().partition("-")
    try:
        start, end = int(first), int(last) if dash else None
    except ValueError:
        raise ValueError(f"{text!r} is not a frame (N) or a frame range (A-B)") from None
    if start < 0 or (end is not None and end < start):
        raise ValueError(f"{text!r}: frames count from 0, the first before the last")
    return start, end


def aware(dt: datetime | None) -> datetime | None:
    """SQLite hands back naive datetimes; everything the store writes is UTC."""
    return dt.replace(tzinfo=UTC) if dt is not None and dt.tzinfo is None else dt


PATH_KEYS = ("mp4", "mov", "thumbnail")  # the outputs that are files, recorded relative to the output root


def roots_of(take: TakeRow, root: Path | None) -> tuple[Path, ...]:
    """Where a take's relative paths may lie: the reading command's output root, then the one it was written to."""
    recorded = (take.outputs or {}).get("root")
    return tuple(dict.fromkeys(r for r in (root, Path(recorded) if recorded else None) if r is not None))


def outputs_of(take: TakeRow | None, roots: tuple[Path, ...]) -> TakeOutputs:
    """A take's outputs with their paths resolved (`artifacts.resolved_path`)."""
    out = TakeOutputs.of(take.outputs if take is not None else None)
    if all(getattr(out, key) is None for key in PATH_KEYS):
        return out
    paths: dict[str, Any] = {key: resolved_path(getattr(out, key), roots) for key in PATH_KEYS}
    return replace(out, **paths)


def artifact_uri(a: ArtifactRow, roots: tuple[Path, ...]) -> str:
    resolved = resolved_path(a.uri, roots)
    return Path(resolved).as_uri() if resolved and Path(resolved).is_absolute() else a.uri


def artifact_dict(a: ArtifactRow, roots: tuple[Path, ...] = ()) -> dict[str, Any]:
    return {"kind": a.kind, "uri": artifact_uri(a, roots), "sha256": a.sha256, "frames": a.frames, "fps": a.fps,
            "bytes": a.bytes, "mtime_ns": a.mtime_ns}


def view(take: TakeRow, shot_id: str, artifacts: bool = False, root: Path | None = None) -> TakeView:
    roots = roots_of(take, root)
    return TakeView(
        take.id,
        shot_id,
        take.number,
        take.status.value,
        take.spec_hash,
        take.handoff_in_take_id,
        take.handoff_in_sha256,
        resolved_path(take.handoff_out_path, roots),
        take.handoff_out_sha256,
        outputs_of(take, roots),
        dict(take.timings or {}),
        take.error,
        take.host,
        take.flow_run_id,
        take.task_run_id,
        aware(take.created_at),
        aware(take.finished_at),
        dict(take.progress) if take.progress else None,
        tuple(artifact_dict(a, roots) for a in take.artifacts) if artifacts else (),
        take.worker,
        aware(take.heartbeat_at),
        aware(take.started_at),
        take.requested_by,
        take.cancel_requested_by,
        aware(take.cancel_requested_at),
    )


def end_take(take: TakeRow, error: str, status: TakeStatus = TakeStatus.failed) -> None:
    """A take that stops without finishing: failed or cancelled, why, and when; no progress any more."""
    take.status, take.error, take.finished_at, take.progress = status, error, utcnow(), None


def artifact_problems(take: TakeRow, full: bool = False, root: Path | None = None) -> Iterator[tuple[ArtifactRow, str]]:
    """(artifact, problem) for each artifact of `take` that is not what was recorded, checked one by one."""
    roots = roots_of(take, root)
    for a in take.artifacts:
        problem = artifact_problem(a.uri, a.sha256, a.bytes, a.mtime_ns, full=full, roots=roots)
        if problem:
            yield a, problem


def take_problem(take: TakeRow, root: Path | None = None) -> tuple[str, str] | None:
    """(kind, "kind problem") of the first artifact of a succeeded `take` that is not what was recorded
    (the quick check: size and mtime, the hash only when the mtime moved)."""
    if take.status != TakeStatus.succeeded:
        return None
    found = next(artifact_problems(take, root=root), None)
    return (found[0].kind, f"{found[0].kind} {found[1]}") if found else None


def spec_json(spec) -> dict[str, Any]:
    """A resolved spec as the store keeps it: its fields and its hash."""
    return spec.as_dict() | {"spec_hash": spec.spec_hash}
