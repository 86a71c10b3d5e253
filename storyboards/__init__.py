"""The storyboard domain: OTIO timelines as storyboards, their validation and shot graph.

Independent of torch: a storyboard can be checked on any machine before a GPU is involved.
"""

from .errors import (
    ConfigError,
    Interrupted,
    MilimoError,
    OverrideError,
    Problem,
    ShotsFailed,
    StoreError,
    StoryboardFileError,
    StoryboardInvalid,
    UnknownShot,
)
from .graph import Chain, ShotGraph
from .load import Shot, Storyboard, load
from .schema import SCHEMA_VERSION
from .spec import ShotSpec, resolve_specs
from .validate import AssetRoots, ValidationConfig, validate

__all__ = ["AssetRoots", "Chain", "ConfigError", "Interrupted", "MilimoError", "OverrideError", "Problem",
           "SCHEMA_VERSION", "Shot", "ShotGraph", "ShotSpec", "ShotsFailed", "StoreError", "Storyboard",
           "StoryboardFileError", "StoryboardInvalid", "UnknownShot", "ValidationConfig", "load", "resolve_specs",
           "validate"]
