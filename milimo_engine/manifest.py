"""`milimo-model.json`: what a model folder holds beyond diffusers' own layout.

Lightricks publishes LTX-2 in diffusers' layout (transformer/, vae/, audio_vae/, ...). The
upsamplers and LoRAs sit beside it under names that vary by release, so a small manifest
names them, with the model id and the default schedules the store records with every take.
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from .errors import InvalidGuidanceError, ManifestError, MissingComponentError

MANIFEST_NAME = "milimo-model.json"
MANIFEST_FORMAT = 1

DISTILLED_SIGMAS = (0.909375, 0.725, 0.421875, 0.0)

DEFAULT_COMPONENTS = {
    "transformer": "transformer",
    "vae": "vae",
    "audio_vae": "audio_vae",
    "vocoder": "vocoder",
    "connectors": "connectors",
    "text_encoder": "text_encoder",
    "tokenizer": "tokenizer",
    "scheduler": "scheduler",
    "spatial_upsampler": "latent_upsampler",
    "temporal_upsampler": "temporal_upsampler",
}
REQUIRED_COMPONENTS = ("transformer", "vae", "audio_vae", "vocoder", "connectors", "text_encoder", "tokenizer")


@dataclass(frozen=True)
class ScheduleDefaults:
    """The token-count-shifted stage-1 schedule (FlowMatch, exponential shift, terminal stretch)."""

    stage1_steps: int = 40
    base_shift: float = 0.95
    max_shift: float = 2.05
    base_seq_len: int = 1024
    max_seq_len: int = 4096
    shift_terminal: float | None = 0.1
    distilled_sigmas: tuple[float, ...] = DISTILLED_SIGMAS


@dataclass(frozen=True)
class ModelManifest:
    model_id: str
    components: dict[str, str] = field(default_factory=lambda: dict(DEFAULT_COMPONENTS))
    distilled_lora: str | None = "loras/ltx-2-distilled-lora.safetensors"
    loras: dict[str, str] = field(default_factory=dict)
    schedule: ScheduleDefaults = field(default_factory=ScheduleDefaults)
    # The blocks whose self-attention STG skips, per stream (ltx-pipelines: [29] for both on LTX-2, [28] on 2.3).
    stg_blocks: tuple[int, ...] = (29,)
    audio_stg_blocks: tuple[int, ...] | None = None  # None: the same blocks as the video stream
    max_frames: int = 257
    # Long shots render as chained segments of at most this many frames (8k+1).
    segment_frames: int = 121
    # Image conditions are re-compressed as one H.264 frame at the CRF the model was trained on.
    image_crf: int = 33
    max_sequence_length: int = 1024
    # The cross-modal attention's AdaLN takes the other modality's sigma, as ltx-core does for every version;
    # False is diffusers' per-token variant ("legacy LTX-2.0" there), which the official code does not have.
    cross_timestep: bool = True
    # The final size a shot renders at when nothing asks for another: the official 1536x1024 for real models.
    default_size: tuple[int, int] = (1536, 1024)
    random_weights: bool = False
    format: int = MANIFEST_FORMAT
    version: str = "2.0"  # the LTX-2 generation ("2.0", "2.3"), from the checkpoint's model_version
    negative_prompt: str | None = None  # None: the official one (`milimo_engine.recipe`)
    distilled_lora_strength: float = 1.0  # how strongly stage 2 (and the draft recipe) applies the distilled LoRA
    sources: dict[str, str] = field(default_factory=dict)  # file it was imported from -> sha256

    @classmethod
    def read(cls, model_dir: Path) -> ModelManifest:
        """The folder's manifest; a key or value this engine does not know raises ManifestError naming it."""
        path = Path(model_dir) / MANIFEST_NAME
        if not path.is_file():
            raise MissingComponentError("milimo-model.json", path, "is missing")
        try:
            raw: dict[str, Any] = json.loads(path.read_text())
        except (json.JSONDecodeError, UnicodeDecodeError) as exc:
            raise ManifestError(path, f"is not valid JSON ({exc})", "fix the line it names, or write the folder "
                                "again with `milimo model import`") from None
        if not isinstance(raw, dict):
            raise ManifestError(path, "is not a JSON object", "write the folder again with `milimo model import`")
        _refuse_unknown(path, set(raw), set(cls.__dataclass_fields__), "")
        schedule = raw.pop("schedule", {}) or {}
        _refuse_unknown(path, set(schedule), set(ScheduleDefaults.__dataclass_fields__), "schedule.")
        try:
            if "distilled_sigmas" in schedule:
                schedule["distilled_sigmas"] = tuple(float(s) for s in schedule["distilled_sigmas"])
            components = dict(DEFAULT_COMPONENTS)
            components.update(raw.pop("components", {}) or {})
            raw["stg_blocks"] = tuple(int(b) for b in raw.get("stg_blocks", (29,)))
            if raw.get("audio_stg_blocks") is not None:
                raw["audio_stg_blocks"] = tuple(int(b) for b in raw["audio_stg_blocks"])
            # Bundles written before `default_size`: the tiny random ones keep their small size.
            raw["default_size"] = tuple(int(v) for v in raw.get(
                "default_size", (768, 512) if raw.get("random_weights") else (1536, 1024)))
        except (TypeError, ValueError) as exc:
            raise ManifestError(path, f"holds a value of the wrong type ({exc})",
                                "write lists of whole numbers for blocks and sizes, numbers for sigmas") from None
        return cls(components=components, schedule=ScheduleDefaults(**schedule), **raw)

    @property
    def default_negative_prompt(self) -> str:
        from .recipe import DEFAULT_NEGATIVE_PROMPT

        return DEFAULT_NEGATIVE_PROMPT if self.negative_prompt is None else self.negative_prompt

    def write(self, model_dir: Path) -> Path:
        path = Path(model_dir) / MANIFEST_NAME
        data = asdict(self)
        path.write_text(json.dumps(data, indent=2, sort_keys=True) + "\n")
        return path

    def shot_defaults(self) -> dict[str, int | str]:
        """What a shot that names no size, step count or negative prompt renders with on this model (per version:
        the manifest)."""
        return {"width": self.default_size[0], "height": self.default_size[1], "steps": self.schedule.stage1_steps,
                "negative_prompt": self.default_negative_prompt}

    def check_stg_blocks(self, model_dir: Path) -> None:
        """Each stream's STG blocks exist in this transformer (its `config.json` `num_layers`), so a wrong
        manifest is refused before anything renders or is stored, not at every shot."""
        config = self.component_path(model_dir, "transformer") / "config.json"
        if not config.is_file():
            return  # a single-file transformer: checked when the guider is built
        layers = int(json.loads(config.read_text()).get("num_layers", 48))
        for name, blocks in (("stg_blocks", self.stg_blocks), ("audio_stg_blocks", self.audio_stg_blocks or ())):
            if any(not 0 <= b < layers for b in blocks):
                raise InvalidGuidanceError(
                    f"{Path(model_dir) / MANIFEST_NAME}: {name}",
                    tuple(blocks),
                    f"this transformer has blocks 0..{layers - 1} ({config}: num_layers={layers})",
                    nearest=tuple(min(max(b, 0), layers - 1) for b in blocks),
                )

    def component_path(self, model_dir: Path, component: str) -> Path:
        rel = self.components.get(component)
        if rel is None:
            raise MissingComponentError(component, Path(model_dir) / "?", "is not named in milimo-model.json")
        return Path(model_dir) / rel


def _refuse_unknown(path: Path, given: set[str], known: set[str], prefix: str) -> None:
    import difflib

    for key in sorted(given - known):
        close = difflib.get_close_matches(key, sorted(known), n=1)
        raise ManifestError(
            path,
            f"{prefix}{key}: unknown key",
            f"did you mean {prefix}{close[0]!r}?" if close else f"use one of {sorted(known)}",
        )
