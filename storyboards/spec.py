"""ShotSpec: the fully resolved, frozen settings of one shot, and the hash that identifies them.

The hash covers content, not places: LoRAs and images enter by sha256, so the same storyboard
on two machines with different mount points gives the same spec hash.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import asdict, dataclass, fields
from functools import cached_property
from pathlib import Path
from typing import TYPE_CHECKING

from milimo_engine.hashing import file_sha256
from milimo_engine.manifest import ModelManifest
from milimo_engine.recipe import DEFAULT_NEGATIVE_PROMPT, recipe_id

from .load import Storyboard
from .validate import ValidationConfig, effective, handles_of, validate

if TYPE_CHECKING:
    from milimo_engine import Handoff, ShotRequest


@dataclass(frozen=True)
class LoraRef:
    path: str
    sha256: str
    weight: float


@dataclass(frozen=True)
class ImageRef:
    path: str
    sha256: str
    frame: int
    strength: float


@dataclass(frozen=True)
class ShotSpec:
    shot_id: str
    model_id: str
    prompt: str
    negative_prompt: str
    seed: int
    width: int
    height: int
    num_frames: int
    fps: float
    steps: int
    guidance: float
    loras: tuple[LoraRef, ...]
    images: tuple[ImageRef, ...]
    handoff: str
    handoff_overlap: int
    temporal_upsample: bool
    reference_video: str | None = None
    ic_lora: str | None = None
    quality: str = "final"
    recipe: str = recipe_id("final")  # the engine's recipe and version: a new version never reuses old takes
    head: int = 0  # handle frames rendered before the cut (`validate.handles_of`); the take is head+num_frames+tail
    tail: int = 0

    def canonical(self) -> dict:
        """What the hash covers: every setting, files by content hash, not by path. Without handles, the fields
        are left out, so a spec from before handles existed keeps its hash (and its takes)."""
        d = self.as_dict()
        if not self.head and not self.tail:
            del d["head"], d["tail"]
        d["loras"] = [{"sha256": lo.sha256, "weight": lo.weight} for lo in self.loras]
        d["images"] = [{"sha256": im.sha256, "frame": im.frame, "strength": im.strength} for im in self.images]
        for key in ("reference_video", "ic_lora"):
            if d[key]:
                d[key] = file_sha256(Path(d[key]))
        return d

    def as_dict(self) -> dict:
        """`dataclasses.asdict`, the same dict, without its deep copy of every value: a spec holds only plain
        values and tuples of LoraRef/ImageRef (2 of the 6 s of importing a 5,000-shot cut went to asdict)."""
        d = {f.name: getattr(self, f.name) for f in fields(self)}
        d["loras"] = tuple(asdict(lo) for lo in self.loras)
        d["images"] = tuple(asdict(im) for im in self.images)
        return d

    def request(self, handoff: Handoff | None = None) -> ShotRequest:
        """The engine's request for this shot, starting from `handoff` (the previous shot's tail) if given."""
        from milimo_engine import Guidance, ImageCondition, LoraSpec, ShotRequest

        return ShotRequest(
            prompt=self.prompt, negative_prompt=self.negative_prompt, seed=self.seed, width=self.width,
            height=self.height, num_frames=self.head + self.num_frames + self.tail, fps=self.fps, steps=self.steps,
            guidance=Guidance().with_cfg(self.guidance),
            loras=tuple(LoraSpec(Path(lo.path), lo.weight) for lo in self.loras),
            images=tuple(ImageCondition(im.path, self.head + im.frame, im.strength) for im in self.images),
            handoff=handoff, handoff_m=self.handoff_overlap, temporal_upsample=self.temporal_upsample,
            quality=self.quality)

    @classmethod
    def from_data(cls, data: dict) -> ShotSpec:
        """A spec as the store recorded it (`spec_json`): the same fields, the same hash."""
        values = {f.name: data[f.name] for f in fields(cls) if f.name in data}
        values["loras"] = tuple(LoraRef(**lo) for lo in data.get("loras", ()))
        values["images"] = tuple(ImageRef(**im) for im in data.get("images", ()))
        spec = cls(**values)
        if data.get("spec_hash") and spec.spec_hash != data["spec_hash"]:
            raise ValueError(f"shot {spec.shot_id}: the recorded spec does not hash to its own hash")
        return spec

    @cached_property
    def spec_hash(self) -> str:
        text = json.dumps(self.canonical(), sort_keys=True, separators=(",", ":"), ensure_ascii=False)
        return hashlib.sha256(text.encode()).hexdigest()


def _negative(value: object, model_default: object) -> str:
    """Unset: the model's official negative prompt; "" written in the storyboard: none."""
    if value is not None:
        return str(value)
    return DEFAULT_NEGATIVE_PROMPT if model_default is None else str(model_default)


