"""The store: import, plan, take lifecycle, leases, seams, reads, each in its own module, one `Store` over them.

Concurrency: take numbers come from a unique (shot, number) constraint; the shot row is
locked (SELECT ... FOR UPDATE) on PostgreSQL, and SQLite serialises writers, so two processes
recording takes at once never duplicate or overwrite one another.
"""

from __future__ import annotations

from .leases import LeasesMixin
from .reads import ReadsMixin
from .records import ArtifactCheck, SeamView, ShotStatus, TakeOutputs, TakeView, spec_json
from .revisions import RevisionsMixin
from .seams import SeamsMixin
from .takes import TakesMixin

__all__ = ["ArtifactCheck", "SeamView", "ShotStatus", "Store", "TakeOutputs", "TakeView", "spec_json"]


class Store(RevisionsMixin, TakesMixin, LeasesMixin, ReadsMixin, SeamsMixin):
    """The metadata store, by concern: revisions and overrides, takes, leases, reads, seams."""
