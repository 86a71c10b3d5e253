"""What each editor's format can carry: a conformed timeline fitted to it, so an export never crashes.

OpenTimelineIO's adapters write what their formats hold and raise on the rest. A real cut holds the rest
often: CMX 3600 carries one video track and cannot dissolve into black without a black event; FCP 7 XML needs
every clip's source range and every file's length; an `.otioz` bundles only media on this disk. Each case is
either fitted here, with a note saying what the file carries instead, or refused with the clip and the fix
(exit 2). The cut itself (record positions, durations, source-ins) is never changed.
"""

from __future__ import annotations

import collections
import copy
import itertools
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from xml.etree import ElementTree

import opentimelineio as otio

from .editorial import TIMECODE, counts_drop_frame, used_frames
from .errors import ConfigError
from .load import clip_speed, track_label, video_track, video_track_labels
from .schema import NAMESPACE, own_metadata

EDL_STYLES = ("avid", "nucoda", "premiere")


@dataclass(frozen=True)
class Delivery:
    """The timeline as the format will carry it, the adapter's options, and what was fitted (printed)."""

    timeline: otio.schema.Timeline
    options: dict[str, Any] = field(default_factory=dict)
    notes: tuple[str, ...] = ()


def _where(clip: otio.core.Item) -> str:
    parent = clip.parent()
    return f"clip {clip.name or '(unnamed)'!r} on track {parent.name if parent is not None else '?'!r}"


def _give_ranges(timeline: otio.schema.Timeline) -> None:
    """Every clip a source range and every file a length: FCP XML and EDL writers read both. A clip without a
    source range uses its media's whole range; a file without a length covers what its clip uses; a nested
    sequence spans what it holds."""
    for nested in timeline.find_children(descended_from_type=otio.schema.Stack):
        if nested.source_range is None:
            nested.source_range = nested.trimmed_range()
    for clip in timeline.find_clips():
        if clip.source_range is None:
            try:
                clip.source_range = clip.available_range()
            except (otio.exceptions.CannotComputeAvailableRangeError, ValueError):
                raise ConfigError(f"{_where(clip)} has no source range and its media no length, so no format "
                                  "can place it", "give the clip a duration in the editor and export the cut "
                                  "again") from None
        for ref in clip.media_references().values():
            if ref.available_range is None and not isinstance(ref, otio.schema.MissingReference):
                ref.available_range = copy.deepcopy(clip.source_range)


def _one_video_track(timeline: otio.schema.Timeline, wanted: str, notes: list[str]) -> None:
    """CMX 3600 is one video track: keep `wanted`, say which others the EDL leaves out."""
    chosen = video_track(timeline, wanted)
    if chosen is None:
        raise ConfigError(f"--track {wanted!r} is not a video track of the cut; its video tracks are "
                          f"{video_track_labels(timeline)}", "give one of those")
    others = [track_label(timeline, t) for t in timeline.video_tracks() if t is not chosen]
    for track in list(timeline.tracks):
        if track is not chosen:
            timeline.tracks.remove(track)
    if others:
        notes.append(f"an EDL carries one video track: wrote {wanted!r}, left out {others} (--track NAME writes "
                     "another; FCP XML and OTIO carry every track)")


def _black(duration: otio.opentime.RationalTime, lead: otio.opentime.RationalTime) -> otio.schema.Clip:
    """A black event (reel BL): how an EDL dissolves into nothing. Its source starts at the dissolve's length
    (`lead`), as the writer starts a dissolve's incoming event that much earlier."""
    clip = otio.schema.Clip(name="BLACK", media_reference=otio.schema.GeneratorReference(generator_kind="black"),
                            source_range=otio.opentime.TimeRange(lead.rescaled_to(duration.rate), duration))
    clip.metadata["cmx_3600"] = {"reel": "BL"}
    return clip


def _dissolves_into_black(track: otio.schema.Track, notes: list[str]) -> None:
    """A dissolve into a gap (or off the end of the track) dissolves into a black event of the gap's length."""
    items = list(track)
    for index, item in enumerate(items):
        if not isinstance(item, otio.schema.Transition):
            continue
        after = items[index + 1] if index + 1 < len(items) else None
        if after is None:
            track.append(_black(item.out_offset, item.in_offset))
        elif isinstance(after, otio.schema.Gap):
            track[track.index(after)] = _black(after.duration(), item.in_offset)
        else:
            continue
        before = items[index - 1].name if index else "the start"
        notes.append(f"the dissolve after {before!r} goes into black (an EDL event on reel BL)")


