"""Storyboard validation: every problem at once, each naming the clip, the field and the fix.

Values are checked by the typed boundary (`storyboards.fields`) wherever they are written: timeline
defaults once, clip values and overrides per shot. Files are checked by their headers. An
editor's cut arrives without prompts; that is reported per shot ("needs a prompt") so the cut
still imports. Paths from a storyboard resolve inside the configured asset roots only.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from milimo_engine.errors import InvalidFrameCountError
from milimo_engine.limits import DEFAULT_SEGMENT_FRAMES, TEMPORAL_RATIO
from milimo_engine.segment_plan import plan_segments

from .assets import image_problem, safetensors_problem
from .errors import Problem, StoryboardInvalid
from .fields import check, unsafe_id
from .load import Shot, Storyboard, video_track_labels
from .schema import (
    CLIP_KEYS,
    DEFAULT_KEYS,
    DEFAULTS,
    IMAGE_KEYS,
    LORA_KEYS,
    OVERRIDE_KEYS,
    SCHEMA_VERSION,
    TIMELINE_KEYS,
    suggest,
)

__all__ = ["AssetRoots", "Problem", "Report", "StoryboardInvalid", "ValidationConfig", "effective", "validate"]

MIN_HANDOFF_FRAMES = 1 + TEMPORAL_RATIO  # one latent frame after the first: the shortest tail a shot hands off
OVERRIDE_FIX = "clear it with `milimo overrides STORYBOARD --clear {shot}`, or set a valid value with --set"


@dataclass(frozen=True)
class AssetRoots:
    roots: tuple[Path, ...]

    def path(self, value: str) -> Path:
        """The resolved path of a value validation accepted."""
        path, why = self.resolve(value)
        if path is None:
            raise ValueError(f"{value!r}: {why}")
        return path

    def resolve(self, value: str) -> tuple[Path | None, str | None]:
        """(resolved path, None) or (None, why not)."""
        if not self.roots:
            return None, "no asset roots are configured"
        raw = Path(os.path.expanduser(value))
        candidates = [raw] if raw.is_absolute() else [root / raw for root in self.roots]
        inside = []
        for cand in candidates:
            resolved = cand.resolve()
            if any(resolved.is_relative_to(root.resolve()) for root in self.roots):
                inside.append(resolved)
        if not inside:
            return None, f"resolves outside the asset roots {[str(r) for r in self.roots]}"
        for path in inside:
            if path.is_file():
                return path, None
        if any(p.exists() for p in inside):
            return None, "is not a file"
        return None, f"does not exist under the asset roots {[str(r) for r in self.roots]}"


@dataclass(frozen=True)
class ValidationConfig:
    asset_roots: tuple[Path, ...] = ()
    max_shot_frames: int | None = None  # a cap for those who want one; any length renders as chained segments
    require_prompts: bool = True

    def roots_for(self, storyboard: Storyboard) -> AssetRoots:
        return AssetRoots(self.asset_roots or (storyboard.source_path.resolve().parent,))


@dataclass
class Report:
    problems: list[Problem] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return not self.problems

    @property
    def needs_prompt(self) -> list[str]:
        return [p.clip for p in self.problems if p.code == "missing_prompt"]

    def raise_if_invalid(self, source: str) -> None:
        if self.problems:
            raise StoryboardInvalid(source, self.problems)


def _unknown_keys(data: dict, known: set[str], clip: str, index: int | None, where: str) -> list[Problem]:
    out = []
    for key in data:
        if key not in known:
            guess = suggest(key, known)
            fix = f"did you mean {guess!r}?" if guess else f"use one of {sorted(known)}"
            out.append(Problem(clip, index, f"{where}{key}", "unknown key", fix))
    return out


def effective(storyboard: Storyboard, shot: Shot, key: str) -> Any:
    """A shot's setting: clip override, else timeline default, else the schema default."""
    overrides = shot.metadata.get("overrides") or {}
    if key in overrides:
        return overrides[key]
    if key in shot.metadata:
        return shot.metadata[key]
    defaults = storyboard.timeline_metadata.get("defaults") or {}
    return defaults.get(key, DEFAULTS.get(key))


def _typed(values: dict, keys: set[str], clip: str, index: int | None, where: str,
           overridden: frozenset[str] = frozenset(), shot_id: str = "") -> list[Problem]:
    """Every value of `values` whose key is typed, checked at the typed boundary."""
    out = []
    for key in sorted(set(values) & keys):
        wrong = check(key, values[key])
        if wrong:
            message, fix = wrong
            if key in overridden:
                message += " (set by an override)"
                fix = f"{fix}; or {OVERRIDE_FIX.format(shot=shot_id)}"
            out.append(Problem(clip, index, f"{where}{key}", message, fix))
    return out