def shot_seed(base: int, shot_id: str, policy: str) -> int:
    """`from_shot_id`: each shot its own seed, stable when shots are reordered or inserted."""
    if policy == "fixed":
        return base
    return (base + int(hashlib.sha256(shot_id.encode()).hexdigest()[:12], 16)) % (2**31)


def resolve_specs(storyboard: Storyboard, model_id: str, config: ValidationConfig | None = None,
                  model_defaults: dict[str, int | str] | None = None, validated: bool = False) -> dict[str, ShotSpec]:
    """Validate (unless the caller just did: `validated`), then resolve every shot; raises StoryboardInvalid with all
    problems. Size, steps and negative prompt that neither the shot nor the timeline sets come from
    `model_defaults` (the model manifest's `shot_defaults()`; without one, a real LTX-2 model's)."""
    config = config or ValidationConfig()
    if not validated:
        validate(storyboard, config).raise_if_invalid(str(storyboard.source_path))
    roots = config.roots_for(storyboard)
    defaults = storyboard.timeline_metadata.get("defaults") or {}
    model = model_defaults or ModelManifest(model_id=model_id).shot_defaults()

    def setting(shot, key):
        value = effective(storyboard, shot, key)
        return model[key] if value is None and key in model else value

    specs: dict[str, ShotSpec] = {}
    for shot in storyboard.shots:
        m = shot.metadata
        loras = []
        for entry in list(defaults.get("loras") or []) + list(m.get("loras") or []):
            path = roots.path(str(entry["path"]))
            loras.append(LoraRef(str(path), file_sha256(path), float(entry.get("weight", 1.0))))
        images = []
        for entry in m.get("images") or []:
            path = roots.path(str(entry["path"]))
            images.append(ImageRef(str(path), file_sha256(path), int(entry.get("frame", 0)),
                                   float(entry.get("strength", 1.0))))
        ref = roots.path(str(m["reference_video"])) if m.get("reference_video") else None
        ic = roots.path(str(m["ic_lora"])) if m.get("ic_lora") else None
        head, tail = handles_of(storyboard, shot)
        seed = m.get("seed")
        if seed is None:
            seed = shot_seed(int(defaults.get("seed", 0)), shot.shot_id, defaults.get("seed_policy", "from_shot_id"))
        specs[shot.shot_id] = ShotSpec(
            shot_id=shot.shot_id,
            model_id=model_id,
            prompt=m["prompt"].strip(),
            negative_prompt=_negative(effective(storyboard, shot, "negative_prompt"), model.get("negative_prompt")),
            seed=int(seed),
            width=int(setting(shot, "width")),
            height=int(setting(shot, "height")),
            num_frames=shot.source_frames,  # a speed change renders the source it plays
            fps=shot.fps,
            steps=int(setting(shot, "steps")),
            guidance=float(effective(storyboard, shot, "guidance")),
            loras=tuple(loras),
            images=tuple(images),
            handoff=m.get("handoff", "none"),
            handoff_overlap=int(effective(storyboard, shot, "handoff_overlap")),
            temporal_upsample=bool(effective(storyboard, shot, "temporal_upsample")),
            reference_video=str(ref) if ref else None,
            ic_lora=str(ic) if ic else None,
            quality=str(effective(storyboard, shot, "quality")),
            recipe=recipe_id("ic-lora" if ic else effective(storyboard, shot, "quality")),
            head=head, tail=tail,
        )
    return specs
