"""What people look at after a render: the conformed timeline, a preview of the cut, a contact sheet."""

from __future__ import annotations

import subprocess
from pathlib import Path

from prefect import get_run_logger, task
from prefect.cache_policies import NO_CACHE

from milimo_engine.atomic import atomic_path

from .worker import store_for


@task(name="conform", cache_policy=NO_CACHE)
def conform_task(storyboard_path: str, board_name: str, db_url: str, out_dir: str, rate: float | None = None,
                 prompts: str | None = None, size: list[int] | None = None) -> str:
    """`<name>.rendered.otio`: the editor's cut with every take as a named media reference."""
    import storyboards
    from storyboards.conform import conform

    board = storyboards.load(storyboard_path, rate=rate, prompts=prompts, size=tuple(size) if size else None)
    if board.name != board_name:
        raise ValueError(f"{storyboard_path} is storyboard {board.name!r}, expected {board_name!r}")
    return str(conform(board, store_for(db_url), out_dir))


@task(name="preview", cache_policy=NO_CACHE)
def preview_task(board_name: str, db_url: str, out_dir: str) -> str | None:
    """preview.mp4: the current takes in timeline order, scaled to the first shot's size. A shot with no
    good take is not skipped: a slate of its length says so, and the log names it."""
    rows = store_for(db_url).status(board_name)
    good = {r.shot_id for r in rows if r.status == "succeeded" and r.outputs.get("mp4")}
    if not good:
        return None
    from milimo_engine.media import probe

    first = probe(next(r.outputs["mp4"] for r in rows if r.shot_id in good))
    clips = []
    for r in rows:
        if r.shot_id in good:
            clips.append(Path(r.outputs["mp4"]))
            continue
        get_run_logger().warning("preview: shot %s has no good take (%s); a slate stands in for it",
                                 r.shot_id, r.status)
        frames = int(r.outputs.get("frames") or 0) or _shot_frames(board_name, r.shot_id, db_url)
        clips.append(slate_mp4(f"{r.shot_id}: {r.status}", frames, float(first.fps), first.width, first.height,
                               first.audio_sample_rate, Path(out_dir) / ".slates" / f"{r.shot_id}.mp4"))
    return str(concat_mp4(clips, Path(out_dir) / "preview.mp4"))


def _shot_frames(board_name: str, shot_id: str, db_url: str) -> int:
    try:
        return int(store_for(db_url).spec_data(board_name, shot_id)["num_frames"])
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


@task(name="contact-sheet", cache_policy=NO_CACHE)
def contact_sheet_task(board_name: str, db_url: str, out_dir: str, qa: dict | None = None) -> str:
    """One cell per shot; under it, the seam into the next shot (score, FLAGGED) and its long-shot seams."""
    from storyboards.seams import SeamThresholds

    store = store_for(db_url)
    notes = seam_notes(store, board_name, SeamThresholds(**(qa or {})))
    cells = []
    for row in store.status(board_name):
        takes = store.takes(board_name, row.shot_id)
        latest = takes[-1].status if takes else None
        cells.append((row.shot_id, row.take_number, row.status, latest, row.outputs.get("thumbnail"),
                      notes.get(row.shot_id, [])))
    return str(contact_sheet(cells, Path(out_dir) / "contact_sheet.png"))


def seam_notes(store, board_name: str, thresholds) -> dict[str, list[str]]:
    """Each shot's seams (the cut after it, its segment boundaries) as short captions, by shot id."""
    notes: dict[str, list[str]] = {}
    for seam in store.seams(board_name):
        notes.setdefault(seam.left_shot_id, []).append(seam_note(seam, thresholds))
    return notes


def seam_note(seam, thresholds) -> str:
    """`-> boat cut 0.42` / `@48 seg 1.9 FLAGGED`: one seam as a short caption (scored on today's thresholds)."""
    from storyboards.seams import seam_verdict

    score, flagged = seam_verdict(seam, thresholds)
    where = f"@{seam.frame} seg" if seam.kind == "segment" else f"-> {seam.right_shot_id[:10]} {seam.kind}"
    return f"{where} {score:.2f}" + (" FLAGGED" if flagged else "")


