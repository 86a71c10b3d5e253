"""Who renders a shot now: leases (one holder per shot, taken over from a dead or silent holder), heartbeats,
and the takes left running by a holder that is gone."""

from __future__ import annotations

from collections.abc import Callable
from datetime import timedelta

from sqlalchemy import delete, func, select, update
from sqlalchemy.orm import Session

from .base import StoreBase
from .models import ShotLeaseRow, ShotRow, StoryboardRow, TakeRow, TakeStatus, utcnow
from .records import aware, end_take


class LeasesMixin(StoreBase):
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
            expires = aware(lease.expires_at)
            if lease.holder != holder and expires is not None and expires > now and not is_dead(lease.holder):
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
            return getattr(result, "rowcount", 0) == 1

    def release_lease(self, storyboard: str, shot_id: str, holder: str) -> None:
        with self.session.begin() as s:
            shot = self._shot(s, storyboard, shot_id)
            s.execute(delete(ShotLeaseRow).where(ShotLeaseRow.shot_pk == shot.id, ShotLeaseRow.holder == holder))

    def leased(self, storyboard: str) -> set[str]:
        """Shots some render holds right now (rendering, or waiting for a device)."""
        with self.session() as s:
            return set(s.scalars(select(ShotRow.shot_id).join(StoryboardRow).join(
                ShotLeaseRow, ShotLeaseRow.shot_pk == ShotRow.id).where(StoryboardRow.name == storyboard)))

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
                end_take(take, f"abandoned: no heartbeat from {take.worker or take.host} for over {timeout_s:g}s")
            return [t.id for t in stale]

    def abandon_others(self, storyboard: str, shot_id: str, holder: str) -> list[int]:
        """Running takes of a shot whose lease `holder` now holds: their renders lost the lease (their process or
        host died), so they are abandoned before this one starts."""
        with self.session.begin() as s:
            shot = self._shot(s, storyboard, shot_id)
            others = s.scalars(select(TakeRow).where(TakeRow.shot_pk == shot.id, TakeRow.status == TakeStatus.running,
                                                     TakeRow.host != holder)).all()
            for take in others:
                end_take(
                    take, f"abandoned: {take.worker or take.host} lost the shot's lease (its process or host died)"
                )
            return [t.id for t in others]
