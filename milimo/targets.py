"""The one rule for a file a command writes where the user pointed it (`-o`): never onto a file the command read,
never onto an existing file unless `--force` says so. `prompts`, `import` and `conform` follow it.

A file the command read is refused even with `--force`: `milimo import cut.edl --prompts cut.csv -o cut.csv` would
replace the editor's shot list with a timeline, `milimo conform story.otio -o story.otio` would replace the
storyboard's prompts with takes. Sameness is the file system's (`samefile`), so another spelling of the path, a
hard link or a name that differs in case on a case-insensitive disk is the same file.
"""

from __future__ import annotations

import os
from collections.abc import Iterable
from pathlib import Path

from storyboards.errors import ConfigError


def _same(a: Path, b: Path) -> bool:
    try:
        return os.path.samefile(a, b)
    except OSError:
        return a.resolve() == b.resolve()


def writable_target(target: str | Path, read: Iterable[str | Path | None], *, force: bool, what: str) -> Path:
    """`target`, checked: not one of the files the command read, and not an existing file without `force`."""
    path = Path(target)
    for source in read:
        if source is not None and Path(source).exists() and path.exists() and _same(path, Path(source)):
            raise ConfigError(f"{path} is the {what}'s own input {Path(source)}: writing there would destroy it",
                              "give -o a new file")
    if path.exists() and path.is_dir():
        raise ConfigError(f"{path} is a folder", "give -o a file name")
    if path.exists() and not force:
        raise ConfigError(f"{path} exists (an existing file is never overwritten)",
                          "give another -o, or --force to replace it")
    return path
