"""Real cuts in, relinkable media out (issue 22): cuts as editors export them go through `milimo`, and every
conformed file is read back with OpenTimelineIO. Each test is one defect of the issue and failed before its fix.

The conform tests record takes in a real store beside the cut (conform reads the store, not the pixels); the
rendered round trip with real media is `test_editor.py`'s."""

from pathlib import Path

import opentimelineio as otio
from conftest import milimo
from opentimelineio.opentime import RationalTime, TimeRange
from test_trust_two import refused

import storyboards as sb
from storyboards.load import clip_speed
from storyboards.store import Store

FORMATS = {"otio": ".otio", "otioz": ".otioz", "fcp_xml": ".xml", "cmx_3600": ".edl"}


def _clip(name: str, start: int, frames: int, url: str | None = None, rate: float = 24,
          prompt: bool = True) -> otio.schema.Clip:
    ref = otio.schema.ExternalReference(target_url=url) if url else otio.schema.MissingReference()
    clip = otio.schema.Clip(name=name, media_reference=ref,
                            source_range=TimeRange(RationalTime(start, rate), RationalTime(frames, rate)))
    if prompt:
        clip.metadata["milimo"] = {"prompt": f"the {name} shot"}
    return clip


def _record_takes(cut: Path, db: str, **load) -> sb.Storyboard:
    """One finished take per shot, as a render records them: its media on disk, the clip and its handles long."""
    board = sb.load(cut, **load)
    store = Store.open(db)
    specs = sb.resolve_specs(board, "m")
    store.import_revision(board, specs)
    for shot in board.shots:
        take = store.start_take(board.name, shot.shot_id)
        mp4 = cut.parent / "takes" / f"{shot.shot_id}.mp4"
        mp4.parent.mkdir(exist_ok=True)
        mp4.write_bytes(b"\0")
        spec = specs[shot.shot_id]
        store.finish_take(take, outputs={"mp4": str(mp4), "frames": spec.head + spec.num_frames + spec.tail,
                                         "fps": shot.fps, "head": spec.head, "tail": spec.tail})
    store.engine.dispose()
    return board


def _read(path: Path, rate: float = 24) -> otio.schema.Timeline:
    return otio.adapters.read_from_file(str(path), **({"rate": rate} if path.suffix == ".edl" else {}))


def _placed(timeline: otio.schema.Timeline, track: int = 0) -> list[tuple[str, int, int]]:
    """(name, record-in, frames) of each clip of a video track, as an editor's timeline shows them."""
    video = timeline.video_tracks()[track]
    out = []
    for clip in video.find_clips(shallow_search=True):
        where = video.range_of_child(clip)
        out.append((clip.name, round(where.start_time.value), round(where.duration.value)))
    return out


def _xml_starts(path: Path) -> list[tuple[str, int]]:
    """(name, record start) of the first video track's clip items, as FCP XML states them. OpenTimelineIO's
    reader moves a clip after a dissolve into a gap by half the dissolve, so positions are read off the XML."""
    import xml.etree.ElementTree as ET

    track = next(ET.parse(path).getroot().iter("sequence")).find("./media/video/track")
    return [(item.findtext("name"), int(item.findtext("start"))) for item in track.findall("clipitem")]


