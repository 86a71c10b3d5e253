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
    def at(cls, root: str | Path | None) -> OutputLayout:
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

    def _named(self, storyboard: str, name: str) -> Path:
        return self.inside(self.storyboard_dir(storyboard) / name)

    def imported_storyboard(self, storyboard: str) -> Path:
        """`<storyboard>.storyboard.otio`: an editor's cut with its shot list, as the storyboard it became."""
        return self._named(storyboard, f"{slug(storyboard, 'storyboard')}.storyboard.otio")

    def rendered_timeline(self, storyboard: str, source_stem: str) -> Path:
        """`<source>.rendered.otio`: the cut with every take as a named media reference (beside the takes)."""
        return self._named(storyboard, f"{slug(source_stem, 'storyboard')}.rendered.otio")

    def conformed(self, storyboard: str, suffix: str) -> Path:
        """`<storyboard>.conformed<suffix>`: `milimo conform`'s default target."""
        return self._named(storyboard, f"{slug(storyboard, 'storyboard')}.conformed{suffix}")

    def preview(self, storyboard: str) -> Path:
        return self._named(storyboard, "preview.mp4")

    def contact_sheet(self, storyboard: str) -> Path:
        return self._named(storyboard, "contact_sheet.png")

    def slate(self, storyboard: str, shot_id: str) -> Path:
        """The card the preview shows for a shot with no good take."""
        return self.inside(self.storyboard_dir(storyboard) / ".slates" / f"{_part(shot_id)}.mp4")

    def job_log(self, storyboard: str, number: int) -> Path:
        """The log of the `number`th render the dashboard started for `storyboard` in this process."""
        return self.inside(self.root / ".dashboard-logs" / f"{slug(storyboard, 'storyboard')}-{number}.log")

    def take_file(self, storyboard: str, shot_id: str, number: int, suffix: str) -> Path:
        """`<storyboard>_<shot>_t<NNN><suffix>` in the take's folder: unique across the storyboard, so an
        editor's bin, an otioz bundle or a copy into one folder never sees two files of one name."""
        name = f"{slug(storyboard, fallback='storyboard')}_{_part(shot_id)}_t{number:03d}{suffix}"
        return self.inside(self.take_dir(storyboard, shot_id, number) / name)


def _part(shot_id: str) -> str:
    return shot_id if not unsafe_id(shot_id) else slug(shot_id)
