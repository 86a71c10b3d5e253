"""Where outputs go: every path milimo writes is built here and checked to stay under the output root.

Names from a storyboard (its timeline name, shot ids) become path components only through `slug`
or after validation as safe ids, and the result is checked once more after resolving, so a hostile
name (`../../x`, `/etc`, a symlink out) never writes outside the root.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from .errors import ConfigError
from .fields import slug, unsafe_id


@dataclass(frozen=True)
class OutputLayout:
    root: Path

    @classmethod
    def at(cls, root: str | Path | None) -> "OutputLayout":
        return cls(Path(root or "renders").expanduser().resolve())

    def inside(self, path: Path) -> Path:
        resolved = path.resolve()
        if not resolved.is_relative_to(self.root):
            raise ConfigError(f"{path} would be written outside the output root {self.root}",
                              "use shot ids and timeline names without path separators or '..'")
        return resolved

    def storyboard_dir(self, storyboard: str) -> Path:
        return self.inside(self.root / slug(storyboard, fallback="storyboard"))

    def take_dir(self, storyboard: str, shot_id: str, number: int) -> Path:
        return self.inside(self.storyboard_dir(storyboard) / _part(shot_id) / f"take-{number:03d}")

    def take_file(self, storyboard: str, shot_id: str, number: int, suffix: str) -> Path:
        """`<storyboard>_<shot>_t<NNN><suffix>` in the take's folder: unique across the storyboard, so an
        editor's bin, an otioz bundle or a copy into one folder never sees two files of one name."""
        name = f"{slug(storyboard, fallback='storyboard')}_{_part(shot_id)}_t{number:03d}{suffix}"
        return self.inside(self.take_dir(storyboard, shot_id, number) / name)


def _part(shot_id: str) -> str:
    return shot_id if not unsafe_id(shot_id) else slug(shot_id)
