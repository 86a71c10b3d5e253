"""Reading a storyboard: anything OTIO reads (.otio, .otioz, FCP 7 XML, CMX 3600 EDL)."""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import opentimelineio as otio

from milimo_engine.hashing import file_sha256

from .schema import NAMESPACE, plain


@dataclass(frozen=True)
class Shot:
    """One clip on the shots track, with its raw milimo metadata (validated separately)."""

    index: int  # position among the shots (0-based)
    name: str
    shot_id: str
    shot_id_derived: bool  # True when no shot_id was in the metadata
    frames: int
    fps: float
    metadata: dict[str, Any]
    follows_gap: bool  # a gap (or non-clip item) sits between this and the previous shot
    start_frame: int  # position on the track, in frames


@dataclass(frozen=True)
class Storyboard:
    name: str
    source_path: Path
    source_sha256: str
    fps: float
    timeline_metadata: dict[str, Any]
    shots: tuple[Shot, ...]
    track_name: str
    timeline: otio.schema.Timeline = field(repr=False, compare=False)

    def shot(self, shot_id: str) -> Shot:
        for s in self.shots:
            if s.shot_id == shot_id:
                return s
        raise KeyError(f"no shot {shot_id!r} in {self.name}; shots are {[s.shot_id for s in self.shots]}")


def slug(name: str) -> str:
    s = re.sub(r"[^a-z0-9]+", "-", name.lower()).strip("-")
    return s or "shot"


def _shots_track(timeline: otio.schema.Timeline, wanted: str | None) -> otio.schema.Track:
    tracks = list(timeline.video_tracks())
    if not tracks:
        raise ValueError(f"{timeline.name!r} has no video track; a storyboard's shots are clips on a video track")
    if wanted:
        for track in tracks:
            if track.name == wanted:
                return track
        raise ValueError(f"shots track {wanted!r} not found; video tracks are {[t.name for t in tracks]}")
    return tracks[0]


def load(path: str | Path, shots_track: str | None = None) -> Storyboard:
    """Load a storyboard. Shots are the clips of the shots track (timeline metadata
    `shots_track`, else the first video track); gaps and other tracks are kept, not rendered."""
    p = Path(path)
    timeline = otio.adapters.read_from_file(str(p))
    if isinstance(timeline, otio.schema.SerializableCollection):
        timelines = list(timeline.find_children(descended_from_type=otio.schema.Timeline))
        if not timelines:
            raise ValueError(f"{p} holds no timeline")
        timeline = timelines[0]
    meta = plain(timeline.metadata.get(NAMESPACE, {})) or {}
    track = _shots_track(timeline, shots_track or meta.get("shots_track"))
    rate = None
    shots: list[Shot] = []
    seen: dict[str, int] = {}
    previous_was_clip = False
    position = 0
    for item in track:
        duration = item.duration()
        if rate is None and duration.rate > 0:
            rate = duration.rate
        length = round(duration.rescaled_to(rate).value) if rate else round(duration.value)
        if isinstance(item, otio.schema.Clip):
            clip_meta = plain(item.metadata.get(NAMESPACE, {})) or {}
            name = item.name or f"clip {len(shots) + 1}"
            explicit = clip_meta.get("shot_id")
            if explicit:
                shot_id, derived = str(explicit), False
            else:
                base = slug(name)
                seen[base] = seen.get(base, 0) + 1
                shot_id = base if seen[base] == 1 else f"{base}-{seen[base]}"
                derived = True
            shots.append(Shot(len(shots), name, shot_id, derived, length, float(rate or duration.rate), clip_meta,
                              follows_gap=bool(shots) and not previous_was_clip, start_frame=position))
            previous_was_clip = True
        elif isinstance(item, otio.schema.Transition):
            continue
        else:
            previous_was_clip = False
        position += length
    return Storyboard(timeline.name or p.stem, p, file_sha256(p), float(rate or 24.0), meta, tuple(shots), track.name,
                      timeline)
