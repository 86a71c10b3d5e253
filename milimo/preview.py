"""The preview: the cut as it plays, built part by part.

Each stretch of the shots track becomes one part: a take's cut (its handles trimmed, a speed change retimed to
its record length), a slate where a shot has no good take, black for a gap, a generator or a nested sequence.
Every part is encoded alike (size, exact rational rate, H.264, 48 kHz stereo PCM in QuickTime), so the preview is
their concatenation with the picture copied and the sound encoded once: ffmpeg holds one part at a time, whatever
the cut's length, and memory does not grow with the shot count. (PCM because AAC pads each part to whole frames of
1024 samples: joined, those pads would push every later shot a little later, a drift that grows with the cut.)
A part is named by a hash of what it shows, so a render that changes one shot encodes one part again and reuses
the others.

Burn-ins (shot, take, running source and record timecode) are drawn by ffmpeg, from text files so no shot name is
ever parsed as filter syntax.
"""

from __future__ import annotations

import contextlib
import fcntl
import hashlib
import subprocess
import tempfile
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from fractions import Fraction
from pathlib import Path

import opentimelineio as otio

from milimo_engine.atomic import atomic_path
from storyboards.editorial import counts_drop_frame, timecode
from storyboards.load import Storyboard, is_generator, is_shot
from storyboards.paths import OutputLayout
from storyboards.store import ShotStatus

PART_VERSION = 2  # bump when a part's encoding changes: every part is encoded again
SAMPLE_RATE = 48000
FONTS = ("/usr/share/fonts/truetype/dejavu/DejaVuSansMono.ttf", "/usr/share/fonts/truetype/dejavu/DejaVuSans.ttf",
         "/usr/share/fonts/dejavu/DejaVuSansMono.ttf", "/usr/share/fonts/TTF/DejaVuSansMono.ttf")


@dataclass(frozen=True)
class Span:
    """What a part plays of a take: its frames [start, end) (the cut without its handles), played at `speed`
    (source frames per record frame; 0 holds the first frame) for `frames` record frames."""

    start: int
    end: int
    frames: int
    speed: float = 1.0


@dataclass(frozen=True)
class Look:
    """What every part is encoded as, so that the parts join without re-encoding."""

    width: int
    height: int
    rate: Fraction
    drop_frame: bool = False


@dataclass(frozen=True)
class Part:
    """One stretch of the cut, `frames` long from record frame `record_in`: a take's span (`media`), else a card
    (`card` text on grey; None: black). `label` and `source_in` are its burn-in; `shot_id` the shot it plays, if
    any (the player's marks)."""

    frames: int
    record_in: int
    label: str
    shot_id: str | None = None
    media: str | None = None
    take_id: int | None = None
    span: Span | None = None
    card: str | None = None
    source_in: int | None = None

    def key(self, look: Look, burn_ins: bool) -> str:
        """What the part shows, hashed: the same take, span, card, size, rate and burn-in give the same file."""
        return hashlib.sha256(repr((PART_VERSION, self, look, burn_ins)).encode()).hexdigest()[:24]


def parts_of(board: Storyboard, rows: list[ShotStatus], verdicts: dict[str, str] | None = None) -> Iterator[Part]:
    """The shots track, item by item, as parts in record order. A transition takes no time of its own (it
    overlaps its neighbours), so each clip plays its own length: the cut lands where the transition is centred."""
    fps = board.fps
    by_id = {r.shot_id: r for r in rows}
    shots = iter(board.shots)
    position = board.record_start
    for item in board.shots_track():
        if isinstance(item, otio.schema.Transition):
            continue
        frames = round(item.duration().rescaled_to(fps).value)
        if frames <= 0:
            continue
        if is_shot(item):
            shot = next(shots)
            row = by_id.get(shot.shot_id)
            if row is not None and row.status == "succeeded" and row.outputs.mp4:
                head, tail, length = int(row.outputs.head or 0), int(row.outputs.tail or 0), int(row.outputs.frames
                                                                                                 or 0)
                verdict = (verdicts or {}).get(shot.shot_id)
                label = f"{shot.shot_id}  take {row.take_number}" + (f"  {verdict}" if verdict else "")
                yield Part(frames, position, label, shot.shot_id,
                           media=str(row.outputs.mp4),
                           take_id=row.take_id, span=Span(head, length - tail, frames, shot.speed),
                           source_in=shot.source_in)
            else:
                status = row.status if row is not None else "not rendered"
                yield Part(frames, position, shot.shot_id, shot.shot_id, card=f"{shot.shot_id}: {status}",
                           source_in=shot.source_in)
        elif is_generator(item):
            yield Part(frames, position, item.name or "generator")
        elif isinstance(item, otio.schema.Gap):
            yield Part(frames, position, "gap")
        else:
            yield Part(frames, position, item.name or "nested sequence", card=item.name or "nested sequence")
        position += frames