def _check_paths(entries: Any, keys: set[str], roots: AssetRoots, clip: str, index: int | None, where: str,
                 frames: int | None = None) -> list[Problem]:
    out: list[Problem] = []
    if entries in (None, []):
        return out
    if not isinstance(entries, list):
        return [Problem(clip, index, where, f"must be a list of objects, got {type(entries).__name__}",
                        f"write {where}: [{{path: ..., ...}}]")]
    is_image = "frame" in keys
    for i, entry in enumerate(entries):
        f = f"{where}[{i}]"
        if not isinstance(entry, dict) or "path" not in entry:
            out.append(Problem(clip, index, f, "needs a 'path'", "give the file path relative to an asset root"))
            continue
        out += _unknown_keys(entry, keys, clip, index, f"{f}.")
        path, why = roots.resolve(str(entry["path"]))
        if why:
            out.append(Problem(clip, index, f"{f}.path", f"{entry['path']!r} {why}",
                               "put the file under an asset root and give its path relative to it"))
        else:
            assert path is not None
            bad = image_problem(path) if is_image else safetensors_problem(path)
            if bad:
                kind = "a PNG, JPEG or WebP image" if is_image else "a LoRA saved as .safetensors"
                out.append(Problem(clip, index, f"{f}.path", f"{entry['path']!r} {bad}", f"give {kind}"))
        weight = entry.get("weight", 1.0)
        if not isinstance(weight, (int, float)) or isinstance(weight, bool) or not -10 <= weight <= 10:
            out.append(Problem(clip, index, f"{f}.weight", f"{weight!r} is not a number from -10 to 10",
                               "use e.g. 0.8"))
        strength = entry.get("strength", 1.0)
        if not (isinstance(strength, (int, float)) and not isinstance(strength, bool) and 0 <= strength <= 1):
            out.append(Problem(clip, index, f"{f}.strength", f"{strength!r} is not in 0..1",
                               "use 1.0 for a hard constraint, lower to loosen it"))
        if frames is not None and "frame" in entry:
            fr = entry["frame"]
            if not isinstance(fr, int) or isinstance(fr, bool) or not 0 <= fr < frames:
                out.append(Problem(clip, index, f"{f}.frame", f"{fr!r} is not a frame of this {frames}-frame shot",
                                   f"use a pixel frame in 0..{frames - 1} (0 = first frame)"))
    return out


def _timeline(storyboard: Storyboard, config: ValidationConfig, roots: AssetRoots) -> list[Problem]:
    out: list[Problem] = []
    tmeta = storyboard.timeline_metadata
    out += _unknown_keys(tmeta, TIMELINE_KEYS, "timeline", None, "")
    version = tmeta.get("schema", SCHEMA_VERSION)
    if not isinstance(version, int) or isinstance(version, bool) or version > SCHEMA_VERSION:
        out.append(Problem("timeline", None, "schema", f"version {version!r} is newer than this milimo understands "
                           f"({SCHEMA_VERSION})", "upgrade milimo, or write the storyboard in schema 1"))
    if "storyboard_id" in tmeta and unsafe_id(tmeta["storyboard_id"]):
        out.append(Problem("timeline", None, "storyboard_id", str(unsafe_id(tmeta["storyboard_id"])),
                           "use letters, digits, '-', '_' and '.', e.g. 'lighthouse-v2'"))
    out += _typed(tmeta, {"max_shot_frames"}, "timeline", None, "")
    defaults = tmeta.get("defaults") or {}
    if not isinstance(defaults, dict):
        return out + [Problem("timeline", None, "defaults", "is not a table", "write defaults as an object")]
    out += _unknown_keys(defaults, DEFAULT_KEYS, "timeline", None, "defaults.")
    out += _typed(defaults, DEFAULT_KEYS, "timeline", None, "defaults.")
    out += _check_paths(defaults.get("loras"), LORA_KEYS, roots, "timeline", None, "defaults.loras")
    for stack in storyboard.nested:
        out.append(Problem("timeline", None, "shots track", f"{stack.name!r} is a nested sequence ({stack.frames} "
                           f"frames at frame {stack.start_frame}): its clips would not be rendered",
                           "flatten it in the editor (Premiere: select and un-nest; Resolve: Decompose in Place; "
                           "Avid: collapse undone) and export the cut again"))
    if not storyboard.shots:
        others = [label for label in video_track_labels(storyboard.timeline) if label != storyboard.track_name]
        held = f" to render ({len(storyboard.generators)} generator(s) only)" if storyboard.generators else ""
        out.append(Problem("timeline", None, "shots", f"the shots track {storyboard.track_name!r} has no clips{held}",
                           f"name the track that holds the shots with --shots-track (the cut's other video tracks: "
                           f"{others})" if others else "put the shots as clips on the first video track"))
    return out