def test_conform_fits_every_format_instead_of_crashing(tmp_path):
    """Before: exit 1 with a raw AttributeError (a clip without a source range; a plate on V2 whose media is
    offline; a nested sequence on V2, all in FCP XML), NotSupportedError (an EDL of a two-track cut), ValueError
    (an EDL of a dissolve into a gap), NotAFileOnDisk (an otioz with offline media)."""
    timeline = otio.schema.Timeline("Fitting")
    v1, v2 = otio.schema.Track("V1"), otio.schema.Track("V2")
    timeline.tracks.extend([v1, v2])
    v1.append(_clip("Opening", 0, 48))
    v1.append(otio.schema.Transition(in_offset=RationalTime(6, 24), out_offset=RationalTime(6, 24)))
    v1.append(otio.schema.Gap(duration=RationalTime(24, 24)))
    unranged = otio.schema.Clip(name="Unranged", media_reference=otio.schema.ExternalReference(
        target_url="file:///media/unranged.mov", available_range=TimeRange(RationalTime(100, 24),
                                                                           RationalTime(30, 24))))
    unranged.metadata["milimo"] = {"prompt": "a clip exported without a source range"}
    v1.append(unranged)
    v2.append(_clip("Plate", 0, 24, "file:///offline/plate.mov", prompt=False))
    nested = otio.schema.Stack(name="Titles")
    inner = otio.schema.Track("inner")
    inner.extend([_clip("Title A", 0, 24, prompt=False), _clip("Title B", 0, 24, prompt=False)])
    nested.append(inner)
    v2.append(nested)
    cut = tmp_path / "fitting.otio"
    otio.adapters.write_to_file(timeline, str(cut))
    db = f"sqlite:///{tmp_path / 'm.db'}"
    _record_takes(cut, db)
    for fmt, suffix in FORMATS.items():
        target = tmp_path / "editor" / f"fitting{suffix}"
        proc = milimo("conform", cut, "--format", fmt, "-o", target, "--db", db)
        assert proc.returncode == 0, (fmt, proc.stderr[-2000:])
        assert "2 of 2 shot(s) relinked" in proc.stdout
        back = _read(target)
        starts = _xml_starts(target) if fmt == "fcp_xml" else [p[:2] for p in _placed(back) if p[0] != "BLACK"]
        assert starts == [("Opening", 0), ("Unranged", 72)], (fmt, starts)  # each clip where the editor put it
        assert _placed(back)[-1][::2] == ("Unranged", 30)
        if fmt == "cmx_3600":
            assert "one video track" in proc.stdout and "'V2'" in proc.stdout  # said, not silently left out
            assert "into black" in proc.stdout
            assert [c.name for c in back.find_clips()] == ["Opening", "BLACK", "Unranged"]
        else:
            assert [t.name for t in back.video_tracks()][:2] == ["V1", "V2"] or fmt == "fcp_xml"
            assert len(back.video_tracks()) >= 2, fmt  # the plate and the titles come along
        if fmt == "otioz":
            assert "offline references" in proc.stdout and "Plate" in proc.stdout
    other = milimo("conform", cut, "--format", "cmx_3600", "--track", "V2", "-o", tmp_path / "v2.edl", "--db", db)
    assert other.returncode == 0, other.stderr
    assert "Plate" in (tmp_path / "v2.edl").read_text()
    refused(milimo("conform", cut, "--format", "cmx_3600", "--track", "V9", "-o", tmp_path / "v9.edl", "--db", db),
            "'V9'", "'V1'", "'V2'")
    refused(milimo("conform", cut, "--format", "fcp_xml", "--track", "V2", "-o", tmp_path / "t.xml", "--db", db),
            "--track")


def test_a_clip_no_format_can_place_is_refused_naming_it(tmp_path):
    timeline = otio.schema.Timeline("Lengthless")
    v1, v2 = otio.schema.Track("V1"), otio.schema.Track("V2")
    timeline.tracks.extend([v1, v2])
    v1.append(_clip("Shot", 0, 24))
    v2.append(otio.schema.Clip(name="Nothing", media_reference=otio.schema.MissingReference()))
    cut = tmp_path / "lengthless.otio"
    otio.adapters.write_to_file(timeline, str(cut))
    db = f"sqlite:///{tmp_path / 'm.db'}"
    _record_takes(cut, db)
    refused(milimo("conform", cut, "--format", "fcp_xml", "-o", tmp_path / "x.xml", "--db", db),
            "'Nothing'", "'V2'", "duration")
    assert not (tmp_path / "x.xml").exists()


EDL_REC_HOUR = """TITLE: REEL ONE
FCM: NON-DROP FRAME

001  A001     V     C        10:00:00:00 10:00:01:00 01:00:00:00 01:00:01:00
* FROM CLIP NAME: Dawn
002  A002     V     C        10:00:05:00 10:00:06:00 01:00:01:00 01:00:02:00
* FROM CLIP NAME: Dusk
"""

NUCODA_DF = """TITLE: NTSC ONE
FCM: DROP FRAME

001  B001     V     C        00:10:00;00 00:10:01;00 00:59:53;11 00:59:54;11
* FROM CLIP NAME: Harbour
* FROM FILE: /plates/B001.dpx
"""


def _assert_linked(path: Path, names: list[str]) -> None:
    import xml.etree.ElementTree as ET

    root = ET.parse(path).getroot()
    assert path.read_text().splitlines()[1] == "<!DOCTYPE xmeml>"
    sequence = next(root.iter("sequence"))
    pictures = sequence.findall("./media/video/track")[0].findall("clipitem")
    sounds = {s.get("id"): s for track in sequence.findall("./media/audio/track") for s in track.findall("clipitem")}
    assert [p.findtext("name") for p in pictures] == names
    for picture in pictures:
        links = {link.findtext("mediatype"): link.findtext("linkclipref") for link in picture.findall("link")}
        assert links["video"] == picture.get("id") and links["audio"] in sounds, links
        sound = sounds[links["audio"]]
        assert sound.findtext("./sourcetrack/mediatype") == "audio" and sound.findtext("name") == picture.findtext(
            "name")
        assert {link.findtext("linkclipref") for link in sound.findall("link")} == {picture.get("id"), sound.get("id")}


