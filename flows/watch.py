"""A watched folder's bookkeeping, so that `milimo serve --watch` behaves on a busy folder:

- one scan at a time: a scan that starts while the last one still renders (the interval is shorter than a
  render) ends at once instead of rendering the same cut beside it;
- a cut still being written (it, or its shot list, changed within `settle_s`) waits for a later scan;
- a cut that failed is tried again after a back-off that doubles (`backoff_s`, capped at `backoff_cap_s`), and
  after `max_attempts` failures not again until the cut or its shot list changes.

The lock and the failure record live under the output root (`.watch/`), shared by every host serving it.
"""

from __future__ import annotations

import fcntl
import hashlib
import json
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

from milimo.config import WatchRules
from milimo_engine.atomic import atomic_write


def state_dir(out_root: Path, folder: Path) -> Path:
    return out_root / ".watch" / hashlib.sha256(str(folder.resolve()).encode()).hexdigest()[:16]


@contextmanager
def one_scan(state: Path) -> Iterator[bool]:
    """True while this process holds the folder's scan lock; False when another scan holds it."""
    state.mkdir(parents=True, exist_ok=True)
    with open(state / "scan.lock", "a+") as handle:
        try:
            fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            yield False
            return
        try:
            yield True
        finally:
            fcntl.flock(handle, fcntl.LOCK_UN)


def settled(paths: list[Path], rules: WatchRules) -> bool:
    """Whether every file of the cut has stopped changing: not modified within `settle_s`, not empty."""
    now = time.time()
    for path in paths:
        st = path.stat()
        if st.st_size == 0 or now - st.st_mtime < rules.settle_s:
            return False
    return True


@dataclass
class Failures:
    """Failed attempts per cut content (the cut's hash with its shot list's), kept in `failures.json`."""

    path: Path
    record: dict[str, dict[str, float]]

    @classmethod
    def read(cls, state: Path) -> Failures:
        path = state / "failures.json"
        try:
            record = json.loads(path.read_text())
        except (FileNotFoundError, ValueError):
            record = {}
        return cls(path, record if isinstance(record, dict) else {})

    def due(self, content: str, rules: WatchRules) -> str | None:
        """None when the cut may be tried now, else why not."""
        entry = self.record.get(content)
        if not entry:
            return None
        if entry["attempts"] >= rules.max_attempts:
            return f"failed {int(entry['attempts'])} times; change the cut or its shot list to try again"
        wait = entry["retry_at"] - time.time()
        return f"failed {int(entry['attempts'])} time(s); tried again in {wait:.0f} s" if wait > 0 else None

    def failed(self, content: str, rules: WatchRules) -> int:
        entry = self.record.get(content) or {"attempts": 0, "retry_at": 0.0}
        attempts = int(entry["attempts"]) + 1
        delay = min(rules.backoff_s * 2 ** (attempts - 1), rules.backoff_cap_s)
        self.record[content] = {"attempts": attempts, "retry_at": time.time() + delay}
        self._write()
        return attempts

    def succeeded(self, content: str) -> None:
        if self.record.pop(content, None) is not None:
            self._write()

    def _write(self) -> None:
        atomic_write(self.path, json.dumps(self.record, indent=1, sort_keys=True))
