"""Per-shot overrides (from `milimo rerender --set`, the dashboard or a rerun deployment).

They are applied to the loaded storyboard before validation, so an override is checked exactly
like the same value written in the timeline, and recorded in the store so later renders keep it.
"""

from __future__ import annotations

import copy
import dataclasses
import json
from typing import Any

from .load import Storyboard
from .schema import OVERRIDE_KEYS

CLIP_LEVEL = {"prompt", "negative_prompt", "seed"}
ALLOWED = sorted(CLIP_LEVEL | OVERRIDE_KEYS)


class OverrideError(ValueError):
    """An override names an unknown shot or key, or is not `key=value`."""


def parse_assignments(items: list[str]) -> dict[str, Any]:
    """`["seed=5", "prompt=a boat"]` -> {"seed": 5, "prompt": "a boat"}: JSON values where they parse."""
    out: dict[str, Any] = {}
    for item in items:
        key, sep, raw = item.partition("=")
        key = key.strip()
        if not sep or not key:
            raise OverrideError(f"--set {item!r}: expected key=value, e.g. seed=42 or prompt='a red boat'")
        if key not in ALLOWED:
            raise OverrideError(f"--set {key}: unknown key; overridable keys are {ALLOWED}")
        try:
            value = json.loads(raw)
        except json.JSONDecodeError:
            value = raw
        if key in ("prompt", "negative_prompt") and not isinstance(value, str):
            value = raw
        out[key] = value
    return out


def apply_overrides(board: Storyboard, overrides: dict[str, dict[str, Any]]) -> Storyboard:
    """A copy of `board` with each shot's overrides written into its milimo metadata."""
    if not overrides:
        return board
    ids = {s.shot_id for s in board.shots}
    for shot_id, values in overrides.items():
        if shot_id not in ids:
            raise OverrideError(f"override for shot {shot_id!r}: no such shot; shots are {sorted(ids)}")
        unknown = sorted(set(values) - set(ALLOWED))
        if unknown:
            raise OverrideError(f"shot {shot_id!r}: cannot override {unknown}; overridable keys are {ALLOWED}")
    shots = []
    for shot in board.shots:
        values = overrides.get(shot.shot_id)
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
        shots.append(dataclasses.replace(shot, metadata=meta))
    return dataclasses.replace(board, shots=tuple(shots))
