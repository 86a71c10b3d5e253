"""Conform: the editor's timeline, with each rendered shot pointing at its takes.

Every take with media becomes a named media reference (`take-N`); the shot's current take is
the active one. Source ranges stay as the editor cut them: each reference's available range
starts at the clip's source start, so the cut lands on the rendered frames one for one (and the
take's mp4 carries that start as its timecode). An audio track mirrors the shots, each clip on the
take's own audio, so picture and sound arrive together in the editor.

The rendered `.otio` beside the takes references them by paths relative to itself (move the folder,
it still opens); `export` writes the same timeline through OpenTimelineIO's adapters for an editor:
FCP 7 XML and CMX 3600 with absolute file URLs, `.otioz` with the media bundled.
"""

from __future__ import annotations

import copy
import os
from pathlib import Path
from typing import Any, Protocol

import opentimelineio as otio

from milimo_engine.atomic import atomic_write

from .ale import TAKE_COLUMNS, ale_text, take_entries
from .deliver import edl_text, fitted, xml_text
from .editorial import counts_drop_frame
from .load import Storyboard, write_timeline
from .markers import NoteMarker, note_markers
from .paths import OutputLayout
from .schema import NAMESPACE, own_metadata


class TakeSource(Protocol):
    """What conform reads of a storyboard's takes (the store gives it; conform never opens one)."""

    def status(self, storyboard: str) -> list[Any]: ...

    def takes_by_shot(self, storyboard: str) -> dict[str, list[Any]]: ...

    def reviews(self, storyboard: str) -> list[Any]: ...

SOUND_TRACK = "milimo audio"  # the takes' sound, clip for clip under the shots
EXPORT_FORMATS = {"otio": ("otio_json", ".otio"), "otioz": ("otioz", ".otioz"), "fcp_xml": ("fcp_xml", ".xml"),
                  "cmx_3600": ("cmx_3600", ".edl"), "ale": ("ale", ".ale")}


def _url(mp4: str, relative_to: Path | None) -> str:
    path = Path(mp4).resolve()
    if relative_to is None:
        return path.as_uri()
    return Path(os.path.relpath(path, relative_to.resolve())).as_posix()