def preview(layout: OutputLayout, board: Storyboard, rows: list[ShotStatus],
            warn: Callable[[str], None] = lambda _: None, burn_ins: bool = True,
            verdicts: dict[str, str] | None = None) -> Path | None:
    """preview.mp4: the cut as it plays (see the module), at the first good take's size and the cut's exact rate;
    None while no shot has a good take. A shot with no good take is not skipped: a slate of its length says so
    (and `warn` names it). `verdicts`: by shot, its chosen take's review ("approved by Ada"), burnt in beside it."""
    from milimo_engine.media import rational_fps, stream_facts

    good = [r for r in rows if r.status == "succeeded" and r.outputs.mp4]
    if not good:
        return None
    facts = stream_facts(str(good[0].outputs.mp4))
    look = Look(facts.width, facts.height, rational_fps(board.fps), counts_drop_frame(board.fps, board.drop_frame))
    font = _font() if burn_ins else None
    if burn_ins and font is None:
        warn("preview: no font for burn-ins (install fonts-dejavu-core); the preview has none")
    folder = layout.preview_parts(board.name)
    with _building(folder):
        files = []
        for part in parts_of(board, rows, verdicts):
            if part.card and part.source_in is not None:
                warn(f"preview: shot {part.card}, no good take; a slate stands in for it")
            target = folder / f"{part.key(look, font is not None)}.mov"
            if not target.is_file():
                encode_part(part, look, target, font)
            files.append(target)
        out = join_parts(files, layout.preview(board.name))
        for stale in folder.glob("[!.]*.mov"):  # parts no longer in the cut (not the hidden ones being written)
            if stale not in files:
                stale.unlink(missing_ok=True)
    return out


