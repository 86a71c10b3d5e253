"""Reading what renders now, in every storyboard of the store: the takes rendering, the shots waiting for a device,
and the workers that rendered lately (a farm's `host/gpuN`, or `host:pid` on one host). The dashboard's queue page
reads it; one query each, whatever the number of storyboards."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime

from sqlalchemy import and_, or_, select

from .base import StoreBase
from .models import ShotLeaseRow, ShotRow, StoryboardRow, TakeRow, TakeStatus
from .records import TakeView, aware, view


@dataclass(frozen=True)
class RunningTake:
    """A take rendering now, with the storyboard it belongs to."""

    storyboard: str
    take: TakeView


@dataclass(frozen=True)
class WorkerView:
    """A worker as the store saw it: what it renders now (storyboard, shot, take number), when it last said it is
    alive or finished a take, and the takes it ended since the time asked about."""

    name: str
    rendering: tuple[str, str, int] | None
    last_seen: datetime | None
    succeeded: int
    failed: int  # failed or cancelled


class QueueMixin(StoreBase):
    def rendering_now(self) -> list[RunningTake]:
        """Every take rendering now, oldest first."""
        with self.session() as s:
            rows = s.execute(select(TakeRow, ShotRow.shot_id, StoryboardRow.name)
                             .join(ShotRow, ShotRow.id == TakeRow.shot_pk).join(StoryboardRow)
                             .where(TakeRow.status == TakeStatus.running).order_by(TakeRow.started_at, TakeRow.id))
            return [RunningTake(name, view(take, shot_id, root=self.root)) for take, shot_id, name in rows]

    def waiting_for_device(self) -> list[tuple[str, str]]:
        """(storyboard, shot) of every shot a render holds that has no take rendering yet: it waits for a device
        (or for its turn in the chain)."""
        with self.session() as s:
            running = select(TakeRow.shot_pk).where(TakeRow.status == TakeStatus.running)
            return [(name, shot_id) for name, shot_id in s.execute(
                select(StoryboardRow.name, ShotRow.shot_id).select_from(ShotRow)
                .join(StoryboardRow, StoryboardRow.id == ShotRow.storyboard_id)
                .join(ShotLeaseRow, ShotLeaseRow.shot_pk == ShotRow.id)
                .where(ShotRow.id.not_in(running)).order_by(ShotLeaseRow.acquired_at))]

    def workers(self, since: datetime) -> list[WorkerView]:
        """Each worker that rendered since `since` (a take started, said it is alive or ended on it), by name."""
        with self.session() as s:
            rows = s.execute(select(TakeRow.worker, TakeRow.status, TakeRow.number, TakeRow.heartbeat_at,
                                    TakeRow.finished_at, ShotRow.shot_id, StoryboardRow.name)
                             .join(ShotRow, ShotRow.id == TakeRow.shot_pk).join(StoryboardRow)
                             .where(TakeRow.worker.is_not(None), or_(
                                 TakeRow.status == TakeStatus.running, TakeRow.started_at >= since,
                                 and_(TakeRow.finished_at.is_not(None), TakeRow.finished_at >= since))))
            seen: dict[str, dict] = {}
            for worker, status, number, heartbeat, finished, shot_id, name in rows:
                w = seen.setdefault(str(worker), {"rendering": None, "last": None, "ok": 0, "bad": 0})
                if status is TakeStatus.running:
                    w["rendering"] = (name, shot_id, number)
                elif status in (TakeStatus.succeeded, TakeStatus.stale):
                    w["ok"] += 1
                elif status in (TakeStatus.failed, TakeStatus.cancelled):
                    w["bad"] += 1
                times = [t for t in (aware(heartbeat), aware(finished)) if t is not None]
                if times and (w["last"] is None or max(times) > w["last"]):
                    w["last"] = max(times)
            return [WorkerView(name, w["rendering"], w["last"], w["ok"], w["bad"]) for name, w in sorted(seen.items())]
