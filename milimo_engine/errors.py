"""Exceptions the engine raises for input a person can fix.

Every error names the field at fault and, where one exists, the nearest valid value,
so a pipeline engineer can correct a storyboard without reading engine code.
"""

from __future__ import annotations

from typing import Any


class MilimoEngineError(Exception):
    """Base of every engine error."""


class InvalidRequestError(MilimoEngineError, ValueError):
    """A `ShotRequest` field holds a value the engine cannot render.

    Invalid input is never retried by the orchestrator, so this class is what the
    flows catch to tell "fix the storyboard" apart from "try again".
    """

    def __init__(self, field: str, value: Any, message: str, nearest: Any = None):
        self.field = field
        self.value = value
        self.reason = message
        self.nearest = nearest
        hint = f" Nearest valid value: {nearest!r}." if nearest is not None else ""
        super().__init__(f"{field}={value!r}: {message}.{hint}")


class InvalidSizeError(InvalidRequestError):
    """Width or height is not a multiple of the two-stage size step (64)."""


class InvalidFrameCountError(InvalidRequestError):
    """`num_frames` is below 1 or above the per-render limit."""


class InvalidGuidanceError(InvalidRequestError):
    """A guidance setting names something the model does not have (e.g. an STG block)."""


class UnknownLoraKeysError(InvalidRequestError):
    """A LoRA file targets modules this transformer does not have: a LoRA for another model."""


class LoraFileError(InvalidRequestError):
    """A LoRA file is missing, not safetensors, or holds no LoRA weights."""


class MissingComponentError(MilimoEngineError, FileNotFoundError):
    """A model folder lacks a component the manifest or the layout requires."""

    def __init__(self, component: str, path: Any, message: str = "is missing"):
        self.component = component
        self.path = path
        super().__init__(
            f"model component {component!r} {message} (expected at {path}). "
            "Point --model at a folder in diffusers' LTX-2 layout with a milimo-model.json, "
            "or build the demo bundle with `milimo model tiny DIR`."
        )


class UnsupportedDtypeError(InvalidRequestError):
    """The requested dtype cannot run on the requested device."""


class OutOfMemoryBudgetError(InvalidRequestError):
    """A component that would not fit its device's budget even with everything else released: never loaded
    anyway (the planner chooses a mode whose budget fits every phase, so this names a planner that was not asked
    or a device shared with another process)."""


class RenderCancelled(MilimoEngineError):
    """A step callback (or a time limit) asked the render to stop between denoising steps."""

    def __init__(self, stage: str, step: int, reason: str = "cancelled by callback"):
        self.stage = stage
        self.step = step
        super().__init__(f"render stopped in {stage} at step {step}: {reason}")


class InvalidConditionError(InvalidRequestError):
    """An image condition or reference video cannot be applied (bad frame, unreadable image, strength)."""


class HandoffError(MilimoEngineError, ValueError):
    """Base of handoff problems; never retried, since the same file fails the same way."""


class HandoffIntegrityError(HandoffError):
    """A handoff file does not hold what its recorded sha256 says: truncated, edited or not a handoff."""

    def __init__(self, path: Any, message: str):
        self.path = path
        super().__init__(f"handoff {path}: {message}. Re-render the source shot to rebuild it.")


class HandoffMismatchError(HandoffError, InvalidRequestError):
    """A handoff made under other settings (model, VAE, size, fps) than the shot that would take it."""

    def __init__(self, field: str, handoff_value: Any, request_value: Any, source: str = ""):
        self.field = field
        self.value = request_value
        self.nearest = handoff_value
        origin = f" (made by {source})" if source else ""
        Exception.__init__(
            self,
            f"handoff.{field}: the handoff{origin} has {field}={handoff_value!r} but this shot has "
            f"{field}={request_value!r}. Render both shots with the same {field}, or re-render the source "
            f"shot under this shot's settings.")


class ModelFileError(MilimoEngineError, ValueError):
    """A model file or folder a person named cannot be used as it is: the file, what is wrong, and the fix.
    Never retried: the same file fails the same way."""

    def __init__(self, path: Any, message: str, fix: str):
        self.path, self.message, self.fix = path, message, fix
        super().__init__(f"{path}: {message}. Fix: {fix}")


class ModelImportError(ModelFileError):
    """`milimo model import`: a downloaded file that is missing, damaged, of another model, or not supported."""


class ManifestError(ModelFileError):
    """`milimo-model.json` holds a key or a value this engine does not know."""
