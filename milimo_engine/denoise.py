"""The denoising loop shared by every stage: Euler steps on the rectified-flow ODE.

Video and audio are denoised together (LTX-2 is one audio-visual transformer). The loop
owns the step callback, so progress and cancellation work the same in every stage.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

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
    def plan(cls, guider: Guider, guided_text: TextEmbeddings) -> GuidanceBatch:
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


class StepModel:
    """The transformer as one denoising step sees it: fixed positions, per-token timesteps for conditioned
    tokens, appended reference tokens riding along, and every guidance pass the guider wants, as x0 estimates.
    Built once per stage, so nothing is redefined inside the step loop."""

    def __init__(self, transformer, video: torch.Tensor, audio: torch.Tensor, text: TextEmbeddings,
                 grid: LatentGrid, guider: Guider, *, cross_timestep: bool, conditioning: StageConditioning | None,
                 batched: bool):
        self.transformer, self.grid, self.guider, self.cross_timestep = transformer, grid, guider, cross_timestep
        self.cond_video = conditioning.video if conditioning is not None and conditioning.video_active else None
        self.cond_audio = conditioning.audio if conditioning is not None and conditioning.audio_active else None
        self.appended = conditioning.appended if conditioning is not None else None
        keyframes = conditioning.keyframes if conditioning is not None else None
        self.per_token = self.cond_video is not None or self.cond_audio is not None or self.appended is not None
        self.device = video.device
        self.model_dtype = text.video.dtype
        self.guided_text = text if guider.wants_uncond else text.positive()
        self.cond_text = text.positive()
        self.batch = video.shape[0]
        self.n_video = video.shape[1]  # generated tokens and any keyframe tokens: the video state
        self.n_audio = audio.shape[1]
        video_coords = transformer.rope.prepare_video_coords(self.batch, grid.frames, grid.height, grid.width,
                                                             self.device, fps=grid.fps)
        if keyframes is not None:
            video_coords = torch.cat([video_coords, keyframes.coords.to(video_coords).repeat(self.batch, 1, 1, 1)],
                                     dim=2)
        self.extra_tokens = None
        if self.appended is not None:
            video_coords = torch.cat([video_coords, self.appended.coords.to(video_coords)], dim=2)
            self.extra_tokens = self.appended.tokens.to(device=self.device, dtype=torch.float32)
        audio_coords = transformer.audio_rope.prepare_audio_coords(self.batch, grid.audio_frames, self.device)
        # Positions are the same every step; a batch of guidance passes needs them once per pass.
        self.coords = {1: (video_coords, audio_coords)}
        for copies in (2, len(guidance_passes(guider))):
            self.coords[copies] = tuple(c.repeat((copies,) + (1,) * (c.ndim - 1)) for c in (video_coords, audio_coords))
        self.batch_plan = GuidanceBatch.plan(guider, self.guided_text) if batched else None
        # x0 with each token's own sigma (sigma x mask): a partly conditioned token is only partly noisy
        # (ltx-core's X0Model on per-token timesteps). Free tokens: exactly the global sigma.
        self.mask_video = self.cond_video.mask if self.cond_video is not None else None
        self.mask_audio = self.cond_audio.mask if self.cond_audio is not None else None

    def token_timesteps(self, t: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """[B, S] timesteps per video token and per audio token."""
        tv = self.cond_video.timesteps(t) if self.cond_video is not None else t.expand(self.batch, self.n_video)
        if self.appended is not None:
            tv = torch.cat([tv, tv.new_zeros(self.batch, self.appended.tokens.shape[1])], dim=1)
        ta = self.cond_audio.timesteps(t) if self.cond_audio is not None else t.expand(self.batch, self.n_audio)
        return tv, ta

    def run(self, v: torch.Tensor, a: torch.Tensor, t: torch.Tensor, emb: TextEmbeddings, copies: int, *,
            context: str, perturbation: RowPerturbation | None = None,
            isolate_modalities: bool = False) -> tuple[torch.Tensor, torch.Tensor]:
        """One transformer forward of `copies` passes stacked in the batch; the generated tokens' velocities."""
        ts = t.expand(v.shape[0] * copies)
        if self.per_token:
            tv, ta = (x.repeat(copies, 1) for x in self.token_timesteps(t))
            v = torch.cat([v, self.extra_tokens], dim=1) if self.extra_tokens is not None else v
        else:
            tv = ta = ts
        vc, ac = self.coords[copies]
        vin = torch.cat([v] * copies) if copies > 1 else v
        ain = torch.cat([a] * copies) if copies > 1 else a
        extra = {"isolate_modalities": True} if isolate_modalities else {}
        grid = self.grid
        with self.transformer.cache_context(context), perturbing(self.transformer, perturbation):
            pv, pa = self.transformer(
                hidden_states=vin.to(self.model_dtype), audio_hidden_states=ain.to(self.model_dtype),
                encoder_hidden_states=emb.video, audio_encoder_hidden_states=emb.audio,
                timestep=tv, audio_timestep=ta, sigma=ts, audio_sigma=ts,
                encoder_attention_mask=emb.mask, audio_encoder_attention_mask=emb.mask,
                num_frames=grid.frames, height=grid.height, width=grid.width, fps=grid.fps,
                audio_num_frames=grid.audio_frames, video_coords=vc, audio_coords=ac,
                use_cross_timestep=self.cross_timestep, return_dict=False, **extra,
            )
        return pv[:, :self.n_video].float(), pa.float()

    def _x0(self, video: torch.Tensor, audio: torch.Tensor, sigma: torch.Tensor,
            pred: tuple[torch.Tensor, torch.Tensor]) -> tuple[torch.Tensor, torch.Tensor]:
        return (x0_from_velocity(video, pred[0], sigma, self.mask_video),
                x0_from_velocity(audio, pred[1], sigma, self.mask_audio))

    def predictions(self, video: torch.Tensor, audio: torch.Tensor, sigma: torch.Tensor,
                    t: torch.Tensor) -> Predictions:
        """Every pass the guider combines, as x0 estimates: one batched forward, or one forward per kind."""
        guider, plan = self.guider, self.batch_plan
        uncond = perturbed = isolated = None
        if plan is not None and plan.size > 1:
            pv, pa = self.run(video, audio, t, plan.text, plan.size, context="guided", perturbation=plan.perturbation)
            x0 = {name: self._x0(video, audio, sigma, pred)
                  for name, pred in zip(plan.passes, zip(pv.chunk(plan.size), pa.chunk(plan.size), strict=True),
                                        strict=True)}
            return Predictions(x0["cond"], x0.get("uncond"), x0.get("perturbed"), x0.get("isolated"))
        if guider.wants_uncond:
            pv, pa = self.run(video, audio, t, self.guided_text, 2, context="cond_uncond")
            (uv, cv), (ua, ca) = pv.chunk(2), pa.chunk(2)
            cond, uncond = self._x0(video, audio, sigma, (cv, ca)), self._x0(video, audio, sigma, (uv, ua))
        else:
            cond = self._x0(video, audio, sigma, self.run(video, audio, t, self.cond_text, 1, context="cond"))
        if guider.wants_perturbed and plan is None:
            every = stg_perturbation(guider, torch.zeros(self.batch, device=self.device), every_row=True)
            perturbed = self._x0(video, audio, sigma, self.run(video, audio, t, self.cond_text, 1,
                                                                context="uncond_stg", perturbation=every))
        if guider.wants_isolated and plan is None:
            isolated = self._x0(video, audio, sigma, self.run(video, audio, t, self.cond_text, 1,
                                                               context="uncond_modality", isolate_modalities=True))
        return Predictions(cond, uncond, perturbed, isolated)


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
    model = StepModel(transformer, video, audio, text, grid, guider, cross_timestep=cross_timestep,
                      conditioning=conditioning, batched=batched)
    sigmas = sigmas.to(device=video.device, dtype=torch.float32)
    timesteps = sigmas * 1000.0
    total = len(sigmas) - 1
    for i in range(total):
        sigma, sigma_next = sigmas[i], sigmas[i + 1]
        x0_video, x0_audio = guider.combine(model.predictions(video, audio, sigma, timesteps[i]))
        if model.cond_video is not None:
            x0_video = model.cond_video.blend(x0_video)
        if model.cond_audio is not None:
            x0_audio = model.cond_audio.blend(x0_audio)
        video = video + (sigma_next - sigma) * ((video - x0_video) / sigma)
        audio = audio + (sigma_next - sigma) * ((audio - x0_audio) / sigma)
        if callback is not None:
            verdict = callback(StepInfo(stage, i + 1, total, float(sigma_next), video, audio))
            if verdict is False:
                raise RenderCancelled(stage, i + 1)
    return video, audio