def test_the_record_start_is_kept_in_the_shot_list_and_every_format(tmp_path):
    """Before: an EDL cut recorded at 01:00:00:00 came out at 00:00:00:00 in its shot list, FCP XML and EDL;
    EDLs had no FCM line and were always in Avid's style."""
    cut = tmp_path / "reel1.edl"
    cut.write_text(EDL_REC_HOUR)
    assert milimo("prompts", cut, "--rate", "25", "-o", tmp_path / "reel1.csv").returncode == 0
    rows = (tmp_path / "reel1.csv").read_text(encoding="utf-8-sig").splitlines()
    assert ",01:00:00:00,01:00:01:00," in rows[1] and ",01:00:01:00,01:00:02:00," in rows[2], rows
    db = f"sqlite:///{tmp_path / 'm.db'}"
    sheet = _with_prompts(cut, db, 25)
    for fmt, suffix in FORMATS.items():
        target = tmp_path / "editor" / f"reel1{suffix}"
        proc = milimo("conform", cut, "--prompts", sheet, "--rate", "25", "--format", fmt, "-o", target, "--db", db)
        assert proc.returncode == 0, (fmt, proc.stderr[-2000:])
        if fmt == "cmx_3600":
            text = target.read_text()
            assert "FCM: NON-DROP FRAME" in text.splitlines()[1]
            events = [line.split() for line in text.splitlines() if line[:3].isdigit()]
            assert [e[-2] for e in events] == ["01:00:00:00", "01:00:01:00"], text
            assert sb.load(target, rate=25).shots[0].record_timecode == "01:00:00:00"  # read back by milimo too
            assert [c.name for c in _read(target, 25).find_clips()] == ["Dawn", "Dusk"]
        else:
            back = _read(target)
            assert otio.opentime.to_timecode(back.global_start_time, 25) == "01:00:00:00", fmt
            assert _placed(back) == [("Dawn", 0, 25), ("Dusk", 25, 25)], fmt
        if fmt == "fcp_xml":  # picture and sound of each take linked both ways, so they import as one clip
            _assert_linked(target, ["Dawn", "Dusk"])

    ntsc = tmp_path / "ntsc.edl"
    ntsc.write_text(NUCODA_DF)
    sheet = _with_prompts(ntsc, db, 29.97)
    proc = milimo("conform", ntsc, "--prompts", sheet, "--rate", "29.97", "--format", "cmx_3600",
                  "-o", tmp_path / "ntsc-out.edl", "--db", db)
    assert proc.returncode == 0, proc.stderr[-2000:]
    text = (tmp_path / "ntsc-out.edl").read_text()
    assert "FCM: DROP FRAME" in text and "* FROM FILE:" in text and "* FROM CLIP:" not in text, text
    events = [line.split() for line in text.splitlines() if line[:3].isdigit()]
    assert events[0][-2] == "00:59:53;11", text


def _with_prompts(cut: Path, db: str, rate: float) -> Path:
    """The cut's shot list (`milimo prompts`), every prompt filled, and a take per shot; the list's path."""
    sheet = cut.with_suffix(".csv")
    assert milimo("prompts", cut, "--rate", f"{rate:g}", "-o", sheet, "--force").returncode == 0
    lines = sheet.read_text(encoding="utf-8-sig").splitlines()
    header = lines[0].split(",")
    filled = [lines[0]]
    for line in lines[1:]:
        cells = line.split(",")
        cells[header.index("prompt")] = f"shot {len(filled)}"
        filled.append(",".join(cells))
    sheet.write_text("\n".join(filled) + "\n", encoding="utf-8")
    _record_takes(cut, db, rate=rate, prompts=sheet)
    return sheet


def _one_clip_edl(frames: int, rate: int = 24) -> str:
    end = otio.opentime.to_timecode(RationalTime(frames, rate), rate)
    return (f"TITLE: LONG\nFCM: NON-DROP FRAME\n\n001  A001     V     C        00:00:00:00 {end} 00:00:00:00 {end}\n"
            "* FROM CLIP NAME: Long take\n* PROMPT: a slow pan along the harbour wall\n")


