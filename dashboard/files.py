"""Files by id, with HTTP Range so a browser can seek in a video."""

from __future__ import annotations

import mimetypes
import os
from pathlib import Path

from fastapi import HTTPException, Request
from fastapi.responses import FileResponse, Response


def ranged_file(request: Request, path: Path) -> Response:
    """The whole file, or the byte range the request asks for (206), or 416 for a range past the end."""
    if not path.is_file():
        raise HTTPException(404, "no such file")
    size = path.stat().st_size
    media = mimetypes.guess_type(path.name)[0] or "application/octet-stream"
    header = request.headers.get("range")
    if not header or not header.startswith("bytes="):
        return FileResponse(path, media_type=media, headers={"Accept-Ranges": "bytes"})
    first, _, last = header[6:].split(",")[0].partition("-")
    try:
        if first:
            start, end = int(first), int(last) if last else size - 1
        else:
            start, end = max(0, size - int(last)), size - 1
    except ValueError:
        raise HTTPException(416, "bad range") from None
    end = min(end, size - 1)
    if start > end or start >= size:
        return Response(status_code=416, headers={"Content-Range": f"bytes */{size}"})
    with open(path, "rb") as fh:
        fh.seek(start)
        data = fh.read(end - start + 1)
    return Response(data, status_code=206, media_type=media, headers={
        "Content-Range": f"bytes {start}-{end}/{size}", "Accept-Ranges": "bytes", "Content-Length": str(len(data))})


def text_file(path: Path, missing: str) -> Response:
    """A log as plain text, never sniffed as HTML (it holds prompts and other text people typed), never cached (it
    grows while its render runs)."""
    if not path.is_file():
        raise HTTPException(404, missing)
    return FileResponse(path, media_type="text/plain; charset=utf-8",
                        headers={"X-Content-Type-Options": "nosniff", "Cache-Control": "no-store"})


def inside(path: str | os.PathLike, root: Path) -> Path | None:
    """A recorded path, only when it lies under the output root."""
    resolved = Path(path).resolve()
    return resolved if resolved.is_relative_to(root.resolve()) else None
