"""A take's life: started (numbered, under the spec its render planned, with who asked), its progress, a stop a
person asked for, finished (current), failed or cancelled (the earlier good take stays current), pinned by a
person, or marked stale for a re-render."""

from __future__ import annotations

import socket
from collections.abc import Iterable
from pathlib import Path
from typing import Any

from sqlalchemy import select, update
from sqlalchemy.orm import Session

from ..errors import NotRunning, UnknownShot
from .artifacts import stored_path
from .base import StoreBase
from .decisions import check_seen
from .models import ArtifactRow, ShotRow, TakeRow, TakeStatus, utcnow
from .records import PATH_KEYS, TakeView, aware, end_take, view


class TakesMixin(StoreBase):
    def start_take(self, storyboard: str, shot_id: str, *, handoff_in_take_id: int | None = None,
                   handoff_in_path: str | None = None, handoff_in_sha256: str | None = None,
                   flow_run_id: str | None = None, task_run_id: str | None = None, host: str | None = None,
                   worker: str | None = None, spec_hash: str | None = None,
                   requested_by: str | None = None) -> int:
        """A running take of the shot under `spec_hash`: the spec its render planned, which a later import (another
        rerender of the shot asked for meanwhile) does not change; by default the shot's spec now."""
        def work(s: Session) -> int:
            shot = self._shot(s, storyboard, shot_id, lock=True)
            if shot.spec_hash is None:
                raise ValueError(f"shot {shot_id!r} has no spec yet; give it a prompt and import again")
            take = TakeRow(shot_pk=shot.id, number=self._next_number(s, TakeRow.number, TakeRow.shot_pk == shot.id),
                           status=TakeStatus.running, spec_hash=spec_hash or shot.spec_hash,
                           handoff_in_take_id=handoff_in_take_id,
                           handoff_in_path=stored_path(handoff_in_path, self.root),
                           handoff_in_sha256=handoff_in_sha256, host=host or socket.gethostname(),
                           flow_run_id=flow_run_id, task_run_id=task_run_id, started_at=utcnow(), outputs={},
                           timings={}, progress={"stage": "starting", "step": 0, "total": 0},
                           worker=worker or host or socket.gethostname(), heartbeat_at=utcnow(),
                           requested_by=requested_by)
            s.add(take)
            s.flush()
            return take.id

        return self._retrying(work, attempts=5)

    def set_progress(self, take_id: int, progress: dict[str, Any]) -> str | None:
        """Record a running take's progress; returns who asked it to stop, if anyone did (its render stops at its
        next step): the render reads the request with the write it makes anyway."""
        with self.session.begin() as s:
            s.execute(update(TakeRow).where(TakeRow.id == take_id, TakeRow.status == TakeStatus.running)
                      .values(progress=progress))
            return s.scalar(select(TakeRow.cancel_requested_by).where(TakeRow.id == take_id))

    def request_cancel(self, storyboard: str, shot_id: str, number: int, by: str) -> TakeView:
        """Ask a running take to stop at its next step, recording who and when; only that take stops (the rest of
        its render goes on: the shots after it in its chain wait for it, and fail for want of its handoff)."""
        with self.session.begin() as s:
            shot = self._shot(s, storyboard, shot_id, lock=True)
            take = s.scalar(select(TakeRow).where(TakeRow.shot_pk == shot.id, TakeRow.number == number))
            if take is None:
                raise UnknownShot(storyboard, f"{shot_id} take {number}", [])
            if take.status != TakeStatus.running:
                raise NotRunning(f"take {number} of {shot_id} is {take.status.value}, not rendering",
                                 "nothing to stop; reload the page to see it")
            if take.cancel_requested_by is None:
                take.cancel_requested_by, take.cancel_requested_at = by, utcnow()
            s.flush()
            return view(take, shot_id, root=self.root)

    def finish_take(self, take_id: int, *, handoff_out_path: str | None = None,
                    handoff_out_sha256: str | None = None, outputs: dict[str, Any] | None = None,
                    timings: dict[str, Any] | None = None, artifacts: Iterable[dict[str, Any]] = ()) -> None:
        """Mark a running take succeeded and make it its shot's current take, unless a person pinned another take of
        the shot while this one rendered: their choice stays current, this take is kept beside it. Its paths are
        recorded relative to the store's output root (`artifacts.stored_path`), with that root."""
        root = self.root
        recorded = dict(outputs or {})
        for key in PATH_KEYS:
            if recorded.get(key):
                recorded[key] = stored_path(recorded[key], root)
        if root is not None:
            recorded["root"] = str(root)
        with self.session.begin() as s:
            take = s.get(TakeRow, take_id, with_for_update=self.is_postgres)
            if take is None or take.status != TakeStatus.running:
                raise ValueError(f"take {take_id} is not running (status {take.status.value if take else 'missing'})")
            take.status = TakeStatus.succeeded
            take.handoff_out_path = stored_path(handoff_out_path, root)
            take.handoff_out_sha256 = handoff_out_sha256
            take.outputs, take.timings = recorded, dict(timings or {})
            take.finished_at, take.progress = utcnow(), None
            for a in artifacts:
                relative = stored_path(a["uri"], root)
                take.artifacts.append(ArtifactRow(**{**a, "uri": relative if relative and not Path(relative)
                                                     .is_absolute() else a["uri"]}))
            shot = s.get(ShotRow, take.shot_pk, with_for_update=self.is_postgres)
            assert shot is not None
            if not pinned_while_running(shot, take):
                shot.current_take_id, shot.pinned_take_id, shot.pinned_at, shot.pinned_by = take.id, None, None, None

    def pin_take(self, storyboard: str, shot_id: str, number: int, by: str | None = None,
                 seen: str | None = None) -> list[str]:
        """Make take `number` the shot's current take and record the pin (when, which, by whom). The shots after it
        in its chain continued from another take: their current takes become stale. Returns those shot ids. With
        `seen` (a `decision_mark` token), refuses with `DecisionChanged` when another decision was made since."""
        with self.session.begin() as s:
            shot = self._shot(s, storyboard, shot_id, lock=True)
            check_seen(s, shot, seen)
            take = s.scalar(select(TakeRow).where(TakeRow.shot_pk == shot.id, TakeRow.number == number))
            if take is None:
                raise UnknownShot(storyboard, f"{shot_id} take {number}", [])
            if take.status not in (TakeStatus.succeeded, TakeStatus.stale) or not (take.outputs or {}).get("mp4"):
                raise ValueError(
                    f"take {number} of {shot_id} is {take.status.value}; only a finished take can be pinned"
                )
            return choose_take(s, self._shots(s, storyboard), shot, take, by)

    def fail_take(self, take_id: int, error: str, status: TakeStatus = TakeStatus.failed) -> None:
        """A failed (or cancelled) take never replaces the shot's current (earlier, good) take."""
        with self.session.begin() as s:
            take = s.get(TakeRow, take_id, with_for_update=self.is_postgres)
            if take is None:
                raise LookupError(f"no take {take_id}")
            end_take(take, error, status)

    def rerender_from(self, storyboard: str, shot_id: str) -> list[str]:
        """Mark `shot_id` and the rest of its chain stale; nothing else changes. Returns those shot ids."""
        with self.session.begin() as s:
            start = self._shot(s, storyboard, shot_id, lock=True)
            rows = [
                r
                for r in self._shots(s, storyboard)
                if r.chain_index == start.chain_index and r.position >= start.position
            ]
            for r in rows:
                if r.current_take_id:
                    s.execute(update(TakeRow).where(TakeRow.id == r.current_take_id).values(status=TakeStatus.stale))
                r.pinned_take_id, r.pinned_at, r.pinned_by = None, None, None  # a rerender replaces a pin
            return [r.shot_id for r in rows]