def test_a_long_shot_renders_as_segments_unless_a_cap_is_asked_for(tmp_path):
    """Before: a 300-frame clip blocked the import ("raise max_shot_frames"), with no flag or config to raise it."""
    cut = tmp_path / "long.edl"
    cut.write_text(_one_clip_edl(300))
    assert milimo("prompts", cut, "-o", tmp_path / "long.csv").returncode == 0
    ok = milimo("validate", cut, "--prompts", tmp_path / "long.csv")
    assert ok.returncode == 0, ok.stderr
    assert "long shot long-take: 300 frames, rendered as 3 chained segments" in ok.stdout
    refused(milimo("validate", cut, "--prompts", tmp_path / "long.csv", "--max-shot-frames", "257"),
            "300 frames is beyond the maximum shot length 257", "--max-shot-frames")
    (tmp_path / "milimo.toml").write_text("[cuts]\nmax_shot_frames = 200\n")
    refused(milimo("validate", cut, "--prompts", tmp_path / "long.csv", "--config", tmp_path / "milimo.toml"),
            "maximum shot length 200")
    refused(milimo("validate", cut, "--max-shot-frames", "0"), "0", "above 0")
    sheet = (tmp_path / "long.csv").read_text(encoding="utf-8-sig")
    header, row = sheet.splitlines()[:2]
    assert "max_shot_frames" in header.split(",")  # a cap per shot, in the shot list
    cells = row.split(",")
    cells[header.split(",").index("prompt")] = "a long walk along the quay"
    for cap, fine in (("400", True), ("200", False)):  # the row's cap outranks the project's, either way
        cells[header.split(",").index("max_shot_frames")] = cap
        (tmp_path / "capped.csv").write_text(f"{header}\n{','.join(cells)}\n", encoding="utf-8")
        proc = milimo("validate", cut, "--prompts", tmp_path / "capped.csv", "--max-shot-frames", "257")
        if fine:
            assert proc.returncode == 0, proc.stderr
        else:
            refused(proc, "300 frames is beyond this shot's maximum length 200", "max_shot_frames")


GENERATORS_XML = """<?xml version="1.0" encoding="UTF-8"?>
<!DOCTYPE xmeml>
<xmeml version="4"><sequence id="sequence-1"><name>Leader Cut</name><duration>120</duration>
<rate><timebase>24</timebase><ntsc>FALSE</ntsc></rate>
<media><video>
<track><generatoritem id="leader"><name>Universal Counting Leader</name><duration>48</duration>
<rate><timebase>24</timebase><ntsc>FALSE</ntsc></rate><start>0</start><end>48</end><in>0</in><out>48</out>
<effect><name>Universal Counting Leader</name><effectid>Universal Counting Leader</effectid>
<effectcategory>Leader</effectcategory><effecttype>generator</effecttype><mediatype>video</mediatype></effect>
</generatoritem></track>
<track><generatoritem id="bars"><name>Bars and Tone</name><duration>24</duration>
<rate><timebase>24</timebase><ntsc>FALSE</ntsc></rate><start>0</start><end>24</end><in>0</in><out>24</out>
<effect><name>Bars and Tone</name><effectid>BarsAndTone</effectid><effecttype>generator</effecttype>
<mediatype>video</mediatype></effect></generatoritem>
<clipitem id="clipitem-1"><name>Harbour wide</name><duration>300</duration>
<rate><timebase>24</timebase><ntsc>FALSE</ntsc></rate><start>24</start><end>72</end><in>10</in><out>58</out>
<file id="file-1"><name>A001.mov</name><pathurl>file:///media/A001.mov</pathurl>
<rate><timebase>24</timebase><ntsc>FALSE</ntsc></rate><duration>300</duration></file>
<marker><name>prompt: a harbour at dawn</name><in>20</in><out>-1</out></marker></clipitem>
<generatoritem id="matte"><name>Color Matte</name><duration>24</duration>
<rate><timebase>24</timebase><ntsc>FALSE</ntsc></rate><start>72</start><end>96</end><in>0</in><out>24</out>
<effect><name>Color</name><effectid>Color</effectid><effecttype>generator</effecttype><mediatype>video</mediatype>
</effect></generatoritem>
<clipitem id="clipitem-2"><name>Quay</name><duration>300</duration>
<rate><timebase>24</timebase><ntsc>FALSE</ntsc></rate><start>96</start><end>120</end><in>0</in><out>24</out>
<file id="file-2"><name>A002.mov</name><pathurl>file:///media/A002.mov</pathurl>
<rate><timebase>24</timebase><ntsc>FALSE</ntsc></rate><duration>300</duration></file>
<marker><name>prompt: boats at the quay</name><in>5</in><out>-1</out></marker></clipitem>
</track></video></media></sequence></xmeml>
"""


