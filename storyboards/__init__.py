"""The storyboard domain: OTIO timelines as storyboards, their validation and shot graph.

Independent of torch: a storyboard can be checked on any machine before a GPU is involved.
"""

from .graph import Chain, ShotGraph
from .load import Shot, Storyboard, load
from .schema import SCHEMA_VERSION
from .spec import ShotSpec, resolve_specs
from .validate import AssetRoots, Problem, StoryboardInvalid, ValidationConfig, validate

__all__ = ["AssetRoots", "Chain", "Problem", "SCHEMA_VERSION", "Shot", "ShotGraph", "ShotSpec", "Storyboard",
           "StoryboardInvalid", "ValidationConfig", "load", "resolve_specs", "validate"]