def _starting_at(track: otio.schema.Track, record_start: otio.opentime.RationalTime | None) -> None:
    """The EDL writer counts record time from 00:00:00:00: a leading gap puts the first event at the cut's own
    record start (01:00:00:00 and the like)."""
    if record_start is not None and record_start.value > 0:
        track.insert(0, otio.schema.Gap(duration=record_start))


def short_media(track: otio.schema.Track) -> list[str]:
    """Each rendered clip whose media does not cover what the cut asks of it: its source range at its speed, and
    the frames under the dissolves on either side (a transition plays the outgoing clip `out_offset` past its cut
    and the incoming one `in_offset` before it). Said, never hidden: an NLE would show those frames offline."""
    items = list(track)
    out = []
    for index, clip in enumerate(items):
        ref = clip.media_reference if isinstance(clip, otio.schema.Clip) else None
        if not isinstance(ref, otio.schema.ExternalReference) or ref.available_range is None \
                or clip.source_range is None or NAMESPACE not in ref.metadata:
            continue  # only takes: the cut's own media is the editor's
        rate = clip.source_range.start_time.rate
        before = items[index - 1] if index else None
        after = items[index + 1] if index + 1 < len(items) else None
        lead = before.in_offset.rescaled_to(rate).value if isinstance(before, otio.schema.Transition) else 0
        trail = after.out_offset.rescaled_to(rate).value if isinstance(after, otio.schema.Transition) else 0
        start = clip.source_range.start_time.value - lead
        used = used_frames(clip.source_range.duration.value, clip_speed(clip))
        end = clip.source_range.start_time.value + used + trail
        have = ref.available_range
        first, last = have.start_time.rescaled_to(rate).value, have.end_time_exclusive().rescaled_to(rate).value
        missing = max(0.0, first - start) + max(0.0, end - last)
        if missing >= 1:
            why = "its speed change" if clip_speed(clip) != 1 else "the dissolve beside it" if lead or trail else "it"
            out.append(f"clip {clip.name!r} needs {round(missing)} frame(s) more media than its take has, for {why} "
                       "(handles: --handles, or a shot's handles column; a chained cut renders none)")
    return out


def fitted(timeline: otio.schema.Timeline, fmt: str, shots_track: str, track: str | None = None) -> Delivery:
    """`timeline` (a conformed copy, changed in place) as `fmt` carries it."""
    notes: list[str] = []
    _give_ranges(timeline)
    found = video_track(timeline, shots_track)
    if found is not None:
        notes += short_media(found)
    if fmt == "cmx_3600":
        _one_video_track(timeline, track or shots_track, notes)
        edl_track = timeline.video_tracks()[0]
        _dissolves_into_black(edl_track, notes)
        _starting_at(edl_track, timeline.global_start_time)
        return Delivery(timeline, {}, tuple(notes))
    if track is not None:
        raise ConfigError(f"--track is for --format cmx_3600 ({fmt} carries every track)", "leave --track out")
    if fmt == "otioz":
        offline = [c.name for c in timeline.find_clips() if _offline(c)]
        if offline:
            notes.append(f"{len(offline)} clip(s) whose media is not on this disk are bundled as offline "
                         f"references: {', '.join(offline[:5])}{' …' if len(offline) > 5 else ''}")
        return Delivery(timeline, {"media_policy": otio.adapters.file_bundle_utils.MediaReferencePolicy
                                   .MissingIfNotFile}, tuple(notes))
    return Delivery(timeline, {}, tuple(notes))


def edl_text(timeline: otio.schema.Timeline, fps: float, style: str, drop_frame: bool | None = None) -> str:
    """The EDL as OTIO's CMX 3600 writer gives it in the cut's own style, with the `FCM:` line it leaves out, and
    in the cut's own count: OTIO writes 29.97 and 59.94 as drop frame, so a non-drop cut (`drop_frame` False) gets
    its event timecodes back as non-drop, the same frames."""
    text = otio.adapters.write_to_string(timeline, "cmx_3600", style=style if style in EDL_STYLES else "avid")
    rate = otio.opentime.RationalTime.nearest_valid_timecode_rate(fps)
    written_drop, drop = counts_drop_frame(rate), counts_drop_frame(rate, drop_frame)
    if written_drop and not drop:
        text = "\n".join(_non_drop(line, rate) if line[:3].isdigit() else line for line in text.split("\n"))
    text = _speed_events(text, rate)
    fcm = f"FCM: {'DROP FRAME' if drop else 'NON-DROP FRAME'}\n"
    title, _, rest = text.partition("\n\n")
    return f"{title}\n{fcm}\n{rest.lstrip()}" if title.startswith("TITLE:") else f"{fcm}\n{text.lstrip()}"


