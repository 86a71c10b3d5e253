"""The denoising loop shared by every stage: Euler steps on the rectified-flow ODE.

Video and audio are denoised together (LTX-2 is one audio-visual transformer). The loop
owns the step callback, so progress and cancellation work the same in every stage.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Callable, Protocol

import torch

from .components.guiders import Guider, Predictions
from .components.perturbations import RowPerturbation, perturbing
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


def x0_from_velocity(x: torch.Tensor, velocity: torch.Tensor, sigma: torch.Tensor,
                     mask: torch.Tensor | None = None) -> torch.Tensor:
    """The denoised estimate of packed tokens [B, S, D] from the model's velocity, each token at its own
    sigma (`sigma * mask`, mask [B, S]): a partly conditioned token is only partly noisy, as in ltx-core's
    X0 model on per-token timesteps. Without a mask every token is at `sigma`."""
    if mask is None:
        return x - velocity * sigma
    return x - velocity * (sigma * mask.unsqueeze(-1))


def guidance_passes(guider: Guider) -> list[str]:
    """The transformer passes one guided step needs, in batch order."""
    return ((["uncond"] if guider.wants_uncond else []) + ["cond"] + (["perturbed"] if guider.wants_perturbed else [])
            + (["isolated"] if guider.wants_isolated else []))


@dataclass(frozen=True)
class GuidanceBatch:
    """Every guidance pass of a step as rows of one batch: the negative prompt for the unconditional row,
    the prompt for the others; the STG row and the modality-isolated row through a `RowPerturbation`."""

    passes: tuple[str, ...]
    text: TextEmbeddings
    perturbation: RowPerturbation

    @property
    def size(self) -> int:
        return len(self.passes)

    @classmethod
    def plan(cls, guider: Guider, guided_text: TextEmbeddings) -> "GuidanceBatch":
        passes = tuple(guidance_passes(guider))
        device = guided_text.video.device
        rows = torch.tensor([0 if p == "uncond" else (1 if guided_text.guided else 0) for p in passes], device=device)
        text = TextEmbeddings(guided_text.video[rows], guided_text.audio[rows], guided_text.mask[rows], False)

        def rows_except(name: str) -> torch.Tensor | None:
            return torch.tensor([0.0 if p == name else 1.0 for p in passes], device=device) if name in passes else None
        return cls(passes, text, stg_perturbation(guider, rows_except("perturbed"), rows_except("isolated")))


def stg_perturbation(guider: Guider, stg_rows: torch.Tensor | None, isolation_rows: torch.Tensor | None = None,
                     every_row: bool = False) -> RowPerturbation:
    """The guider's per-stream STG blocks applied to the rows marked 0 in `stg_rows`."""
    video_blocks, audio_blocks = guider.perturbed_blocks
    return RowPerturbation(frozenset(video_blocks), frozenset(audio_blocks), stg_rows, isolation_rows, every_row)


@torch.no_grad()
def denoise(transformer, video: torch.Tensor, audio: torch.Tensor, text: TextEmbeddings, sigmas: torch.Tensor,
            grid: LatentGrid, guider: Guider, *, stage: str, cross_timestep: bool = False,
            callback: StepCallback | None = None, conditioning: StageConditioning | None = None,
            batched: bool = True) -> tuple[torch.Tensor, torch.Tensor]:
    """Run `len(sigmas) - 1` Euler steps from `sigmas[0]` to `sigmas[-1]` on packed float32 latents.

    Every guidance pass a step needs (unconditional, conditional, STG-perturbed, modality-isolated)
    goes through the transformer in one batched forward (`batched=False`: one forward per kind of
    pass, as diffusers does; the results agree to float32 rounding, see tests/test_guidance.py).

    With `conditioning`, masked tokens get per-token timesteps and their predictions are pulled to
    the clean values, and appended tokens (IC-LoRA references) ride along in every model input
    at timestep 0; only the generated tokens come back. Without it (or with nothing active) the
    loop is exactly the unconditioned one.
    """
    cond_video = conditioning.video if conditioning is not None and conditioning.video_active else None
    cond_audio = conditioning.audio if conditioning is not None and conditioning.audio_active else None
    appended = conditioning.appended if conditioning is not None else None
    keyframes = conditioning.keyframes if conditioning is not None else None
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
    n_video = video.shape[1]  # generated tokens and any keyframe tokens: the video state
    if keyframes is not None:
        video_coords = torch.cat([video_coords, keyframes.coords.to(video_coords).repeat(batch, 1, 1, 1)], dim=2)
    if appended is not None:
        video_coords = torch.cat([video_coords, appended.coords.to(video_coords)], dim=2)
        extra_tokens = appended.tokens.to(device=device, dtype=torch.float32)
    audio_coords = transformer.audio_rope.prepare_audio_coords(batch, grid.audio_frames, device)

    # Positions are the same every step; a batch of guidance passes needs them once per pass.
    coords = {1: (video_coords, audio_coords)}
    for copies in (2, len(guidance_passes(guider))):
        coords[copies] = tuple(c.repeat((copies,) + (1,) * (c.ndim - 1)) for c in (video_coords, audio_coords))
    batch_plan = GuidanceBatch.plan(guider, guided_text) if batched else None

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
        perturbation = extra.pop("perturbation", None)
        with transformer.cache_context(extra.pop("context", "cond")), perturbing(transformer, perturbation):
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
        # x0 with each token's own sigma (sigma x mask): a partly conditioned token is only partly noisy
        # (ltx-core's X0Model on per-token timesteps). Free tokens: exactly the global sigma.
        mask_video = cond_video.mask if cond_video is not None else None
        mask_audio = cond_audio.mask if cond_audio is not None else None

        def to_x0(pred: tuple[torch.Tensor, torch.Tensor]) -> tuple[torch.Tensor, torch.Tensor]:
            return x0_from_velocity(video, pred[0], sigma, mask_video), x0_from_velocity(audio, pred[1], sigma, mask_audio)

        uncond = perturbed = isolated = None
        if batch_plan is not None and batch_plan.size > 1:
            pv, pa = run(video, audio, t, batch_plan.text, batch_plan.size, context="guided",
                         perturbation=batch_plan.perturbation)
            x0 = {name: to_x0(pred) for name, pred in zip(batch_plan.passes, zip(pv.chunk(batch_plan.size),
                                                                                   pa.chunk(batch_plan.size)))}
            cond, uncond, perturbed, isolated = (x0.get(k) for k in ("cond", "uncond", "perturbed", "isolated"))
        elif guider.wants_uncond:
            pv, pa = run(video, audio, t, guided_text, 2, context="cond_uncond")
            (uv, cv), (ua, ca) = pv.chunk(2), pa.chunk(2)
            cond, uncond = to_x0((cv, ca)), to_x0((uv, ua))
        else:
            cond = to_x0(run(video, audio, t, cond_text, 1, context="cond"))
        if guider.wants_perturbed and batch_plan is None:
            perturbed = to_x0(run(video, audio, t, cond_text, 1, context="uncond_stg",
                                  perturbation=stg_perturbation(guider, torch.zeros(batch, device=device),
                                                                 every_row=True)))
        if guider.wants_isolated and batch_plan is None:
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
