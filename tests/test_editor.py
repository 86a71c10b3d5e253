"""The editor round trip through the CLI: an editor's EDL / FCP XML / OTIO cut + a filled shot list
-> storyboard -> renders -> a conformed timeline an editor relinks; rates, timecode and bad sheets."""

import csv
import json
import re
from pathlib import Path

import opentimelineio as otio
import pytest
from conftest import ffprobe, milimo

import storyboards
from milimo_engine.media import probe as media_facts

EDL_25 = """TITLE: HARBOUR CUT 25
FCM: NON-DROP FRAME

001  HARB_A01 V     C        01:00:00:00 01:00:01:00 00:00:00:00 00:00:01:00
* FROM CLIP NAME: Harbour establishing
* PROMPT: a harbour at dawn, boats at anchor

002  HARB_B02 V     C        01:00:10:00 01:00:10:20 00:00:01:00 00:00:01:20
* FROM CLIP NAME: Boat close up

003  HARB_B02 V     C        01:00:10:20 01:00:10:20 00:00:01:20 00:00:01:20
003  HARB_C03 V     D    010 01:00:20:00 01:00:21:12 00:00:01:20 00:00:03:07
* FROM CLIP NAME: Lanterns
* TO CLIP NAME: Lanterns

004  HARB_D04 V     C        01:00:30:00 01:00:32:00 00:00:03:17 00:00:04:17
M2   HARB_D04       050.0                01:00:30:00
* FROM CLIP NAME: Quay
"""  # Quay plays at 200 %: 25 frames in the cut, 50 of source

# Premiere / Resolve style FCP 7 XML: a 30 fps sequence starting at 01:00:00:00, a 15 fps clip in it, a gap,
# a marker carrying the prompt.
FCP_XML = """<?xml version="1.0" encoding="UTF-8"?>
<!DOCTYPE xmeml>
<xmeml version="4"><sequence id="sequence-1"><name>Harbour Cut v3</name><duration>130</duration>
<rate><timebase>30</timebase><ntsc>FALSE</ntsc></rate>
<timecode><rate><timebase>30</timebase><ntsc>FALSE</ntsc></rate><string>01:00:00:00</string><frame>108000</frame>
<displayformat>NDF</displayformat></timecode>
<media><video><track>
<clipitem id="clipitem-1"><name>Harbour establishing</name><duration>300</duration>
<rate><timebase>30</timebase><ntsc>FALSE</ntsc></rate><start>0</start><end>30</end><in>60</in><out>90</out>
<file id="file-1"><name>A001_C003.mov</name><pathurl>file:///media/A001_C003.mov</pathurl>
<rate><timebase>30</timebase><ntsc>FALSE</ntsc></rate><duration>300</duration>
<timecode><rate><timebase>30</timebase><ntsc>FALSE</ntsc></rate><string>10:00:00:00</string><frame>1080000</frame>
<reel><name>A001</name></reel></timecode></file>
<marker><name>prompt: a harbour at dawn, gulls circling</name><comment></comment><in>70</in><out>-1</out></marker>
</clipitem>
<clipitem id="clipitem-2"><name>Boat slow motion</name><duration>150</duration>
<rate><timebase>15</timebase><ntsc>FALSE</ntsc></rate><start>30</start><end>70</end><in>10</in><out>30</out>
<file id="file-2"><name>B002_C001.mov</name><pathurl>file:///media/B002_C001.mov</pathurl>
<rate><timebase>15</timebase><ntsc>FALSE</ntsc></rate><duration>150</duration>
<timecode><rate><timebase>15</timebase><ntsc>FALSE</ntsc></rate><string>11:00:00:00</string><frame>594000</frame>
<reel><name>B002</name></reel></timecode></file></clipitem>
<clipitem id="clipitem-3"><name>Lanterns</name><duration>300</duration>
<rate><timebase>30</timebase><ntsc>FALSE</ntsc></rate><start>100</start><end>130</end><in>0</in><out>30</out>
<file id="file-3"><name>C003_C002.mov</name><pathurl>file:///media/C003_C002.mov</pathurl>
<rate><timebase>30</timebase><ntsc>FALSE</ntsc></rate><duration>300</duration></file></clipitem>
</track></video></media></sequence></xmeml>
"""


