"""What an editor's export says beyond its ranges: a clip's reel, a prompt left in a comment or marker,
timecode at the sequence rate, an EDL's comment style and the rate its timecodes imply; and the reel and start
timecode a take gets back.

Each editor hides these in its own adapter's metadata (`cmx_3600.reel`, FCP XML's
`file/timecode/reel/name`, EDL comments, markers), so we look where OpenTimelineIO's adapters put
them instead of trusting one vendor's shape.
"""

from __future__ import annotations

import math
import re
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import opentimelineio as otio

from .schema import NAMESPACE

PROMPT_PREFIX = "prompt:"


def timecode_rate(rate: float | None) -> float | None:
    """23.976 and 29.97 as people type them, as the exact NTSC rates OTIO's timecode needs (24000/1001...)."""
    if rate is None or otio.opentime.RationalTime.is_valid_timecode_rate(rate):
        return rate
    nearest = otio.opentime.RationalTime.nearest_valid_timecode_rate(rate)
    return nearest if abs(nearest - rate) < 0.01 else rate


def counts_drop_frame(fps: float, drop_frame: bool | None = None) -> bool:
    """Whether timecode at `fps` is counted drop frame: as the cut says (`drop_frame`), else as OTIO infers it from
    the rate (29.97 and 59.94)."""
    if drop_frame is not None:
        return drop_frame
    rate = timecode_rate(fps) or fps
    return ";" in otio.opentime.to_timecode(otio.opentime.RationalTime(0, rate), rate)


def timecode(frames: int, fps: float, drop_frame: bool | None = None) -> str:
    """SMPTE timecode of a frame count at `fps`, through OTIO: drop-frame (`;`) at 29.97 and 59.94 unless the cut
    says its timecode is non-drop (`drop_frame` False, as an EDL's `FCM: NON-DROP FRAME` does)."""
    rate = timecode_rate(fps) or fps
    return otio.opentime.to_timecode(otio.opentime.RationalTime(frames, rate), rate,
                                     drop_frame if drop_frame is not None else None)


REEL_LENGTH = 8  # CMX 3600's reel field; Resolve and Avid conform on it with the source timecode
_BASE36 = "0123456789ABCDEFGHIJKLMNOPQRSTUVWXYZ"


def take_reel(take_id: int) -> str:
    """The reel of a take: unique in its store (the take's id), at most 8 of the characters CMX 3600 allows, so an
    NLE's reel + timecode conform finds exactly this take — never another take of the same tape and source-in."""
    if take_id < 1_000_000:
        return f"ML{take_id:06d}"
    digits = ""
    while take_id:
        take_id, digit = divmod(take_id, 36)
        digits = _BASE36[digit] + digits
    return ("M" + digits.rjust(REEL_LENGTH - 1, "0"))[-REEL_LENGTH:]


def media_start(source_in: str, head: int, fps: float) -> str:
    """The timecode of a take's first frame: the clip's source-in, `head` handle frames earlier, counted as the
    source-in is (drop-frame when it is written with `;`)."""
    rate = timecode_rate(fps) or fps
    start = otio.opentime.from_timecode(source_in, rate).value - head
    return timecode(max(0, round(start)), rate, drop_frame=";" in source_in)


def _strings(value: Any, key: str = "") -> Iterator[tuple[str, str]]:
    """Every (key, string) inside adapter metadata, depth first."""
    if hasattr(value, "items"):
        for k, v in value.items():
            yield from _strings(v, str(k))
    elif isinstance(value, str):
        yield key, value
    elif hasattr(value, "__iter__") and not isinstance(value, bytes):
        for v in value:
            yield from _strings(v, key)


def _foreign(metadata: Any) -> dict:
    """A clip's metadata without our own namespace (a prompt must come from the editor, not from us)."""
    return {k: v for k, v in metadata.items() if k != NAMESPACE}


