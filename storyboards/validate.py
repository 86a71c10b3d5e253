"""Storyboard validation: every problem at once, each naming the clip, the field and the fix.

An editor's cut arrives without prompts; that is reported per shot ("needs a prompt") so the
cut still imports. Paths from a storyboard resolve inside the configured asset roots only.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from .load import Shot, Storyboard
from .schema import (
    CLIP_KEYS, DEFAULT_KEYS, DEFAULT_MAX_SHOT_FRAMES, DEFAULTS, HANDOFF_MODES, IMAGE_KEYS, LORA_KEYS, MAX_SEED,
    OVERRIDE_KEYS, SCHEMA_VERSION, SEED_POLICIES, TIMELINE_KEYS, suggest,
)

SIZE_STEP = 64


@dataclass(frozen=True)
class Problem:
    clip: str  # clip name, or "timeline"
    index: int | None  # shot index, None for the timeline
    field: str
    message: str
    fix: str
    code: str = "invalid"  # "missing_prompt" for shots that only need a prompt

    def __str__(self) -> str:
        where = "timeline" if self.index is None else f"shot {self.index + 1} {self.clip!r}"
        return f"{where}: {self.field}: {self.message}. Fix: {self.fix}"


class StoryboardInvalid(ValueError):
    """Raised with the full list of problems; invalid input is never retried."""

    def __init__(self, source: str, problems: list[Problem]):
        self.problems = problems
        lines = "\n".join(f"  - {p}" for p in problems)
        super().__init__(f"{source}: {len(problems)} problem(s):\n{lines}")


@dataclass(frozen=True)
class AssetRoots:
    roots: tuple[Path, ...]

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
    max_shot_frames: int = DEFAULT_MAX_SHOT_FRAMES
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


def _check_paths(entries: Any, keys: set[str], roots: AssetRoots, clip: str, index: int | None, where: str,
                 frames: int | None = None) -> list[Problem]:
    out: list[Problem] = []
    if entries in (None, []):
        return out
    if not isinstance(entries, list):
        return [Problem(clip, index, where, f"must be a list of objects, got {type(entries).__name__}",
                        f"write {where}: [{{path: ..., ...}}]")]
    for i, entry in enumerate(entries):
        f = f"{where}[{i}]"
        if not isinstance(entry, dict) or "path" not in entry:
            out.append(Problem(clip, index, f, "needs a 'path'", "give the file path relative to an asset root"))
            continue
        out += _unknown_keys(entry, keys, clip, index, f"{f}.")
        _, why = roots.resolve(str(entry["path"]))
        if why:
            out.append(Problem(clip, index, f"{f}.path", f"{entry['path']!r} {why}",
                               "put the file under an asset root and give its path relative to it"))
        if "weight" in entry and not isinstance(entry["weight"], (int, float)):
            out.append(Problem(clip, index, f"{f}.weight", f"{entry['weight']!r} is not a number", "use e.g. 0.8"))
        if "strength" in entry and not (isinstance(entry["strength"], (int, float)) and 0 <= entry["strength"] <= 1):
            out.append(Problem(clip, index, f"{f}.strength", f"{entry['strength']!r} is not in 0..1",
                               "use 1.0 for a hard constraint, lower to loosen it"))
        if frames is not None and "frame" in entry:
            fr = entry["frame"]
            if not isinstance(fr, int) or not 0 <= fr < frames:
                out.append(Problem(clip, index, f"{f}.frame", f"{fr!r} is not a frame of this {frames}-frame shot",
                                   f"use a pixel frame in 0..{frames - 1} (0 = first frame)"))
    return out


def validate(storyboard: Storyboard, config: ValidationConfig = ValidationConfig()) -> Report:
    report = Report()
    add = report.problems.extend
    tmeta = storyboard.timeline_metadata
    add(_unknown_keys(tmeta, TIMELINE_KEYS, "timeline", None, ""))
    version = tmeta.get("schema", SCHEMA_VERSION)
    if not isinstance(version, int) or version > SCHEMA_VERSION:
        add([Problem("timeline", None, "schema", f"version {version!r} is newer than this milimo understands "
                     f"({SCHEMA_VERSION})", "upgrade milimo, or write the storyboard in schema 1")])
    defaults = tmeta.get("defaults") or {}
    add(_unknown_keys(defaults, DEFAULT_KEYS, "timeline", None, "defaults."))
    if defaults.get("seed_policy", "from_shot_id") not in SEED_POLICIES:
        add([Problem("timeline", None, "defaults.seed_policy", f"{defaults['seed_policy']!r} is not a policy",
                     f"use one of {list(SEED_POLICIES)}")])
    roots = config.roots_for(storyboard)
    add(_check_paths(defaults.get("loras"), LORA_KEYS, roots, "timeline", None, "defaults.loras"))
    max_frames = int(tmeta.get("max_shot_frames", config.max_shot_frames))

    seen: dict[str, Shot] = {}
    for shot in storyboard.shots:
        c, i, m = shot.name, shot.index, shot.metadata
        add(_unknown_keys(m, CLIP_KEYS, c, i, ""))
        add(_unknown_keys(m.get("overrides") or {}, OVERRIDE_KEYS, c, i, "overrides."))
        if shot.shot_id in seen:
            add([Problem(c, i, "shot_id", f"{shot.shot_id!r} is also the id of shot {seen[shot.shot_id].index + 1} "
                         f"{seen[shot.shot_id].name!r}", "give each shot a unique shot_id")])
        seen.setdefault(shot.shot_id, shot)
        prompt = m.get("prompt")
        if config.require_prompts and (not isinstance(prompt, str) or not prompt.strip()):
            add([Problem(c, i, "prompt", "this shot needs a prompt", "write what the shot shows in prompt",
                         code="missing_prompt")])
        for key in ("width", "height"):
            v = effective(storyboard, shot, key)
            if not isinstance(v, int) or v <= 0 or v % SIZE_STEP:
                near = max(SIZE_STEP, round((v if isinstance(v, (int, float)) else SIZE_STEP) / SIZE_STEP) * SIZE_STEP)
                add([Problem(c, i, key, f"{v!r} is not a multiple of {SIZE_STEP}", f"use {near}")])
        if shot.frames <= 0:
            add([Problem(c, i, "duration", "the clip is zero frames long", "give the clip a duration of 1 frame or more")])
        elif shot.frames > max_frames:
            add([Problem(c, i, "duration", f"{shot.frames} frames is beyond the maximum shot length {max_frames}",
                         f"cut it into shots of at most {max_frames} frames, or raise max_shot_frames")])
        seed = m.get("seed")
        if seed is not None and (not isinstance(seed, int) or isinstance(seed, bool) or not 0 <= seed <= MAX_SEED):
            add([Problem(c, i, "seed", f"{seed!r} is out of range", f"use an integer in 0..{MAX_SEED}")])
        handoff = m.get("handoff", "none")
        if handoff not in HANDOFF_MODES:
            add([Problem(c, i, "handoff", f"{handoff!r} is not a handoff mode", f"use one of {list(HANDOFF_MODES)}")])
        elif handoff == "previous" and i == 0:
            add([Problem(c, i, "handoff", "'previous' on the first shot of the track: nothing precedes it",
                         "set handoff: none")])
        elif handoff == "previous" and shot.follows_gap:
            add([Problem(c, i, "handoff", "'previous' across a gap: the shot before it is not adjacent",
                         "remove the gap or set handoff: none")])
        add(_check_paths(m.get("loras"), LORA_KEYS, roots, c, i, "loras"))
        add(_check_paths(m.get("images"), IMAGE_KEYS, roots, c, i, "images", frames=max(shot.frames, 0)))
        for key in ("reference_video", "ic_lora"):
            if m.get(key):
                _, why = roots.resolve(str(m[key]))
                if why:
                    add([Problem(c, i, key, f"{m[key]!r} {why}", "put the file under an asset root")])
        if bool(m.get("reference_video")) != bool(m.get("ic_lora")):
            add([Problem(c, i, "ic_lora" if m.get("reference_video") else "reference_video",
                         "IC-LoRA shots need both reference_video and ic_lora", "set both, or neither")])
    return report