def conformed_timeline(board: Storyboard, store: TakeSource, relative_to: Path | None = None,
                       rows: list[Any] | None = None) -> otio.schema.Timeline:
    """A copy of the storyboard's timeline with every take as a media reference and an audio track.
    `relative_to`: a folder the references are relative to; None for absolute file URLs. `rows`: the status the
    caller read already."""
    timeline = copy.deepcopy(board.timeline)
    _record_start_kept(timeline, board)
    rows = rows if rows is not None else store.status(board.name)
    status = {r.shot_id: r.status for r in rows}
    current_ids = {r.shot_id: r.take_id for r in rows}
    every_take = store.takes_by_shot(board.name)  # one read for the whole cut, not two per shot
    reviews = store.reviews(board.name)
    verdicts = {(r.shot_id, r.take_id): r for r in reviews}
    review_markers: dict[str, list[NoteMarker]] = {}
    for marker in note_markers(board, rows, reviews):
        review_markers.setdefault(marker.shot_id, []).append(marker)
    clips = board.clips(timeline)
    audio_refs: dict[int, tuple[dict, str]] = {}
    for shot, clip in zip(board.shots, clips, strict=False):
        takes = every_take.get(shot.shot_id, [])
        current = next((t for t in takes if t.id == current_ids.get(shot.shot_id)), None)
        references: dict[str, otio.schema.ExternalReference] = {}
        source = clip.source_range or clip.available_range()
        clip.source_range = source  # a clip without one gets it: every format places clips by their source range
        for take in takes:
            ref = _take_reference(take, shot, source, relative_to)
            if ref is not None:
                references[f"take-{take.number}"] = ref
        # A shot with no good take keeps its clip and says so (status), never silently dropped.
        verdict = verdicts.get((shot.shot_id, current.id)) if current else None
        record = {"shot_id": shot.shot_id, "takes": [t.id for t in takes],
                  "current_take": current.id if current else None, "status": status.get(shot.shot_id),
                  "review": verdict.said if verdict else None}
        if references:
            active = f"take-{current.number}" if current and f"take-{current.number}" in references \
                else next(reversed(references))
            clip.set_media_references(references, active)
            _identified_by(clip, references[active])
            audio_refs[id(clip)] = ({active: copy.deepcopy(references[active])}, active)
        else:  # offline, a clip of its own: never the cut's plate, never one file shared by every unrendered shot
            clip.media_reference = otio.schema.MissingReference(name=f"{shot.shot_id} (not rendered)",
                                                                metadata={NAMESPACE: {"shot_id": shot.shot_id}})
        for marker in review_markers.get(shot.shot_id, []):
            clip.markers.append(_review_marker(marker, shot.record_in, source, board.fps))
        own_metadata(clip, NAMESPACE)["render"] = record
    track = board.shots_track(timeline)
    audio = otio.schema.Track(name=SOUND_TRACK, kind=otio.schema.TrackKind.Audio)
    for item in track:
        if isinstance(item, otio.schema.Transition):
            continue  # a transition overlaps its neighbours and takes no time of its own
        if isinstance(item, otio.schema.Clip) and id(item) in audio_refs:
            refs, active = audio_refs[id(item)]
            sound = otio.schema.Clip(name=item.name, source_range=item.source_range,
                                     effects=[copy.deepcopy(e) for e in item.effects
                                              if isinstance(e, otio.schema.LinearTimeWarp)])  # retimed as one
            sound.set_media_references(refs, active)
            audio.append(sound)
        else:
            audio.append(otio.schema.Gap(duration=item.duration()))
    timeline.tracks.append(audio)
    return timeline


OTIO_COLOURS = {"Green": otio.schema.MarkerColor.GREEN, "Yellow": otio.schema.MarkerColor.YELLOW,
                "Red": otio.schema.MarkerColor.RED, "Blue": otio.schema.MarkerColor.BLUE,
                "Cyan": otio.schema.MarkerColor.CYAN}


def _review_marker(marker: NoteMarker, record_in: int, source: otio.opentime.TimeRange,
                   fps: float) -> otio.schema.Marker:
    """A verdict or note as a marker on its clip, at the frames of the cut it is about (the clip's media time)."""
    rate = source.start_time.rate
    offset = otio.opentime.RationalTime(marker.record_in - record_in, fps).rescaled_to(rate)
    return otio.schema.Marker(
        name=marker.name, color=OTIO_COLOURS.get(marker.colour, otio.schema.MarkerColor.BLUE),
        marked_range=otio.opentime.TimeRange(source.start_time + offset,
                                             otio.opentime.RationalTime(marker.frames, fps).rescaled_to(rate)),
        metadata={NAMESPACE: {"review": marker.review, "author": marker.author, "take": marker.take,
                              "where": marker.where, "note": marker.text,
                              "at": marker.at.isoformat() if marker.at else None}})


def _take_reference(take: Any, shot: Any, source: otio.opentime.TimeRange,
                    relative_to: Path | None) -> otio.schema.ExternalReference | None:
    """A take as media an editor conforms: its QuickTime (its mp4 for takes from before there was one), starting
    at the clip's source-in less its head handle and running past the cut by its tail handle (what the editor can
    trim, slip and dissolve into), with its own reel and timecode where FCP XML keeps them."""
    media = take.outputs.mov or take.outputs.mp4
    if not media:
        return None
    frames = int(take.outputs.frames or shot.frames)  # the media's: head handle + the cut + tail handle
    rate = float(take.outputs.fps or shot.fps)
    first = source.start_time.rescaled_to(rate) - otio.opentime.RationalTime(int(take.outputs.head or 0), rate)
    ref = otio.schema.ExternalReference(
        target_url=_url(media, relative_to),
        available_range=otio.opentime.TimeRange(first, otio.opentime.RationalTime(frames, rate)))
    ref.name = Path(media).name
    ref.metadata[NAMESPACE] = {"take_id": take.id, "take": take.number, "status": take.status,
                               "spec_hash": take.spec_hash, "reel": take.outputs.reel}
    ref.metadata["fcp_xml"] = {"timecode": {  # the writer takes the rate from the range, the rest from here
        "displayformat": "DF" if ";" in (take.outputs.timecode or "") else "NDF",
        **({"reel": {"name": take.outputs.reel}} if take.outputs.reel else {})}}
    return ref


