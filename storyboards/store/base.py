"""The store's shared plumbing: its engine and sessions, transactions that retry a lost unique race, and the
lookups of a storyboard's shots every part of the store uses."""

from __future__ import annotations

import copy
from collections.abc import Callable
from pathlib import Path
from typing import Any, TypeVar

from sqlalchemy import Engine, func, select
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session, sessionmaker

from ..errors import UnknownShot
from .db import default_url, open_engine
from .models import ShotRow, StoryboardRow

T = TypeVar("T")
S = TypeVar("S", bound="StoreBase")


class StoreBase:
    def __init__(self, engine: Engine, root: Path | None = None):
        self.engine = engine
        self.session = sessionmaker(engine, expire_on_commit=False)
        self.root = root  # the output root: file paths are recorded relative to it and read back against it

    @classmethod
    def open(cls: type[S], url: str | None = None, root: str | Path | None = None, **engine_kwargs: Any) -> S:
        """Open (and upgrade to the current schema) the store at `url` or MILIMO_DB_URL; a store that
        cannot be used raises StoreError naming the fix."""
        return cls(open_engine(url or default_url(), **engine_kwargs), Path(root).resolve() if root else None)

    def under(self: S, root: str | Path | None) -> S:
        """This store (the same engine and sessions) recording and reading files against output root `root`."""
        resolved = Path(root).resolve() if root is not None else None
        if resolved == self.root:
            return self
        other = copy.copy(self)
        other.root = resolved
        return other

    @property
    def is_postgres(self) -> bool:
        return self.engine.dialect.name == "postgresql"

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
