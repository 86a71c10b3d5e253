"""Handoff: how shot B starts exactly where shot A ended.

A handoff holds the last `1 + 8·m` frames shot A *delivered*, re-encoded by the video VAE at
full and at half resolution, plus the matching tail of A's audio latent. Re-encoding (rather
than slicing A's latent) matters: the causal VAE gives latent frame 0 a single pixel frame,
so a tail slice placed at frame 0 of B would decode wrongly.

On disk it is one safetensors file; the metadata says what made it, and a sha256 over the
tensors catches a truncated or edited file before it poisons a chain.
"""

from __future__ import annotations

import hashlib
import os
import time
from dataclasses import dataclass, field
from pathlib import Path

import torch
from safetensors import safe_open
from safetensors.torch import save_file

from . import frames as fr
from .atomic import atomic_path
from .errors import HandoffIntegrityError, HandoffMismatchError

HANDOFF_FORMAT = "milimo-handoff-v1"
# Latents are stored raw (VAE space), so a handoff does not depend on the diffusion model's statistics.
LATENT_SPACE = "vae-raw"
_TENSORS = ("video", "video_half", "audio")


@dataclass(frozen=True, eq=False)
class Handoff:
    video: torch.Tensor  # [1, C, m+1, H/32, W/32], raw VAE latent of the tail at full size
    video_half: torch.Tensor  # [1, C, m+1, H/64, W/64], the tail downscaled in pixels, then encoded
    audio: torch.Tensor  # [1, C, k, M], raw audio latent covering the same time
    model_id: str
    vae_sha256: str
    width: int
    height: int
    fps: float
    m: int
    source_shot: str = ""
    source_take: str = ""
    created_at: float = field(default_factory=time.time)

    @property
    def overlap_frames(self) -> int:
        """Pixel frames the taking shot renders on top of its own and drops again."""
        return 1 + fr.TEMPORAL_RATIO * self.m

    @property
    def source(self) -> str:
        parts = [p for p in (self.source_shot and f"shot {self.source_shot}",
                             self.source_take and f"take {self.source_take}") if p]
        return ", ".join(parts)

    def tensors(self) -> dict[str, torch.Tensor]:
        return {name: getattr(self, name).detach().to("cpu", torch.float32).contiguous() for name in _TENSORS}

    def sha256(self) -> str:
        return tensors_sha256(self.tensors())

    def metadata(self) -> dict[str, str]:
        return {
            "format": HANDOFF_FORMAT, "latent_space": LATENT_SPACE, "model_id": self.model_id,
            "vae_sha256": self.vae_sha256, "width": str(self.width), "height": str(self.height),
            "fps": repr(float(self.fps)), "m": str(self.m), "latent_frames": str(self.m + 1),
            "source_shot": self.source_shot, "source_take": self.source_take,
            "created_at": repr(float(self.created_at)), "tensors_sha256": self.sha256(),
        }

    def save(self, path: str | os.PathLike) -> Path:
        """Write atomically: a crash mid-write leaves no file that looks like a handoff."""
        target = Path(path)
        with atomic_path(target) as tmp:
            save_file(self.tensors(), str(tmp), metadata=self.metadata())
        return target

    @classmethod
    def load(cls, path: str | os.PathLike) -> Handoff:
        p = Path(path)
        if not p.is_file():
            raise HandoffIntegrityError(p, "no such file")
        try:
            with safe_open(str(p), framework="pt") as f:
                meta = f.metadata() or {}
                tensors = {name: f.get_tensor(name) for name in f.keys()}
        except Exception as exc:  # safetensors raises its own error types for a damaged header
            raise HandoffIntegrityError(p, f"not a readable safetensors file ({exc})") from exc
        if meta.get("format") != HANDOFF_FORMAT:
            raise HandoffIntegrityError(p, f"format is {meta.get('format')!r}, expected {HANDOFF_FORMAT!r}")
        missing = [n for n in _TENSORS if n not in tensors]
        if missing:
            raise HandoffIntegrityError(p, f"tensors {missing} are missing")
        actual = tensors_sha256({n: tensors[n] for n in _TENSORS})
        if actual != meta.get("tensors_sha256"):
            raise HandoffIntegrityError(p, f"tensor sha256 {actual[:12]}… does not match the recorded "
                                           f"{str(meta.get('tensors_sha256'))[:12]}…; the file was altered")
        try:
            return cls(tensors["video"], tensors["video_half"], tensors["audio"], meta["model_id"],
                       meta["vae_sha256"], int(meta["width"]), int(meta["height"]), float(meta["fps"]),
                       int(meta["m"]), meta.get("source_shot", ""), meta.get("source_take", ""),
                       float(meta.get("created_at", 0.0)))
        except (KeyError, ValueError) as exc:
            raise HandoffIntegrityError(p, f"metadata is incomplete ({exc})") from exc

    def check_fits(self, *, model_id: str, vae_sha256: str, width: int, height: int, fps: float) -> None:
        """Refuse a handoff made under other settings, naming both values."""
        for name, mine, theirs in (("model_id", self.model_id, model_id), ("vae_sha256", self.vae_sha256, vae_sha256),
                                   ("width", self.width, width), ("height", self.height, height)):
            if mine != theirs:
                raise HandoffMismatchError(name, mine, theirs, self.source)
        if abs(float(self.fps) - float(fps)) > 1e-6:
            raise HandoffMismatchError("fps", self.fps, fps, self.source)


def tensors_sha256(tensors: dict[str, torch.Tensor]) -> str:
    """sha256 over name, dtype, shape and bytes of each tensor, in name order."""
    h = hashlib.sha256()
    for name in sorted(tensors):
        t = tensors[name].detach().to("cpu").contiguous()
        h.update(f"{name}|{t.dtype}|{tuple(t.shape)}|".encode())
        h.update(t.view(torch.uint8).numpy().tobytes() if t.numel() else b"")
    return h.hexdigest()


def make_handoff(codec, request, delivered, audio_latent: torch.Tensor, fps: float, m: int, model_id: str,
                 vae_sha256: str) -> Handoff:
    """The last `1 + 8·m` delivered frames (uint8 [F, H, W, 3]), re-encoded at full and half size, with the audio
    latent covering the same time."""
    import numpy as np

    n = 1 + fr.TEMPORAL_RATIO * m
    tail = delivered[-n:]
    video = codec.encode_pixels(tail)
    pixels = torch.from_numpy(np.ascontiguousarray(tail)).permute(0, 3, 1, 2).float()
    half = torch.nn.functional.interpolate(pixels, scale_factor=0.5, mode="area")
    video_half = codec.encode_pixels(half.round().clamp(0, 255).to(torch.uint8).permute(0, 2, 3, 1).numpy())
    rate = codec.audio_latent_rate()
    seconds_end = request.overlap_frames / request.fps + len(delivered) / fps
    count = max(1, round(n / fps * rate))
    first = max(0, min(round((seconds_end - n / fps) * rate), audio_latent.shape[2] - count))
    return Handoff(video.cpu(), video_half.cpu(), audio_latent[:, :, first:first + count].cpu(), model_id,
                   vae_sha256, request.width, request.height, fps, m)
