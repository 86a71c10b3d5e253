"""What people look at after a render, built from the store without Prefect: the rendered timeline, a preview
of the cut (a slate where a shot has no good take) and a contact sheet. The flow's output tasks call these; so
can a script or the dashboard."""

from __future__ import annotations

import subprocess
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from milimo_engine.atomic import atomic_path
from storyboards.load import Storyboard
from storyboards.paths import OutputLayout
from storyboards.seams import SeamThresholds
from storyboards.store import SeamView, ShotStatus, Store

from .reports import seam_notes


def rendered_timeline(board: Storyboard, store: Store, layout: OutputLayout,
                      rows: list[ShotStatus] | None = None) -> Path:
    """`<source>.rendered.otio`: the editor's cut with every take as a named media reference."""
    from storyboards.conform import conform

    return conform(board, store, layout, rows)


@dataclass(frozen=True)
class Span:
    """What the preview plays of one clip: its frames [start, end) (a take's cut without its handles), played at
    `speed` (source frames per record frame; 0 holds the first frame) for `frames` record frames."""

    start: int
    end: int
    frames: int
    speed: float = 1.0


def preview(store: Store, layout: OutputLayout, board: Storyboard, rows: list[ShotStatus],
            warn: Callable[[str], None] = lambda _: None) -> Path | None:
    """preview.mp4: the current takes in timeline order, scaled to the first good take's size, each as long as
    its clip in the cut (a speed change or freeze retimed as the NLE will). A shot with no good take is not
    skipped: a slate of its length says so (and `warn` names it)."""
    good = {r.shot_id for r in rows if r.status == "succeeded" and r.outputs.mp4}
    if not good:
        return None
    from milimo_engine.media import stream_facts

    shots = {s.shot_id: s for s in board.shots}
    first = stream_facts(next(str(r.outputs.mp4) for r in rows if r.shot_id in good))
    clips: list[Path] = []
    spans: list[Span | None] = []
    for r in rows:
        shot = shots.get(r.shot_id)
        if r.shot_id in good:
            clips.append(Path(str(r.outputs.mp4)))
            head, tail, frames = int(r.outputs.head or 0), int(r.outputs.tail or 0), int(r.outputs.frames or 0)
            speed = shot.speed if shot is not None else 1.0
            spans.append(Span(head, frames - tail, shot.frames if shot is not None else frames - head - tail, speed)
                         if head or tail or speed != 1 else None)
            continue
        warn(f"preview: shot {r.shot_id} has no good take ({r.status}); a slate stands in for it")
        frames = shot.frames if shot is not None else int(r.outputs.frames or 0) or _spec_frames(store, board.name,
                                                                                                 r.shot_id)
        clips.append(slate_mp4(f"{r.shot_id}: {r.status}", frames, float(first.fps), first.width, first.height,
                               first.audio_sample_rate, layout.slate(board.name, r.shot_id)))
        spans.append(None)
    return concat_mp4(clips, layout.preview(board.name), spans)


def _spec_frames(store: Store, name: str, shot_id: str) -> int:
    try:
        return store.spec(name, shot_id).num_frames
    except LookupError:
        return 1