def concat_mp4(clips: list[Path], target: Path) -> Path:
    """Concatenate mp4s (video and, when every clip has it, audio) into `target`, atomically."""
    from milimo_engine.media import ffmpeg_exe, probe

    infos = [probe(c) for c in clips]
    width, height = infos[0].width, infos[0].height
    with_audio = all(i.has_audio for i in infos)
    args = [ffmpeg_exe(), "-v", "error", "-y"]
    for c in clips:
        args += ["-i", str(c)]
    parts, chain = [], ""
    for i in range(len(clips)):
        parts.append(f"[{i}:v]scale={width}:{height}:force_original_aspect_ratio=decrease,"
                     f"pad={width}:{height}:(ow-iw)/2:(oh-ih)/2,setsar=1,fps={float(infos[0].fps):.6f}[v{i}]")
        chain += f"[v{i}]" + (f"[{i}:a]" if with_audio else "")
    graph = ";".join(parts) + f";{chain}concat=n={len(clips)}:v=1:a={1 if with_audio else 0}[v]" + (
        "[a]" if with_audio else "")
    with atomic_path(target) as tmp:
        args += ["-filter_complex", graph, "-map", "[v]"] + (["-map", "[a]", "-c:a", "aac"] if with_audio else []) + [
            "-c:v", "libx264", "-pix_fmt", "yuv420p", "-crf", "20", "-movflags", "+faststart", str(tmp)]
        proc = subprocess.run(args, capture_output=True, text=True)
        if proc.returncode != 0:
            raise RuntimeError(f"ffmpeg could not build {target}: {proc.stderr[-1500:]}")
    return target


def contact_sheet(cells: list[tuple[str, int | None, str, str | None, str | None, list[str]]], target: Path,
                  thumb: int = 192, columns: int = 5) -> Path:
    """One cell per shot: its thumbnail (or a grey slate) with shot id, take, status and its seams."""
    from PIL import Image, ImageDraw, ImageFont

    font = ImageFont.load_default()
    caption = 40 + 14 * max([len(cell[5]) for cell in cells] + [0])
    cols = max(1, min(columns, len(cells)))
    rows = max(1, -(-len(cells) // cols))
    sheet = Image.new("RGB", (cols * (thumb + 8) + 8, rows * (thumb + caption + 8) + 8), (24, 24, 24))
    draw = ImageDraw.Draw(sheet)
    colours = {"succeeded": (120, 220, 120), "failed": (240, 90, 90), "running": (240, 200, 80),
               "cancelled": (240, 160, 80)}
    for i, (shot_id, number, status, latest, thumb_path, seams) in enumerate(cells):
        x = 8 + (i % cols) * (thumb + 8)
        y = 8 + (i // cols) * (thumb + caption + 8)
        if thumb_path and Path(thumb_path).is_file() and status == "succeeded":
            img = Image.open(thumb_path).convert("RGB")
            img.thumbnail((thumb, thumb))
            sheet.paste(img, (x + (thumb - img.width) // 2, y + (thumb - img.height) // 2))
        else:
            draw.rectangle([x, y, x + thumb, y + thumb], fill=(70, 70, 70))
            draw.text((x + 8, y + thumb // 2), "no take", fill=(200, 200, 200), font=font)
        draw.text((x, y + thumb + 4), shot_id[:30], fill=(235, 235, 235), font=font)
        label = f"take {number} · {status}" if number else status
        if latest and latest != status:
            label += f" (last try {latest})"
        draw.text((x, y + thumb + 20), label[:40], fill=colours.get(status, (200, 200, 200)), font=font)
        for n, note in enumerate(seams):
            draw.text((x, y + thumb + 36 + 14 * n), note[:34], font=font,
                      fill=(240, 90, 90) if note.endswith("FLAGGED") else (170, 170, 170))
    with atomic_path(target) as tmp:
        sheet.save(tmp)
    return target
