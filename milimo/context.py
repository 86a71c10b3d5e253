"""One context per process: its settings, its stores (one engine per URL, schema checked once) and its output
layout. The CLI builds it from its options; a flow, a task on a farm worker or the dashboard ask for the process's
own. Shared and thread-safe: Prefect runs tasks in threads of the process.
"""

from __future__ import annotations

import threading
from pathlib import Path

from storyboards.paths import OutputLayout
from storyboards.store import Store

from . import settings as settings_module
from .settings import Settings

_lock = threading.Lock()
_stores: dict[str, Store] = {}
_opened: list[str] = []  # every URL an engine was opened for, in order (the once-per-process test counts them)


class Context:
    def __init__(self, settings: Settings):
        self.settings = settings

    def store(self, url: str | None = None, out: str | Path | None = None) -> Store:
        """The store at `url` (default: the settings'), opened once per process and shared, recording and reading
        files against output root `out` (default: the settings')."""
        key = url or self.settings.db_url
        with _lock:
            if key not in _stores:
                _stores[key] = Store.open(key)
                _opened.append(key)
            return _stores[key].under(self.layout(out).root)

    def existing_store(self, url: str | None = None) -> Store | None:
        """The store when it exists (a SQLite file that is there, or a server URL); None for a SQLite file not
        created yet, so a command that only reads, or checks bad input, never creates a database."""
        from sqlalchemy import make_url

        key = url or self.settings.db_url
        parsed = make_url(key)
        if key not in _stores and parsed.get_backend_name() == "sqlite" and parsed.database \
                and not Path(parsed.database).exists():
            return None
        return self.store(key)

    def layout(self, out: str | Path | None = None) -> OutputLayout:
        return OutputLayout.at(out or self.settings.out_root)


def current() -> Context:
    """This process's context, over its settings (`milimo.settings.current`)."""
    return Context(settings_module.current())


def opened_stores() -> list[str]:
    return list(_opened)
