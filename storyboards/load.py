"""Reading a storyboard: anything OTIO reads (.otio, .otioz, FCP 7 XML, CMX 3600 EDL)."""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import opentimelineio as otio

from milimo_engine.hashing import file_sha256

from .errors import StoryboardFileError, UnknownShot
from .fields import slug, unsafe_id
from .schema import NAMESPACE, plain

CUT_FORMATS = {".otio": "otio_json", ".otioz": "otioz", ".xml": "fcp_xml", ".edl": "cmx_3600"}
EXPORT_FIX = "export the cut again as .otio, .otioz, FCP 7 XML (.xml) or CMX 3600 EDL (.edl)"


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
    overridden: frozenset[str] = frozenset()  # keys set by stored or new overrides, not by the file


@dataclass(frozen=True)
class Storyboard:
    name: str  # the store's key: metadata `storyboard_id`, else the timeline's name, else the file stem
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
        raise UnknownShot(self.name, shot_id, [s.shot_id for s in self.shots])


def _shots_track(p: Path, timeline: otio.schema.Timeline, wanted: str | None) -> otio.schema.Track:
    tracks = list(timeline.video_tracks())
    if not tracks:
        raise StoryboardFileError(p, "the timeline has no video track; a storyboard's shots are clips on a video "
                                  "track", "put the shots on a video track (audio-only cuts cannot render)")
    if wanted:
        for track in tracks:
            if track.name == wanted:
                return track
        raise StoryboardFileError(p, f"shots track {wanted!r} not found; video tracks are {[t.name for t in tracks]}",
                                  "set shots_track to one of those names")
    return tracks[0]


def _read_timeline(p: Path, rate: float | None) -> otio.schema.Timeline:
    """The file's timeline, or a StoryboardFileError saying what is wrong with the file and the fix."""
    if not p.exists():
        raise StoryboardFileError(p, "no such file", "check the path")
    if not p.is_file():
        raise StoryboardFileError(p, "is not a file", "give the path of a storyboard file")
    adapter = CUT_FORMATS.get(p.suffix.lower())
    if adapter is None:
        raise StoryboardFileError(p, f"{p.suffix or 'no suffix'} is not a cut format milimo reads", EXPORT_FIX)
    try:
        with open(p, "rb") as fh:
            fh.read(1)
    except OSError as exc:
        raise StoryboardFileError(p, f"cannot be read ({exc.strerror})", "make the file readable") from None
    kwargs = {"rate": float(rate)} if rate and adapter == "cmx_3600" else {}
    try:
        if adapter == "otio_json":
            try:
                doc = json.loads(p.read_text(encoding="utf-8"))
            except (ValueError, UnicodeDecodeError) as exc:
                raise StoryboardFileError(p, f"is not OpenTimelineIO JSON (truncated or damaged: {exc})",
                                          "export it again, or restore it from a backup") from None
            if not isinstance(doc, dict) or "OTIO_SCHEMA" not in doc:
                raise StoryboardFileError(p, "is JSON but not an OpenTimelineIO file (no OTIO_SCHEMA)", EXPORT_FIX)
        result = otio.adapters.read_from_file(str(p), adapter_name=adapter, **kwargs)
    except StoryboardFileError:
        raise
    except otio.exceptions.UnsupportedSchemaError as exc:
        raise StoryboardFileError(
            p, f"was written by a newer OpenTimelineIO ({_newer_schemas(p) or exc}; this milimo has opentimelineio "
               f"{otio.__version__})", "upgrade opentimelineio, or write the file for this version "
               "(otio's write_to_file(..., target_schema_versions=...))") from None
    except Exception as exc:  # the adapters raise plain ValueErrors and their own types for bad files
        text = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        if "rate" in text.lower() and adapter == "cmx_3600":
            raise StoryboardFileError(p, f"the EDL's timecodes do not fit {rate or 24:g} fps ({text})",
                                      "give the cut's frame rate with --rate FPS, e.g. --rate 25") from None
        raise StoryboardFileError(p, f"cannot be read as {adapter} ({text})", EXPORT_FIX) from None
    if isinstance(result, otio.schema.SerializableCollection):
        timelines = list(result.find_children(descended_from_type=otio.schema.Timeline))
        if not timelines:
            raise StoryboardFileError(p, "holds no timeline", EXPORT_FIX)
        result = timelines[0]
    if not isinstance(result, otio.schema.Timeline):
        raise StoryboardFileError(p, f"holds a {type(result).__name__}, not a timeline", EXPORT_FIX)
    return result


