"""The one typed boundary every shot setting crosses: timeline defaults, clip metadata, stored
overrides and `--set` values are all checked here, by pydantic in strict mode.

Strict means no silent coercion: `1.7` is not a seed, `"40"` is not a step count, `true` is not a
width. Each field carries the fix a person can act on.
"""

from __future__ import annotations

import hashlib
import re
import unicodedata
from typing import Annotated, Any

from pydantic import Field, TypeAdapter, ValidationError

from milimo_engine.limits import MAX_GUIDANCE, MAX_HANDLES, MAX_HANDOFF_M, MAX_SEED, MAX_SIDE, MAX_STEPS, SIZE_STEP
from milimo_engine.recipe import QUALITIES

from .schema import HANDOFF_MODES, SEED_POLICIES


def _int(lo: int, hi: int, **kw: Any) -> TypeAdapter:
    return TypeAdapter(Annotated[int, Field(strict=True, ge=lo, le=hi, **kw)])


_SIZE = _int(SIZE_STEP, MAX_SIDE, multiple_of=SIZE_STEP)
_TEXT = TypeAdapter(Annotated[str, Field(strict=True)])

# key -> (type, the fix for any value it refuses)
FIELDS: dict[str, tuple[TypeAdapter, str]] = {
    "width": (_SIZE, f"use a multiple of {SIZE_STEP} from {SIZE_STEP} to {MAX_SIDE}"),
    "height": (_SIZE, f"use a multiple of {SIZE_STEP} from {SIZE_STEP} to {MAX_SIDE}"),
    "steps": (_int(1, MAX_STEPS), f"use a whole number of denoising steps from 1 to {MAX_STEPS}, e.g. 40"),
    "guidance": (TypeAdapter(Annotated[float, Field(strict=True, ge=0.0, le=MAX_GUIDANCE, allow_inf_nan=False)]),
                 f"use a number from 0 to {MAX_GUIDANCE:g}, e.g. 3.0"),
    "seed": (_int(0, MAX_SEED), f"use a whole number from 0 to {MAX_SEED}"),
    "handoff_overlap": (_int(1, MAX_HANDOFF_M), f"use a whole number of latent frames from 1 to {MAX_HANDOFF_M}"),
    "temporal_upsample": (TypeAdapter(Annotated[bool, Field(strict=True)]), "use true or false"),
    "prompt": (_TEXT, "write the prompt as text"),
    "negative_prompt": (_TEXT, "write the negative prompt as text"),
    "model": (TypeAdapter(Annotated[str | None, Field(strict=True)]), "give the model folder as a path"),
    "seed_policy": (TypeAdapter(Annotated[str, Field(strict=True, pattern=f"^({'|'.join(SEED_POLICIES)})$")]),
                    f"use one of {list(SEED_POLICIES)}"),
    "handoff": (TypeAdapter(Annotated[str, Field(strict=True, pattern=f"^({'|'.join(HANDOFF_MODES)})$")]),
                f"use one of {list(HANDOFF_MODES)}"),
    "quality": (TypeAdapter(Annotated[str, Field(strict=True, pattern=f"^({'|'.join(QUALITIES)})$")]),
                "use final, or draft for the fast distilled recipe"),
    "max_shot_frames": (_int(1, 100_000), "use a whole number of frames, e.g. 257"),
    "handles": (_int(0, MAX_HANDLES), f"use a whole number of frames from 0 to {MAX_HANDLES}, e.g. 8"),
}


def check(key: str, value: Any) -> tuple[str, str] | None:
    """(what is wrong, the fix) for a value `key` cannot hold, None when it is fine or `key` is not typed here."""
    typed = FIELDS.get(key)
    if typed is None:
        return None
    adapter, fix = typed
    try:
        adapter.validate_python(value)
    except ValidationError as exc:
        error = exc.errors()[0]
        message = "is not one of the choices" if error["type"] == "string_pattern_mismatch" \
            else error["msg"].replace("Input should", "should")
        if key in ("width", "height") and isinstance(value, int) and not isinstance(value, bool) and value > 0:
            near = min(MAX_SIDE, max(SIZE_STEP, round(value / SIZE_STEP) * SIZE_STEP))
            fix = f"{fix}, e.g. {near}"
        return f"{value!r} {message[0].lower()}{message[1:]}", fix
    return None


SAFE_ID = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,127}$")


def slug(name: str, fallback: str = "shot") -> str:
    """A name that is safe as one path component and as an id: lower-case letters, digits and dashes."""
    s = re.sub(r"[^a-z0-9]+", "-", str(name).lower()).strip("-")[:96]
    return s or fallback


_PLAIN = re.compile(r"^[a-z0-9]+(?:-[a-z0-9]+)*$")


def folder_key(name: str) -> str:
    """The one path component a storyboard's files live under, distinct for every distinct name.

    A plain lower-case ASCII name is its own key (`lighthouse`). Any other name keeps its letters, Unicode
    included, lower-cased, and gains a short id from its exact text: `灯台-3f9a1c2e`, `lighthouse-demo-5b0d6e91`
    for "Lighthouse Demo". So two names that differ only in case, in characters a slug drops or past its
    length never share a folder, on case-insensitive file systems too (the key holds no capitals).
    """
    text = unicodedata.normalize("NFC", str(name))
    if _PLAIN.match(text) and len(text) <= 96:
        return text
    readable = re.sub(r"[\W_]+", "-", text.casefold()).strip("-")[:48].strip("-") or "storyboard"
    return f"{readable}-{hashlib.sha256(text.encode()).hexdigest()[:8]}"


def derived_id(name: str, fallback: str, salt: str = "") -> str:
    """A safe id (ASCII, see `unsafe_id`) for a name that has none of its own. An ASCII name keeps its slug
    (`Harbour wide` -> `harbour-wide`); a name the slug would lose (Japanese, Hebrew, emoji, accents) keeps what
    it can and gains a short id from its exact text and `salt`, so it is stable across re-cuts and distinct from
    its neighbours, instead of becoming `shot`, `shot-2`, ... by position."""
    text = unicodedata.normalize("NFC", str(name))
    base = slug(text, fallback="")
    if text.isascii() and base and not salt:
        return base
    digest = hashlib.sha256((text + "\x00" + salt).encode()).hexdigest()[:8]
    return f"{base[:80] or fallback}-{digest}"


def unsafe_id(value: Any) -> str | None:
    """Why `value` cannot be an id (it becomes a folder name), or None."""
    if not isinstance(value, str):
        return f"{value!r} is not text"
    if not SAFE_ID.match(value) or ".." in value:
        return f"{value!r} is not a safe name (a path, or characters other than letters, digits, '-', '_', '.')"
    return None
