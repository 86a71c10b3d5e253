"""`RenderRequest`: what a render is asked to do, whoever asks.

The CLI builds it from its flags, the dashboard from its form, `milimo serve` from milimo.toml, a script by hand;
the render flow takes it as its one parameter (Prefect shows it as a form and validates it). A rerender is a render
from a shot with that shot's overrides.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Literal

from pydantic import BaseModel, ConfigDict, Field, NonNegativeInt, PositiveFloat, PositiveInt

from storyboards.seams import SeamThresholds

if TYPE_CHECKING:
    from .config import MilimoConfig


@dataclass(frozen=True)
class MemorySettings:
    """How the shots of a render fit their devices: the request's choice, else milimo.toml's [engine]."""

    mode: str  # auto, or one of `milimo_engine.limits.MEMORY_MODES`
    device_memory: int | None  # bytes each device has (None: what it reports free)


class RenderRequest(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")

    storyboard: str = Field(description="the storyboard: .otio, .otioz, or a cut (FCP XML, EDL, AAF) with `prompts`")
    prompts: str | None = Field(None, description="the shot list (CSV) that makes an editor's cut a storyboard")
    size: tuple[int, int] | None = Field(None, description="with `prompts`: the shots' width and height")
    rate: PositiveFloat | None = Field(None, description="the frame rate of an EDL's timecodes")
    shots_track: str | None = Field(None, description="the video track whose clips are the shots (default: first)")
    handles: NonNegativeInt | None = Field(None, description="with `prompts`: frames each take renders before and "
                                           "after its cut (default: [cuts] handles, 8)")
    max_shot_frames: PositiveInt | None = Field(None, description="refuse shots longer than this (default: any "
                                                "length, rendered as chained segments)")
    only: list[str] | None = Field(None, description="only these shots (and what they need upstream)")
    from_shot: str | None = Field(None, description="render this shot again and the rest of its chain")
    overrides: dict[str, dict[str, Any]] | None = Field(None, description="per shot, settings to store and use")
    draft: bool = Field(False, description="this run renders every shot on the draft recipe")
    model: str | None = Field(None, description="model folder, or the official files (default: the tiny bundle)")
    out: str | None = Field(None, description="output root (default: the settings')")
    db: str | None = Field(None, description="store URL (default: the settings')")
    devices: list[str] | None = Field(None, description="devices of this host's GPU pool (default: every GPU)")
    time_limit_s: PositiveFloat | None = Field(None, description="per-shot limit, checked between steps")
    asset_roots: list[str] | None = Field(None, description="where storyboard paths may point")
    qa: SeamThresholds = Field(default_factory=SeamThresholds, description="seam QA thresholds")
    farm: str | None = Field(None, description="a Dask scheduler to render on (tcp://host:8786)")
    requested_by: str | None = Field(None, description="who asks (each take records it)")
    memory_mode: Literal["auto", "resident", "release", "fp8", "stream"] | None = Field(
        None, description="how each shot's weights sit on its device (default: [engine] memory_mode, auto: the "
        "fastest that fits)")
    device_memory: PositiveInt | None = Field(None, description="bytes each device has for a render (default: "
                                              "[engine] device_memory, else what the device reports free)")
    deliveries: list[str] | None = Field(None, description="after the render, the chosen takes delivered in these "
                                         "profiles ([delivery.NAME]; built in: preview, editorial, vfx)")

    @classmethod
    def rerender(cls, storyboard: str, from_shot: str, overrides: dict[str, Any] | None = None,
                 **fields: Any) -> RenderRequest:
        return cls(storyboard=storyboard, from_shot=from_shot,
                   overrides={from_shot: dict(overrides)} if overrides else None, **fields)

    def memory(self, config: MilimoConfig) -> MemorySettings:
        return MemorySettings(self.memory_mode or config.engine.memory_mode,
                              self.device_memory or config.engine.device_memory)

    def shot_ids(self) -> list[str]:
        """Every shot id the request names (each must exist in the storyboard)."""
        return list(self.only or []) + ([self.from_shot] if self.from_shot else []) + list(self.overrides or {})
