"""One way to write a file: under a unique temporary name beside the target, fsynced, then renamed.

A reader never sees a half-written file under the final name, and two processes writing the same
target never share a temporary file. Temporary names carry the host and pid that made them, so a
later run can tell the leftovers of a dead process (kill -9) from files another process is still
writing, and remove only the former (`sweep_partials`).
"""

from __future__ import annotations

import contextlib
import os
import re
import secrets
import socket
from collections.abc import Callable, Iterator
from pathlib import Path

PARTIAL = ".partial."
_PARTIAL_RE = re.compile(r"^\..*\.partial\.(?P<host>[^.]+)\.(?P<pid>\d+)\.[0-9a-f]{8}")


def _host() -> str:
    return re.sub(r"[^A-Za-z0-9-]", "-", socket.gethostname()) or "host"


def temp_path(target: str | os.PathLike, suffix: str | None = None) -> Path:
    """A name beside `target` no other process or thread uses; it keeps the target's suffix (ffmpeg and
    PIL pick the format from it) unless `suffix` names another."""
    t = Path(target)
    return t.with_name(f".{t.name}{PARTIAL}{_host()}.{os.getpid()}.{secrets.token_hex(4)}{suffix or t.suffix}")


def _fsync_dir(folder: Path) -> None:
    with contextlib.suppress(OSError):
        fd = os.open(folder, os.O_RDONLY)
        try:
            os.fsync(fd)
        finally:
            os.close(fd)


@contextlib.contextmanager
def atomic_path(target: str | os.PathLike) -> Iterator[Path]:
    """Yield a temporary path to write; on success it is fsynced and renamed to `target`, on any
    error (an interrupt included) it is removed and `target` is left as it was."""
    final = Path(target)
    final.parent.mkdir(parents=True, exist_ok=True)
    tmp = temp_path(final)
    try:
        yield tmp
        with open(tmp, "rb+") as fh:
            os.fsync(fh.fileno())
        os.replace(tmp, final)
        _fsync_dir(final.parent)
    finally:
        tmp.unlink(missing_ok=True)


def atomic_write(target: str | os.PathLike, data: bytes | str | Callable[[Path], object]) -> Path:
    """Write bytes, text, or whatever `data(tmp_path)` writes, atomically to `target`."""
    with atomic_path(target) as tmp:
        if callable(data):
            data(tmp)
        else:
            tmp.write_bytes(data.encode() if isinstance(data, str) else data)
    return Path(target)


def pid_alive(pid: int) -> bool:
    """Whether process `pid` of this host still runs (a zombie does not)."""
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    try:
        return Path(f"/proc/{pid}/stat").read_text().split(")")[-1].split()[0] != "Z"
    except OSError:
        return True


def sweep_partials(folder: str | os.PathLike) -> list[Path]:
    """Remove temporary files under `folder` left by processes of this host that no longer run."""
    root = Path(folder)
    if not root.is_dir():
        return []
    host, removed = _host(), []
    for path in root.rglob(f"*{PARTIAL}*"):
        m = _PARTIAL_RE.match(path.name)
        if m and m["host"] == host and not pid_alive(int(m["pid"])) and path.is_file():
            path.unlink(missing_ok=True)
            removed.append(path)
    return removed
