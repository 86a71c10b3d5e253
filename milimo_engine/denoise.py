"""The denoising loop shared by every stage: Euler steps on the rectified-flow ODE.

Video and audio are denoised together (LTX-2 is one audio-visual transformer). The loop
owns the step callback, so progress and cancellation work the same in every stage.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Callable, Protocol

import torch

from .components.guiders import Guider, Predictions
from .conditioning import StageConditioning
from .errors import RenderCancelled
from .text import TextEmbeddings


@dataclass(frozen=True)
class StepInfo:
    """What a step callback sees. Returning False (or raising) from the callback cancels the render."""

    stage: str
    step: int  # 1-based, completed steps
    total: int
    sigma: float
    video: torch.Tensor  # packed tokens after this step
    audio: torch.Tensor


StepCallback = Callable[[StepInfo], "bool | None"]


class Denoiser(Protocol):
    def __call__(self, video: torch.Tensor, audio: torch.Tensor, sigmas: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]: ...


@dataclass
class LatentGrid:
    """Shape facts the transformer needs besides the tokens."""

    frames: int
    height: int
    width: int
    audio_frames: int
    fps: float


@torch.no_grad()
def denoise(transformer, video: torch.Tensor, audio: torch.Tensor, text: TextEmbeddings, sigmas: torch.Tensor,
            grid: LatentGrid, guider: Guider, *, stage: str, cross_timestep: bool = False,
            callback: StepCallback | None = None,
            conditioning: StageConditioning | None = None) -> tuple[torch.Tensor, torch.Tensor]:
    """Run `len(sigmas) - 1` Euler steps from `sigmas[0]` to `sigmas[-1]` on packed float32 latents.

    With `conditioning`, masked tokens get per-token timesteps and their predictions are pulled to
    the clean values, and appended tokens (IC-LoRA references) ride along in every model input
    at timestep 0; only the generated tokens come back. Without it (or with nothing active) the
    loop is exactly the unconditioned one.
    """
    cond_video = conditioning.video if conditioning is not None and conditioning.video_active else None
    cond_audio = conditioning.audio if conditioning is not None and conditioning.audio_active else None
    appended = conditioning.appended if conditioning is not None else None
    per_token = cond_video is not None or cond_audio is not None or appended is not None
    device = video.device
    model_dtype = text.video.dtype
    sigmas = sigmas.to(device=device, dtype=torch.float32)
    timesteps = sigmas * 1000.0
    guided_text = text if guider.wants_uncond else text.positive()
    cond_text = text.positive()
    batch = video.shape[0]
    video_coords = transformer.rope.prepare_video_coords(batch, grid.frames, grid.height, grid.width, device,
                                                         fps=grid.fps)
    n_video = video.shape[1]
    if appended is not None:
        video_coords = torch.cat([video_coords, appended.coords.to(video_coords)], dim=2)
        extra_tokens = appended.tokens.to(device=device, dtype=torch.float32)
    audio_coords = transformer.audio_rope.prepare_audio_coords(batch, grid.audio_frames, device)

    # Positions are the same every step; the guided (uncond + cond) batch needs them twice.
    coords = {1: (video_coords, audio_coords)}
    if guider.wants_uncond:
        coords[2] = tuple(c.repeat((2,) + (1,) * (c.ndim - 1)) for c in (video_coords, audio_coords))

    def token_timesteps(t: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """[B, S] timesteps per video token and per audio token."""
        tv = cond_video.timesteps(t) if cond_video is not None else t.expand(batch, n_video)
        if appended is not None:
            tv = torch.cat([tv, tv.new_zeros(batch, appended.tokens.shape[1])], dim=1)
        ta = cond_audio.timesteps(t) if cond_audio is not None else t.expand(batch, audio.shape[1])
        return tv, ta

    def run(v: torch.Tensor, a: torch.Tensor, t: torch.Tensor, emb: TextEmbeddings, copies: int, **extra):
        ts = t.expand(v.shape[0] * copies)
        if per_token:
            tv, ta = (x.repeat(copies, 1) for x in token_timesteps(t))
            v = torch.cat([v, extra_tokens], dim=1) if appended is not None else v
        else:
            tv = ta = ts
        vc, ac = coords[copies]
        vin = torch.cat([v] * copies) if copies > 1 else v
        ain = torch.cat([a] * copies) if copies > 1 else a
        with transformer.cache_context(extra.pop("context", "cond")):
            pv, pa = transformer(
                hidden_states=vin.to(model_dtype), audio_hidden_states=ain.to(model_dtype),
                encoder_hidden_states=emb.video, audio_encoder_hidden_states=emb.audio,
                timestep=tv, audio_timestep=ta, sigma=ts, audio_sigma=ts,
                encoder_attention_mask=emb.mask, audio_encoder_attention_mask=emb.mask,
                num_frames=grid.frames, height=grid.height, width=grid.width, fps=grid.fps,
                audio_num_frames=grid.audio_frames, video_coords=vc, audio_coords=ac,
                use_cross_timestep=cross_timestep, return_dict=False, **extra,
            )
        return pv[:, :n_video].float(), pa.float()

    total = len(sigmas) - 1
    for i in range(total):
        sigma, sigma_next, t = sigmas[i], sigmas[i + 1], timesteps[i]

        def to_x0(pred: tuple[torch.Tensor, torch.Tensor]) -> tuple[torch.Tensor, torch.Tensor]:
            return video - pred[0] * sigma, audio - pred[1] * sigma

        uncond = perturbed = isolated = None
        if guider.wants_uncond:
            pv, pa = run(video, audio, t, guided_text, 2, context="cond_uncond")
            (uv, cv), (ua, ca) = pv.chunk(2), pa.chunk(2)
            cond, uncond = to_x0((cv, ca)), to_x0((uv, ua))
        else:
            cond = to_x0(run(video, audio, t, cond_text, 1, context="cond"))
        if guider.wants_perturbed:
            perturbed = to_x0(run(video, audio, t, cond_text, 1, context="uncond_stg",
                                  spatio_temporal_guidance_blocks=list(guider.stg_blocks)))
        if guider.wants_isolated:
            isolated = to_x0(run(video, audio, t, cond_text, 1, context="uncond_modality", isolate_modalities=True))
        x0_video, x0_audio = guider.combine(Predictions(cond, uncond, perturbed, isolated))
        if cond_video is not None:
            x0_video = cond_video.blend(x0_video)
        if cond_audio is not None:
            x0_audio = cond_audio.blend(x0_audio)

        velocity_video = (video - x0_video) / sigma
        velocity_audio = (audio - x0_audio) / sigma
        video = video + (sigma_next - sigma) * velocity_video
        audio = audio + (sigma_next - sigma) * velocity_audio

        if callback is not None:
            verdict = callback(StepInfo(stage, i + 1, total, float(sigma_next), video, audio))
            if verdict is False:
                raise RenderCancelled(stage, i + 1)
    return video, audio
