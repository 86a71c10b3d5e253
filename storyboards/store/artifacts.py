"""Artifacts as recorded when written (kind, path, size, mtime, sha256) and checked before trusted.

A quick check (exists, same size, same mtime) runs on every plan; a changed mtime, or `full=True`
(`milimo verify`), hashes the file again. A shot whose artifacts do not match is not done.
"""

from __future__ import annotations

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


def uri_path(uri: str) -> Path:
    return Path(unquote(urlparse(uri).path)) if uri.startswith("file:") else Path(uri)


def artifact_problem(uri: str, sha256: str, size: int | None, mtime_ns: int | None, full: bool = False) -> str | None:
    """None when the file is what was recorded, else "missing" / "damaged (...)"."""
    p = uri_path(uri)
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
