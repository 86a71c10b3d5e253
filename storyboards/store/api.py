"""Store operations the flows need: import, plan, take lifecycle, re-render, lineage.

Concurrency: take numbers come from a unique (shot, number) constraint; the shot row is
locked (SELECT ... FOR UPDATE) on PostgreSQL, and SQLite serialises writers, so two processes
recording takes at once never duplicate or overwrite one another.
"""

from __future__ import annotations

import hashlib
import socket
from dataclasses import asdict, dataclass
from datetime import datetime, timedelta, timezone
from pathlib import Path
from typing import Any, Callable, Iterable, Iterator, TypeVar

from sqlalchemy import Engine, delete, func, select, text, tuple_, update
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session, sessionmaker

from ..errors import StoryboardFileError, UnknownShot
from ..graph import ShotGraph
from ..load import Storyboard
from ..planner import ShotState
from ..spec import ShotSpec
from .artifacts import artifact_problem
from .db import default_url, open_engine
from .models import (
    ArtifactRow, FileSeenRow, RevisionRow, SeamRow, ShotLeaseRow, ShotRow, SpecRow, StoryboardRow, TakeRow, TakeStatus,
    utcnow,
)


T = TypeVar("T")


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
    outputs: dict[str, Any]
    timings: dict[str, Any]
    error: str | None
    host: str | None
    flow_run_id: str | None
    task_run_id: str | None
    created_at: datetime
    finished_at: datetime | None
    progress: dict[str, Any] | None = None
    artifacts: tuple[dict[str, Any], ...] = ()
    worker: str | None = None
    heartbeat_at: datetime | None = None


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
    outputs: dict[str, Any]
    overrides: dict[str, Any]
    prompt: str | None = None
    problem: str | None = None  # an artifact of the current take is missing or damaged
    running: dict[str, Any] | None = None  # a take rendering now: take, host, stage, step, total
    spec_is_current: bool = True  # False: the current take was rendered under another spec
    quality: str | None = None  # "final" or "draft", of the shot's spec now
    pinned: bool = False  # the current take was pinned by a person
    predecessor: str | None = None  # the shot it continues from (handoff), if any


def _aware(dt: datetime | None) -> datetime | None:
    """SQLite hands back naive datetimes; everything the store writes is UTC."""
    return dt.replace(tzinfo=timezone.utc) if dt is not None and dt.tzinfo is None else dt


def _artifact_dict(a: ArtifactRow) -> dict[str, Any]:
    return {"kind": a.kind, "uri": a.uri, "sha256": a.sha256, "frames": a.frames, "fps": a.fps, "bytes": a.bytes,
            "mtime_ns": a.mtime_ns}


def _view(take: TakeRow, shot_id: str, artifacts: bool = False) -> TakeView:
    return TakeView(take.id, shot_id, take.number, take.status.value, take.spec_hash, take.handoff_in_take_id,
                    take.handoff_in_sha256, take.handoff_out_path, take.handoff_out_sha256, dict(take.outputs or {}),
                    dict(take.timings or {}), take.error, take.host, take.flow_run_id, take.task_run_id,
                    _aware(take.created_at), _aware(take.finished_at), dict(take.progress) if take.progress else None,
                    tuple(_artifact_dict(a) for a in take.artifacts) if artifacts else (), take.worker,
                    _aware(take.heartbeat_at))


def _end(take: TakeRow, error: str, status: TakeStatus = TakeStatus.failed) -> None:
    """A take that stops without finishing: failed or cancelled, why, and when; no progress any more."""
    take.status, take.error, take.finished_at, take.progress = status, error, utcnow(), None


def _artifact_problems(take: TakeRow, full: bool = False) -> Iterator[tuple[ArtifactRow, str]]:
    """(artifact, problem) for each artifact of `take` that is not what was recorded, checked one by one."""
    for a in take.artifacts:
        problem = artifact_problem(a.uri, a.sha256, a.bytes, a.mtime_ns, full=full)
        if problem:
            yield a, problem


