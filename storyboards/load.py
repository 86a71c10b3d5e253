"""Reading a storyboard: the cuts OTIO's adapters read (.otio, .otioz, FCP 7 XML, CMX 3600 EDL, AAF)."""

from __future__ import annotations

import dataclasses
import hashlib
import json
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import opentimelineio as otio

from milimo_engine.hashing import file_sha256
from milimo_engine.limits import DEFAULT_HANDLES

from .editorial import clip_reel, edl_header, rate_advice, timecode, timecode_rate, used_frames
from .errors import StoryboardFileError, UnknownShot
from .fields import derived_id, unsafe_id
from .schema import NAMESPACE, plain

CUT_FORMATS = {".otio": "otio_json", ".otioz": "otioz", ".xml": "fcp_xml", ".edl": "cmx_3600", ".aaf": "AAF"}
EXPORT_FIX = "export the cut again as .otio, .otioz, FCP 7 XML (.xml), CMX 3600 EDL (.edl) or AAF (.aaf)"


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
    source_in: int = 0  # the clip's first source frame, counted at the sequence rate (its source timecode)
    record_in: int = 0  # where it sits in the sequence, in frames from 00:00:00:00 (the record timecode)
    reel: str | None = None  # the reel or tape name the editor's export carries
    drop_frame: bool | None = None  # the cut's timecode: non-drop at 29.97 when its EDL says so; None: by rate
    speed: float = 1.0  # source frames per record frame: the clip's speed change (2.0: 200 %), 0 for a freeze

    @property
    def source_frames(self) -> int:
        """The frames of source the cut plays (what the take renders between its handles): the record length at
        the clip's speed, one frame for a freeze. The editor's record length (`frames`) is never changed; the
        conformed clip keeps its effect and the NLE retimes the take."""
        return used_frames(self.frames, self.speed) if self.frames > 0 else self.frames

    @property
    def source_timecode(self) -> str:
        return timecode(self.source_in, self.fps, self.drop_frame) if self.fps > 0 else "00:00:00:00"

    @property
    def record_timecode(self) -> str:
        return timecode(self.record_in, self.fps, self.drop_frame) if self.fps > 0 else "00:00:00:00"


@dataclass(frozen=True)
class Generator:
    """A clip the editor's system generates (black, bars, a matte, a title, a counting leader): on the shots track
    where a shot would be, kept in the cut and the shot list, never rendered."""

    name: str
    kind: str  # OTIO's generator_kind: black, SMPTEBars, a title's effect name...
    start_frame: int
    frames: int


def clip_speed(clip: otio.schema.Clip) -> float:
    """Source frames per record frame of a clip's time effects: a LinearTimeWarp's scalar (a FreezeFrame is one of
    scalar 0), multiplied when there are several; 1 without one."""
    scalar = 1.0
    for effect in clip.effects:
        if isinstance(effect, otio.schema.LinearTimeWarp):
            scalar *= effect.time_scalar
    return scalar


def is_generator(item: otio.core.Composable) -> bool:
    return isinstance(item, otio.schema.Clip) and isinstance(item.media_reference, otio.schema.GeneratorReference)


def is_shot(item: otio.core.Composable) -> bool:
    """A clip of the shots track that renders: any clip but a generator."""
    return isinstance(item, otio.schema.Clip) and not is_generator(item)


@dataclass(frozen=True)
class NestedStack:
    """A nested sequence (an OTIO Stack) sitting on the shots track where a clip would be."""

    name: str
    start_frame: int
    frames: int


@dataclass(frozen=True)
class Storyboard:
    name: str  # the store's key: metadata `storyboard_id`, else the timeline's name, else the file stem
    source_path: Path
    source_sha256: str
    fps: float
    timeline_metadata: dict[str, Any]
    shots: tuple[Shot, ...]
    track_name: str  # the shots track as a person names it: its name, or `V2` for an unnamed second video track
    timeline: otio.schema.Timeline = field(repr=False, compare=False)
    prompts_path: Path | None = None  # the shot list the prompts came from, for a cut imported in memory
    nested: tuple[NestedStack, ...] = ()  # nested sequences on the shots track: refused by validation, not dropped
    generators: tuple[Generator, ...] = ()  # black, bars, titles on the shots track: listed, not rendered
    drop_frame: bool | None = None  # an EDL's FCM (False: non-drop even at 29.97); None: drop frame by rate
    record_start: int = 0  # the sequence's first record frame (01:00:00:00 is 90000 at 25 fps), at `fps`
    edl_style: str = "avid"  # an EDL cut's comment style (avid, nucoda, premiere): its conformed EDL keeps it

    def clips(self, timeline: otio.schema.Timeline | None = None) -> list[otio.schema.Clip]:
        """The shots' clips, in order, in this storyboard's timeline or in a copy of it."""
        timeline = timeline if timeline is not None else self.timeline
        return [item for item in self.shots_track(timeline) if is_shot(item)]

    def shots_track(self, timeline: otio.schema.Timeline | None = None) -> otio.schema.Track:
        """The shots track in this storyboard's timeline or in a copy of it."""
        found = video_track(timeline if timeline is not None else self.timeline, self.track_name)
        assert found is not None, self.track_name
        return found

    def shot(self, shot_id: str) -> Shot:
        for s in self.shots:
            if s.shot_id == shot_id:
                return s
        raise UnknownShot(self.name, shot_id, [s.shot_id for s in self.shots])


