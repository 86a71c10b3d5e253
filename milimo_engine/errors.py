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


class RenderCancelled(MilimoEngineError):
    """A step callback (or a time limit) asked the render to stop between denoising steps."""

    def __init__(self, stage: str, step: int, reason: str = "cancelled by callback"):
        self.stage = stage
        self.step = step
        super().__init__(f"render stopped in {stage} at step {step}: {reason}")