def clip_reel(clip: otio.schema.Clip) -> str | None:
    """The reel (tape) name as the editor wrote it, or None."""
    for source in (_foreign(clip.metadata), clip.media_reference.metadata if clip.media_reference else {}):
        stack = [source]
        while stack:
            node = stack.pop()
            if not hasattr(node, "items"):
                continue
            for k, v in node.items():
                if str(k).lower() in ("reel", "reel_name", "tape") and isinstance(v, str) and v.strip():
                    return v.strip()
                if str(k).lower() == "reel" and hasattr(v, "get") and isinstance(v.get("name"), str):
                    return v["name"].strip() or None
                if hasattr(v, "items"):
                    stack.append(v)
    return None


def clip_prompt(clip: otio.schema.Clip) -> str | None:
    """A prompt the editor left on the clip: an EDL comment `* PROMPT: …`, or a comment or marker (FCP XML,
    OTIO) that starts with `prompt:`."""
    candidates = [text for _, text in _strings(_foreign(clip.metadata))]
    for marker in clip.markers:
        candidates.append(marker.name or "")
        candidates += [text for _, text in _strings(marker.metadata)]
    for text in candidates:
        stripped = text.strip()
        if stripped.lower().startswith(PROMPT_PREFIX) and stripped[len(PROMPT_PREFIX):].strip():
            return stripped[len(PROMPT_PREFIX):].strip()
    return None


STANDARD_RATES = (24, 25, 30, 48, 50, 60)
TIMECODE = re.compile(r"\b\d\d[:;]\d\d[:;]\d\d([:;])(\d\d)\b")  # group 1: `;` for drop frame; group 2: frames


def rate_advice(p: Path, rate: float | None) -> tuple[str, str]:
    """(what, fix) for an EDL whose timecodes do not fit the rate it was read at: the rate that was used, and the
    one its timecodes imply (`;` is drop frame, 29.97 or 59.94; the largest frame number bounds the rest)."""
    given = f"{rate:g} fps (given with --rate)" if rate else "24 fps (the default; EDLs carry no rate)"
    try:
        found = TIMECODE.findall(p.read_text(encoding="utf-8", errors="replace"))
    except OSError:
        found = []
    largest = max((int(frames) for _, frames in found), default=0)
    implied: str | None
    if any(sep == ";" for sep, _ in found):
        implied, why = ("29.97" if largest < 30 else "59.94"), "its ';' timecodes are drop frame"
    else:
        fits = next((r for r in STANDARD_RATES if r > largest and (rate is None or r != round(rate))), None)
        implied = f"{fits:g}" if fits else None
        why = f"its timecodes count frames up to {largest:02d}"
    what = f"the EDL's timecodes do not fit {given}: {why}"
    if implied is None:
        return what, "give the cut's frame rate with --rate FPS"
    ntsc = {"24": "23.976", "30": "29.97", "60": "59.94"}.get(implied)
    return what, f"give --rate {implied}" + (f" (or {ntsc} for NTSC)" if ntsc else "")


def edl_header(p: Path) -> tuple[str, bool | None]:
    """(style, drop_frame) of a cut, from one read of it: an EDL's comment style as OTIO's writer names them
    (`* FROM FILE:` is Nucoda's, `* FROM CLIP:` Avid's, every reel `AX` Premiere's) and its `FCM:` line (True for
    drop frame, False for non-drop, None without one: the rate decides). Anything but an EDL: ("avid", None)."""
    if p.suffix.lower() != ".edl":
        return "avid", None
    try:
        lines = p.read_text(encoding="utf-8", errors="replace").splitlines()
    except OSError:
        return "avid", None
    drop = next(("NON" not in line.upper() for line in lines if line.strip().upper().startswith("FCM:")), None)
    if any(line.startswith("* FROM FILE:") for line in lines):
        return "nucoda", drop
    if any(line.startswith("* FROM CLIP:") for line in lines):
        return "avid", drop
    events = [line.split() for line in lines
              if len(line.split()) > 2 and line.split()[0].isascii() and line.split()[0].isdigit()]
    return ("premiere" if events and {e[1] for e in events} == {"AX"} else "avid"), drop


def used_frames(record_frames: float, speed: float) -> int:
    """The source frames a clip of `record_frames` at `speed` (source frames per record frame) plays: one for a
    freeze, and never a fraction: a take renders whole frames, so a part-frame at the end is rendered whole."""
    if speed == 1:
        return int(record_frames)
    return max(1, math.ceil(record_frames * abs(speed) - 1e-6))
