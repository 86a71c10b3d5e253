"""Whether a decision on a shot (a pin, a verdict) was asked on what is there now: a page sends back the mark of
what it showed, and the store refuses the decision when another was made since."""

from __future__ import annotations

from datetime import datetime

from sqlalchemy import select
from sqlalchemy.orm import Session

from ..errors import DecisionChanged
from .models import ReviewRow, ShotRow, TakeRow
from .records import DecisionMark, aware


def check_seen(s: Session, shot: ShotRow, seen: str | None) -> None:
    """Inside the transaction that decides, with the shot's row locked (PostgreSQL; SQLite has one writer)."""
    if seen is None:
        return
    now = decision_mark(s, shot)
    if now.token != seen:
        raise DecisionChanged(f"{shot.shot_id}: since this page was shown, {now.said or 'its takes changed'}; "
                              "nothing was changed", "look at its takes again, then decide")


def decision_mark(s: Session, shot: ShotRow) -> DecisionMark:
    """The shot's chosen take, its newest verdict and its newest pin, as a token, and the newest of those said."""
    verdict = s.scalar(select(ReviewRow).join(TakeRow, TakeRow.id == ReviewRow.take_id)
                       .where(TakeRow.shot_pk == shot.id, ReviewRow.state.is_not(None))
                       .order_by(ReviewRow.id.desc()).limit(1))
    pinned_at = aware(shot.pinned_at)
    token = f"{shot.current_take_id or 0}.{verdict.id if verdict else 0}." \
            f"{int(pinned_at.timestamp() * 1e6) if pinned_at else 0}"
    number = {t.id: t.number for t in s.scalars(select(TakeRow).where(TakeRow.shot_pk == shot.id))}
    said = None
    verdict_at = aware(verdict.created_at) if verdict else None
    if verdict is not None and verdict.state is not None and (pinned_at is None or verdict_at is None
                                                              or verdict_at >= pinned_at.replace(microsecond=0)):
        said = f"{verdict.author} marked take {number.get(verdict.take_id)} {verdict.state.value} " \
               f"at {_clock(verdict_at)}"
    elif pinned_at is not None:
        said = f"{shot.pinned_by or 'someone'} chose take {number.get(shot.pinned_take_id or 0)} at {_clock(pinned_at)}"
    return DecisionMark(token, said)


def _clock(at: datetime | None) -> str:
    return at.strftime("%H:%M:%S UTC") if at is not None else "an unknown time"
