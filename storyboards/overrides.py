"""Per-shot overrides (from `milimo rerender --set`, the dashboard or a rerun deployment).

They are applied to the loaded storyboard before validation, so an override is checked by the
same typed boundary as the same value written in the timeline, and only a storyboard that
validates has its overrides stored. A value of None (`--set key=null`) removes an override.
"""

from __future__ import annotations

import copy
import dataclasses
import json
from typing import Any

from .errors import OverrideError
from .load import Storyboard
from .schema import OVERRIDE_KEYS

CLIP_LEVEL = {"prompt", "negative_prompt", "seed", "quality"}
ALLOWED = sorted(CLIP_LEVEL | OVERRIDE_KEYS)

__all__ = ["ALLOWED", "OverrideError", "apply_overrides", "parse_assignments"]


def parse_assignments(items: list[str]) -> dict[str, Any]:
    """`["seed=5", "prompt=a boat", "steps=null"]` -> {"seed": 5, "prompt": "a boat", "steps": None}.

    Values are JSON where they parse (numbers, true/false), else text; `null` removes the override.
    Types and ranges are not judged here but by validation, like any value in the timeline."""
    out: dict[str, Any] = {}
    for item in items:
        key, sep, raw = item.partition("=")
        key = key.strip()
        if not sep or not key:
            raise OverrideError(f"--set {item!r}: expected key=value, e.g. seed=42 or prompt='a red boat'")
        if key not in ALLOWED:
            raise OverrideError(f"--set {key}: unknown key. Fix: use one of {ALLOWED}")
        if raw.strip() == "null":
            out[key] = None
            continue
        try:
            value = json.loads(raw)
        except json.JSONDecodeError:
            value = raw
        if key in ("prompt", "negative_prompt") and not isinstance(value, str):
            value = raw
        out[key] = value
    return out


def merge(stored: dict[str, dict[str, Any]], new: dict[str, dict[str, Any]] | None) -> dict[str, dict[str, Any]]:
    """Stored overrides with `new` on top; a None in `new` removes that key."""
    merged = {sid: dict(values) for sid, values in stored.items()}
    for shot_id, values in (new or {}).items():
        current = merged.setdefault(shot_id, {})
        for key, value in values.items():
            if value is None:
                current.pop(key, None)
            else:
                current[key] = value
    return {sid: values for sid, values in merged.items() if values}


def apply_overrides(board: Storyboard, overrides: dict[str, dict[str, Any]]) -> Storyboard:
    """A copy of `board` with each shot's overrides written into its milimo metadata.

    Overrides of a shot the file no longer has stay in the store but apply to nothing."""
    if not overrides:
        return board
    for shot_id, values in overrides.items():
        unknown = sorted(set(values) - set(ALLOWED))
        if unknown:
            raise OverrideError(f"shot {shot_id!r}: cannot override {unknown}. Fix: use one of {ALLOWED}")
    shots = []
    for shot in board.shots:
        values = {k: v for k, v in (overrides.get(shot.shot_id) or {}).items() if v is not None}
        if not values:
            shots.append(shot)
            continue
        meta = copy.deepcopy(shot.metadata)
        nested = dict(meta.get("overrides") or {})
        for key, value in values.items():
            if key in CLIP_LEVEL:
                meta[key] = value
            else:
                nested[key] = value
        if nested:
            meta["overrides"] = nested
        shots.append(dataclasses.replace(shot, metadata=meta, overridden=shot.overridden | frozenset(values)))
    return dataclasses.replace(board, shots=tuple(shots))
