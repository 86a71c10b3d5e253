"""Asset files checked at validate time by their headers, without loading them.

A LoRA that is not safetensors or an image that is not an image must be refused before anything
is stored, not when a GPU has been waiting for it.
"""

from __future__ import annotations

import json
import struct
from pathlib import Path

_MAX_HEADER = 100 * 1024 * 1024
_DTYPE_BYTES = {"F64": 8, "F32": 4, "F16": 2, "BF16": 2, "I64": 8, "I32": 4, "I16": 2, "I8": 1, "U8": 1, "BOOL": 1,
                "F8_E4M3": 1, "F8_E5M2": 1, "U16": 2, "U32": 4, "U64": 8}


def safetensors_problem(path: Path) -> str | None:
    """Why `path` is not a well-formed safetensors file (header length, JSON header, tensor offsets)."""
    try:
        size = path.stat().st_size
        with open(path, "rb") as fh:
            head = fh.read(8)
            if len(head) < 8:
                return "is not a safetensors file (too short)"
            (n,) = struct.unpack("<Q", head)
            if n <= 1 or n > min(_MAX_HEADER, size - 8):
                return "is not a safetensors file (bad header length)"
            header = json.loads(fh.read(n))
    except (OSError, ValueError, UnicodeDecodeError) as exc:
        return f"is not a safetensors file ({type(exc).__name__})"
    if not isinstance(header, dict):
        return "is not a safetensors file (header is not a table)"
    data = size - 8 - n
    tensors = 0
    for name, info in header.items():
        if name == "__metadata__":
            continue
        try:
            begin, end = info["data_offsets"]
            count = 1
            for d in info["shape"]:
                count *= int(d)
            expected = count * _DTYPE_BYTES.get(info["dtype"], 0)
        except (KeyError, TypeError, ValueError):
            return f"is not a safetensors file (tensor {name!r} is described wrongly)"
        if not 0 <= begin <= end <= data or (expected and end - begin != expected):
            return f"is truncated or damaged (tensor {name!r} lies outside the file)"
        tensors += 1
    if not tensors:
        return "holds no tensors"
    return None


MAX_IMAGE_SIDE = 16384  # far above any side the engine renders; a header claiming more is not an image we load


def image_problem(path: Path) -> str | None:
    """Why `path` is not an image PIL can decode (format, size, and the data behind the header). A header that
    claims a huge picture (a decompression bomb, or a damaged file) is refused by its size, before decoding."""
    import warnings

    from PIL import Image, UnidentifiedImageError

    try:
        with warnings.catch_warnings():
            warnings.simplefilter("error", Image.DecompressionBombWarning)
            with Image.open(path) as img:
                width, height = img.size
                if max(width, height) > MAX_IMAGE_SIDE:
                    return f"is {width}x{height} pixels, above the {MAX_IMAGE_SIDE}-pixel side milimo reads"
                img.verify()
    except (Image.DecompressionBombError, Image.DecompressionBombWarning) as exc:
        return f"claims a picture too large to decode safely ({str(exc)[:80]})"
    except (UnidentifiedImageError, OSError, SyntaxError, ValueError) as exc:
        return f"is not a readable image ({type(exc).__name__}: {str(exc)[:80]})"
    return None
