"""A preview that follows the cut (issue 23): gaps as black of their length, generators and unrendered shots as
cards, a transition as the cut at its centre, a speed change retimed, the cut's exact rational rate, burn-ins
(shot, take, running source and record timecode) drawn by ffmpeg, and built part by part, so that a re-render of
one shot encodes one part again.

Before: the preview dropped gaps (the cut was shorter than the editor's), wrote 23.976 as 2997003/125000, joined
every shot in one ffmpeg call with one input per shot, and had no burn-ins."""

import json
import shutil
import subprocess
from pathlib import Path

import numpy as np
import opentimelineio as otio
import pytest
from opentimelineio.opentime import RationalTime, TimeRange

import storyboards as sb
from milimo.preview import FONTS, preview
from milimo_engine.media import ffmpeg_exe, read_frames, write_mp4
from storyboards.paths import OutputLayout
from storyboards.store import Store

pytestmark = pytest.mark.fast
RATE = 24000 / 1001
WIDTH, HEIGHT = 480, 320
COLOURS = {"a": (200, 30, 30), "b": (30, 200, 30), "fast": (30, 30, 200)}


def _clip(name: str, start: int, frames: int) -> otio.schema.Clip:
    clip = otio.schema.Clip(name=name, media_reference=otio.schema.MissingReference(),
                            source_range=TimeRange(RationalTime(start, RATE), RationalTime(frames, RATE)))
    clip.metadata["milimo"] = {"prompt": f"the {name} shot"}
    return clip


def _cut(folder: Path) -> sb.Storyboard:
    """A: 12 frames, a 5-frame gap, B: 10, a dissolve, Fast: 10 at 200 %, bars: 6, Miss: 7 (never rendered)."""
    timeline = otio.schema.Timeline("Preview cut")
    track = otio.schema.Track("V1")
    timeline.tracks.append(track)
    fast = _clip("Fast", 300, 10)
    fast.effects.append(otio.schema.LinearTimeWarp(time_scalar=2.0))
    bars = otio.schema.Clip(name="Bars", media_reference=otio.schema.GeneratorReference(generator_kind="SMPTEBars"),
                            source_range=TimeRange(RationalTime(0, RATE), RationalTime(6, RATE)))
    track.extend([_clip("A", 100, 12), otio.schema.Gap(duration=RationalTime(5, RATE)), _clip("B", 200, 10),
                  otio.schema.Transition(in_offset=RationalTime(2, RATE), out_offset=RationalTime(2, RATE)), fast,
                  bars, _clip("Miss", 400, 7)])
    path = folder / "preview-cut.otio"
    otio.adapters.write_to_file(timeline, str(path))
    return sb.load(path)


def _take(store: Store, board: sb.Storyboard, shot_id: str, folder: Path, frames: int, colour) -> None:
    """A finished take of `frames` frames of one colour, with silent sound."""
    video = np.empty((frames, HEIGHT, WIDTH, 3), np.uint8)
    video[:] = colour
    take = store.start_take(board.name, shot_id)
    mp4 = write_mp4(folder / f"{shot_id}-{take}.mp4", video, RATE,
                    np.zeros((2, round(frames / RATE * 48000)), np.float32), 48000)
    store.finish_take(take, outputs={"mp4": str(mp4), "frames": frames, "fps": RATE})


def _probe(path: Path) -> dict:
    proc = subprocess.run([shutil.which("ffprobe") or "ffprobe", "-v", "error", "-count_frames", "-show_entries",
                           "stream=codec_type,r_frame_rate,nb_read_frames", "-of", "json", str(path)],
                          capture_output=True, text=True)
    assert proc.returncode == 0, proc.stderr
    return {s["codec_type"]: s for s in json.loads(proc.stdout)["streams"]}