def _shot(storyboard: Storyboard, shot: Shot, roots: AssetRoots, config: ValidationConfig, max_frames: int | None,
          seen: dict[str, Shot]) -> list[Problem]:
    out: list[Problem] = []
    c, i, m = shot.name, shot.index, shot.metadata
    if "_not_a_table" in m:
        return [Problem(c, i, "metadata.milimo", "is not a table", "write the shot's settings as an object")]
    out += _unknown_keys(m, CLIP_KEYS, c, i, "")
    overrides = m.get("overrides") or {}
    if not isinstance(overrides, dict):
        out.append(Problem(c, i, "overrides", "is not a table", "write overrides as an object"))
        overrides = {}
    out += _unknown_keys(overrides, OVERRIDE_KEYS, c, i, "overrides.")
    if not shot.shot_id_derived and unsafe_id(shot.shot_id):
        out.append(Problem(c, i, "shot_id", str(unsafe_id(shot.shot_id)),
                           "use letters, digits, '-', '_' and '.', e.g. 'sh010'"))
    key = shot.shot_id.casefold()  # shot folders: `Sh010` and `sh010` are one folder on macOS and Windows
    if key in seen:
        other = seen[key]
        same = "is also" if other.shot_id == shot.shot_id else f"differs only in case from {other.shot_id!r},"
        out.append(Problem(c, i, "shot_id", f"{shot.shot_id!r} {same} the id of shot {other.index + 1} "
                           f"{other.name!r}", "give each shot a unique shot_id (not only by case: it names a folder)"))
    seen.setdefault(key, shot)
    prompt = m.get("prompt")
    if config.require_prompts and (not isinstance(prompt, str) or not prompt.strip()):
        if prompt is None or isinstance(prompt, str):
            out.append(Problem(c, i, "prompt", "this shot needs a prompt", "write what the shot shows in prompt",
                               code="missing_prompt"))
    clip_values = {k: v for k, v in m.items()
                   if k in ("prompt", "negative_prompt", "seed", "quality", "handoff", "handles", "max_shot_frames")}
    out += _typed(clip_values, set(clip_values), c, i, "", shot.overridden, shot.shot_id)
    out += _typed(overrides, OVERRIDE_KEYS, c, i, "overrides.", shot.overridden, shot.shot_id)
    if not shot.fps > 0:
        out.append(Problem(c, i, "rate", f"the clip's rate {shot.fps!r} is not positive",
                           "give the clip and its timeline a frame rate above 0, e.g. 24"))
    if shot.frames <= 0:
        out.append(Problem(c, i, "duration", "the clip is zero frames long",
                           "give the clip a duration of 1 frame or more"))
    elif (own := m.get("max_shot_frames")) is not None and isinstance(own, int) and shot.source_frames > own:
        out.append(Problem(c, i, "duration", f"{_rendered(shot)} is beyond this shot's maximum length {own}",
                           f"cut it into shots of at most {own} frames, or raise the shot's max_shot_frames"))
    elif own is None and max_frames is not None and shot.source_frames > max_frames:
        out.append(Problem(c, i, "duration", f"{_rendered(shot)} is beyond the maximum shot length {max_frames}",
                           f"cut it into shots of at most {max_frames} frames, or raise the cap (--max-shot-frames, "
                           "[cuts] max_shot_frames in milimo.toml, the timeline's max_shot_frames)"))
    elif m.get("reference_video") and segments_of(storyboard, shot) > 1:
        out.append(Problem(c, i, "duration", f"{_rendered(shot)}: an IC-LoRA shot renders in one segment of at "
                           f"most {DEFAULT_SEGMENT_FRAMES} frames", "cut it into shorter shots"))
    handoff = m.get("handoff", "none")
    if handoff == "previous" and i == 0:
        out.append(Problem(c, i, "handoff", "'previous' on the first shot of the track: nothing precedes it",
                           "set handoff: none"))
    elif handoff == "previous" and shot.follows_gap:
        out.append(Problem(c, i, "handoff", "'previous' across a gap: the shot before it is not adjacent",
                           "remove the gap or set handoff: none"))
    elif handoff == "previous" and 0 < (before := storyboard.shots[i - 1]).source_frames < MIN_HANDOFF_FRAMES:
        out.append(Problem(c, i, "handoff", f"'previous' after {before.name!r}, which is {before.source_frames} "
                           f"frame(s): a handoff is the last {MIN_HANDOFF_FRAMES} frames of the shot before, at least",
                           f"lengthen {before.name!r} to {MIN_HANDOFF_FRAMES} frames or more, or set handoff: none"))
    out += _check_paths(m.get("loras"), LORA_KEYS, roots, c, i, "loras")
    out += _check_paths(m.get("images"), IMAGE_KEYS, roots, c, i, "images", frames=max(shot.source_frames, 0))
    for key in ("reference_video", "ic_lora"):
        if m.get(key):
            path, why = roots.resolve(str(m[key]))
            if why:
                out.append(Problem(c, i, key, f"{m[key]!r} {why}", "put the file under an asset root"))
            elif key == "ic_lora" and path is not None and safetensors_problem(path):
                out.append(Problem(c, i, key, f"{m[key]!r} {safetensors_problem(path)}",
                                   "give an IC-LoRA saved as .safetensors"))
    if bool(m.get("reference_video")) != bool(m.get("ic_lora")):
        out.append(Problem(c, i, "ic_lora" if m.get("reference_video") else "reference_video",
                           "IC-LoRA shots need both reference_video and ic_lora", "set both, or neither"))
    return out


