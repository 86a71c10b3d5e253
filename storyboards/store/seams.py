"""Seam QA records: one measurement per join of two takes (or a segment start inside one), and the seams between
the current takes in timeline order."""

from __future__ import annotations

from typing import Any

from sqlalchemy import select
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session

from ..errors import UnknownShot
from .base import StoreBase
from .models import SeamRow, ShotRow, StoryboardRow, TakeRow
from .records import SeamView


class SeamsMixin(StoreBase):
    def measured(self, take_ids: set[int]) -> set[tuple[int, int, int]]:
        """(left take, right take, frame) of every seam already measured between `take_ids`, in one read: what
        QA skips (a query per join is thousands on a feature cut)."""
        with self.session() as s:
            return {(r.left_take_id, r.right_take_id, r.frame) for r in s.execute(
                select(SeamRow.left_take_id, SeamRow.right_take_id, SeamRow.frame)
                .where(SeamRow.left_take_id.in_(list(take_ids)), SeamRow.right_take_id.in_(list(take_ids))))}

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