def write_timeline(timeline: otio.schema.Timeline, target: str | Path, adapter: str = "otio_json",
                   **options: Any) -> Path:
    """The one way a timeline is written: through an OTIO adapter, under a temporary name, then renamed."""
    from milimo_engine.atomic import atomic_write

    return atomic_write(Path(target), lambda tmp: otio.adapters.write_to_file(timeline, str(tmp),
                                                                              adapter_name=adapter, **options))


def track_label(timeline: otio.schema.Timeline, track: otio.schema.Track) -> str:
    """How a person names a video track: its name, or `V<n>` as editors number them when the export has none."""
    if track.name:
        return track.name
    return f"V{next(i for i, t in enumerate(timeline.video_tracks(), start=1) if t is track)}"


def video_track(timeline: otio.schema.Timeline, wanted: str) -> otio.schema.Track | None:
    """The video track named `wanted`, or numbered so (`V2`: the second, as FCP XML and EDL tracks are unnamed)."""
    tracks = list(timeline.video_tracks())
    named = [t for t in tracks if t.name == wanted]
    if named:
        return named[0]
    number = wanted[1:] if wanted[:1] in "Vv" else ""
    if number.isascii() and number.isdigit() and 1 <= int(number) <= len(tracks):
        return tracks[int(number) - 1]
    return None


def video_track_labels(timeline: otio.schema.Timeline) -> list[str]:
    return [track_label(timeline, t) for t in timeline.video_tracks()]


def _shots_track(p: Path, timeline: otio.schema.Timeline, wanted: str | None) -> otio.schema.Track:
    tracks = list(timeline.video_tracks())
    if not tracks:
        raise StoryboardFileError(p, "the timeline has no video track; a storyboard's shots are clips on a video "
                                  "track", "put the shots on a video track (audio-only cuts cannot render)")
    if wanted:
        found = video_track(timeline, wanted)
        if found is None:
            raise StoryboardFileError(p, f"shots track {wanted!r} not found; video tracks are "
                                      f"{video_track_labels(timeline)}",
                                      "give --shots-track (or the timeline's shots_track) one of those")
        return found
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
        if adapter == "cmx_3600" and ("rate" in text.lower() or "duration" in text.lower()):
            # Timecodes read at the wrong rate show as a bad rate or as source and record lengths that disagree.
            raise StoryboardFileError(p, *rate_advice(p, rate)) from None
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
                if version.isascii() and version.isdigit() and int(version) > known.get(name, 10**9):
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


def sequence_rate(p: Path, timeline: otio.schema.Timeline, track: otio.schema.Track, rate: float | None) -> float:
    """The rate every shot is counted in: an EDL's --rate, else the sequence's own (its start timecode's rate),
    else the first item's. A clip at another rate (15 fps footage in a 30 fps sequence) is rescaled to it."""
    edl = p.suffix.lower() == ".edl"
    own = timeline.global_start_time.rate if timeline.global_start_time is not None else None
    if own is None:
        own = next((item.duration().rate for item in track if item.duration().rate > 0), None)
    if rate and not edl and own and abs(own - rate) > 1e-3:
        raise StoryboardFileError(p, f"the sequence runs at {own:g} fps but --rate says {rate:g}",
                                  f"leave --rate out (only an EDL needs it) or give --rate {own:g}")
    return float(rate if rate and edl else own or rate or 24.0)


def load(path: str | Path, shots_track: str | None = None, rate: float | None = None,
         prompts: str | Path | None = None, size: tuple[int, int] | None = None,
         handles: int | None = None) -> Storyboard:
    """Load a storyboard. Shots are the clips of the shots track (timeline metadata
    `shots_track`, else the first video track); gaps and other tracks are kept, not rendered.
    `rate` is the frame rate of an EDL's timecodes (EDLs do not carry one). With `prompts` (a shot list
    CSV, `storyboards.shotlist`), an editor's cut becomes a storyboard in memory: the CSV fills each clip's
    `metadata["milimo"]`, `size` ((width, height)) sets the default size and `handles` the default handles
    (`DEFAULT_HANDLES` when None)."""
    p = Path(path)
    rate = timecode_rate(rate)
    timeline = _read_timeline(p, rate)
    sha = file_sha256(p)
    if prompts is not None:
        from .shotlist import apply_shotlist, read_shotlist

        bare = from_timeline(timeline, p, sha, shots_track, rate)
        timeline = apply_shotlist(bare, read_shotlist(prompts), size,
                                  DEFAULT_HANDLES if handles is None else handles)
        sha = hashlib.sha256(f"{sha}:{file_sha256(Path(prompts))}".encode()).hexdigest()
        board = from_timeline(timeline, p, sha, shots_track, rate)
        return dataclasses.replace(board, prompts_path=Path(prompts))
    return from_timeline(timeline, p, sha, shots_track, rate)


