"""Latent layout: the transformer sees token sequences, the VAEs see 5-D/4-D tensors.

Normalisation convention (recorded with every handoff): the diffusion model works on
`(z - mean) * scaling / std` per channel; VAEs and upsamplers work on raw `z`.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch


def pack_video(latents: torch.Tensor, patch: int = 1, patch_t: int = 1) -> torch.Tensor:
    """[B, C, F, H, W] -> [B, F*H*W, C*pt*p*p] tokens."""
    b, c, f, h, w = latents.shape
    x = latents.reshape(b, c, f // patch_t, patch_t, h // patch, patch, w // patch, patch)
    return x.permute(0, 2, 4, 6, 1, 3, 5, 7).flatten(4, 7).flatten(1, 3)


def unpack_video(tokens: torch.Tensor, frames: int, height: int, width: int, patch: int = 1,
                 patch_t: int = 1) -> torch.Tensor:
    b = tokens.size(0)
    x = tokens.reshape(b, frames, height, width, -1, patch_t, patch, patch)
    return x.permute(0, 4, 1, 5, 2, 6, 3, 7).flatten(6, 7).flatten(4, 5).flatten(2, 3)


def pack_audio(latents: torch.Tensor) -> torch.Tensor:
    """[B, C, L, M] -> [B, L, C*M]: one token per latent audio frame."""
    return latents.transpose(1, 2).flatten(2, 3)


def unpack_audio(tokens: torch.Tensor, mel_bins: int) -> torch.Tensor:
    return tokens.unflatten(2, (-1, mel_bins)).transpose(1, 2)


@dataclass(frozen=True)
class VideoNorm:
    mean: torch.Tensor
    std: torch.Tensor
    scaling: float = 1.0

    @classmethod
    def of(cls, vae) -> VideoNorm:
        return cls(vae.latents_mean.detach().float().cpu(), vae.latents_std.detach().float().cpu(),
                   float(vae.config.scaling_factor))

    def _stats(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        shape = (1, -1, 1, 1, 1)
        return self.mean.view(shape).to(x.device, x.dtype), self.std.view(shape).to(x.device, x.dtype)

    def normalize(self, z: torch.Tensor) -> torch.Tensor:
        mean, std = self._stats(z)
        return (z - mean) * self.scaling / std

    def denormalize(self, x: torch.Tensor) -> torch.Tensor:
        mean, std = self._stats(x)
        return x * std / self.scaling + mean


@dataclass(frozen=True)
class AudioNorm:
    """Audio statistics apply to packed tokens ([B, L, C*M])."""

    mean: torch.Tensor
    std: torch.Tensor

    @classmethod
    def of(cls, audio_vae) -> AudioNorm:
        return cls(audio_vae.latents_mean.detach().float().cpu(), audio_vae.latents_std.detach().float().cpu())

    def normalize(self, tokens: torch.Tensor) -> torch.Tensor:
        return (tokens - self.mean.to(tokens.device, tokens.dtype)) / self.std.to(tokens.device, tokens.dtype)

    def denormalize(self, tokens: torch.Tensor) -> torch.Tensor:
        return tokens * self.std.to(tokens.device, tokens.dtype) + self.mean.to(tokens.device, tokens.dtype)
