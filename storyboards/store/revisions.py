"""Storyboards and their revisions: importing a storyboard (specs, shots, the files it names), the identity check
that keeps two files of one name apart, and the per-shot overrides."""

from __future__ import annotations

import hashlib
import json
from collections.abc import Iterable
from pathlib import Path
from typing import Any

from sqlalchemy import select, tuple_
from sqlalchemy.orm import Session

from ..errors import StoryboardFileError
from ..graph import ShotGraph
from ..load import Storyboard
from ..spec import ShotSpec
from .base import StoreBase
from .models import FileSeenRow, RevisionRow, ShotRow, SpecRow, StoryboardRow, TakeRow, TakeStatus
from .records import spec_json


class RevisionsMixin(StoreBase):
    def import_revision(self, board: Storyboard, specs: dict[str, ShotSpec]) -> int:
        """Record a storyboard revision; idempotent for the same content. Returns the revision number."""
        graph = ShotGraph.of(board)
        content = hashlib.sha256((board.source_sha256 + "".join(
            f"{sid}:{specs[sid].spec_hash}" for sid in graph.order() if sid in specs)).encode()).hexdigest()
        return self._retrying(lambda s: self._import(s, board, specs, graph, content), attempts=3)

    def check_identity(self, board: Storyboard) -> None:
        """A different file with the same storyboard name must not silently share its takes."""
        with self.session() as s:
            sb = s.scalar(select(StoryboardRow).where(StoryboardRow.name == board.name))
            self._same_source(s, sb, board)

    def storyboard_uid(self, storyboard: str) -> str | None:
        """The storyboard's id in this store (see `StoryboardRow.uid`); None while the store has not seen it."""
        with self.session() as s:
            return s.scalar(select(StoryboardRow.uid).where(StoryboardRow.name == storyboard))

    @staticmethod
    def _same_source(s: Session, sb: StoryboardRow | None, board: Storyboard) -> None:
        """Refuse another file of the same name, unless it is this storyboard moved: the file on record is gone and
        this one holds a revision the store imported (a project folder moved or mounted elsewhere)."""
        path = str(board.source_path.resolve())
        if sb is None or not sb.source_path or sb.source_path == path \
                or board.timeline_metadata.get("storyboard_id") == board.name:
            return
        if not Path(sb.source_path).exists() and s.scalar(select(RevisionRow.id).where(
                RevisionRow.storyboard_id == sb.id, RevisionRow.source_sha256 == board.source_sha256).limit(1)):
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
        self._same_source(s, sb, board)
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
        stored = {row.spec_hash: row for row in s.scalars(select(SpecRow).where(
            SpecRow.spec_hash.in_({spec.spec_hash for spec in specs.values()})))}  # one read for the whole cut
        for spec in specs.values():
            known = stored.get(spec.spec_hash)
            if known is None:
                stored[spec.spec_hash] = SpecRow(spec_hash=spec.spec_hash, model_id=spec.model_id,
                                                 data=spec_json(spec))
                s.add(stored[spec.spec_hash])
            else:  # the same files by content may be found at other paths now (a moved project): record those
                data = json.loads(json.dumps(spec_json(spec)))
                if known.data != data:
                    known.data = data
        self._record_files(s, specs.values())
        s.flush()
        rows = {r.shot_id: r for r in s.scalars(select(ShotRow).where(ShotRow.storyboard_id == sb.id))}
        current = {t.id: t for t in s.scalars(select(TakeRow).where(
            TakeRow.id.in_([r.current_take_id for r in rows.values() if r.current_take_id])))}
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
                self._take_matching_spec(s, row, current.get(row.current_take_id or 0))
            present.add(shot.shot_id)
        for sid, row in rows.items():
            if sid not in present:
                row.active = False
        return number

    @staticmethod
    def _take_matching_spec(s: Session, row: ShotRow, current: TakeRow | None) -> None:
        """A spec the shot had before (a reverted file, a removed override) brings back its latest good take
        as current; the planner still checks its upstream and its files before trusting it. `current`: the shot's
        current take, read with every other shot's (only a shot whose spec changed reads more)."""
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
        known = {(row[0], row[1]) for row in s.execute(select(FileSeenRow.path, FileSeenRow.sha256).where(
            tuple_(FileSeenRow.path, FileSeenRow.sha256).in_(list(files))))}
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

    def spec_data(self, storyboard: str, shot_id: str) -> dict[str, Any]:
        """The shot's current resolved spec, as recorded at import (what a render task renders)."""
        with self.session() as s:
            shot = self._shot(s, storyboard, shot_id)
            if shot.spec_hash is None:
                raise LookupError(f"shot {shot_id!r} has no spec yet; give it a prompt and import again")
            return self._spec_row(s, shot.spec_hash)

    def spec(self, storyboard: str, shot_id: str) -> ShotSpec:
        """The shot's current resolved spec, typed, as recorded at import (what a render task renders)."""
        return ShotSpec.from_data(self.spec_data(storyboard, shot_id))

    def take_spec(self, take_id: int) -> ShotSpec:
        """The spec a take renders: the one its render planned (a re-import during the render does not change it)."""
        with self.session() as s:
            take = s.get(TakeRow, take_id)
            if take is None:
                raise LookupError(f"no take {take_id}")
            return ShotSpec.from_data(self._spec_row(s, take.spec_hash))

    @staticmethod
    def _spec_row(s: Session, spec_hash: str) -> dict[str, Any]:
        row = s.get(SpecRow, spec_hash)
        if row is None:
            raise LookupError(f"no spec {spec_hash[:12]} in the store")
        return dict(row.data)

    def specs_by_hash(self, hashes: Iterable[str]) -> dict[str, dict[str, Any]]:
        """Recorded specs by hash, in one query (the dashboard's cards and take lists)."""
        wanted = sorted({h for h in hashes if h})
        if not wanted:
            return {}
        with self.session() as s:
            return {row.spec_hash: dict(row.data) for row in s.scalars(select(SpecRow).where(
                SpecRow.spec_hash.in_(wanted)))}

    def spec_by_hash(self, spec_hash: str) -> dict[str, Any]:
        with self.session() as s:
            row = s.get(SpecRow, spec_hash)
            return dict(row.data) if row is not None else {}

    def storyboards(self) -> list[tuple[str, int | None, str | None]]:
        """(name, current revision, source path) of every storyboard, by name."""
        with self.session() as s:
            return [(r.name, r.current_revision, r.source_path)
                    for r in s.scalars(select(StoryboardRow).order_by(StoryboardRow.name))]

    def overrides(self, storyboard: str) -> dict[str, dict[str, Any]]:
        with self.session() as s:
            return {r.shot_id: dict(r.overrides) for r in self._shots(s, storyboard) if r.overrides}

    def clear_overrides(self, storyboard: str, shot_ids: Iterable[str] | None = None) -> list[str]:
        """Remove every override of these shots (all shots when None); returns the shots that had some."""
        with self.session.begin() as s:
            rows = (self._shots(s, storyboard) if shot_ids is None
                    else [self._shot(s, storyboard, sid) for sid in shot_ids])
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
