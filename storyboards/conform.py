"""Conform: the editor's timeline, with each rendered shot pointing at its takes.

Every take with media becomes a named media reference (`take-N`); the shot's current take is
the active one. Source ranges stay as the editor cut them: each reference's available range
starts at the clip's source start, so the cut lands on the rendered frames one for one.
"""

from __future__ import annotations

import copy
from pathlib import Path

import opentimelineio as otio

from milimo_engine.atomic import atomic_write

from .fields import slug
from .load import Storyboard
from .schema import NAMESPACE
from .store import Store


def conform(board: Storyboard, store: Store, out_dir: str | Path) -> Path:
    """Write `<name>.rendered.otio` into `out_dir` (atomically) and return its path."""
    timeline = copy.deepcopy(board.timeline)
    track = next(t for t in timeline.video_tracks() if t.name == board.track_name)
    clips = [item for item in track if isinstance(item, otio.schema.Clip)]
    status = {r.shot_id: r.status for r in store.status(board.name)}
    for shot, clip in zip(board.shots, clips):
        takes = store.takes(board.name, shot.shot_id)
        current = store.current_take(board.name, shot.shot_id)
        references: dict[str, otio.schema.ExternalReference] = {}
        source = clip.source_range or clip.available_range()
        for take in takes:
            mp4 = take.outputs.get("mp4")
            if not mp4:
                continue
            frames = int(take.outputs.get("frames", shot.frames))
            rate = float(take.outputs.get("fps", shot.fps))
            ref = otio.schema.ExternalReference(
                target_url=Path(mp4).resolve().as_uri(),
                available_range=otio.opentime.TimeRange(source.start_time.rescaled_to(rate),
                                                        otio.opentime.RationalTime(frames, rate)))
            ref.name = f"take-{take.number}"
            ref.metadata[NAMESPACE] = {"take_id": take.id, "status": take.status, "spec_hash": take.spec_hash}
            references[f"take-{take.number}"] = ref
        # A shot with no good take keeps its clip and says so (status), never silently dropped.
        record = {"shot_id": shot.shot_id, "takes": [t.id for t in takes],
                  "current_take": current.id if current else None, "status": status.get(shot.shot_id)}
        if references:
            active = f"take-{current.number}" if current and f"take-{current.number}" in references \
                else next(reversed(references))
            clip.set_media_references(references, active)
        meta = dict(clip.metadata.get(NAMESPACE, {}))
        meta["render"] = record
        clip.metadata[NAMESPACE] = meta
    target = Path(out_dir) / f"{slug(board.source_path.stem, 'storyboard')}.rendered.otio"
    return atomic_write(target, lambda tmp: otio.adapters.write_to_file(timeline, str(tmp), adapter_name="otio_json"))
