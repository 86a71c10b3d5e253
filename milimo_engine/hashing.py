"""Content hashes of files (LoRAs, images, handoffs). Torch-free, so the storyboard side can share it."""

from __future__ import annotations

import hashlib
import os
from pathlib import Path

_cache: dict[tuple[str, int, int], str] = {}


def file_sha256(path: str | os.PathLike, cached: bool = True) -> str:
    """sha256 of a file, cached by (path, size, mtime) so a warm worker hashes each file once;
    `cached=False` reads it again (a check that must not trust the mtime)."""
    p = Path(path)
    st = p.stat()
    key = (str(p.resolve()), st.st_size, st.st_mtime_ns)
    if key not in _cache or not cached:
        h = hashlib.sha256()
        with open(p, "rb") as f:
            for chunk in iter(lambda: f.read(1 << 20), b""):
                h.update(chunk)
        _cache[key] = h.hexdigest()
    return _cache[key]
