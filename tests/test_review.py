"""Review from the command line, on takes rendered through it: approve, needs changes, reject and notes, each
with who and when, kept as history; an approval chooses the take for its shot; bad input is refused, nothing
stored."""

import json

import pytest
from conftest import copy_rendered_example, milimo

from storyboards.store import Store

pytestmark = pytest.mark.xdist_group("review")


@pytest.fixture(scope="module")
def rendered(tmp_path_factory, tiny_model_dir, rendered_example_template):
    """The example rendered (a copy of the session's), then its harbour chain (harbour -> harbour-pan) rendered again
    from a new seed: two takes of each of those shots, the second current."""
    board, db, out = copy_rendered_example(rendered_example_template, tmp_path_factory.mktemp("review"))
    where = ["--db", db, "--out", out]
    again = milimo("rerender", board, "--from-shot", "harbour", "--set", "seed=5", "--model", tiny_model_dir, *where,
                   timeout=400)
    assert again.returncode == 0, again.stderr[-3000:]
    return {"board": board, "where": where, "db": where[1]}


def _review(rendered) -> dict[tuple[str, int], dict]:
    proc = milimo("review", rendered["board"], *rendered["where"], "--json")
    assert proc.returncode == 0, proc.stderr
    return {(r["shot_id"], r["take_number"]): r for r in json.loads(proc.stdout)}


def test_verdicts_and_notes_are_kept_with_who_and_when_and_an_approval_chooses_the_take(rendered):
    board, where = rendered["board"], rendered["where"]
    before = _review(rendered)
    assert before[("harbour", 2)]["state"] == "pending" and before[("harbour", 2)]["current"]
    assert ("harbour", 1) not in before  # an earlier take nobody reviewed is not listed

    said = milimo("needs-changes", board, "harbour", "2", *where, "--by", "Ada", "--note", "the boat drifts left")
    assert said.returncode == 0 and "needs changes by Ada" in said.stdout, said.stderr
    assert milimo("note", board, "harbour", "2", "gull too big", "--frame", "3-7", *where,
                  env={"MILIMO_USER": "Ben"}).returncode == 0
    approved = milimo("approve", board, "harbour", "1", *where, "--by", "Ada")
    assert approved.returncode == 0, approved.stderr
    assert "approved by Ada" in approved.stdout and "chosen take" in approved.stdout
    assert "stale now" in approved.stdout and "harbour-pan" in approved.stdout  # it continued from take 2

    after = _review(rendered)
    one, two = after[("harbour", 1)], after[("harbour", 2)]
    assert (one["state"], one["by"], one["current"]) == ("approved", "Ada", True)
    assert (two["state"], two["by"], two["current"]) == ("needs changes", "Ada", False)
    assert [(n["text"], n["author"], n["frame"], n["frame_end"]) for n in two["notes"]] == [
        ("the boat drifts left", "Ada", None, None), ("gull too big", "Ben", 3, 7)]
    assert after[("harbour-pan", 2)]["status"] == "stale"

    # A later verdict is the take's state; the earlier one stays in its history.
    assert milimo("reject", board, "harbour", "2", *where, "--by", "Cy").returncode == 0
    two = _review(rendered)[("harbour", 2)]
    assert two["state"] == "rejected" and [h["state"] for h in two["history"]] == ["needs changes", "rejected"]
    assert [h["by"] for h in two["history"]] == ["Ada", "Cy"]

    store = Store.open(rendered["db"])
    status = {r.shot_id: r for r in store.status("lighthouse")}
    assert status["harbour"].take_number == 1 and status["harbour"].pinned  # conform and preview use take 1

    table = milimo("review", board, *where)
    assert table.returncode == 0 and "gull too big" in table.stdout and "frame 3-7" in table.stdout

    # What the editor and `milimo status` see of it: the chosen take's verdict beside the shot.
    assert milimo("note", board, "harbour", "1", "hold the last frame", *where, "--by", "Ada").returncode == 0
    status = milimo("status", board, *where, "--json")
    by_shot = {r["shot_id"]: r for r in json.loads(status.stdout)}
    assert by_shot["harbour"]["review"] == "approved" and by_shot["harbour-pan"]["review"] == "pending"
    markers = milimo("markers", board, *where, "--format", "csv")
    harbour = next(line for line in markers.stdout.splitlines() if line.startswith("harbour,"))
    assert "approved by Ada, 1 note(s), newest Ada: hold the last frame" in harbour, markers.stdout


