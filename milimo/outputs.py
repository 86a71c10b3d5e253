"""What people look at after a render, built from the store without Prefect: the rendered timeline and a contact
sheet (the preview is `milimo.preview`'s). The flow's output tasks call these; so can a script or the dashboard."""

from __future__ import annotations

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
class SheetCell:
    """One shot on the contact sheet."""

    shot_id: str
    take_number: int | None
    status: str
    latest: str | None  # the status of its newest take, when that is not the current one's
    thumbnail: str | None
    notes: tuple[str, ...] = ()


def contact_sheet(layout: OutputLayout, name: str, rows: list[ShotStatus], seams: list[SeamView],
                  thresholds: SeamThresholds) -> Path:
    """One cell per shot; under it, the seam into the next shot (score, FLAGGED) and its long-shot seams."""
    notes = seam_notes(seams, thresholds)
    cells = [SheetCell(r.shot_id, r.take_number, r.status, r.latest_status, r.outputs.thumbnail,
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