def test_the_shots_track_is_chosen_and_generators_are_listed_not_rendered(tmp_path):
    """Before: only the first video track could hold the shots (a Premiere edit on V2 read its leader track), and
    bars, mattes and leaders were rendered as AI shots."""
    cut = tmp_path / "leader.xml"
    cut.write_text(GENERATORS_XML)
    first = milimo("prompts", cut, "-o", tmp_path / "v1.csv")
    assert first.returncode == 0, first.stderr
    assert "0 shot(s)" in first.stdout and "1 generator(s)" in first.stdout and "--shots-track" in first.stdout
    assert [t.name for t in otio.adapters.read_from_file(str(cut)).video_tracks()] == ["", ""]  # as FCP XML has it
    proc = milimo("prompts", cut, "--shots-track", "V2", "-o", tmp_path / "v2.csv")
    assert proc.returncode == 0, proc.stderr
    assert "2 shot(s)" in proc.stdout and "2 generator(s) listed as not rendered" in proc.stdout
    assert "--shots-track V2" in proc.stdout  # the import it suggests keeps the track
    import csv

    with open(tmp_path / "v2.csv", encoding="utf-8-sig", newline="") as fh:
        rows = list(csv.DictReader(fh))
    assert [(r["clip"], r["kind"].split(" ")[0], r["record_in"]) for r in rows] == [
        ("Bars and Tone", "generator", "00:00:00:00"), ("Harbour wide", "shot", "00:00:01:00"),
        ("Color Matte", "generator", "00:00:03:00"), ("Quay", "shot", "00:00:04:00")]
    assert rows[0]["kind"].endswith("not rendered") and rows[1]["prompt"] == "a harbour at dawn"
    imported = milimo("import", cut, "--shots-track", "V2", "--prompts", tmp_path / "v2.csv",
                      "-o", tmp_path / "leader.otio")
    assert imported.returncode == 0, imported.stderr
    assert "2 shot(s)" in imported.stdout
    validated = milimo("validate", tmp_path / "leader.otio")  # the storyboard keeps its shots track
    assert validated.returncode == 0 and "2 shot(s)" in validated.stdout, validated.stderr
    refused(milimo("prompts", cut, "--shots-track", "V9"), "'V9'", "--shots-track")


def test_rate_errors_say_what_was_given_and_what_the_timecodes_imply(tmp_path):
    """Before: "give --rate 25" whatever was given, and for drop-frame timecode that means 29.97."""
    thirty = tmp_path / "thirty.edl"
    thirty.write_text("TITLE: T\nFCM: NON-DROP FRAME\n\n"
                      "001  A001     V     C        01:00:00:00 01:00:00:29 00:00:00:00 00:00:00:29\n")
    refused(milimo("validate", thirty, "--rate", "25"), "do not fit 25 fps (given with --rate)", "up to 29",
            "give --rate 30 (or 29.97 for NTSC)")
    drop = tmp_path / "drop.edl"
    drop.write_text("TITLE: T\nFCM: DROP FRAME\n\n"
                    "001  A001     V     C        00:59:59;28 01:00:00;10 00:00:00;00 00:00:00;12\n")
    proc = milimo("validate", drop, "--rate", "25")
    refused(proc, "do not fit 25 fps", "drop frame", "give --rate 29.97")
    assert "--rate 25" not in proc.stderr


def test_an_aaf_cut_is_read_like_any_other(tmp_path):
    timeline = otio.schema.Timeline("Avid Cut")
    track = otio.schema.Track("V1")
    timeline.tracks.append(track)
    for i, name in enumerate(["Dawn", "Dusk"]):
        ref = otio.schema.ExternalReference(target_url=f"file:///media/{name}.mxf",
                                            available_range=TimeRange(RationalTime(0, 24), RationalTime(480, 24)))
        track.append(otio.schema.Clip(name=name, media_reference=ref,
                                      source_range=TimeRange(RationalTime(24 * i, 24), RationalTime(48, 24))))
    cut = tmp_path / "avid.aaf"
    otio.adapters.write_to_file(timeline, str(cut), adapter_name="AAF", use_empty_mob_ids=True)
    proc = milimo("prompts", cut, "-o", tmp_path / "avid.csv")
    assert proc.returncode == 0, proc.stderr
    assert "2 shot(s) of 'Avid Cut' at 24 fps" in proc.stdout
    refused(milimo("validate", cut), "'Dawn'", "needs a prompt")  # read, and only the prompts are missing


def test_handles_put_media_under_dissolves_and_what_is_still_short_is_said(tmp_path):
    """Before: takes were exactly the cut, so every dissolve was short of media and no trim or slip was possible,
    and nothing said so. Now each take carries handles (its media's range, in every format) and conform names any
    clip whose media still does not cover what the cut asks (a speed change, a shot without handles)."""
    timeline = otio.schema.Timeline("Handles")
    timeline.metadata["milimo"] = {"defaults": {"handles": 8}}
    track = otio.schema.Track("V1")
    timeline.tracks.append(track)
    dissolve = otio.schema.Transition(in_offset=RationalTime(6, 24), out_offset=RationalTime(6, 24))
    fast = _clip("Fast", 300, 24)
    fast.effects.append(otio.schema.LinearTimeWarp(time_scalar=2.0))  # 24 record frames play 48 source frames
    bare = _clip("Bare", 400, 24)
    bare.metadata["milimo"] = {**dict(bare.metadata["milimo"]), "handles": 0}
    track.extend([_clip("Dawn", 100, 48), dissolve, _clip("Dusk", 200, 24), fast, bare,
                  otio.schema.Transition(in_offset=RationalTime(4, 24), out_offset=RationalTime(4, 24)),
                  _clip("Night", 500, 24)])
    cut = tmp_path / "handles.otio"
    otio.adapters.write_to_file(timeline, str(cut))
    db = f"sqlite:///{tmp_path / 'm.db'}"
    _record_takes(cut, db)
    for fmt in ("otio", "fcp_xml"):
        target = tmp_path / "editor" / f"handles{FORMATS[fmt]}"
        proc = milimo("conform", cut, "--format", fmt, "-o", target, "--db", db)
        assert proc.returncode == 0, proc.stderr[-2000:]
        notes = [line for line in proc.stdout.splitlines() if "more media" in line]
        assert len(notes) == 1, proc.stdout  # 'Fast' renders the 48 source frames it plays (its speed change)
        assert "'Bare' needs 4 frame(s) more" in notes[0] and "dissolve" in notes[0]
        back = _read(target)
        for clip in back.video_tracks()[0].find_clips():
            available = clip.media_reference.available_range
            head = 0 if clip.name == "Bare" else 8
            source = 48 if clip.name == "Fast" else clip.source_range.duration.value
            assert available.start_time.value == clip.source_range.start_time.value - head, (fmt, clip.name)
            assert available.duration.value == source + 2 * head, (fmt, clip.name)