def _take_problem(take: TakeRow) -> tuple[str, str] | None:
    """(kind, "kind problem") of the first artifact of a succeeded `take` that is not what was recorded
    (the quick check: size and mtime, the hash only when the mtime moved)."""
    if take.status != TakeStatus.succeeded:
        return None
    found = next(_artifact_problems(take), None)
    return (found[0].kind, f"{found[0].kind} {found[1]}") if found else None


class Store:
    def __init__(self, engine: Engine):
        self.engine = engine
        self.session = sessionmaker(engine, expire_on_commit=False)

    @classmethod
    def open(cls, url: str | None = None, **engine_kwargs: Any) -> "Store":
        """Open (and upgrade to the current schema) the store at `url` or MILIMO_DB_URL; a store that
        cannot be used raises StoreError naming the fix."""
        return cls(open_engine(url or default_url(), **engine_kwargs))

    @property
    def is_postgres(self) -> bool:
        return self.engine.dialect.name == "postgresql"

    # ------------------------------------------------------------ import
    def import_revision(self, board: Storyboard, specs: dict[str, ShotSpec]) -> int:
        """Record a storyboard revision; idempotent for the same content. Returns the revision number."""
        graph = ShotGraph.of(board)
        content = hashlib.sha256((board.source_sha256 + "".join(
            f"{sid}:{specs[sid].spec_hash}" for sid in graph.order() if sid in specs)).encode()).hexdigest()
        return self._retrying(lambda s: self._import(s, board, specs, graph, content), attempts=3)

    def _retrying(self, work: Callable[[Session], T], attempts: int) -> T:
        """Run `work` in its own transaction, again if a concurrent writer won a unique constraint."""
        for attempt in range(attempts):
            try:
                with self.session.begin() as s:
                    return work(s)
            except IntegrityError:
                if attempt == attempts - 1:
                    raise
        raise AssertionError("unreachable")

    @staticmethod
    def _next_number(s: Session, column, where) -> int:
        return (s.scalar(select(func.max(column)).where(where)) or 0) + 1

    def check_identity(self, board: Storyboard) -> None:
        """A different file with the same storyboard name must not silently share its takes."""
        with self.session() as s:
            sb = s.scalar(select(StoryboardRow).where(StoryboardRow.name == board.name))
        self._same_source(sb, board)

    @staticmethod
    def _same_source(sb: StoryboardRow | None, board: Storyboard) -> None:
        path = str(board.source_path.resolve())
        if sb is None or not sb.source_path or sb.source_path == path \
                or board.timeline_metadata.get("storyboard_id") == board.name:
            return
        raise StoryboardFileError(
            board.source_path, f"its timeline is named {board.name!r}, like the storyboard this store already has "
            f"from {sb.source_path}",
            f"give this timeline its own id (metadata milimo.storyboard_id: '{board.name}-2'), or, if it is the same "
            f"storyboard moved, claim it with milimo.storyboard_id: '{board.name}'")

    def _import(self, s: Session, board: Storyboard, specs: dict[str, ShotSpec], graph: ShotGraph,
                content: str) -> int:
        query = select(StoryboardRow).where(StoryboardRow.name == board.name)
        sb = s.scalar(query.with_for_update() if self.is_postgres else query)
        self._same_source(sb, board)
        if sb is None:
            sb = StoryboardRow(name=board.name)
            s.add(sb)
            s.flush()
        sb.source_path = str(board.source_path.resolve())
        # The file on disk is the truth: content seen before makes that revision current again.
        existing = s.scalar(select(RevisionRow).where(RevisionRow.storyboard_id == sb.id,
                                                      RevisionRow.content_hash == content))
        if existing is not None:
            number = existing.number
        else:
            number = self._next_number(s, RevisionRow.number, RevisionRow.storyboard_id == sb.id)
            s.add(RevisionRow(storyboard_id=sb.id, number=number, source_path=str(board.source_path),
                              source_sha256=board.source_sha256, content_hash=content))
        sb.current_revision = number
        for spec in specs.values():
            if s.get(SpecRow, spec.spec_hash) is None:
                s.add(SpecRow(spec_hash=spec.spec_hash, model_id=spec.model_id, data=spec_json(spec)))
        self._record_files(s, specs.values())
        s.flush()
        rows = {r.shot_id: r for r in s.scalars(select(ShotRow).where(ShotRow.storyboard_id == sb.id))}
        present = set()
        for shot in board.shots:
            chain = graph.chain_of(shot.shot_id)
            row = rows.get(shot.shot_id)
            if row is None:
                row = ShotRow(storyboard_id=sb.id, shot_id=shot.shot_id)
                s.add(row)
            row.name, row.position, row.chain_index = shot.name, shot.index, chain.index
            row.predecessor_shot_id = graph.predecessor(shot.shot_id)
            row.active = True
            row.spec_hash = specs[shot.shot_id].spec_hash if shot.shot_id in specs else None
            if row.id is not None and row.spec_hash:
                self._take_matching_spec(s, row)
            present.add(shot.shot_id)
        for sid, row in rows.items():
            if sid not in present:
                row.active = False
        return number

    @staticmethod
    def _take_matching_spec(s: Session, row: ShotRow) -> None:
        """A spec the shot had before (a reverted file, a removed override) brings back its latest good take
        as current; the planner still checks its upstream and its files before trusting it."""
        current = s.get(TakeRow, row.current_take_id) if row.current_take_id else None
        if current is not None and (current.spec_hash == row.spec_hash or row.pinned_take_id == current.id):
            return
        earlier = s.scalar(select(TakeRow).where(TakeRow.shot_pk == row.id, TakeRow.spec_hash == row.spec_hash,
                                                 TakeRow.status == TakeStatus.succeeded)
                           .order_by(TakeRow.number.desc()).limit(1))
        if earlier is not None:
            row.current_take_id = earlier.id

    @staticmethod
    def _record_files(s: Session, specs: Iterable[ShotSpec]) -> None:
        files: dict[tuple[str, str], str] = {}
        for spec in specs:
            files.update({(lo.path, lo.sha256): "lora" for lo in spec.loras})
            files.update({(im.path, im.sha256): "image" for im in spec.images})
        if not files:
            return
        known = set(s.execute(select(FileSeenRow.path, FileSeenRow.sha256).where(
            tuple_(FileSeenRow.path, FileSeenRow.sha256).in_(list(files)))).tuples())
        for (path, sha), kind in files.items():
            if (path, sha) not in known:
                s.add(FileSeenRow(kind=kind, path=path, sha256=sha))

    def seen_file(self, kind: str, path: str, sha256: str) -> bool:
        """Record (path, sha256) of `kind`; True when it was recorded before (e.g. a cut already imported)."""
        def work(s: Session) -> bool:
            if s.scalar(select(FileSeenRow.id).where(FileSeenRow.path == path, FileSeenRow.sha256 == sha256)):
                return True
            s.add(FileSeenRow(kind=kind, path=path, sha256=sha256))
            s.flush()
            return False

        return self._retrying(work, attempts=3)

    def files_seen(self) -> list[tuple[str, str, str]]:
        with self.session() as s:
            return [(f.kind, f.path, f.sha256) for f in s.scalars(select(FileSeenRow).order_by(FileSeenRow.id))]

    # ------------------------------------------------------------ planning
    def shot_states(self, storyboard: str) -> dict[str, ShotState]:
        """What the planner needs of every active shot, its current take's artifacts checked (quickly)."""
        with self.session() as s:
            shots = self._shots(s, storyboard)
            takes = {t.id: t for t in s.scalars(select(TakeRow).where(
                TakeRow.id.in_([r.current_take_id for r in shots if r.current_take_id])))}
            states = {}
            for row in shots:
                take = takes.get(row.current_take_id) if row.current_take_id else None
                if take is None:
                    states[row.shot_id] = ShotState(row.shot_id, row.spec_hash, None)
                    continue
                problem = _take_problem(take)
                handoff_ok = bool(take.handoff_out_path and take.handoff_out_sha256) and not (
                    problem and problem[0] == "handoff") and Path(take.handoff_out_path).is_file()
                states[row.shot_id] = ShotState(
                    row.shot_id, row.spec_hash, take.status.value, take.spec_hash, take.handoff_in_sha256,
                    take.handoff_out_sha256, handoff_ok, problem[1] if problem else None,
                    pinned=row.pinned_take_id == take.id)
            return states

    def done_take(self, storyboard: str, shot_id: str, upstream_handoff_sha256: str | None) -> TakeView | None:
        """The shot's current take when it needs no new one: succeeded under the shot's spec, from this
        upstream handoff, with every artifact as recorded. What a render that waited for another
        render of the same shot, or whose upstream re-rendered, checks before rendering."""
        with self.session() as s:
            shot = self._shot(s, storyboard, shot_id)
            take = s.get(TakeRow, shot.current_take_id) if shot.current_take_id else None
            pinned = take is not None and shot.pinned_take_id == take.id
            if (take is None or take.status != TakeStatus.succeeded or (take.spec_hash != shot.spec_hash and not pinned)
                    or take.handoff_in_sha256 != upstream_handoff_sha256 or _take_problem(take)):
                return None
            return _view(take, shot_id)

    def _shots(self, s: Session, storyboard: str) -> list[ShotRow]:
        return list(s.scalars(select(ShotRow).join(StoryboardRow).where(
            StoryboardRow.name == storyboard, ShotRow.active.is_(True)).order_by(ShotRow.position)))

    def _shot(self, s: Session, storyboard: str, shot_id: str, lock: bool = False) -> ShotRow:
        q = select(ShotRow).join(StoryboardRow).where(StoryboardRow.name == storyboard, ShotRow.shot_id == shot_id)
        if lock and self.is_postgres:
            q = q.with_for_update(of=ShotRow)
        row = s.scalar(q)
        if row is None:
            raise UnknownShot(storyboard, shot_id, [r.shot_id for r in self._shots(s, storyboard)])
        return row

    # ------------------------------------------------------------ leases
    def acquire_lease(self, storyboard: str, shot_id: str, holder: str, ttl_s: float,
                      is_dead: Callable[[str], bool] = lambda holder: False) -> str | None:
        """Take the shot's lease for `holder`. None when taken, else who holds it. A lease whose holder
        is dead, or that was not renewed in time, is taken over."""
        def work(s: Session) -> str | None:
            shot = self._shot(s, storyboard, shot_id, lock=True)
            now = utcnow()
            lease = s.get(ShotLeaseRow, shot.id)
            if lease is None:
                s.add(ShotLeaseRow(shot_pk=shot.id, holder=holder, acquired_at=now,
                                   expires_at=now + timedelta(seconds=ttl_s)))
                s.flush()
                return None
            if lease.holder != holder and _aware(lease.expires_at) > now and not is_dead(lease.holder):
                return lease.holder
            lease.holder, lease.acquired_at, lease.expires_at = holder, now, now + timedelta(seconds=ttl_s)
            return None

        return self._retrying(work, attempts=5)

    def renew_lease(self, storyboard: str, shot_id: str, holder: str, ttl_s: float) -> bool:
        """Extend the lease; False when `holder` no longer holds it (it was judged dead and taken over)."""
        with self.session.begin() as s:
            shot = self._shot(s, storyboard, shot_id)
            result = s.execute(update(ShotLeaseRow).where(ShotLeaseRow.shot_pk == shot.id,
                                                          ShotLeaseRow.holder == holder)
                               .values(expires_at=utcnow() + timedelta(seconds=ttl_s)))
            return result.rowcount == 1

    def release_lease(self, storyboard: str, shot_id: str, holder: str) -> None:
        with self.session.begin() as s:
            shot = self._shot(s, storyboard, shot_id)
            s.execute(delete(ShotLeaseRow).where(ShotLeaseRow.shot_pk == shot.id, ShotLeaseRow.holder == holder))

    # ------------------------------------------------------------ takes
    def start_take(self, storyboard: str, shot_id: str, *, handoff_in_take_id: int | None = None,
                   handoff_in_path: str | None = None, handoff_in_sha256: str | None = None,
                   flow_run_id: str | None = None, task_run_id: str | None = None, host: str | None = None,
                   worker: str | None = None) -> int:
        def work(s: Session) -> int:
            shot = self._shot(s, storyboard, shot_id, lock=True)
            if shot.spec_hash is None:
                raise ValueError(f"shot {shot_id!r} has no spec yet; give it a prompt and import again")
            take = TakeRow(shot_pk=shot.id, number=self._next_number(s, TakeRow.number, TakeRow.shot_pk == shot.id),
                           status=TakeStatus.running, spec_hash=shot.spec_hash,
                           handoff_in_take_id=handoff_in_take_id, handoff_in_path=handoff_in_path,
                           handoff_in_sha256=handoff_in_sha256, host=host or socket.gethostname(),
                           flow_run_id=flow_run_id, task_run_id=task_run_id, started_at=utcnow(), outputs={},
                           timings={}, progress={"stage": "starting", "step": 0, "total": 0},
                           worker=worker or host or socket.gethostname(), heartbeat_at=utcnow())
            s.add(take)
            s.flush()
            return take.id

        return self._retrying(work, attempts=5)

    def set_progress(self, take_id: int, progress: dict[str, Any]) -> None:
        with self.session.begin() as s:
            s.execute(update(TakeRow).where(TakeRow.id == take_id, TakeRow.status == TakeStatus.running)
                      .values(progress=progress))

    def finish_take(self, take_id: int, *, handoff_out_path: str | None = None,
                    handoff_out_sha256: str | None = None, outputs: dict[str, Any] | None = None,
                    timings: dict[str, Any] | None = None, artifacts: Iterable[dict[str, Any]] = ()) -> None:
        """Mark a running take succeeded and make it its shot's current take."""
        with self.session.begin() as s:
            take = s.get(TakeRow, take_id, with_for_update=self.is_postgres)
            if take is None or take.status != TakeStatus.running:
                raise ValueError(f"take {take_id} is not running (status {take.status.value if take else 'missing'})")
            take.status = TakeStatus.succeeded
            take.handoff_out_path, take.handoff_out_sha256 = handoff_out_path, handoff_out_sha256
            take.outputs, take.timings = dict(outputs or {}), dict(timings or {})
            take.finished_at, take.progress = utcnow(), None
            for a in artifacts:
                take.artifacts.append(ArtifactRow(**a))
            s.execute(update(ShotRow).where(ShotRow.id == take.shot_pk).values(current_take_id=take.id,
                                                                               pinned_take_id=None, pinned_at=None))

    def pin_take(self, storyboard: str, shot_id: str, number: int) -> list[str]:
        """Make take `number` the shot's current take and record the pin (when, which). The shots after it in its
        chain continued from another take: their current takes become stale. Returns those shot ids."""
        with self.session.begin() as s:
            shot = self._shot(s, storyboard, shot_id, lock=True)
            take = s.scalar(select(TakeRow).where(TakeRow.shot_pk == shot.id, TakeRow.number == number))
            if take is None:
                raise UnknownShot(storyboard, f"{shot_id} take {number}", [])
            if take.status not in (TakeStatus.succeeded, TakeStatus.stale) or not (take.outputs or {}).get("mp4"):
                raise ValueError(f"take {number} of {shot_id} is {take.status.value}; only a finished take can be pinned")
            take.status = TakeStatus.succeeded
            shot.current_take_id, shot.pinned_take_id, shot.pinned_at = take.id, take.id, utcnow()
            later = [r for r in self._shots(s, storyboard)
                     if r.chain_index == shot.chain_index and r.position > shot.position]
            for r in later:
                if r.current_take_id:
                    s.execute(update(TakeRow).where(TakeRow.id == r.current_take_id).values(status=TakeStatus.stale))
            return [r.shot_id for r in later]

    def heartbeat(self, take_id: int) -> None:
        with self.session.begin() as s:
            s.execute(update(TakeRow).where(TakeRow.id == take_id, TakeRow.status == TakeStatus.running)
                      .values(heartbeat_at=utcnow()))

    def abandon_stale(self, storyboard: str, timeout_s: float) -> list[int]:
        """Mark failed ("abandoned") every running take whose worker has not beaten for `timeout_s` (its host
        is gone: a pid cannot be checked across machines)."""
        cutoff = utcnow() - timedelta(seconds=timeout_s)
        with self.session.begin() as s:
            shots = {r.id: r.shot_id for r in self._shots(s, storyboard)}
            stale = s.scalars(select(TakeRow).where(
                TakeRow.shot_pk.in_(list(shots)), TakeRow.status == TakeStatus.running,
                func.coalesce(TakeRow.heartbeat_at, TakeRow.started_at) < cutoff)).all()
            for take in stale:
                _end(take, f"abandoned: no heartbeat from {take.worker or take.host} for over {timeout_s:g}s")
            return [t.id for t in stale]

    def abandon_others(self, storyboard: str, shot_id: str, holder: str) -> list[int]:
        """Running takes of a shot whose lease `holder` now holds: their renders lost the lease (their process or
        host died), so they are abandoned before this one starts."""
        with self.session.begin() as s:
            shot = self._shot(s, storyboard, shot_id)
            others = s.scalars(select(TakeRow).where(TakeRow.shot_pk == shot.id, TakeRow.status == TakeStatus.running,
                                                     TakeRow.host != holder)).all()
            for take in others:
                _end(take, f"abandoned: {take.worker or take.host} lost the shot's lease (its process or host died)")
            return [t.id for t in others]

    def fail_take(self, take_id: int, error: str, status: TakeStatus = TakeStatus.failed) -> None:
        """A failed (or cancelled) take never replaces the shot's current (earlier, good) take."""
        with self.session.begin() as s:
            take = s.get(TakeRow, take_id, with_for_update=self.is_postgres)
            if take is None:
                raise LookupError(f"no take {take_id}")
            _end(take, error, status)

    def rerender_from(self, storyboard: str, shot_id: str) -> list[str]:
        """Mark `shot_id` and the rest of its chain stale; nothing else changes. Returns those shot ids."""
        with self.session.begin() as s:
            start = self._shot(s, storyboard, shot_id, lock=True)
            rows = [r for r in self._shots(s, storyboard)
                    if r.chain_index == start.chain_index and r.position >= start.position]
            for r in rows:
                if r.current_take_id:
                    s.execute(update(TakeRow).where(TakeRow.id == r.current_take_id).values(status=TakeStatus.stale))
                r.pinned_take_id, r.pinned_at = None, None  # a rerender replaces a pin
            return [r.shot_id for r in rows]

    def take(self, take_id: int) -> TakeView:
        with self.session() as s:
            take = s.get(TakeRow, take_id)
            if take is None:
                raise LookupError(f"no take {take_id}")
            return _view(take, s.get(ShotRow, take.shot_pk).shot_id, artifacts=True)

    def running_takes(self, storyboard: str) -> list[TakeView]:
        with self.session() as s:
            shots = {r.id: r.shot_id for r in self._shots(s, storyboard)}
            return [_view(t, shots[t.shot_pk]) for t in s.scalars(
                select(TakeRow).where(TakeRow.shot_pk.in_(list(shots)), TakeRow.status == TakeStatus.running))]

    def spec_data(self, storyboard: str, shot_id: str) -> dict[str, Any]:
        """The shot's current resolved spec, as recorded at import (what a render task renders)."""
        with self.session() as s:
            shot = self._shot(s, storyboard, shot_id)
            if shot.spec_hash is None:
                raise LookupError(f"shot {shot_id!r} has no spec yet; give it a prompt and import again")
            return dict(s.get(SpecRow, shot.spec_hash).data)

    def status(self, storyboard: str) -> list[ShotStatus]:
        """Every active shot with its current take (artifacts checked) and any take rendering now."""
        with self.session() as s:
            rows = s.execute(select(ShotRow, TakeRow).join(StoryboardRow)
                             .outerjoin(TakeRow, TakeRow.id == ShotRow.current_take_id)
                             .where(StoryboardRow.name == storyboard, ShotRow.active.is_(True))
                             .order_by(ShotRow.position)).all()
            running = {t.shot_pk: t for t in s.scalars(select(TakeRow).where(
                TakeRow.shot_pk.in_([shot.id for shot, _ in rows]), TakeRow.status == TakeStatus.running)
                .order_by(TakeRow.number))}
            specs = {spec.spec_hash: spec.data for spec in s.scalars(select(SpecRow).where(
                SpecRow.spec_hash.in_([shot.spec_hash for shot, _ in rows if shot.spec_hash])))}
            out = []
            for shot, take in rows:
                seconds = None
                if take is not None and take.finished_at and take.started_at:
                    seconds = (take.finished_at - take.started_at).total_seconds()
                found = _take_problem(take) if take is not None else None
                problem = found[1] if found else None
                live = running.get(shot.id)
                out.append(ShotStatus(
                    shot.shot_id, shot.name, shot.position, shot.chain_index, shot.spec_hash,
                    take.id if take else None, take.number if take else None,
                    problem or (take.status.value if take else "not rendered"),
                    seconds, _aware(take.finished_at) if take else None,
                    dict(take.outputs or {}) if take else {}, dict(shot.overrides or {}),
                    specs.get(shot.spec_hash, {}).get("prompt"), problem,
                    {"take": live.number, "host": live.host, **(live.progress or {})} if live else None,
                    take is None or take.spec_hash == shot.spec_hash, specs.get(shot.spec_hash, {}).get("quality"),
                    take is not None and shot.pinned_take_id == take.id, shot.predecessor_shot_id))
            return out

    # ------------------------------------------------------------ for the dashboard
    def storyboards(self) -> list[tuple[str, int | None, str | None]]:
        """(name, current revision, source path) of every storyboard, by name."""
        with self.session() as s:
            return [(r.name, r.current_revision, r.source_path)
                    for r in s.scalars(select(StoryboardRow).order_by(StoryboardRow.name))]

    def spec_by_hash(self, spec_hash: str) -> dict[str, Any]:
        with self.session() as s:
            row = s.get(SpecRow, spec_hash)
            return dict(row.data) if row is not None else {}

    def leased(self, storyboard: str) -> set[str]:
        """Shots some render holds right now (rendering, or waiting for a device)."""
        with self.session() as s:
            return set(s.scalars(select(ShotRow.shot_id).join(StoryboardRow).join(
                ShotLeaseRow, ShotLeaseRow.shot_pk == ShotRow.id).where(StoryboardRow.name == storyboard)))

    def pinned_at(self, storyboard: str, shot_id: str) -> datetime | None:
        with self.session() as s:
            return _aware(self._shot(s, storyboard, shot_id).pinned_at)

    # ------------------------------------------------------------ seam QA
    def has_seam(self, left_take_id: int, right_take_id: int, frame: int = 0) -> bool:
        with self.session() as s:
            return s.scalar(select(SeamRow.id).where(SeamRow.left_take_id == left_take_id,
                                                     SeamRow.right_take_id == right_take_id,
                                                     SeamRow.frame == frame)) is not None

    def record_seam(self, storyboard: str, kind: str, left_take_id: int, right_take_id: int, frame: int,
                    metrics: dict[str, Any], score: float, flagged: bool) -> None:
        """Once per join of two takes: a second measurement of the same pair (another process) is dropped."""
        def work(s: Session) -> None:
            sb = s.scalar(select(StoryboardRow).where(StoryboardRow.name == storyboard))
            if sb is None:
                raise UnknownShot(storyboard, "-", [])
            s.add(SeamRow(storyboard_id=sb.id, kind=kind, left_take_id=left_take_id, right_take_id=right_take_id,
                          frame=frame, metrics=metrics, score=score, flagged=flagged))

        try:
            self._retrying(work, attempts=1)
        except IntegrityError:
            pass

    def seams(self, storyboard: str) -> list[SeamView]:
        """The seams between the current takes, in timeline order (segment seams inside a take first)."""
        with self.session() as s:
            current = {take.id: (shot.position, shot.shot_id, take.number) for shot, take in s.execute(
                select(ShotRow, TakeRow).join(StoryboardRow).join(TakeRow, TakeRow.id == ShotRow.current_take_id)
                .where(StoryboardRow.name == storyboard, ShotRow.active.is_(True)))}
            found = s.scalars(select(SeamRow).where(SeamRow.left_take_id.in_(list(current)),
                                                    SeamRow.right_take_id.in_(list(current)))).all()
            out = []
            for seam in found:
                (left_at, left_id, left_take), (right_at, right_id, right_take) = (
                    current[seam.left_take_id], current[seam.right_take_id])
                if seam.kind != "segment" and right_at != left_at + 1:
                    continue
                out.append(((left_at, seam.kind != "segment", seam.frame), SeamView(
                    seam.kind, left_id, right_id, left_take, right_take, seam.frame, dict(seam.metrics), seam.score,
                    seam.flagged)))
        return [view for _, view in sorted(out, key=lambda pair: pair[0])]

    def verify(self, storyboard: str) -> list[ArtifactCheck]:
        """Every artifact of every current take, hashed again; what does not match its record."""
        with self.session() as s:
            bad = []
            for shot in self._shots(s, storyboard):
                take = s.get(TakeRow, shot.current_take_id) if shot.current_take_id else None
                if take is None:
                    continue
                bad += [ArtifactCheck(shot.shot_id, take.number, a.kind, a.uri, problem)
                        for a, problem in _artifact_problems(take, full=True)]
            return bad

    def overrides(self, storyboard: str) -> dict[str, dict[str, Any]]:
        with self.session() as s:
            return {r.shot_id: dict(r.overrides) for r in self._shots(s, storyboard) if r.overrides}

    def clear_overrides(self, storyboard: str, shot_ids: Iterable[str] | None = None) -> list[str]:
        """Remove every override of these shots (all shots when None); returns the shots that had some."""
        with self.session.begin() as s:
            rows = self._shots(s, storyboard) if shot_ids is None else [self._shot(s, storyboard, sid) for sid in shot_ids]
            cleared = [r.shot_id for r in rows if r.overrides]
            for r in rows:
                r.overrides = None
            return cleared

    def set_overrides(self, storyboard: str, shot_id: str, overrides: dict[str, Any]) -> None:
        """Merge `overrides` into the shot's stored ones (a value of None removes a key)."""
        with self.session.begin() as s:
            shot = self._shot(s, storyboard, shot_id, lock=True)
            merged = dict(shot.overrides or {})
            for key, value in overrides.items():
                if value is None:
                    merged.pop(key, None)
                else:
                    merged[key] = value
            shot.overrides = merged or None

    def takes(self, storyboard: str, shot_id: str) -> list[TakeView]:
        with self.session() as s:
            shot = self._shot(s, storyboard, shot_id)
            return [_view(t, shot_id) for t in s.scalars(select(TakeRow).where(TakeRow.shot_pk == shot.id)
                                                          .order_by(TakeRow.number))]

    def current_take(self, storyboard: str, shot_id: str) -> TakeView | None:
        with self.session() as s:
            shot = self._shot(s, storyboard, shot_id)
            take = s.get(TakeRow, shot.current_take_id) if shot.current_take_id else None
            return _view(take, shot_id, artifacts=True) if take else None

    def lineage(self, take_id: int) -> list[tuple[int, str, int]]:
        """(take id, shot id, take number) from `take_id` back to the chain head, via a recursive CTE."""
        sql = text("""
            WITH RECURSIVE lineage(id, shot_pk, number, parent, depth) AS (
                SELECT id, shot_pk, number, handoff_in_take_id, 0 FROM takes WHERE id = :take_id
                UNION ALL
                SELECT t.id, t.shot_pk, t.number, t.handoff_in_take_id, l.depth + 1
                FROM takes t JOIN lineage l ON t.id = l.parent
            )
            SELECT l.id, s.shot_id, l.number FROM lineage l JOIN shots s ON s.id = l.shot_pk ORDER BY l.depth
        """)
        with self.engine.connect() as conn:
            return [(r[0], r[1], r[2]) for r in conn.execute(sql, {"take_id": take_id})]


def spec_json(spec: ShotSpec) -> dict[str, Any]:
    return asdict(spec) | {"spec_hash": spec.spec_hash}