def _identified_by(clip: otio.schema.Clip, ref: otio.schema.ExternalReference) -> None:
    """The clip as the take it now plays: the take's reel where an EDL reads it, and our own FCP ids instead of the
    cut's (its masterclip, ticks and clip rate describe the original media, not the take)."""
    reel = ref.metadata[NAMESPACE].get("reel")
    if reel:
        clip.metadata["cmx_3600"] = {"reel": reel}
    clip.metadata["fcp_xml"] = {"masterclipid": f"masterclip-{reel or ref.metadata[NAMESPACE]['take_id']}"}


def _record_start_kept(timeline: otio.schema.Timeline, board: Storyboard) -> None:
    """An EDL cut's record start (kept by OTIO's reader as the track's negative start) as the timeline's start
    timecode, which every writer reads: the conformed cut starts where the editor's did, its sequence timecode
    counted as the cut counts it (drop frame or not)."""
    drop = counts_drop_frame(board.fps, board.drop_frame)
    fcp = dict(timeline.metadata.get("fcp_xml") or {})
    fcp["timecode"] = {"displayformat": "DF" if drop else "NDF", **dict(fcp.get("timecode") or {})}
    timeline.metadata["fcp_xml"] = fcp  # the sequence's timecode counted as the cut counts it
    if timeline.global_start_time is None and board.record_start:
        timeline.global_start_time = otio.opentime.RationalTime(board.record_start, board.fps)
        board.shots_track(timeline).source_range = None


def conform(board: Storyboard, store: TakeSource, layout: OutputLayout, rows: list[Any] | None = None) -> Path:
    """Write `<source>.rendered.otio` beside the takes (atomically, references relative to it); its path."""
    target = layout.rendered_timeline(board.name, board.source_path.stem)
    timeline = conformed_timeline(board, store, relative_to=target.parent, rows=rows)
    return write_timeline(timeline, target)


def export(board: Storyboard, store: TakeSource, fmt: str, target: str | Path,
           track: str | None = None, rows: list[Any] | None = None) -> tuple[Path, tuple[str, ...]]:
    """The current takes as an editor's file: `fmt` one of EXPORT_FORMATS (written atomically), fitted to what
    the format carries (`deliver.fitted`; `track`: the EDL's video track, default the shots track); its path and
    the notes on what was fitted."""
    adapter, _ = EXPORT_FORMATS[fmt]
    target = Path(target)
    relative = target.parent if fmt == "otio" else None
    timeline = conformed_timeline(board, store, relative_to=relative, rows=rows)
    if fmt == "ale":  # a bin's list of the takes, one row per rendered clip
        return atomic_write(target, ale_text(take_entries(timeline, board), board.fps, TAKE_COLUMNS)), ()
    delivery = fitted(timeline, fmt, board.track_name, track)
    if fmt == "cmx_3600":
        return atomic_write(target, edl_text(delivery.timeline, board.fps, board.edl_style, board.drop_frame)), \
            delivery.notes
    if fmt == "fcp_xml":
        return atomic_write(target, xml_text(delivery.timeline, board.track_name, SOUND_TRACK)), delivery.notes
    return write_timeline(delivery.timeline, target, adapter, **delivery.options), delivery.notes
