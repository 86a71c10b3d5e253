"""Turnover at scale (issue 23): every read of a storyboard — conform, status, verify, QA, the plan's shot states
and the dashboard's storyboard page — costs the store a constant number of SQL statements, not one or two per
shot (a 5,000-event cut made conform issue 15,003 queries); so does importing a revision the store has. Counted
on 10 and 60 shots: the counts are equal."""

from pathlib import Path

import opentimelineio as otio
import pytest
from fastapi.testclient import TestClient
from opentimelineio.opentime import RationalTime, TimeRange
from sqlalchemy import Engine, event

import storyboards as sb
from milimo.qa import joins, measure_seams
from storyboards.conform import EXPORT_FORMATS, export
from storyboards.store import Store

pytestmark = pytest.mark.fast


def _rendered(folder: Path, shots: int) -> tuple[sb.Storyboard, str]:
    """A cut of `shots` clips with two finished takes per shot (each with its mp4 on disk, as an artifact) and
    every join's seam measured: a storyboard after a render and a rerender."""
    folder.mkdir()
    timeline = otio.schema.Timeline(f"Scale {shots}")
    track = otio.schema.Track("V1")
    timeline.tracks.append(track)
    for i in range(shots):
        clip = otio.schema.Clip(name=f"Shot {i}", media_reference=otio.schema.MissingReference(),
                                source_range=TimeRange(RationalTime(i * 100, 24), RationalTime(24, 24)))
        clip.metadata["milimo"] = {"prompt": f"shot {i}", "handoff": "previous" if i % 4 else "none"}
        track.append(clip)
    cut = folder / "scale.otio"
    otio.adapters.write_to_file(timeline, str(cut))
    board = sb.load(cut)
    db = f"sqlite:///{folder / 'm.db'}"
    store = Store.open(db, root=folder)
    store.import_revision(board, sb.resolve_specs(board, "m"))
    for shot in board.shots:
        for number in (1, 2):
            take = store.start_take(board.name, shot.shot_id)
            mp4 = folder / f"{shot.shot_id}-{number}.mp4"
            mp4.write_bytes(bytes([number]))
            store.finish_take(take, outputs={"mp4": str(mp4), "frames": 24, "fps": 24})
    for j in joins(store.status(board.name)):
        store.record_seam(board.name, j.kind, j.left_take, j.right_take, j.right_start,
                          {"pixel_ratio": 1.0, "histogram": 0.1, "luma_jump": 2.0}, 0.33, False)
    store.engine.dispose()
    return board, db


class Statements:
    """SQL statements sent by any engine of this process while counting."""

    def __init__(self) -> None:
        self.count = 0

    def __enter__(self) -> "Statements":
        event.listen(Engine, "before_cursor_execute", self._one)
        return self

    def __exit__(self, *_: object) -> None:
        event.remove(Engine, "before_cursor_execute", self._one)

    def _one(self, *_: object) -> None:
        self.count += 1


def _reads(board: sb.Storyboard, db: str, folder: Path) -> dict[str, int]:
    """Statements per read of the storyboard, each read made as its command or page makes it."""
    from dashboard import DashboardSettings, create_app

    store = Store.open(db, root=folder)
    client = TestClient(create_app(DashboardSettings(db_url=db, out_root=folder)), base_url="http://127.0.0.1:8765")
    client.get("/")  # the app's store opened (and migrated) before counting
    specs = sb.resolve_specs(board, "m")
    reads = {
        "import the revision again": lambda: store.import_revision(board, specs),
        "status": lambda: store.status(board.name),
        "verify": lambda: store.verify(board.name),
        "plan's shot states": lambda: store.shot_states(board.name),
        "qa": lambda: measure_seams(store, board.name),
        "seams": lambda: store.seams(board.name),
        **{f"conform {fmt}": (lambda fmt=fmt: export(board, store, fmt, folder / f"out{EXPORT_FORMATS[fmt][1]}"))
           for fmt in ("otio", "fcp_xml", "cmx_3600")},
        "dashboard storyboard page": lambda: client.get(f"/s/{board.name}").raise_for_status(),
        "dashboard live state": lambda: client.get(f"/api/s/{board.name}/state").raise_for_status(),
    }
    counts = {}
    for name, read in reads.items():
        with Statements() as statements:
            read()
        counts[name] = statements.count
    store.engine.dispose()
    return counts


def test_reading_a_storyboard_costs_the_same_statements_for_10_shots_as_for_60(tmp_path):
    small = _reads(*_rendered(tmp_path / "small", 10), tmp_path / "small")
    large = _reads(*_rendered(tmp_path / "large", 60), tmp_path / "large")
    assert large == small, {k: (small[k], large[k]) for k in small if small[k] != large[k]}
    assert all(count <= 20 for count in large.values()), large