def test_a_review_that_cannot_be_recorded_is_refused_naming_the_fix_and_nothing_is_stored(rendered):
    board, where = rendered["board"], rendered["where"]
    before = _review(rendered)
    cases = [
        (("approve", board, "harbour", "9"), "harbour has no take 9", "use one of its takes [1, 2]"),
        (("approve", board, "nope", "1"), "no shot 'nope'", "harbour-pan"),
        (("note", board, "harbour", "1", "too dark", "--frame", "999"), "frame 999 is not in the take", "0.."),
        (("note", board, "harbour", "1", "   "), "the note is empty", "write what to change"),
        (("note", board, "harbour", "1", "x", "--frame", "7-3"), "the first before the last", "--frame"),
        (("note", board, "harbour", "1", "x", "--frame", "two"), "not a frame", "--frame"),
    ]
    for args, message, fix in cases:
        proc = milimo(*args, *where)
        assert proc.returncode == 2, (args, proc.stdout, proc.stderr)
        last = proc.stderr.strip().splitlines()[-1]  # argparse's usage comes before its one line
        assert message in last and (fix in last or fix in proc.stderr), (args, proc.stderr)
        assert "Traceback" not in proc.stderr, proc.stderr
    assert _review(rendered) == before


def test_notes_go_back_to_the_editor_as_markers_on_the_cut(rendered, tmp_path):
    """The chosen take's verdict and notes: in `milimo notes` (CSV, a Resolve marker EDL) at their record
    timecode, and on the conformed timeline's clip (OTIO and FCP XML, read back with OpenTimelineIO)."""
    import csv
    import io

    import opentimelineio as otio

    board, where = rendered["board"], rendered["where"]
    assert milimo("approve", board, "harbour", "1", *where, "--by", "Dee").returncode == 0
    assert milimo("note", board, "harbour", "1", "lantern flickers", "--frame", "2", *where, "--by", "Eve"
                  ).returncode == 0
    # harbour starts the cut's second chain: its record in, from the storyboard itself.
    from storyboards import load

    shot = next(s for s in load(board).shots if s.shot_id == "harbour")
    head = Store.open(rendered["db"]).current_take("lighthouse", "harbour").outputs.head or 0

    listed = milimo("notes", board, *where, "--format", "csv")
    assert listed.returncode == 0, listed.stderr
    rows = [r for r in csv.DictReader(io.StringIO(listed.stdout)) if r["shot_id"] == "harbour"]
    note = next(r for r in rows if r["note"] == "lantern flickers")
    assert (note["author"], note["take"], note["take_frame"], note["review"]) == ("Eve", "1", "2", "approved")
    verdict = next(r for r in rows if r["note"] == "")
    assert (verdict["author"], verdict["review"]) == ("Dee", "approved")
    from storyboards.editorial import timecode

    assert note["record_in"] == timecode(shot.record_in + max(0, 2 - head), 24, False)

    edl = tmp_path / "notes.edl"
    written = milimo("notes", board, *where, "-o", edl)
    assert written.returncode == 0 and "Timeline Markers from EDL" in written.stdout, written.stderr
    assert "|M:harbour take 1 frame 2, Eve: lantern flickers" in edl.read_text()

    for fmt, name in (("otio", "cut.otio"), ("fcp_xml", "cut.xml")):
        out = tmp_path / name
        done = milimo("conform", board, *where, "--format", fmt, "-o", out)
        assert done.returncode == 0, done.stderr
        timeline = otio.adapters.read_from_file(str(out))
        clip = next(c for c in timeline.video_tracks()[0].find_clips() if c.name == shot.name)
        names = [m.name for m in clip.markers]
        assert any("lantern flickers" in n and "Eve" in n for n in names), (fmt, names)
        assert any("approved by Dee" in n for n in names), (fmt, names)
        marker = next(m for m in clip.markers if "lantern" in m.name)
        offset = marker.marked_range.start_time - clip.source_range.start_time
        assert round(offset.to_frames()) == max(0, 2 - head), fmt