def choose_take(s: Session, shots: list[ShotRow], shot: ShotRow, take: TakeRow, by: str | None) -> list[str]:
    """A person chose `take` for `shot` (a pin, an approval): it is current and pinned, by whom and when. When it
    was not current already, the shots after it in its chain continued from another take: their current takes
    are stale. Returns those shot ids."""
    changed = shot.current_take_id != take.id or take.status != TakeStatus.succeeded
    take.status = TakeStatus.succeeded
    shot.current_take_id, shot.pinned_take_id, shot.pinned_at, shot.pinned_by = take.id, take.id, utcnow(), by
    if not changed:
        return []
    later = [r for r in shots if r.chain_index == shot.chain_index and r.position > shot.position]
    for r in later:
        if r.current_take_id:
            s.execute(update(TakeRow).where(TakeRow.id == r.current_take_id).values(status=TakeStatus.stale))
    return [r.shot_id for r in later]


def pinned_while_running(shot: ShotRow, take: TakeRow) -> bool:
    """Whether another take of the shot was pinned after `take` started (a pin made before it started was replaced
    on purpose: `rerender_from` clears it)."""
    pinned_at, started_at = aware(shot.pinned_at), aware(take.started_at)
    return shot.pinned_take_id not in (None, take.id) and pinned_at is not None and started_at is not None \
        and pinned_at >= started_at