@pytest.fixture
def env(prefect_api):
    return {"PREFECT_API_URL": prefect_api}


def _sheet(path: Path) -> list[dict]:
    with open(path, encoding="utf-8-sig", newline="") as fh:
        return list(csv.DictReader(fh))


def _fill(path: Path, rows: list[dict], delimiter: str = ";") -> None:
    """As a spreadsheet saves it: UTF-8 with a BOM, semicolons (a European locale)."""
    with open(path, "w", encoding="utf-8-sig", newline="") as fh:
        writer = csv.DictWriter(fh, fieldnames=list(rows[0]), delimiter=delimiter)
        writer.writeheader()
        writer.writerows(rows)


def test_shot_list_out_prefills_prompts_and_counts_at_the_sequence_rate(tmp_path):
    (tmp_path / "cut.edl").write_text(EDL_25)
    (tmp_path / "cut.xml").write_text(FCP_XML)
    proc = milimo("prompts", tmp_path / "cut.edl", "--rate", "25", "-o", tmp_path / "edl.csv")
    assert proc.returncode == 0, proc.stderr
    rows = _sheet(tmp_path / "edl.csv")
    assert list(rows[0])[:8] == ["shot_id", "clip", "reel", "record_in", "record_out", "source_in", "frames", "prompt"]
    assert [(r["clip"], r["reel"], r["source_in"], r["frames"]) for r in rows] == [
        ("Harbour establishing", "HARB_A01", "01:00:00:00", "25"), ("Boat close up", "HARB_B02", "01:00:10:00", "20"),
        ("Lanterns", "HARB_C03", "01:00:20:00", "37"), ("Quay", "HARB_D04", "01:00:30:00", "25")]
    assert rows[0]["prompt"] == "a harbour at dawn, boats at anchor" and rows[1]["prompt"] == ""
    assert rows[3]["record_in"] == "00:00:03:17"  # after the 10-frame gap
    again = milimo("prompts", tmp_path / "cut.edl", "--rate", "25", "-o", tmp_path / "edl.csv")
    assert again.returncode == 2 and "--force" in again.stderr  # a filled sheet is never overwritten
    bin_list = milimo("prompts", tmp_path / "cut.edl", "--rate", "25", "-o", tmp_path / "shots.ale")
    assert bin_list.returncode == 0, bin_list.stderr  # the shots as an Avid bin list, read back by OTIO's reader
    logged = list(otio.adapters.read_from_file(str(tmp_path / "shots.ale"), fps=25).find_clips())
    assert [(c.name, c.metadata["ALE"]["Tape"], otio.opentime.to_timecode(c.source_range.start_time, 25),
             c.source_range.duration.value) for c in logged] == [
        ("Harbour establishing", "HARB_A01", "01:00:00:00", 25), ("Boat close up", "HARB_B02", "01:00:10:00", 20),
        ("Lanterns", "HARB_C03", "01:00:20:00", 37), ("Quay", "HARB_D04", "01:00:30:00", 50)]  # Quay at 200 %
    assert logged[0].metadata["ALE"]["Prompt"] == "a harbour at dawn, boats at anchor"

    proc = milimo("prompts", tmp_path / "cut.xml")  # default: beside the cut
    assert proc.returncode == 0, proc.stderr
    rows = _sheet(tmp_path / "cut.csv")
    assert rows[0]["prompt"] == "a harbour at dawn, gulls circling"  # from the marker
    assert rows[0]["reel"] == "A001" and rows[0]["record_in"] == "01:00:00:00"
    # the 15 fps clip in the 30 fps sequence: counted and timecoded at the sequence rate
    assert (rows[1]["frames"], rows[1]["source_in"], rows[1]["reel"]) == ("40", "11:00:00:20", "B002")
    assert rows[2]["record_in"] == "01:00:03:10"  # after the gap


