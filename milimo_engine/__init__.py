"""Milimo's LTX-2 engine: the two-stage pipeline, the model ledger and the tiny demo model.

Usable alone (a notebook, a script); never imports Prefect, OTIO or SQL. The names below load
lazily, so torch-free parts (`milimo_engine.hashing`, `milimo_engine.frames`) import without torch.
"""

from importlib import import_module
from typing import TYPE_CHECKING

_EXPORTS = {
    "AppliedLora": "ledger", "LoadEvent": "ledger", "ModelLedger": "ledger",
    "ModelManifest": "manifest", "TwoStagePipeline": "pipeline", "ShotResult": "result",
    "Guidance": "request", "LoraSpec": "request", "ModalityGuidance": "request", "ShotRequest": "request",
    "build_tiny_model": "tiny", "ensure_tiny_model": "tiny",
    "ImageCondition": "conditioning", "Handoff": "handoff", "ICLoraPipeline": "ic_lora",
    **{name: "errors" for name in (
        "HandoffError", "HandoffIntegrityError", "HandoffMismatchError", "InvalidConditionError",
        "InvalidFrameCountError", "InvalidGuidanceError", "InvalidRequestError", "InvalidSizeError", "LoraFileError",
        "MilimoEngineError", "MissingComponentError", "RenderCancelled", "UnknownLoraKeysError",
        "UnsupportedDtypeError")},
}
__all__ = sorted(_EXPORTS)


def __getattr__(name: str):
    if name in _EXPORTS:
        value = getattr(import_module(f".{_EXPORTS[name]}", __name__), name)
        globals()[name] = value
        return value
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


if TYPE_CHECKING:
    from .conditioning import ImageCondition  # noqa: F401
    from .errors import *  # noqa: F401,F403
    from .handoff import Handoff  # noqa: F401
    from .ic_lora import ICLoraPipeline  # noqa: F401
    from .ledger import AppliedLora, LoadEvent, ModelLedger  # noqa: F401
    from .manifest import ModelManifest  # noqa: F401
    from .pipeline import TwoStagePipeline  # noqa: F401
    from .request import Guidance, LoraSpec, ModalityGuidance, ShotRequest  # noqa: F401
    from .result import ShotResult  # noqa: F401
    from .tiny import build_tiny_model, ensure_tiny_model  # noqa: F401
