"""Conform round trip: takes become named media references; the cut is untouched; FCP XML exports."""

from pathlib import Path

import opentimelineio as otio
import pytest

import storyboards as sb
from storyboards.conform import conform
from storyboards.paths import OutputLayout
from storyboards.store import Store

pytestmark = pytest.mark.fast  # the pure layer: `make test-fast`

EXAMPLES = Path(__file__).resolve().parents[1] / "storyboards" / "examples"


def test_conform_round_trip(tmp_path):
    board = sb.load(EXAMPLES / "lighthouse.otio")
    store = Store.open(f"sqlite:///{tmp_path / 'db.sqlite'}")
    store.import_revision(board, sb.resolve_specs(board, "m"))
    for shot in board.shots:
        for n in range(2 if shot.shot_id == "harbour" else 1):
            take = store.start_take(board.name, shot.shot_id)
            store.finish_take(take, outputs={"mp4": str(tmp_path / f"{shot.shot_id}-{n}.mp4"),
                                             "frames": shot.frames, "fps": shot.fps})
    first_harbour = store.takes(board.name, "harbour")[0]

    path = conform(board, store, OutputLayout.at(tmp_path / "out"))
    assert path.name == "lighthouse.rendered.otio"
    back = otio.adapters.read_from_file(str(path))
    clips = [c for c in back.tracks[0] if isinstance(c, otio.schema.Clip)]
    original = [c for c in board.timeline.tracks[0] if isinstance(c, otio.schema.Clip)]
    assert [c.source_range for c in clips] == [c.source_range for c in original]
    harbour = clips[3]
    assert set(harbour.media_references()) == {"take-1", "take-2"}
    assert harbour.active_media_reference_key == "take-2"
    assert harbour.media_reference.target_url.endswith("harbour-1.mp4")
    assert harbour.metadata["milimo"]["render"]["takes"][0] == first_harbour.id
    assert harbour.metadata["milimo"]["prompt"]  # the storyboard's own metadata stays
    assert clips[0].media_reference.available_range.duration.value == 25
    otio.adapters.write_to_file(back, str(path.parent / "cut.xml"), adapter_name="fcp_xml")
    assert (path.parent / "cut.xml").stat().st_size > 0
