"""Names of delivered files from a studio's template (`{storyboard}_{shot}_{quality}_v{take:03d}`): the template is
checked when the configuration is read, each value is made safe before it is put in, and the names of one delivery
must differ, so no file is written over another."""

from __future__ import annotations

import re
import string
from collections.abc import Mapping

SAFE = re.compile(r"^[A-Za-z0-9._-]+$")
FIELDS = ("storyboard", "shot", "take", "quality", "profile", "reel")
_SAMPLE = {"storyboard": "board", "shot": "shot", "take": 1, "quality": "final", "profile": "editorial",
           "reel": "ML000001"}


def check_template(template: str) -> str:
    """`template` if it names only known fields and its own text is [A-Za-z0-9._-]; ValueError saying what is
    wrong otherwise (pydantic turns it into the key's one line)."""
    try:
        parts = list(string.Formatter().parse(template))
    except ValueError as exc:
        raise ValueError(f"{template!r} is not a naming template ({exc}); write fields as {{shot}}") from None
    for literal, field, spec, conversion in parts:
        if literal and not SAFE.match(literal):
            raise ValueError(f"{template!r}: {literal!r} may hold only letters, digits, '.', '_' and '-'")
        if field is None:
            continue
        if field not in FIELDS:
            raise ValueError(f"{template!r}: unknown field {{{field}}}; the fields are {', '.join(FIELDS)}")
        if conversion or (spec and (field != "take" or not re.fullmatch(r"0?\d{1,2}d?", spec))):
            raise ValueError(f"{template!r}: {{{field}}} takes no conversion or format; only {{take}} a width, "
                             f"as {{take:03d}}")
    name = render_name(template, _SAMPLE)
    if name.startswith(".") or not SAFE.match(name):
        raise ValueError(f"{template!r} gives {name!r}; a name may not start with '.'")
    return template


def safe_value(value: object) -> str:
    """A value as it may appear in a file name: anything outside [A-Za-z0-9._-] becomes '-'."""
    return re.sub(r"[^A-Za-z0-9._-]+", "-", str(value)).strip("-.") or "x"


def render_name(template: str, values: Mapping[str, object]) -> str:
    return template.format(**{k: v if isinstance(v, int) else safe_value(v) for k, v in values.items()})
