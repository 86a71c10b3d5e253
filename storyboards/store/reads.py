"""Reading the store: each shot's state for the planner, its status for people, its takes, the artifacts
checked against their record, and a take's lineage."""

from __future__ import annotations

from datetime import datetime
from pathlib import Path

from sqlalchemy import func, select, text
from sqlalchemy.orm import selectinload

from ..errors import NotRunning
from ..planner import ShotState
from .artifacts import resolved_path
from .base import StoreBase
from .models import ShotRow, SpecRow, StoryboardRow, TakeRow, TakeStatus
from .records import (
    ArtifactCheck,
    ShotStatus,
    TakeView,
    artifact_problems,
    artifact_uri,
    aware,
    outputs_of,
    roots_of,
    take_problem,
    view,
)


class ReadsMixin(StoreBase):
    def shot_states(self, storyboard: str) -> dict[str, ShotState]:
        """What the planner needs of every active shot, its current take's artifacts checked (quickly)."""
        with self.session() as s:
            shots = self._shots(s, storyboard)
            takes = self._current_takes(s, shots)
            states = {}
            for row in shots:
                take = takes.get(row.current_take_id) if row.current_take_id else None
                if take is None:
                    states[row.shot_id] = ShotState(row.shot_id, row.spec_hash, None)
                    continue
                problem = take_problem(take, self.root)
                handoff = resolved_path(take.handoff_out_path, roots_of(take, self.root))
                handoff_ok = bool(handoff and take.handoff_out_sha256) and not (
                    problem and problem[0] == "handoff") and Path(handoff or "").is_file()
                states[row.shot_id] = ShotState(
                    row.shot_id, row.spec_hash, take.status.value, take.spec_hash, take.handoff_in_sha256,
                    take.handoff_out_sha256, handoff_ok, problem[1] if problem else None,
                    pinned=row.pinned_take_id == take.id)
            return states

    def done_take(self, storyboard: str, shot_id: str, upstream_handoff_sha256: str | None,
                  spec_hash: str | None = None) -> TakeView | None:
        """The shot's current take when it needs no new one: succeeded under `spec_hash` (the spec the render
        planned; by default the shot's now), from this upstream handoff, with every artifact as recorded. What a
        render that waited for another render of the same shot, or whose upstream re-rendered, checks before
        rendering."""
        with self.session() as s:
            shot = self._shot(s, storyboard, shot_id)
            take = s.get(TakeRow, shot.current_take_id) if shot.current_take_id else None
            pinned = take is not None and shot.pinned_take_id == take.id
            wanted = spec_hash or shot.spec_hash
            if (take is None or take.status != TakeStatus.succeeded or (take.spec_hash != wanted and not pinned)
                    or take.handoff_in_sha256 != upstream_handoff_sha256 or take_problem(take, self.root)):
                return None
            return view(take, shot_id, root=self.root)

    def take(self, take_id: int) -> TakeView:
        with self.session() as s:
            take = s.get(TakeRow, take_id)
            if take is None:
                raise LookupError(f"no take {take_id}")
            shot = s.get(ShotRow, take.shot_pk)
            assert shot is not None
            return view(take, shot.shot_id, artifacts=True, root=self.root)

    def running_takes(self, storyboard: str) -> list[TakeView]:
        with self.session() as s:
            shots = {r.id: r.shot_id for r in self._shots(s, storyboard)}
            return [view(t, shots[t.shot_pk], root=self.root) for t in s.scalars(
                select(TakeRow).where(TakeRow.shot_pk.in_(list(shots)), TakeRow.status == TakeStatus.running))]

    def running_take(self, storyboard: str, shot_id: str, number: int | None = None) -> TakeView:
        """The shot's take rendering now (take `number`, else its first); NotRunning names what to do instead."""
        running = [t for t in self.running_takes(storyboard) if t.shot_id == shot_id]
        take = next((t for t in running if number is None or t.number == number), None)
        if take is None:
            what = f"{shot_id} has no take rendering" if number is None else \
                f"take {number} of {shot_id} is not rendering"
            raise NotRunning(what, "nothing to stop; it finished or stopped (`milimo status` shows what renders)")
        return take

    def status(self, storyboard: str) -> list[ShotStatus]:
        """Every active shot with its current take (artifacts checked) and any take rendering now."""
        with self.session() as s:
            rows = s.execute(select(ShotRow, TakeRow).join(StoryboardRow)
                             .outerjoin(TakeRow, TakeRow.id == ShotRow.current_take_id)
                             .where(StoryboardRow.name == storyboard, ShotRow.active.is_(True))
                             .order_by(ShotRow.position)
                             .options(selectinload(TakeRow.artifacts))).all()  # checked below: one query, not N
            running = {t.shot_pk: t for t in s.scalars(select(TakeRow).where(
                TakeRow.shot_pk.in_([shot.id for shot, _ in rows]), TakeRow.status == TakeStatus.running)
                .order_by(TakeRow.number))}
            specs = {spec.spec_hash: spec.data for spec in s.scalars(select(SpecRow).where(
                SpecRow.spec_hash.in_([shot.spec_hash for shot, _ in rows if shot.spec_hash])))}
            newest = select(TakeRow.shot_pk, func.max(TakeRow.number).label("number")).where(
                TakeRow.shot_pk.in_([shot.id for shot, _ in rows])).group_by(TakeRow.shot_pk).subquery()
            latest = {pk: status.value for pk, status in s.execute(select(TakeRow.shot_pk, TakeRow.status).join(
                newest, (TakeRow.shot_pk == newest.c.shot_pk) & (TakeRow.number == newest.c.number)))}
            out = []
            for shot, take in rows:
                seconds = None
                if take is not None and take.finished_at and take.started_at:
                    seconds = (take.finished_at - take.started_at).total_seconds()
                found = take_problem(take, self.root) if take is not None else None
                problem = found[1] if found else None
                live = running.get(shot.id)
                out.append(ShotStatus(
                    shot.shot_id, shot.name, shot.position, shot.chain_index, shot.spec_hash,
                    take.id if take else None, take.number if take else None,
                    problem or (take.status.value if take else "not rendered"),
                    seconds, aware(take.finished_at) if take else None,
                    outputs_of(take, roots_of(take, self.root) if take else ()), dict(shot.overrides or {}),
                    specs.get(shot.spec_hash or "", {}).get("prompt"), problem,
                    {"take": live.number, "host": live.host, **(live.progress or {})} if live else None,
                    take is None or take.spec_hash == shot.spec_hash,
                    specs.get(shot.spec_hash or "", {}).get("quality"),
                    take is not None and shot.pinned_take_id == take.id, shot.predecessor_shot_id,
                    view(live, shot.shot_id, root=self.root) if live else None,
                    take.spec_hash if take is not None else None, latest.get(shot.id)))
            return out

    def pinned_at(self, storyboard: str, shot_id: str) -> datetime | None:
        with self.session() as s:
            return aware(self._shot(s, storyboard, shot_id).pinned_at)

    def verify(self, storyboard: str) -> list[ArtifactCheck]:
        """Every artifact of every current take, hashed again; what does not match its record."""
        with self.session() as s:
            bad = []
            shots = self._shots(s, storyboard)
            takes = self._current_takes(s, shots)
            for shot in shots:
                take = takes.get(shot.current_take_id) if shot.current_take_id else None
                if take is None:
                    continue
                roots = roots_of(take, self.root)
                bad += [ArtifactCheck(shot.shot_id, take.number, a.kind, artifact_uri(a, roots), problem)
                        for a, problem in artifact_problems(take, full=True, root=self.root)]
            return bad

    def takes(self, storyboard: str, shot_id: str) -> list[TakeView]:
        with self.session() as s:
            shot = self._shot(s, storyboard, shot_id)
            takes = s.scalars(select(TakeRow).where(TakeRow.shot_pk == shot.id).order_by(TakeRow.number))
            return [view(t, shot_id, root=self.root) for t in takes]

    def takes_by_shot(self, storyboard: str) -> dict[str, list[TakeView]]:
        """Every take of every active shot, oldest first, in one read: what conform and a storyboard's pages list
        (a read per shot is a 5,000-query conform on a feature cut)."""
        with self.session() as s:
            shots = {r.id: r.shot_id for r in self._shots(s, storyboard)}
            out: dict[str, list[TakeView]] = {sid: [] for sid in shots.values()}
            for take in s.scalars(select(TakeRow).where(TakeRow.shot_pk.in_(list(shots))).order_by(TakeRow.number)):
                out[shots[take.shot_pk]].append(view(take, shots[take.shot_pk], root=self.root))
            return out

    @staticmethod
    def _current_takes(s, shots: list[ShotRow]) -> dict[int, TakeRow]:
        """The shots' current takes with their artifacts, in two queries whatever the shot count."""
        return {t.id: t for t in s.scalars(select(TakeRow).where(
            TakeRow.id.in_([r.current_take_id for r in shots if r.current_take_id]))
            .options(selectinload(TakeRow.artifacts)))}

    def current_take(self, storyboard: str, shot_id: str) -> TakeView | None:
        with self.session() as s:
            shot = self._shot(s, storyboard, shot_id)
            take = s.get(TakeRow, shot.current_take_id) if shot.current_take_id else None
            return view(take, shot_id, artifacts=True, root=self.root) if take else None

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