M2_LINE = re.compile(r"^M2\s+.*?\t\t(?P<speed>-?[0-9.]+)\t\t\t(?P<tc>\S+)\s*$")  # as OTIO's writer gives it


def _speed_events(text: str, fps: float) -> str:
    """Speed changes as CMX 3600 has them, mending what OpenTimelineIO's writer gives: the event's source out is
    its source in plus the source frames it plays (the writer divides by the speed where it should multiply), and
    the `M2` line names the event's reel (the writer puts the clip name there) with the speed in frames per second
    as `048.0`."""
    lines = text.split("\n")
    event = None
    for n, line in enumerate(lines):
        if line[:3].isdigit():
            event = n
            continue
        found = M2_LINE.match(line)
        if found is None or event is None:
            continue
        speed = float(found.group("speed"))
        stamps = list(TIMECODE.finditer(lines[event]))
        if len(stamps) < 4:
            continue
        drop = ";" in lines[event]
        src_in, rec_in, rec_out = (otio.opentime.from_timecode(stamps[i].group(0), fps) for i in (0, 2, 3))
        used = used_frames((rec_out - rec_in).value, speed / fps)
        src_out = otio.opentime.to_timecode(src_in + otio.opentime.RationalTime(used, src_in.rate), fps, drop)
        at = stamps[1]
        lines[event] = lines[event][:at.start()] + src_out + lines[event][at.end():]
        reel = lines[event].split()[1]
        sign = "-" if speed < 0 else ""
        lines[n] = f"M2   {reel:<8}       {sign}{abs(speed):05.1f}    {found.group('tc')}"
    return "\n".join(lines)


def _non_drop(line: str, rate: float) -> str:
    """An event line's drop-frame timecodes as the same frames counted non-drop."""
    def count(match: re.Match) -> str:
        if match.group(1) != ";":
            return match.group(0)
        return otio.opentime.to_timecode(otio.opentime.from_timecode(match.group(0), rate), rate, False)

    return TIMECODE.sub(count, line)


def xml_text(timeline: otio.schema.Timeline, shots_track: str, sound_track: str) -> str:
    """FCP 7 XML as OTIO's writer gives it, with what it leaves out: each take's picture and its sound on
    `sound_track` linked (`<link>` both ways, `<sourcetrack>` on the sound), so they import, move and trim as one
    clip; and the `<!DOCTYPE xmeml>` Premiere's importer wants."""
    root = _fcp_tree(timeline)
    audio_names = [t.name for t in timeline.audio_tracks()]
    shots = video_track(timeline, shots_track)
    sequence = next(root.iter("sequence"), None)
    videos = sequence.findall("./media/video/track") if sequence is not None else []
    audios = sequence.findall("./media/audio/track") if sequence is not None else []
    if shots is not None and videos:
        _retimed(videos[list(timeline.video_tracks()).index(shots)], shots)
    if shots is not None and sound_track in audio_names and audio_names.index(sound_track) < len(audios):
        video_index = list(timeline.video_tracks()).index(shots) + 1
        audio_index = audio_names.index(sound_track) + 1
        sounds: dict[str | None, list[tuple[int, ElementTree.Element]]] = {}
        for n, item in enumerate(audios[audio_index - 1].findall("clipitem"), start=1):
            sounds.setdefault(item.findtext("name"), []).append((n, item))
        for n, picture in enumerate(videos[video_index - 1].findall("clipitem"), start=1):
            waiting = sounds.get(picture.findtext("name"))  # the sound track mirrors the shots, in order
            if not waiting or picture.find("file") is None:
                continue
            clip_index, sound = waiting.pop(0)
            if sound.find("sourcetrack") is None:
                _sub(sound, "sourcetrack", [("mediatype", "audio"), ("trackindex", "1")])
            for element in (picture, sound):
                _sub(element, "link", [("linkclipref", picture.get("id")), ("mediatype", "video"),
                                       ("trackindex", str(video_index)), ("clipindex", str(n))])
                _sub(element, "link", [("linkclipref", sound.get("id")), ("mediatype", "audio"),
                                       ("trackindex", str(audio_index)), ("clipindex", str(clip_index)),
                                       ("groupindex", "1")])
    ElementTree.indent(root, space="    ")
    return '<?xml version="1.0" encoding="UTF-8"?>\n<!DOCTYPE xmeml>\n' + ElementTree.tostring(root, "unicode") + "\n"