def test_rates_drop_frame_and_a_wrong_rate(tmp_path):
    edl = tmp_path / "df.edl"
    edl.write_text("TITLE: NTSC\nFCM: DROP FRAME\n\n"
                   "001  AX       V     C        00:59:59;28 01:00:00;10 00:00:00;00 00:00:00;12\n"
                   "* FROM CLIP NAME: Drop\n")
    board = storyboards.load(edl, rate=29.97)
    assert board.shots[0].frames == 12 and board.shots[0].source_timecode == "00:59:59;28"
    bad = milimo("validate", edl)  # a 29.97 drop-frame EDL read at the default 24 fps
    assert bad.returncode == 2 and "--rate" in bad.stderr and "Traceback" not in bad.stderr
    (tmp_path / "cut.xml").write_text(FCP_XML)
    wrong = milimo("prompts", tmp_path / "cut.xml", "--rate", "25")
    assert wrong.returncode == 2 and "--rate" in wrong.stderr and "30" in wrong.stderr


def test_a_bad_shot_list_names_row_and_column_and_stores_nothing(tmp_path):
    (tmp_path / "cut.edl").write_text(EDL_25)
    assert milimo("prompts", tmp_path / "cut.edl", "--rate", "25").returncode == 0
    rows = _sheet(tmp_path / "cut.csv")
    for row in rows:
        row["prompt"] = row["prompt"] or "something"
    rows[1]["seed"] = "-4"
    rows[2]["handoff"] = "maybe"
    rows[3]["shot_id"], rows[3]["clip"] = "quai", "Quai"
    _fill(tmp_path / "cut.csv", rows)
    db = tmp_path / "m.db"
    proc = milimo("render", tmp_path / "cut.edl", "--prompts", tmp_path / "cut.csv", "--rate", "25",
                  "--db", f"sqlite:///{db}")
    assert proc.returncode == 2 and "Traceback" not in proc.stderr
    for expected in ("row 3: column seed", "row 4: column handoff", "row 5: column shot_id", "'quay'"):
        assert expected in proc.stderr, (expected, proc.stderr)
    for command in ("qa", "status", "conform"):
        extra = ["--format", "fcp_xml"] if command == "conform" else []
        proc = milimo(command, tmp_path / "cut.edl", "--prompts", tmp_path / "cut.csv", "--rate", "25", *extra,
                      "--db", f"sqlite:///{db}")
        assert proc.returncode == 2 and "row 3: column seed" in proc.stderr, (command, proc.stderr)
    assert not db.exists()
    (tmp_path / "typo.csv").write_text("shot_id,clip,promt\n")
    typo = milimo("validate", tmp_path / "cut.edl", "--prompts", tmp_path / "typo.csv", "--rate", "25")
    assert typo.returncode == 2 and "column promt" in typo.stderr and "'prompt'" in typo.stderr


