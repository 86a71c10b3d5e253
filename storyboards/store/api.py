"""The store: import, plan, take lifecycle, leases, seams, reads, each in its own module, one `Store` over them.

Concurrency: take numbers come from a unique (shot, number) constraint; the shot row is
locked (SELECT ... FOR UPDATE) on PostgreSQL, and SQLite serialises writers, so two processes
recording takes at once never duplicate or overwrite one another.
"""

from __future__ import annotations

import functools
import inspect
from collections.abc import Callable
from typing import Any, TypeVar

from .db import on_a_fresh_connection
from .deliveries import DeliveredFile, DeliveriesMixin
from .leases import LeasesMixin
from .queue import QueueMixin, RunningTake, WorkerView
from .reads import ReadsMixin
from .records import ArtifactCheck, NoteView, SeamView, ShotStatus, TakeOutputs, TakeReview, TakeView, spec_json
from .reviews import ReviewsMixin
from .revisions import RevisionsMixin
from .seams import SeamsMixin
from .takes import TakesMixin

T = TypeVar("T")

__all__ = ["ArtifactCheck", "DeliveredFile", "NoteView", "SeamView", "ShotStatus", "Store", "TakeOutputs",
           "TakeReview", "TakeView", "RunningTake", "WorkerView", "spec_json"]


def reconnecting(operation: Callable[..., T]) -> Callable[..., T]:
    """A store operation (each one is its own transaction), run again on a fresh connection when the database
    dropped its connection (`db.on_a_fresh_connection`). A take is never left `running` by a connection that
    broke between its start and its end."""
    @functools.wraps(operation)
    def run(self: Any, *args: Any, **kwargs: Any) -> T:
        return on_a_fresh_connection(lambda: operation(self, *args, **kwargs))

    return run


class Store(RevisionsMixin, TakesMixin, ReviewsMixin, LeasesMixin, ReadsMixin, QueueMixin, SeamsMixin,
            DeliveriesMixin):
    """The metadata store, by concern: revisions and overrides, takes, reviews, leases, reads, what renders now
    (the queue), seams. Every public
    operation is one transaction, retried on a fresh connection when the database dropped the old one
    (`reconnecting`)."""

    def __init_subclass__(cls, **kwargs: Any) -> None:  # a subclass's operations reconnect too
        super().__init_subclass__(**kwargs)
        _wrap_operations(cls)


def _wrap_operations(cls: type) -> None:
    for name in dir(cls):
        if name.startswith("_") or name in ("open", "under"):
            continue
        attr = inspect.getattr_static(cls, name)
        if inspect.isfunction(attr) and not getattr(attr, "__wrapped__", None):
            setattr(cls, name, reconnecting(attr))


_wrap_operations(Store)
