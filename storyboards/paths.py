"""Where outputs go: every path milimo writes is built here and checked to stay under the output root.

Names from a storyboard (its timeline name, shot ids) become path components only through `folder_key` or `slug`
or after validation as safe ids, and the result is checked once more after resolving, so a hostile
name (`../../x`, `/etc`, a symlink out) never writes outside the root.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from milimo_engine.atomic import atomic_write

from .errors import ConfigError
from .fields import folder_key, slug, unsafe_id

MARKER = ".milimo-storyboard"  # in each storyboard's folder: its exact name, and the store's id for it


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
        """`<root>/<folder_key>`: one folder per storyboard name (see `fields.folder_key`)."""
        return self.inside(self.root / folder_key(storyboard))

    def claim_problem(self, storyboard: str, uid: Callable[[], str | None]) -> str | None:
        """Why `storyboard` (`uid()`: its id in the store rendering it, None if that store has not seen it) cannot use
        its folder, or None. Its `.milimo-storyboard` names the storyboard and the store's id for it; another name, or
        the same name from another store (a second store rendering into the same --out, or a store made anew), would
        write its take-001 over the first one's. Read before anything is written."""
        marker = self.storyboard_dir(storyboard) / MARKER
        try:
            owner, _, owner_uid = marker.read_text(encoding="utf-8").strip().partition("\n")
        except (FileNotFoundError, NotADirectoryError):
            return None
        except (OSError, UnicodeDecodeError) as exc:
            return f"{marker} cannot be read ({type(exc).__name__})"
        if owner.strip() != storyboard:
            return f"{marker.parent} holds the takes of storyboard {owner.strip()!r}"
        owner_uid = owner_uid.strip().removeprefix("store-id ").strip()
        if owner_uid and owner_uid != uid():  # a marker with no id predates them: the first store to render claims it
            return f"{marker.parent} holds the takes of storyboard {storyboard!r} recorded in another store"
        return None

    def check_claim(self, storyboard: str, uid: Callable[[], str | None]) -> Path:
        """The storyboard's folder, if it is free or its own; ConfigError naming the owner otherwise."""
        why = self.claim_problem(storyboard, uid)
        if why:
            raise ConfigError(f"storyboard {storyboard!r} cannot write its takes: {why}",
                              "give it another --out (or render with the store that made them, --db), or give it "
                              "its own name (metadata milimo.storyboard_id)")
        return self.storyboard_dir(storyboard)

    def claim(self, storyboard: str, uid: str) -> Path:
        """The storyboard's folder, created and marked as this store's (refused if another storyboard holds it)."""
        folder = self.check_claim(storyboard, lambda: uid)
        marker, text = folder / MARKER, f"{storyboard}\nstore-id {uid}\n"
        if not marker.is_file() or marker.read_text(encoding="utf-8") != text:
            folder.mkdir(parents=True, exist_ok=True)
            atomic_write(marker, text)
        return folder

    def take_dir(self, storyboard: str, shot_id: str, number: int) -> Path:
        return self.inside(self.storyboard_dir(storyboard) / _part(shot_id) / f"take-{number:03d}")

    def _named(self, storyboard: str, name: str) -> Path:
        return self.inside(self.storyboard_dir(storyboard) / name)

    def imported_storyboard(self, storyboard: str) -> Path:
        """`<storyboard>.storyboard.otio`: an editor's cut with its shot list, as the storyboard it became."""
        return self._named(storyboard, f"{folder_key(storyboard)}.storyboard.otio")

    def rendered_timeline(self, storyboard: str, source_stem: str) -> Path:
        """`<source>.rendered.otio`: the cut with every take as a named media reference (beside the takes)."""
        return self._named(storyboard, f"{slug(source_stem, 'storyboard')}.rendered.otio")

    def conformed(self, storyboard: str, suffix: str) -> Path:
        """`<storyboard>.conformed<suffix>`: `milimo conform`'s default target."""
        return self._named(storyboard, f"{folder_key(storyboard)}.conformed{suffix}")

    def preview(self, storyboard: str) -> Path:
        return self._named(storyboard, "preview.mp4")

    def contact_sheet(self, storyboard: str) -> Path:
        return self._named(storyboard, "contact_sheet.png")

    def preview_parts(self, storyboard: str) -> Path:
        """The folder of the preview's parts (one .mov per stretch of the cut, named by what it shows)."""
        return self.inside(self.storyboard_dir(storyboard) / ".preview-parts")

    def delivery_dir(self, storyboard: str, profile: str) -> Path:
        """`<storyboard>/delivery/<profile>`: what `milimo deliver` writes in that profile's format and names."""
        return self.inside(self.storyboard_dir(storyboard) / "delivery" / slug(profile, "delivery"))

    def job_log(self, storyboard: str, number: int) -> Path:
        """The log of the `number`th render the dashboard started for `storyboard` in this process."""
        return self.inside(self.root / ".dashboard-logs" / f"{folder_key(storyboard)}-{number}.log")

    def take_log(self, storyboard: str, shot_id: str, number: int) -> Path:
        """What the render of take `number` said (`tasks.take_log`), beside its files."""
        return self.take_file(storyboard, shot_id, number, ".log")

    def server_log(self) -> Path:
        """Where `milimo serve` keeps the output of the Prefect server it runs."""
        return self.inside(self.root / ".serve" / "prefect-server.log")

    def take_file(self, storyboard: str, shot_id: str, number: int, suffix: str) -> Path:
        """`<storyboard>_<shot>_t<NNN><suffix>` in the take's folder: unique across the storyboard, so an
        editor's bin, an otioz bundle or a copy into one folder never sees two files of one name."""
        name = f"{folder_key(storyboard)}_{_part(shot_id)}_t{number:03d}{suffix}"
        return self.inside(self.take_dir(storyboard, shot_id, number) / name)


def _part(shot_id: str) -> str:
    return shot_id if not unsafe_id(shot_id) else slug(shot_id)