def test_editor_round_trip_relinks_every_take(tmp_path, tiny_model_dir, env):
    """prompts -> filled CSV -> import -> render -> conform fcp_xml / cmx_3600 / otio -> read back."""
    (tmp_path / "cut.edl").write_text(EDL_25)
    assert milimo("prompts", tmp_path / "cut.edl", "--rate", "25", "-o", tmp_path / "shots.csv").returncode == 0
    rows = _sheet(tmp_path / "shots.csv")
    for i, row in enumerate(rows):
        row["prompt"] = row["prompt"] or f"harbour shot {i}, café lights"
        row["seed"] = str(10 + i)
    rows[2]["handoff"] = "previous"  # Lanterns continues from Boat close up (across the dissolve)
    rows[1]["shot_id"] = ""  # matched by its unique clip name instead
    _fill(tmp_path / "shots.csv", rows)
    board = tmp_path / "harbour.otio"
    imported = milimo("import", tmp_path / "cut.edl", "--prompts", tmp_path / "shots.csv", "--rate", "25",
                      "--size", "128x128", "-o", board)
    assert imported.returncode == 0, imported.stderr
    timeline = otio.adapters.read_from_file(str(board))
    clips = list(timeline.find_clips())
    assert [c.name for c in clips] == ["Harbour establishing", "Boat close up", "Lanterns", "Quay"]
    assert any(isinstance(i, otio.schema.Transition) for i in timeline.tracks[0])  # the dissolve is kept
    assert clips[1].metadata["milimo"]["prompt"] == "harbour shot 1, café lights"

    out, db = tmp_path / "renders", f"sqlite:///{tmp_path / 'm.db'}"
    common = ["--model", tiny_model_dir, "--db", db, "--out", out]
    run = milimo("render", board, *common, env=env)
    assert run.returncode == 0, run.stderr[-3000:]
    # the cut itself with its sheet is the same storyboard: nothing to render again
    again = milimo("render", tmp_path / "cut.edl", "--prompts", tmp_path / "shots.csv", "--rate", "25",
                   "--size", "128x128", *common, env=env)
    assert again.returncode == 0 and "rendered 0 shot(s)" in again.stdout, again.stderr[-3000:]

    mp4s = sorted(out.rglob("*.mp4"))
    takes = [p for p in mp4s if p.parent.name == "take-001"]
    assert sorted(p.name for p in takes) == sorted(f"harbour-cut-25_{s}_t001.mp4" for s in
                                                   ("harbour-establishing", "boat-close-up", "lanterns", "quay"))
    boat = next(p for p in takes if "boat" in p.name)
    probe = ffprobe(boat)
    kinds = {s["codec_type"]: s for s in probe["streams"]}
    assert kinds["audio"]["sample_rate"] == "48000"
    assert kinds["video"]["tags"]["timecode"] == "01:00:09:17"  # its source-in, less its 8-frame head handle
    # each take its own reel (HARB_B02 is the tape of two clips: a reel + timecode conform would find either)
    reels = {p.name: ffprobe(p)["format"]["tags"]["reel_name"] for p in takes}
    assert len(set(reels.values())) == 4 and all(re.fullmatch(r"[A-Z0-9]{1,8}", r) for r in reels.values()), reels
    assert probe["format"]["tags"]["title"] == "Boat close up" and "source reel HARB_B02" in probe["format"]["tags"][
        "comment"]
    mov = ffprobe(boat.with_suffix(".mov"))  # the take to conform: ProRes, PCM, a timecode track with the reel
    streams = {s["codec_type"]: s for s in mov["streams"]}
    assert streams["video"]["codec_name"] == "prores" and streams["audio"]["codec_name"] == "pcm_s24le"
    assert streams["data"]["tags"] == {"timecode": "01:00:09:17", "reel_name": reels[boat.name]}

    expected_tc = ["01:00:00:00", "01:00:10:00", "01:00:20:00", "01:00:30:00"]
    # (head, tail) handles: 8 frames by default, none where the chain continues (Boat close up -> Lanterns)
    handles = {"Harbour establishing": (8, 8), "Boat close up": (8, 0), "Lanterns": (0, 8), "Quay": (8, 8)}
    plays = {"Quay": 50}  # the source frames a clip plays, where a speed change makes them not its cut length
    quay = next(p for p in takes if "quay" in p.name)
    assert media_facts(quay).frames == 8 + 50 + 8  # the take renders the source its clip plays, between handles
    cut = storyboards.load(board)
    preview = next(out.rglob("preview.mp4"))  # the cut as it plays: its 10-frame gap, Quay retimed to its 25 frames
    assert media_facts(preview).frames == round(cut.shots_track().duration().value)
    for fmt, suffix in (("fcp_xml", ".xml"), ("cmx_3600", ".edl"), ("otio", ".otio")):
        target = tmp_path / "editor" / f"conformed{suffix}"
        proc = milimo("conform", board, "--format", fmt, "-o", target, "--db", db)
        assert proc.returncode == 0 and "4 of 4 shot(s) relinked" in proc.stdout, proc.stderr
        back = otio.adapters.read_from_file(str(target), **({"rate": 25} if fmt == "cmx_3600" else {}))
        if fmt == "fcp_xml":
            assert target.read_text().splitlines()[1] == "<!DOCTYPE xmeml>"
        video = list(back.video_tracks()[0].find_clips())
        assert [c.name for c in video] == ["Harbour establishing", "Boat close up", "Lanterns", "Quay"]
        assert [otio.opentime.to_timecode(c.source_range.start_time, 25) for c in video] == expected_tc
        for clip in video:
            if fmt == "cmx_3600" and clip.name == "Lanterns":
                continue  # OTIO's EDL reader gives a dissolve's incoming clip the outgoing clip's path
            url = clip.media_reference.target_url
            path = Path(url.removeprefix("file://")) if url.startswith("file://") else target.parent / url
            assert path.is_file() and "_t001.mov" in path.name, (fmt, clip.name, url)
            tmcd = next(s for s in ffprobe(path)["streams"] if s["codec_type"] == "data")["tags"]
            head, tail = handles[clip.name]
            first = clip.source_range.start_time - otio.opentime.RationalTime(head, 25)
            assert tmcd["timecode"] == otio.opentime.to_timecode(first, 25), (fmt, clip.name)  # media starts there
            source = plays.get(clip.name, clip.source_range.duration.value)
            assert media_facts(path).frames == head + source + tail, (fmt, clip.name)
            if fmt != "cmx_3600":  # the media's range in the file: the clip plus its handles, for trims and dissolves
                available = clip.media_reference.available_range
                assert (available.start_time, available.duration.value) == (
                    first, head + source + tail), (fmt, clip.name, available)
            if fmt == "cmx_3600":  # Resolve conforms an EDL on reel + timecode: the event's reel is the take's
                assert clip.metadata["cmx_3600"]["reel"] == tmcd["reel_name"], (clip.name, clip.metadata)
            if fmt == "fcp_xml":
                assert clip.media_reference.metadata["fcp_xml"]["timecode"]["reel"]["name"] == tmcd["reel_name"]
        if fmt != "cmx_3600":
            audio = list(back.audio_tracks()[0].find_clips())
            assert [c.name for c in audio] == [c.name for c in video]  # aligned sound for every shot
            assert [back.audio_tracks()[0].range_of_child(c).start_time for c in audio] == \
                   [back.video_tracks()[0].range_of_child(c).start_time for c in video]
    ale = milimo("conform", board, "--format", "ale", "-o", tmp_path / "editor" / "takes.ale", "--db", db)
    assert ale.returncode == 0, ale.stderr
    logged = list(otio.adapters.read_from_file(str(tmp_path / "editor" / "takes.ale"), fps=25).find_clips())
    assert [c.metadata["ALE"]["Shot"] for c in logged] == [  # one row per clip, not one more per audio clip
        "harbour-establishing", "boat-close-up", "lanterns", "quay"]
    for row in logged:  # Tape and Start as each take's own timecode track says, for a Tape + timecode relink
        tmcd = next(s for s in ffprobe(Path(row.media_reference.target_url.removeprefix("file://")))["streams"]
                    if s["codec_type"] == "data")["tags"]
        assert (row.metadata["ALE"]["Tape"], otio.opentime.to_timecode(row.source_range.start_time, 25)) == (
            tmcd["reel_name"], tmcd["timecode"]), row.name
    otioz = milimo("conform", board, "--format", "otioz", "--db", db, "--out", out)
    assert otioz.returncode == 0, otioz.stderr

    qa = json.loads(milimo("qa", board, "--db", db, "--json").stdout)
    assert [(s["left"], s["right"], s["kind"]) for s in qa] == [
        ("harbour-establishing", "boat-close-up", "hard"), ("boat-close-up", "lanterns", "handoff"),
        ("lanterns", "quay", "hard")]
    assert all(s["pixel_ratio"] is not None for s in qa) and not any(s["flagged"] for s in qa if s["kind"] == "hard")
    status = milimo("status", board, "--db", db)
    assert "seam -> lanterns handoff" in status.stdout