SPEED_EDL = """TITLE: SPEED
FCM: NON-DROP FRAME

001  A001     V     C        10:00:00:00 10:00:01:00 01:00:00:00 01:00:01:00
* FROM CLIP NAME: Walk
002  A002     V     C        10:00:10:00 10:00:12:00 01:00:01:00 01:00:02:00
M2   A002       048.0                10:00:10:00
* FROM CLIP NAME: Fast
003  A003     V     C        10:00:20:00 10:00:20:01 01:00:02:00 01:00:02:12
M2   A003       000.0                10:00:20:00
* FROM CLIP NAME: Hold FF
* * FREEZE FRAME
004  A004     V     C        10:00:30:00 10:00:30:13 01:00:02:12 01:00:03:13
M2   A004       012.0                10:00:30:00
* FROM CLIP NAME: Slow
"""
# clip: (speed, frames in the cut, source frames it plays)
PLAYS = {"Walk": (1.0, 24, 24), "Fast": (2.0, 24, 48), "Hold": (0.0, 12, 1), "Slow": (0.5, 25, 13)}


def test_speed_changes_and_freezes_render_the_source_they_play_and_keep_the_effect_in_every_format(tmp_path):
    """Before: takes rendered the record length at 100 %, then the EDL wrote a fraction of the source on an M2 line
    naming the clip instead of the reel, OTIO kept the warp with too little media under it, and FCP XML dropped the
    effect. Now each take renders the source its clip plays (a freeze its one frame), between its handles, and
    every format keeps the effect over media that covers it."""
    cut = tmp_path / "speed.edl"
    cut.write_text(SPEED_EDL)
    db = f"sqlite:///{tmp_path / 'm.db'}"
    sheet = _with_prompts(cut, db, 24)
    said = milimo("validate", cut, "--prompts", sheet)
    assert said.returncode == 0, said.stderr
    assert "200 % speed on fast: renders 48 source frame(s) for its 24 in the cut" in said.stdout
    assert "a freeze on hold: renders 1 source frame(s) for its 12 in the cut" in said.stdout
    specs = sb.resolve_specs(sb.load(cut, rate=24, prompts=sheet), "m")
    assert {s: (specs[s].head, specs[s].num_frames, specs[s].tail) for s in specs} == {
        "walk": (8, 24, 8), "fast": (8, 48, 8), "hold": (8, 1, 8), "slow": (8, 13, 8)}
    for fmt, suffix in FORMATS.items():
        target = tmp_path / "editor" / f"speed{suffix}"
        proc = milimo("conform", cut, "--prompts", sheet, "--format", fmt, "-o", target, "--db", db)
        assert proc.returncode == 0, (fmt, proc.stderr[-2000:])
        assert "more media" not in proc.stdout, (fmt, proc.stdout)
        back = _read(target)
        assert _placed(back) == [("Walk", 0, 24), ("Fast", 24, 24), ("Hold", 48, 12), ("Slow", 60, 25)], fmt
        clips = back.video_tracks()[0].find_clips()
        if fmt != "fcp_xml":  # OpenTimelineIO's FCP reader drops Time Remap; the XML is read below
            assert [clip_speed(c) for c in clips] == [PLAYS[c.name][0] for c in clips], fmt  # the effect is kept
        if fmt == "cmx_3600":
            _assert_edl_covered(target.read_text())
        elif fmt == "fcp_xml":
            _assert_xml_covered(target)
        else:
            for clip in clips:  # the media under each clip: from its source-in for the source it plays
                have, start = clip.media_reference.available_range, clip.source_range.start_time
                assert have.start_time <= start, (fmt, clip.name)
                assert start.value + PLAYS[clip.name][2] <= have.end_time_exclusive().value, (fmt, clip.name)