def _repeated_names(track: otio.schema.Track) -> set[str]:
    """Clip names used more than once on the track: their derived ids also hash their source (reel, source-in)."""
    counts = Counter(item.name for item in track if is_shot(item) and item.name)
    return {name for name, count in counts.items() if count > 1}


def _derived_shot_id(name: str, salt: str, taken: set[str]) -> str:
    """The shot id of a clip without one: from its name (and, for a repeated name, its source), not its position,
    so a re-cut that moves or swaps clips keeps each clip's id (and its prompts, takes and overrides)."""
    base = shot_id = derived_id(name, "shot", salt)
    number = 1
    while shot_id in taken:  # the same name at the same source twice: only then does order decide
        number += 1
        shot_id = f"{base}-{number}"
    return shot_id


def from_timeline(timeline: otio.schema.Timeline, p: Path, sha: str, shots_track: str | None = None,
                  rate: float | None = None) -> Storyboard:
    """The storyboard a timeline read from `p` (content hash `sha`) describes."""
    meta = plain(timeline.metadata.get(NAMESPACE, {})) or {}
    if not isinstance(meta, dict):
        raise StoryboardFileError(p, "timeline metadata 'milimo' is not a table", "write it as an object of settings")
    track = _shots_track(p, timeline, shots_track or meta.get("shots_track"))
    track_rate = sequence_rate(p, timeline, track, rate)
    start = _record_start(timeline, track, track_rate)
    style, drop = edl_header(p)
    shots: list[Shot] = []
    nested: list[NestedStack] = []
    generators: list[Generator] = []
    repeated = _repeated_names(track)
    taken: set[str] = set()
    previous_was_clip = False
    position = 0
    for item in track:
        duration = item.duration()
        bad_rate = not duration.rate > 0  # refused by validation ("rate"), counted as 0 frames here
        length = 0 if bad_rate else round(duration.rescaled_to(track_rate).value)
        if is_generator(item):
            generators.append(Generator(item.name or "generator", str(item.media_reference.generator_kind or "?"),
                                        position, length))
            previous_was_clip = False
        elif isinstance(item, otio.schema.Clip):
            clip_meta = plain(item.metadata.get(NAMESPACE, {})) or {}
            if not isinstance(clip_meta, dict):
                clip_meta = {"_not_a_table": clip_meta}
            name = item.name or f"clip {len(shots) + 1}"
            source = item.source_range or (item.media_reference.available_range if item.media_reference else None)
            source_in = round(source.start_time.rescaled_to(track_rate).value) \
                if source is not None and source.start_time.rate > 0 and not bad_rate else 0
            reel = clip_reel(item)
            explicit = clip_meta.get("shot_id")
            if explicit is not None:
                shot_id, derived = explicit if isinstance(explicit, str) else repr(explicit), False
            else:
                shot_id = _derived_shot_id(name, f"{reel}:{source_in}" if name in repeated else "", taken)
                derived = True
            taken.add(shot_id)
            shots.append(Shot(len(shots), name, shot_id, derived, length, 0.0 if bad_rate else float(track_rate),
                              clip_meta, follows_gap=bool(shots) and not previous_was_clip, start_frame=position,
                              source_in=source_in, record_in=start + position, reel=reel, drop_frame=drop,
                              speed=clip_speed(item)))
            previous_was_clip = True
        elif isinstance(item, otio.schema.Transition):
            continue
        else:
            if isinstance(item, otio.schema.Stack):
                nested.append(NestedStack(item.name or f"nested sequence at frame {position}", position, length))
            previous_was_clip = False
        position += length
    explicit_id = meta.get("storyboard_id")
    name = explicit_id if isinstance(explicit_id, str) and not unsafe_id(explicit_id) else (timeline.name or p.stem)
    return Storyboard(name, p, sha, float(track_rate), meta, tuple(shots), track_label(timeline, track), timeline,
                      nested=tuple(nested), generators=tuple(generators), drop_frame=drop, record_start=start,
                      edl_style=style)


def _record_start(timeline: otio.schema.Timeline, track: otio.schema.Track, rate: float) -> int:
    """Where the sequence starts on the record side: its start timecode, or for an EDL (whose reader moves the
    first event to 0 and keeps the offset as the track's negative start) that offset."""
    if timeline.global_start_time is not None:
        return round(timeline.global_start_time.rescaled_to(rate).value)
    if track.source_range is not None and track.source_range.start_time.value < 0:
        return round(-track.source_range.start_time.rescaled_to(rate).value)
    return 0