def slate_mp4(text: str, frames: int, fps: float, width: int, height: int, sample_rate: int | None,
              target: Path) -> Path:
    """A grey card with `text`, `frames` long, silent: what the preview shows for a shot with no good take."""
    import numpy as np
    from PIL import Image, ImageDraw

    from milimo_engine.media import write_mp4

    card = Image.new("RGB", (width, height), (70, 70, 70))
    ImageDraw.Draw(card).text((8, height // 2 - 6), text[:60], fill=(235, 235, 235))
    video = np.repeat(np.asarray(card)[None], max(1, frames), axis=0)
    audio = np.zeros((2, round(max(1, frames) / fps * sample_rate)), np.float32) if sample_rate else None
    return write_mp4(target, video, fps, audio, sample_rate)


def concat_mp4(clips: list[Path], target: Path, spans: list[Span | None] | None = None) -> Path:
    """Concatenate mp4s (video and, when every clip has it, audio) into `target`, atomically; `spans[i]`: what
    of clip i plays and how long (`Span`), None for all of it as it is."""
    from milimo_engine.media import ffmpeg_exe, stream_facts

    infos = [stream_facts(c) for c in clips]
    width, height, rate = infos[0].width, infos[0].height, float(infos[0].fps)
    with_audio = all(i.has_audio for i in infos)
    args = [ffmpeg_exe(), "-v", "error", "-y"]
    for c in clips:
        args += ["-i", str(c)]
    parts, chain = [], ""
    for i in range(len(clips)):
        span = spans[i] if spans else None
        parts.append(f"[{i}:v]{_picture(span, rate)}scale={width}:{height}:force_original_aspect_ratio=decrease,"
                     f"pad={width}:{height}:(ow-iw)/2:(oh-ih)/2,setsar=1,fps={rate:.6f}[v{i}]")
        if with_audio and span:
            parts.append(f"[{i}:a]{_sound(span, float(infos[i].fps))}[a{i}]")
        chain += f"[v{i}]" + ((f"[a{i}]" if span else f"[{i}:a]") if with_audio else "")
    graph = ";".join(parts) + f";{chain}concat=n={len(clips)}:v=1:a={1 if with_audio else 0}[v]" + (
        "[a]" if with_audio else "")
    with atomic_path(target) as tmp:
        args += ["-filter_complex", graph, "-map", "[v]"] + (["-map", "[a]", "-c:a", "aac"] if with_audio else []) + [
            "-c:v", "libx264", "-pix_fmt", "yuv420p", "-crf", "20", "-movflags", "+faststart", str(tmp)]
        proc = subprocess.run(args, capture_output=True, text=True)
        if proc.returncode != 0:
            raise RuntimeError(f"ffmpeg could not build {target}: {proc.stderr[-1500:]}")
    return target


def _picture(span: Span | None, rate: float) -> str:
    """The filters that play `span` of a clip: its frames, retimed to its record length at its speed (a freeze
    holds its one frame; a reverse plays backwards), exactly `span.frames` long."""
    if span is None:
        return ""
    picked = f"trim=start_frame={span.start}:end_frame={span.end},setpts=PTS-STARTPTS,"
    if span.speed == 1:
        return picked
    if span.speed == 0:
        picked = f"trim=start_frame={span.start}:end_frame={span.start + 1},setpts=PTS-STARTPTS,"
    else:
        picked += ("reverse," if span.speed < 0 else "") + f"setpts=PTS/{abs(span.speed):.6f},"
    return picked + f"fps={rate:.6f},tpad=stop_mode=clone:stop={span.frames},trim=end_frame={span.frames}," \
        "setpts=PTS-STARTPTS,"


def _sound(span: Span, fps: float) -> str:
    """The sound under `span`: its part of the take's audio, retimed with the picture where ffmpeg's atempo can
    (0.5× to 100×), silent under a freeze or a slower change, exactly the record length."""
    picked = f"atrim=start={span.start / fps:.6f}:end={span.end / fps:.6f},asetpts=PTS-STARTPTS"
    speed = abs(span.speed)
    if speed != 1:
        picked += (",areverse" if span.speed < 0 else "") + (f",atempo={speed:.6f}" if 0.5 <= speed <= 100
                                                             else ",volume=0")
    return picked + f",apad,atrim=end={span.frames / fps:.6f},asetpts=PTS-STARTPTS"


@dataclass(frozen=True)
class SheetCell:
    """One shot on the contact sheet."""

    shot_id: str
    take_number: int | None
    status: str
    latest: str | None  # the status of its newest take, when that is not the current one's
    thumbnail: str | None
    notes: tuple[str, ...] = ()


def contact_sheet(store: Store, layout: OutputLayout, name: str, rows: list[ShotStatus], seams: list[SeamView],
                  thresholds: SeamThresholds) -> Path:
    """One cell per shot; under it, the seam into the next shot (score, FLAGGED) and its long-shot seams."""
    notes = seam_notes(seams, thresholds)
    latest = store.latest_statuses(name)
    cells = [SheetCell(r.shot_id, r.take_number, r.status, latest.get(r.shot_id), r.outputs.thumbnail,
                       tuple(notes.get(r.shot_id, []))) for r in rows]
    return draw_contact_sheet(cells, layout.contact_sheet(name))


COLOURS = {"succeeded": (120, 220, 120), "failed": (240, 90, 90), "running": (240, 200, 80),
           "cancelled": (240, 160, 80)}


def draw_contact_sheet(cells: list[SheetCell], target: Path, thumb: int = 192, columns: int = 5) -> Path:
    """The cells as one picture: each thumbnail (or a grey slate) with shot id, take, status and its seams."""
    from PIL import Image, ImageDraw, ImageFont

    font = ImageFont.load_default()
    caption = 40 + 14 * max([len(cell.notes) for cell in cells] + [0])
    cols = max(1, min(columns, len(cells)))
    rows = max(1, -(-len(cells) // cols))
    sheet = Image.new("RGB", (cols * (thumb + 8) + 8, rows * (thumb + caption + 8) + 8), (24, 24, 24))
    draw = ImageDraw.Draw(sheet)
    for i, cell in enumerate(cells):
        x = 8 + (i % cols) * (thumb + 8)
        y = 8 + (i // cols) * (thumb + caption + 8)
        if cell.thumbnail and Path(cell.thumbnail).is_file() and cell.status == "succeeded":
            img = Image.open(cell.thumbnail).convert("RGB")
            img.thumbnail((thumb, thumb))
            sheet.paste(img, (x + (thumb - img.width) // 2, y + (thumb - img.height) // 2))
        else:
            draw.rectangle([x, y, x + thumb, y + thumb], fill=(70, 70, 70))
            draw.text((x + 8, y + thumb // 2), "no take", fill=(200, 200, 200), font=font)
        draw.text((x, y + thumb + 4), cell.shot_id[:30], fill=(235, 235, 235), font=font)
        label = f"take {cell.take_number} · {cell.status}" if cell.take_number else cell.status
        if cell.latest and cell.latest != cell.status:
            label += f" (last try {cell.latest})"
        draw.text((x, y + thumb + 20), label[:40], fill=COLOURS.get(cell.status, (200, 200, 200)), font=font)
        for n, note in enumerate(cell.notes):
            draw.text((x, y + thumb + 36 + 14 * n), note[:34], font=font,
                      fill=(240, 90, 90) if note.endswith("FLAGGED") else (170, 170, 170))
    with atomic_path(target) as tmp:
        sheet.save(tmp)
    return target