def _assert_edl_covered(text: str) -> None:
    """Each event's source out is its source in plus the frames it plays, inside its take (whose timecode starts
    at the source in less the 8-frame head and runs head + source + tail), and each M2 names its event's reel."""
    lines = text.splitlines()
    events = [n for n, line in enumerate(lines) if line[:3].isdigit()]
    assert len(events) == 4, text
    for n in events:
        fields = lines[n].split()
        src_in, src_out = (otio.opentime.from_timecode(tc, 24).value for tc in fields[-4:-2])
        name = next(line.split(":", 1)[1].strip() for line in lines[n + 1:] if "FROM CLIP NAME" in line)
        speed, _, source = PLAYS[name.removesuffix(" FF")]
        assert src_out - src_in == source, (name, lines[n])
        m2 = next((line for line in lines[n + 1:n + 3] if line.startswith("M2")), None)
        if speed == 1:
            assert m2 is None, text
        else:
            assert m2 is not None and m2.split()[1] == fields[1], text  # the event's own reel
            assert float(m2.split()[2]) == speed * 24, m2


def _assert_xml_covered(path: Path) -> None:
    """Each retimed clip item carries a Time Remap at its speed, plays `in`..`out` of its file (the source it
    plays), and the file holds that much past `in` and its tail handle."""
    import xml.etree.ElementTree as ET

    track = next(ET.parse(path).getroot().iter("sequence")).find("./media/video/track")
    items = track.findall("clipitem")
    assert [i.findtext("name") for i in items] == list(PLAYS)
    files = {f.get("id"): f for f in ET.parse(path).getroot().iter("file") if f.find("duration") is not None}
    for item in items:
        speed, cut, source = PLAYS[item.findtext("name")]
        start, end, first, last = (int(item.findtext(k)) for k in ("start", "end", "in", "out"))
        assert end - start == cut and last - first == source, item.findtext("name")
        length = int(files[item.find("file").get("id")].findtext("duration"))
        assert first == 8 and last + 8 == length, item.findtext("name")  # the head before, the tail after
        remap = [e for e in item.iter("effect") if e.findtext("effectid") == "timeremap"]
        if speed == 1:
            assert not remap
        else:
            values = {p.findtext("parameterid"): p.findtext("value") for p in remap[0].iter("parameter")}
            assert float(values["speed"]) == speed * 100 and values["reverse"] == "FALSE"


THROUGH_EDIT = """TITLE: SPLIT
FCM: NON-DROP FRAME

001  A001     V     C        10:00:00:00 10:00:02:00 01:00:00:00 01:00:02:00
* FROM CLIP NAME: Walk
* PROMPT: a woman walks along the quay
002  A001     V     C        10:00:02:00 10:00:03:00 01:00:02:00 01:00:03:00
* FROM CLIP NAME: Walk
003  B001     V     C        11:00:00:00 11:00:01:00 01:00:03:00 01:00:04:00
* FROM CLIP NAME: Gulls
* PROMPT: gulls over the harbour
"""


def test_a_through_edit_becomes_a_chain_unless_the_sheet_says_none(tmp_path):
    """Before: a take the editor split in two (one reel, contiguous source) rendered as two unrelated shots, so
    the shot jumped at the split."""
    import csv

    cut = tmp_path / "split.edl"
    cut.write_text(THROUGH_EDIT)
    assert milimo("prompts", cut, "--rate", "25", "-o", tmp_path / "split.csv").returncode == 0
    with open(tmp_path / "split.csv", encoding="utf-8-sig", newline="") as fh:
        rows = list(csv.DictReader(fh))
    assert [r["handoff"] for r in rows] == ["", "previous", ""]  # prefilled where the source runs on
    rows[1]["prompt"] = "she keeps walking"
    first, second = rows[0]["shot_id"], rows[1]["shot_id"]  # one clip name twice: ids from its reel and source
    for handoff, chains in (("previous", f"{first} -> {second}"), ("none", second)):
        rows[1]["handoff"] = handoff
        with open(tmp_path / "split.csv", "w", encoding="utf-8-sig", newline="") as fh:
            writer = csv.DictWriter(fh, fieldnames=list(rows[0]))
            writer.writeheader()
            writer.writerows(rows)
        proc = milimo("validate", cut, "--rate", "25", "--prompts", tmp_path / "split.csv")
        assert proc.returncode == 0, proc.stderr
        assert f": {chains}\n" in proc.stdout, proc.stdout
    assert "3 shot(s) in 3 chain(s)" in proc.stdout  # opted out: three unrelated shots


NTSC_NON_DROP = """TITLE: PIER NDF
FCM: NON-DROP FRAME

001  C001     V     C        00:10:00:00 00:10:01:00 01:00:00:00 01:00:01:00
* FROM CLIP NAME: Pier
002  C002     V     C        00:20:00:00 00:20:02:00 01:00:01:00 01:00:03:00
* FROM CLIP NAME: Boats
"""


