"""The metadata store: the source of truth for what was rendered, how, and from what."""

from .api import (
    ArtifactCheck,
    DeliveredFile,
    NoteView,
    RunningTake,
    SeamView,
    ShotStatus,
    Store,
    TakeOutputs,
    TakeReview,
    TakeView,
    WorkerView,
)
from .artifacts import artifact_record
from .db import default_url, make_engine, open_engine, upgrade
from .models import VERDICTS, ReviewState, TakeStatus

__all__ = [
    "VERDICTS",
    "ArtifactCheck",
    "DeliveredFile",
    "NoteView",
    "ReviewState",
    "RunningTake",
    "SeamView",
    "ShotStatus",
    "Store",
    "TakeOutputs",
    "TakeReview",
    "TakeStatus",
    "TakeView",
    "WorkerView",
    "artifact_record",
    "default_url",
    "make_engine",
    "open_engine",
    "upgrade",
]
