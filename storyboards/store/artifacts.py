"""Artifacts as recorded when written (kind, path, size, mtime, sha256) and checked before trusted.

A quick check (exists, same size, same mtime) runs on every plan; a changed mtime, or `full=True`
(`milimo verify`), hashes the file again. A shot whose artifacts do not match is not done.

Paths are recorded relative to the output root they were written under (`stored_path`), with that root beside
them, and read back against the output root of the command that reads (`resolved_path`): a project folder moved
or mounted elsewhere keeps its takes, and a command run from another folder still finds them where they were
written. Paths outside the root, and records older than this, stay absolute.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any
from urllib.parse import unquote, urlparse

from milimo_engine.hashing import file_sha256


def artifact_record(kind: str, path: str | Path, frames: int | None = None, fps: float | None = None) -> dict[str, Any]:
    """What the store keeps of a file just written: enough to tell later whether it is still that file."""
    p = Path(path).resolve()
    st = p.stat()
    return {"kind": kind, "uri": p.as_uri(), "sha256": file_sha256(p), "frames": frames, "fps": fps,
            "bytes": st.st_size, "mtime_ns": st.st_mtime_ns}


def stored_path(path: str | Path | None, root: Path | None) -> str | None:
    """How the store records `path`: relative to `root` (POSIX separators) when it lies under it, else absolute."""
    if path is None or path == "":
        return None
    p = uri_path(str(path)) if str(path).startswith("file:") else Path(path)
    p = p if p.is_absolute() else p.resolve()
    if root is not None and p.is_relative_to(root):
        return p.relative_to(root).as_posix()
    return str(p)


def resolved_path(stored: str | None, roots: Sequence[Path]) -> str | None:
    """The file a record names: an absolute record as it is; a relative one under the first root where it exists
    (the reading command's output root, then the root it was written under), else under the first root."""
    if not stored:
        return stored
    p = uri_path(stored)
    if p.is_absolute() or not roots:
        return str(p)
    candidates = [root / p for root in roots]
    return str(next((c for c in candidates if c.exists()), candidates[0]))


def uri_path(uri: str) -> Path:
    return Path(unquote(urlparse(uri).path)) if uri.startswith("file:") else Path(uri)


def artifact_problem(uri: str, sha256: str, size: int | None, mtime_ns: int | None, full: bool = False,
                     roots: Sequence[Path] = ()) -> str | None:
    """None when the file is what was recorded, else "missing" / "damaged (...)"."""
    p = Path(resolved_path(uri, roots) or uri)
    try:
        st = p.stat()
    except FileNotFoundError:
        return "missing"
    except OSError as exc:
        return f"unreadable ({exc.strerror})"
    if size is not None and st.st_size != size:
        return f"damaged (size {st.st_size} bytes, recorded {size})"
    if full or mtime_ns is None or st.st_mtime_ns != mtime_ns:
        try:
            if file_sha256(p, cached=not full) != sha256:
                return "damaged (sha256 differs from the recorded one)"
        except OSError as exc:
            return f"unreadable ({exc.strerror})"
    return None
