"""The metadata store: the source of truth for what was rendered, how, and from what."""

from .api import ArtifactCheck, SeamView, ShotStatus, Store, TakeOutputs, TakeView
from .artifacts import artifact_record
from .db import default_url, make_engine, open_engine, upgrade
from .models import TakeStatus

__all__ = [
    "ArtifactCheck",
    "SeamView",
    "ShotStatus",
    "Store",
    "TakeOutputs",
    "TakeStatus",
    "TakeView",
    "artifact_record",
    "default_url",
    "make_engine",
    "open_engine",
    "upgrade",
]
