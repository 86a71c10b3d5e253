"""The metadata store: the source of truth for what was rendered, how, and from what."""

from .api import ArtifactCheck, NoteView, SeamView, ShotStatus, Store, TakeOutputs, TakeReview, TakeView
from .artifacts import artifact_record
from .db import default_url, make_engine, open_engine, upgrade
from .models import VERDICTS, ReviewState, TakeStatus

__all__ = [
    "VERDICTS",
    "ArtifactCheck",
    "NoteView",
    "ReviewState",
    "SeamView",
    "ShotStatus",
    "Store",
    "TakeOutputs",
    "TakeReview",
    "TakeStatus",
    "TakeView",
    "artifact_record",
    "default_url",
    "make_engine",
    "open_engine",
    "upgrade",
]