def test_a_non_drop_cut_at_29_97_stays_non_drop(tmp_path):
    """Before: OpenTimelineIO counts 29.97 as drop frame, so a non-drop EDL's shot list, its conformed EDL and its
    takes' timecodes read other frames than the cut (00:10:00;18 for 00:10:00:00)."""
    from storyboards.editorial import media_start

    cut = tmp_path / "pier.edl"
    cut.write_text(NTSC_NON_DROP)
    db = f"sqlite:///{tmp_path / 'm.db'}"
    sheet = _with_prompts(cut, db, 29.97)
    rows = sheet.read_text(encoding="utf-8").splitlines()
    assert ",01:00:00:00,01:00:01:00,00:10:00:00," in rows[1] and ",01:00:01:00,01:00:03:00,00:20:00:00," in rows[2]
    proc = milimo("conform", cut, "--prompts", sheet, "--rate", "29.97", "--format", "cmx_3600",
                  "-o", tmp_path / "out.edl", "--db", db)
    assert proc.returncode == 0, proc.stderr[-2000:]
    text = (tmp_path / "out.edl").read_text()
    assert "FCM: NON-DROP FRAME" in text and ";" not in text, text
    events = [line.split() for line in text.splitlines() if line[:3].isdigit()]
    assert [e[-4:] for e in events] == [["00:10:00:00", "00:10:01:00", "01:00:00:00", "01:00:01:00"],
                                        ["00:20:00:00", "00:20:02:00", "01:00:01:00", "01:00:03:00"]], text
    assert sb.load(tmp_path / "out.edl", rate=29.97).shots[1].source_timecode == "00:20:00:00"
    assert media_start("00:10:00:00", 8, 30000 / 1001) == "00:09:59:22"  # a take's tmcd counts as its cut does
    assert media_start("00:10:00;18", 8, 30000 / 1001) == "00:10:00;10"
    xml = milimo("conform", cut, "--prompts", sheet, "--rate", "29.97", "--format", "fcp_xml",
                 "-o", tmp_path / "out.xml", "--db", db)
    assert xml.returncode == 0, xml.stderr[-2000:]
    assert "<displayformat>DF</displayformat>" not in (tmp_path / "out.xml").read_text()


MARKED = """TITLE: MARKED
FCM: NON-DROP FRAME

001  A001     V     C        10:00:00:00 10:00:01:00 01:00:00:00 01:00:01:00
* FROM CLIP NAME: Dawn
002  A002     V     C        10:00:10:00 10:00:10:12 01:00:01:00 01:00:01:12
* FROM CLIP NAME: =Dusk
003  A003     V     C        10:00:20:00 10:00:21:00 01:00:01:12 01:00:02:12
* FROM CLIP NAME: Night
"""


def test_markers_put_each_shot_and_its_state_on_the_editor_timeline(tmp_path):
    """Issue 23: a marker list (Resolve's marker EDL, CSV) with shot ids and states, at the shots' record in."""
    import csv

    cut = tmp_path / "marked.edl"
    cut.write_text(MARKED)
    db = f"sqlite:///{tmp_path / 'm.db'}"
    sheet = _with_prompts(cut, db, 24)
    store = Store.open(db)
    failed = store.start_take(sb.load(cut, rate=24, prompts=sheet).name, "night")
    store.fail_take(failed, "CUDA out of memory")
    store.engine.dispose()
    proc = milimo("markers", cut, "--prompts", sheet, "--db", db, "-o", tmp_path / "markers.edl")
    assert proc.returncode == 0 and "3 marker(s)" in proc.stdout, proc.stderr
    lines = (tmp_path / "markers.edl").read_text().splitlines()
    events = [line.split() for line in lines if line[:3].isdigit()]
    assert [e[-2] for e in events] == ["01:00:00:00", "01:00:01:00", "01:00:01:12"]  # each shot's record in
    comments = [line for line in lines if line.startswith(" |C:")]
    assert comments[0] == " |C:ResolveColorGreen |M:dawn: succeeded take 1 |D:24"
    assert comments[1].startswith(" |C:ResolveColorGreen |M:dusk: succeeded take 1") and comments[1].endswith("|D:12")
    assert comments[2] == " |C:ResolveColorGreen |M:night: succeeded take 1 (last try failed) |D:24"
    out = milimo("markers", cut, "--prompts", sheet, "--db", db, "--format", "csv")
    rows = list(csv.DictReader(out.stdout.splitlines()))
    assert [(r["shot_id"], r["record_in"], r["status"], r["colour"]) for r in rows] == [
        ("dawn", "01:00:00:00", "succeeded", "Green"), ("dusk", "01:00:01:00", "succeeded", "Green"),
        ("night", "01:00:01:12", "succeeded", "Green")]
    assert rows[1]["clip"] == "'=Dusk"  # a clip name a spreadsheet would run as a formula stays text