def _fcp_tree(timeline: otio.schema.Timeline) -> ElementTree.Element:
    """The tree OpenTimelineIO's FCP 7 writer builds, taken before its `write_to_string` pretty-prints it through
    minidom (which we would parse again to edit; indenting is ours), with every clip item and file numbered
    beforehand as the writer would number them: left to find the lowest free id for each, it spends time
    quadratic in the clip count. The XML of a 5,000-shot conform took 17.4 s and takes 7.8 s (`bench/scale.py`),
    byte for byte the same file. Through the adapter's public call when its builder is not where this adapter
    version keeps it."""
    _number_items(timeline)
    try:
        writer = otio.adapters.from_name("fcp_xml").module()
        build, sub = writer._build_sequence_for_timeline, writer._append_new_sub_element
    except AttributeError:
        return ElementTree.fromstring(otio.adapters.write_to_string(timeline, "fcp_xml"))
    root = ElementTree.Element("xmeml", version="4")
    project = sub(root, "project")
    sub(project, "name", text=timeline.name)
    children = sub(project, "children")
    whole = otio.opentime.TimeRange(start_time=timeline.global_start_time, duration=timeline.duration())
    children.append(build(timeline, whole, collections.defaultdict(dict)))
    return root


def _number_items(timeline: otio.schema.Timeline) -> None:
    """`@id`s (the FCP XML namespace's own key, which the writer prefers when free) for each clip item and each
    file, in the order the writer meets them (tracks in order, a nested sequence before what it holds; a file at
    its first clip, one per URL), so the numbers are the ones it would give."""
    clip_items = itertools.count(1)
    files: dict[str, str] = {}

    def walk(stack: otio.schema.Stack) -> None:
        for track in stack:
            for item in track:
                if not isinstance(item, otio.schema.Clip | otio.schema.Stack):
                    continue
                own_metadata(item, "fcp_xml")["@id"] = f"clipitem-{next(clip_items)}"
                if isinstance(item, otio.schema.Stack):
                    walk(item)
                    continue
                ref = item.media_reference
                if isinstance(ref, otio.schema.ExternalReference | otio.schema.MissingReference):
                    key = str(ref.target_url) if isinstance(ref, otio.schema.ExternalReference) else f"#{id(ref)}"
                    files.setdefault(key, f"file-{len(files) + 1}")
                    own_metadata(ref, "fcp_xml")["@id"] = files[key]

    walk(timeline.tracks)


def _retimed(track: ElementTree.Element, shots: otio.schema.Track) -> None:
    """Speed changes and freezes as FCP 7 XML has them (OpenTimelineIO's writer drops clip effects): a Time Remap
    filter with the speed in percent, and the clip item's `out` where the source it plays ends (`in` + the source
    frames; the record `start`/`end` stay the cut's)."""
    items = [e for e in track if e.tag in ("clipitem", "generatoritem")]
    for element, clip in zip(items, shots.find_clips(shallow_search=True), strict=False):
        speed = clip_speed(clip)
        if speed == 1 or element.findtext("name") != clip.name or clip.source_range is None:
            continue
        record = clip.source_range.duration.value
        out = element.find("out")
        if out is not None and out.text:
            out.text = str(int(out.text) + used_frames(record, speed) - round(record))
        remap = ElementTree.Element("filter")
        effect = ElementTree.SubElement(remap, "effect")
        for tag, text in (("name", "Time Remap"), ("effectid", "timeremap"), ("effectcategory", "motion"),
                          ("effecttype", "motion"), ("mediatype", "video")):
            ElementTree.SubElement(effect, tag).text = text
        for name, value in (("variablespeed", "0"), ("speed", f"{abs(speed) * 100:g}"),
                            ("reverse", "TRUE" if speed < 0 else "FALSE"), ("frameblending", "FALSE")):
            _sub(effect, "parameter", [("parameterid", name), ("name", name), ("value", value)])
        links = [i for i, child in enumerate(element) if child.tag == "link"]
        element.insert(links[0] if links else len(element), remap)


def _sub(parent: ElementTree.Element, tag: str, children: list[tuple[str, str | None]]) -> None:
    element = ElementTree.SubElement(parent, tag)
    for name, text in children:
        ElementTree.SubElement(element, name).text = text


def _offline(clip: otio.schema.Clip) -> bool:
    ref = clip.media_reference
    url = getattr(ref, "target_url", None)
    if not url:
        return not isinstance(ref, otio.schema.GeneratorReference)
    return not Path(otio.url_utils.filepath_from_url(url) if url.startswith("file:") else url).is_file()