@contextlib.contextmanager
def _building(folder: Path) -> Iterator[None]:
    """One preview of a storyboard built at a time (renders of one storyboard may run at once): the next waits,
    then reuses the parts, and no build removes a part another is about to join."""
    folder.mkdir(parents=True, exist_ok=True)
    with open(folder / ".lock", "a+") as handle:
        fcntl.flock(handle, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(handle, fcntl.LOCK_UN)


def encode_part(part: Part, look: Look, target: Path, font: str | None) -> Path:
    """One part as its own file (atomically), exactly `part.frames` long, with sound (the take's, else silence)."""
    from milimo_engine.media import X264_PRESET, ffmpeg_exe, stream_facts

    rate, seconds = look.rate, part.frames / look.rate
    size = f"{look.width}x{look.height}"
    with tempfile.TemporaryDirectory(prefix="milimo-part-") as scratch:
        args = [ffmpeg_exe(), "-v", "error", "-y"]
        if part.media:
            facts = stream_facts(part.media)
            args += ["-i", part.media]
            picture = f"[0:v]{_picture(part.span or Span(0, part.frames, part.frames), rate)}"
            sound = f"[0:a]{_sound(part.span or Span(0, part.frames, part.frames), facts.fps)}" if facts.has_audio \
                else None
        else:
            grey = "0x464646" if part.card else "black"
            args += ["-f", "lavfi", "-i", f"color=c={grey}:s={size}:r={rate}"]
            picture, sound = "[0:v]", None
        args += ["-f", "lavfi", "-i", f"anullsrc=r={SAMPLE_RATE}:cl=stereo"]
        picture += (f"scale={look.width}:{look.height}:force_original_aspect_ratio=decrease,"
                    f"pad={look.width}:{look.height}:(ow-iw)/2:(oh-ih)/2,setsar=1,fps={rate}")
        if part.card and font:
            picture += "," + _text(Path(scratch) / "card.txt", part.card, font, "(w-text_w)/2", "(h-text_h)/2",
                                   look.height // 14)
        if font:
            picture += "," + _burn_ins(part, look, font, Path(scratch))
        picture += f",trim=end_frame={part.frames},setpts=PTS-STARTPTS[v]"
        sound = (sound or "[1:a]anull") + (f",aresample={SAMPLE_RATE},aformat=channel_layouts=stereo,apad,"
                                           f"atrim=end={float(seconds):.6f},asetpts=PTS-STARTPTS[a]")
        with atomic_path(target) as tmp:
            args += ["-filter_complex", f"{picture};{sound}", "-map", "[v]", "-map", "[a]",
                     "-frames:v", str(part.frames), "-r", str(rate), "-c:v", "libx264", "-preset", X264_PRESET,
                     "-pix_fmt", "yuv420p", "-crf", "20", "-g", "48", "-c:a", "pcm_s16le", "-ar", str(SAMPLE_RATE),
                     "-ac", "2", "-f", "mov", str(tmp)]
            proc = subprocess.run(args, capture_output=True, text=True,
                                  start_new_session=True)  # a stop signal to the render lets the part finish
            if proc.returncode != 0:
                raise RuntimeError(f"ffmpeg could not build the preview part {part.label!r}: {proc.stderr[-1500:]}")
    return target


def join_parts(files: list[Path], target: Path) -> Path:
    """The parts one after another, the picture copied (they were encoded alike) and the sound encoded once,
    written atomically."""
    from milimo_engine.media import ffmpeg_exe

    with tempfile.TemporaryDirectory(prefix="milimo-preview-") as scratch:
        listing = Path(scratch) / "parts.txt"
        listing.write_text("".join("file '" + str(f.resolve()).replace("'", "'\\''") + "'\n" for f in files))
        with atomic_path(target) as tmp:
            proc = subprocess.run([ffmpeg_exe(), "-v", "error", "-y", "-f", "concat", "-safe", "0", "-i", str(listing),
                                   "-c:v", "copy", "-c:a", "aac", "-b:a", "192k", "-movflags", "+faststart",
                                   "-f", "mp4", str(tmp)],
                                  capture_output=True, text=True,
                                  start_new_session=True)  # a stop signal to the render lets the join finish
            if proc.returncode != 0:
                raise RuntimeError(f"ffmpeg could not join the preview {target}: {proc.stderr[-1500:]}")
    return target


def _picture(span: Span, rate: Fraction) -> str:
    """The filters that play `span` of a take: its frames, retimed to its record length at its speed (a freeze
    holds its one frame; a reverse plays backwards), padded to exactly `span.frames` (then cut to it)."""
    end = span.start + 1 if span.speed == 0 else span.end
    picked = f"trim=start_frame={span.start}:end_frame={end},setpts=PTS-STARTPTS,"
    if span.speed not in (0, 1):
        picked += ("reverse," if span.speed < 0 else "") + f"setpts=PTS/{abs(span.speed):.6f},"
    return picked + f"fps={rate},tpad=stop_mode=clone:stop={span.frames},"


def _sound(span: Span, fps: Fraction) -> str:
    """The sound under `span`: its part of the take's audio, retimed with the picture where ffmpeg's atempo can
    (0.5× to 100×), silent under a freeze or a slower change (then padded to the part's length)."""
    picked = f"atrim=start={float(span.start / fps):.6f}:end={float(span.end / fps):.6f},asetpts=PTS-STARTPTS"
    speed = abs(span.speed)
    if speed != 1:
        picked += (",areverse" if span.speed < 0 else "") + (f",atempo={speed:.6f}" if 0.5 <= speed <= 100
                                                             else ",volume=0")
    return picked


def _burn_ins(part: Part, look: Look, font: str, scratch: Path) -> str:
    """The part's label top left; bottom left its running source timecode (a take's or a slate's) over the running
    record timecode, each on a dark box."""
    size = max(8, min(look.height // 20, look.width // 24))
    filters = [_text(scratch / "label.txt", part.label, font, "8", "8", size)]
    if part.source_in is not None:
        filters.append(_timecode("SRC", part.source_in, look, font, "8", f"h-{2 * size + 24}", size))
    filters.append(_timecode("REC", part.record_in, look, font, "8", f"h-{size + 10}", size))
    return ",".join(filters)


def _text(file: Path, text: str, font: str, x: str, y: str, size: int) -> str:
    file.write_text(text[:80], encoding="utf-8")
    return (f"drawtext=fontfile={_quoted(font)}:textfile={_quoted(str(file))}:expansion=none:fontsize={size}:"
            f"fontcolor=white:box=1:boxcolor=black@0.6:boxborderw=4:x={x}:y={y}")


def _timecode(prefix: str, frame: int, look: Look, font: str, x: str, y: str, size: int) -> str:
    """A running timecode from `frame`, counted at the look's rate (drop frame where the cut counts so)."""
    start = timecode(frame, float(look.rate), look.drop_frame).replace(":", "\\:").replace(";", "\\;")
    return (f"drawtext=fontfile={_quoted(font)}:text='{prefix}\\ ':timecode='{start}':rate={look.rate}:"
            f"fontsize={size}:fontcolor=white:box=1:boxcolor=black@0.6:boxborderw=4:x={x}:y={y}")


def _quoted(path: str) -> str:
    return "'" + path.replace("\\", "\\\\").replace("'", "\\'").replace(":", "\\:") + "'"


def _font() -> str | None:
    for candidate in FONTS:
        if Path(candidate).is_file():
            return candidate
    return None