def _newer_schemas(p: Path) -> str:
    """The schemas in an .otio file newer than this OpenTimelineIO knows, e.g. "Marker.3 (knows Marker.2)"."""
    known = otio.core.type_version_map()
    found: set[str] = set()

    def walk(node) -> None:
        if isinstance(node, dict):
            schema = node.get("OTIO_SCHEMA")
            if isinstance(schema, str) and "." in schema:
                name, _, version = schema.rpartition(".")
                if version.isdigit() and int(version) > known.get(name, 10**9):
                    found.add(f"{schema} (knows {name}.{known[name]})")
            for value in node.values():
                walk(value)
        elif isinstance(node, list):
            for value in node:
                walk(value)

    try:
        walk(json.loads(p.read_text(encoding="utf-8")))
    except (OSError, ValueError):
        return ""
    return ", ".join(sorted(found))


def load(path: str | Path, shots_track: str | None = None, rate: float | None = None) -> Storyboard:
    """Load a storyboard. Shots are the clips of the shots track (timeline metadata
    `shots_track`, else the first video track); gaps and other tracks are kept, not rendered.
    `rate` is the frame rate of an EDL's timecodes (EDLs do not carry one)."""
    p = Path(path)
    timeline = _read_timeline(p, rate)
    meta = plain(timeline.metadata.get(NAMESPACE, {})) or {}
    if not isinstance(meta, dict):
        raise StoryboardFileError(p, "timeline metadata 'milimo' is not a table", "write it as an object of settings")
    track = _shots_track(p, timeline, shots_track or meta.get("shots_track"))
    track_rate = None
    shots: list[Shot] = []
    seen: dict[str, int] = {}
    previous_was_clip = False
    position = 0
    for item in track:
        duration = item.duration()
        if track_rate is None and duration.rate > 0:
            track_rate = duration.rate
        bad_rate = not duration.rate > 0  # refused by validation ("rate"), counted as 0 frames here
        length = 0 if bad_rate else round(duration.rescaled_to(track_rate).value)
        if isinstance(item, otio.schema.Clip):
            clip_meta = plain(item.metadata.get(NAMESPACE, {})) or {}
            if not isinstance(clip_meta, dict):
                clip_meta = {"_not_a_table": clip_meta}
            name = item.name or f"clip {len(shots) + 1}"
            explicit = clip_meta.get("shot_id")
            if explicit is not None:
                shot_id, derived = explicit if isinstance(explicit, str) else repr(explicit), False
            else:
                base = slug(name)
                seen[base] = seen.get(base, 0) + 1
                shot_id = base if seen[base] == 1 else f"{base}-{seen[base]}"
                derived = True
            shots.append(Shot(len(shots), name, shot_id, derived, length, 0.0 if bad_rate else float(track_rate),
                              clip_meta, follows_gap=bool(shots) and not previous_was_clip, start_frame=position))
            previous_was_clip = True
        elif isinstance(item, otio.schema.Transition):
            continue
        else:
            previous_was_clip = False
        position += length
    explicit_id = meta.get("storyboard_id")
    name = explicit_id if isinstance(explicit_id, str) and not unsafe_id(explicit_id) else (timeline.name or p.stem)
    return Storyboard(name, p, file_sha256(p), float(track_rate or 24.0), meta, tuple(shots), track.name, timeline)
