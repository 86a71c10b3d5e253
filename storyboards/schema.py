"""The `metadata["milimo"]` schema (documented in docs/storyboard.md): keys, defaults, types."""

from __future__ import annotations

import difflib
from typing import Any

NAMESPACE = "milimo"
SCHEMA_VERSION = 1

TIMELINE_KEYS = {"schema", "storyboard_id", "defaults", "shots_track", "max_shot_frames", "imported_from"}
DEFAULT_KEYS = {"model", "width", "height", "steps", "guidance", "negative_prompt", "loras", "seed", "quality",
                "seed_policy", "handoff_overlap", "temporal_upsample", "handles"}
CLIP_KEYS = {"shot_id", "prompt", "negative_prompt", "seed", "quality", "loras", "images", "handoff", "reference_video",
             "ic_lora", "overrides", "notes", "handles", "max_shot_frames"}
OVERRIDE_KEYS = {"width", "height", "steps", "guidance", "temporal_upsample", "handoff_overlap"}
LORA_KEYS = {"path", "weight"}
IMAGE_KEYS = {"path", "frame", "strength"}
HANDOFF_MODES = ("previous", "none")
SEED_POLICIES = ("from_shot_id", "fixed")

# width, height, steps None: the model's own (its manifest); negative_prompt None: the official one.
DEFAULTS: dict[str, Any] = {
    "width": None, "height": None, "steps": None, "guidance": 3.0, "negative_prompt": None, "quality": "final",
    "loras": [], "seed": 0, "seed_policy": "from_shot_id", "handoff_overlap": 1, "temporal_upsample": False,
    "model": None, "handles": 0,
}


def suggest(key: str, known: set[str]) -> str | None:
    """The known key a typo most likely meant."""
    match = difflib.get_close_matches(key, sorted(known), n=1, cutoff=0.6)
    return match[0] if match else None


def own_metadata(thing: Any, namespace: str) -> Any:
    """`thing.metadata[namespace]` itself, made empty where missing, to change in place: OpenTimelineIO converts a
    whole dict each time one is assigned (a 5,000-shot conform spent seconds converting settings back and forth)."""
    if namespace not in thing.metadata:
        thing.metadata[namespace] = {}
    return thing.metadata[namespace]


def plain(value):
    """OTIO's AnyDictionary/AnyVector to plain dicts and lists (for hashing and JSON)."""
    if hasattr(value, "items"):
        return {str(k): plain(v) for k, v in value.items()}
    if isinstance(value, (str, bytes)):
        return value
    if hasattr(value, "__iter__") and not isinstance(value, dict):
        return [plain(v) for v in value]
    return value