def _rendered(shot: Shot) -> str:
    """A shot's length as its take renders it: a speed change or freeze plays other than its record length."""
    if shot.source_frames == shot.frames:
        return f"{shot.frames} frames"
    return f"{shot.source_frames} source frames (its {shot.frames} in the cut at {speed_label(shot.speed)})"


def speed_label(speed: float) -> str:
    return "a freeze" if speed == 0 else f"{speed * 100:g} % speed"


def handles_of(storyboard: Storyboard, shot: Shot) -> tuple[int, int]:
    """(head, tail): the frames a take renders before and after the cut, so a dissolve has media under it and the
    editor can trim or slip. None where a chain continues (the next shot starts from this one's last frames, so
    there is no cut to move), none for an IC-LoRA shot (its reference video is the cut's length), and no head
    before the source's first frame."""
    value = effective(storyboard, shot, "handles")
    handles = value if isinstance(value, int) and not isinstance(value, bool) and value > 0 else 0
    if not handles or shot.metadata.get("reference_video"):
        return 0, 0
    following = storyboard.shots[shot.index + 1] if shot.index + 1 < len(storyboard.shots) else None
    chained_after = following is not None and following.metadata.get("handoff") == "previous" \
        and not following.follows_gap
    head = 0 if shot.metadata.get("handoff") == "previous" else min(handles, max(shot.source_in, 0))
    return head, 0 if chained_after else handles


def segments_of(storyboard: Storyboard, shot: Shot, segment_frames: int = DEFAULT_SEGMENT_FRAMES) -> int:
    """How many chained segments the engine renders `shot` in (1 for a shot within one segment)."""
    m = effective(storyboard, shot, "handoff_overlap")
    m = m if isinstance(m, int) and not isinstance(m, bool) and m >= 0 else 1
    first = 1 + TEMPORAL_RATIO * m if shot.metadata.get("handoff") == "previous" and m else 0
    try:
        rendered = max(shot.source_frames + sum(handles_of(storyboard, shot)), 1)
        return len(plan_segments(rendered, segment_frames, first, 1 + TEMPORAL_RATIO * max(m, 1)))
    except InvalidFrameCountError:
        return 0  # an overlap too large to chain: refused by the handoff_overlap check


def validate(storyboard: Storyboard, config: ValidationConfig = ValidationConfig()) -> Report:
    roots = config.roots_for(storyboard)
    report = Report(_timeline(storyboard, config, roots))
    limit = storyboard.timeline_metadata.get("max_shot_frames", config.max_shot_frames)
    max_frames = limit if isinstance(limit, int) and not isinstance(limit, bool) and limit > 0 \
        else config.max_shot_frames
    seen: dict[str, Shot] = {}
    for shot in storyboard.shots:
        report.problems.extend(_shot(storyboard, shot, roots, config, max_frames, seen))
    return report
