"""Review: a take's state (approved, needs changes, rejected; pending until someone says) and its notes, each
event a row with who and when, never changed. Approving a take chooses it for its shot, as a pin does."""

from __future__ import annotations

from sqlalchemy import select
from sqlalchemy.orm import Session

from ..errors import ReviewError
from .base import StoreBase
from .decisions import check_seen, decision_mark
from .models import ReviewRow, ReviewState, ShotRow, TakeRow, TakeStatus
from .records import DecisionMark, NoteView, TakeReview, aware
from .takes import choose_take


class ReviewsMixin(StoreBase):
    def review_take(self, storyboard: str, shot_id: str, number: int, state: ReviewState, author: str,
                    note: str | None = None, seen: str | None = None) -> list[str]:
        """Give take `number` of the shot `state`, with an optional note beside it. Approving makes the take the
        shot's chosen one (as `pin_take`, and a take that finishes later does not replace it); the shots after it in
        its chain then continued from another take and are stale. Returns those shot ids. With `seen` (a
        `decision_mark` token), refuses with `DecisionChanged` when another decision was made since."""
        with self.session.begin() as s:
            shot, take = self._reviewed_take(s, storyboard, shot_id, number)
            check_seen(s, shot, seen)
            if state is ReviewState.approved and take.status not in (TakeStatus.succeeded, TakeStatus.stale):
                raise ReviewError(f"{storyboard}: {shot_id} take {number} is {take.status.value}",
                                  "approve a finished take (`milimo takes` lists them)")
            s.add(ReviewRow(take_id=take.id, state=state, author=author))
            if note:
                s.add(ReviewRow(take_id=take.id, text=note, author=author))
            if state is ReviewState.approved:
                return choose_take(s, self._shots(s, storyboard), shot, take, author)
            return []

    def add_note(self, storyboard: str, shot_id: str, number: int, text: str, author: str,
                 frame: int | None = None, frame_end: int | None = None) -> NoteView:
        """A note on take `number`, on its media's frame `frame` (to `frame_end`), or on the whole take."""
        if not text.strip():
            raise ReviewError(f"{storyboard}: {shot_id} take {number}: the note is empty", "write what to change")
        with self.session.begin() as s:
            _, take = self._reviewed_take(s, storyboard, shot_id, number)
            frames = (take.outputs or {}).get("frames")
            last = frame_end if frame_end is not None else frame
            if frame is not None and (frame < 0 or (last is not None and last < frame)
                                      or (frames is not None and last is not None and last >= frames)):
                span = f"0..{frames - 1}" if frames else "its frames"
                raise ReviewError(f"{storyboard}: {shot_id} take {number}: frame {frame}"
                                  f"{f'-{frame_end}' if frame_end is not None else ''} is not in the take",
                                  f"give a frame in {span}, the first before the last")
            row = ReviewRow(take_id=take.id, text=text.strip(), frame=frame, frame_end=frame_end, author=author)
            s.add(row)
            s.flush()
            return NoteView(row.id, row.text or "", author, aware(row.created_at), frame, frame_end)

    def reviews(self, storyboard: str, shot_id: str | None = None) -> list[TakeReview]:
        """Every take of the storyboard's active shots (or of `shot_id` alone) that has a review event, and every
        current take (pending until someone reviews it), in shot order then take number; with its notes, oldest
        first."""
        with self.session() as s:
            shots = [r for r in self._shots(s, storyboard) if shot_id is None or r.shot_id == shot_id]
            by_pk = {r.id: r for r in shots}
            takes = {t.id: t for t in s.scalars(select(TakeRow).where(TakeRow.shot_pk.in_(list(by_pk))))}
            events: dict[int, list[ReviewRow]] = {}
            for row in s.scalars(select(ReviewRow).where(ReviewRow.take_id.in_(list(takes)))
                                 .order_by(ReviewRow.created_at, ReviewRow.id)):
                events.setdefault(row.take_id, []).append(row)
            shown = set(events) | {r.current_take_id for r in shots if r.current_take_id in takes}
            out = []
            for take_id in sorted(shown, key=lambda t: (by_pk[takes[t].shot_pk].position, takes[t].number)):
                take, shot = takes[take_id], by_pk[takes[take_id].shot_pk]
                rows = events.get(take_id, [])
                states = [r for r in rows if r.state is not None]
                latest = states[-1] if states else None
                out.append(TakeReview(
                    shot.shot_id, take.number, take.id, take.status.value, shot.current_take_id == take.id,
                    latest.state.value if latest and latest.state else ReviewState.pending.value,
                    latest.author if latest else None, aware(latest.created_at) if latest else None,
                    tuple(NoteView(r.id, r.text or "", r.author, aware(r.created_at), r.frame, r.frame_end)
                          for r in rows if r.text is not None),
                    tuple((r.state.value, r.author, aware(r.created_at)) for r in states if r.state is not None)))
            return out

    def decision_mark(self, storyboard: str, shot_id: str) -> DecisionMark:
        """Where the shot's decisions stand now; a page sends its `token` back with the decision it asks for."""
        with self.session() as s:
            return decision_mark(s, self._shot(s, storyboard, shot_id))

    def _reviewed_take(self, s: Session, storyboard: str, shot_id: str, number: int) -> tuple[ShotRow, TakeRow]:
        shot = self._shot(s, storyboard, shot_id, lock=True)
        take = s.scalar(select(TakeRow).where(TakeRow.shot_pk == shot.id, TakeRow.number == number))
        if take is None:
            numbers = list(s.scalars(select(TakeRow.number).where(TakeRow.shot_pk == shot.id).order_by(TakeRow.number)))
            raise ReviewError(f"{storyboard}: {shot_id} has no take {number}",
                              f"use one of its takes {numbers}" if numbers else "render the shot first")
        return shot, take