def _drawn(text: str, size: int, y: int) -> np.ndarray:
    """`text` as ffmpeg draws a still caption on black at (8, y): what a burn-in reading `text` looks like."""
    proc = subprocess.run([ffmpeg_exe(), "-v", "error", "-f", "lavfi", "-i", f"color=c=black:s={WIDTH}x{HEIGHT}",
                           "-vf", f"drawtext=fontfile={FONTS[0]}:text='{text.replace(':', chr(92) + ':')}':"
                           f"fontsize={size}:fontcolor=white:box=1:boxcolor=black@0.6:boxborderw=4:x=8:y={y}",
                           "-frames:v", "1", "-f", "rawvideo", "-pix_fmt", "rgb24", "-"], capture_output=True)
    assert proc.returncode == 0, proc.stderr
    return np.frombuffer(proc.stdout, np.uint8).reshape(HEIGHT, WIDTH, 3)


def test_the_preview_plays_the_cut_gaps_speed_and_cards_included_with_burn_ins(tmp_path):
    if not Path(FONTS[0]).is_file():
        pytest.fail("no DejaVu font: `make system` installs fonts-dejavu-core for the burn-ins")
    board = _cut(tmp_path)
    store = Store.open(f"sqlite:///{tmp_path / 'm.db'}")
    specs = sb.resolve_specs(board, "m")
    store.import_revision(board, specs)
    for shot in board.shots[:3]:
        _take(store, board, shot.shot_id, tmp_path, specs[shot.shot_id].num_frames, COLOURS[shot.shot_id])
    layout = OutputLayout.at(tmp_path / "out")
    warnings: list[str] = []
    path = preview(layout, board, store.status(board.name), warn=warnings.append)
    assert path is not None
    streams = _probe(path)
    duration = round(board.shots_track().duration().rescaled_to(RATE).value)
    assert duration == 50 and int(streams["video"]["nb_read_frames"]) == duration  # the gap and the bars included
    assert streams["video"]["r_frame_rate"] == "24000/1001" and "audio" in streams
    assert any("miss" in w for w in warnings)

    frames = read_frames(path)
    middle = frames[:, HEIGHT // 2, 40].astype(int)  # away from the burn-ins and the card's text
    expected = [COLOURS["a"]] * 12 + [(0, 0, 0)] * 5 + [COLOURS["b"]] * 10 + [COLOURS["fast"]] * 10 + \
        [(0, 0, 0)] * 6 + [(70, 70, 70)] * 7  # the dissolve: B then Fast at the cut; the miss: a grey card
    assert np.abs(middle - np.array(expected)).max() < 40, middle

    size = min(HEIGHT // 20, WIDTH // 24)
    rec_y = HEIGHT - (size + 10)
    box = (slice(rec_y - 6, rec_y + size + 6), slice(0, WIDTH // 2))
    for frame in (13, 14):  # in the gap: black under the record timecode's box
        right = np.abs(frames[frame][box].astype(int) - _drawn(f"REC 00:00:00:{frame:02d}", size, rec_y)[box]).mean()
        wrong = np.abs(frames[frame][box].astype(int) - _drawn(f"REC 00:00:00:{frame + 1:02d}", size, rec_y)[box]
                       ).mean()
        assert right < wrong / 2, (frame, right, wrong)  # the frame reads its own record timecode

    parts = sorted(layout.preview_parts(board.name).glob("*.mov"))
    assert len(parts) == 6  # A, the gap, B, Fast, the bars, the slate
    before = {p.name: p.stat().st_mtime_ns for p in parts}
    _take(store, board, "b", tmp_path, specs["b"].num_frames, (200, 200, 30))  # B rendered again
    preview(layout, board, store.status(board.name))
    after = {p.name: p.stat().st_mtime_ns for p in layout.preview_parts(board.name).glob("*.mov")}
    assert len(after) == 6 and len(set(after) - set(before)) == 1  # one part encoded again, its old one gone
    assert all(after[name] == before[name] for name in set(after) & set(before))  # the others reused as they were
    assert np.abs(read_frames(path)[20, HEIGHT // 2, WIDTH // 2].astype(int) - (200, 200, 30)).max() < 40
