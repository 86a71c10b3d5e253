"""TwoStagePipeline: LTX-2's two-stage render of one shot.

Stage 1 renders at half size with the base model and the shot's LoRAs under guidance;
the spatial upsampler doubles the latent; stage 2 re-noises it to the first distilled sigma
and refines it at full size with the distilled LoRA, unguided; an optional stage 3 doubles
the frame rate with the temporal upsampler. The prompt is encoded once per shot.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from typing import Literal

import numpy as np
import torch

from . import frames as fr
from .components.guiders import Guider, MultiModalGuider, NoGuider
from .components.latents import AudioNorm, VideoNorm, pack_audio, pack_video, unpack_audio, unpack_video
from .components.noisers import FlowNoiser, gaussian_noise
from .components.schedules import FixedSchedule, TokenShiftedSchedule, schedule_from
from .denoise import LatentGrid, StepCallback, denoise
from .errors import InvalidGuidanceError
from .ledger import ModelLedger
from .progress import step_hook
from .request import ShotRequest
from .result import ShotResult
from .text import TextEmbeddings, encode_prompt

TILED_DECODE_ABOVE_PIXELS = 768 * 768


@dataclass(frozen=True)
class StageLatents:
    """Packed, normalised latents between stages, with their grid."""

    video: torch.Tensor
    audio: torch.Tensor
    grid: LatentGrid


class TwoStagePipeline:
    """Call with a `ShotRequest`; see the module docstring for the stages."""

    def __init__(self, ledger: ModelLedger, *, progress: bool | None = None):
        self.ledger = ledger
        self.progress = progress
        m = ledger.manifest.schedule
        self.stage1_schedule = TokenShiftedSchedule(m.base_shift, m.max_shift, m.base_seq_len, m.max_seq_len,
                                                    m.shift_terminal)
        self.distilled_schedule = FixedSchedule(tuple(m.distilled_sigmas))

    # ---------------------------------------------------------------- public
    @torch.no_grad()
    def __call__(self, request: ShotRequest, *, callback_on_step_end: StepCallback | None = None,
                 output_type: Literal["np", "latent"] = "np", time_limit_s: float | None = None) -> ShotResult:
        led = self.ledger
        request.validate(max_frames=led.manifest.max_frames)
        guider = self.guider_for(request)
        deadline = time.monotonic() + time_limit_s if time_limit_s is not None else None
        callback, close_bar = step_hook(callback_on_step_end, show_bar=self.progress, deadline=deadline)
        timings: dict[str, float] = {}
        t_total = time.perf_counter()
        generator = torch.Generator("cpu").manual_seed(request.seed)
        try:
            t0 = time.perf_counter()
            text = self.encode(request, guided=guider.wants_uncond)
            timings["text"] = time.perf_counter() - t0

            rendered = request.render_frames
            latent_f = fr.latent_frames(rendered)
            audio_frames = self.audio_latent_frames(rendered, request.fps)

            t0 = time.perf_counter()
            stage1_loras = led.use_loras(request.loras)
            s1 = self.stage1(request, text, guider, generator, latent_f, audio_frames, callback)
            timings["stage1"] = time.perf_counter() - t0

            t0 = time.perf_counter()
            up = self.upsample_spatial(s1)
            timings["upsample"] = time.perf_counter() - t0

            t0 = time.perf_counter()
            distilled = led.distilled_lora()
            stage2_loras = led.use_loras(list(request.loras) + ([distilled] if distilled else []))
            s2 = self.stage2(request, text, up, generator, callback)
            timings["stage2"] = time.perf_counter() - t0

            video_norm = VideoNorm.of(led.video_decoder())
            final = video_norm.denormalize(unpack_video(s2.video, s2.grid.frames, s2.grid.height, s2.grid.width))
            fps = request.fps
            delivered = request.num_frames
            if request.temporal_upsample:
                t0 = time.perf_counter()
                final = self.upsample_temporal(final)
                timings["temporal"] = time.perf_counter() - t0
                fps, delivered = request.fps * 2, 2 * request.num_frames - 1
            audio_norm = AudioNorm.of(led.audio_decoder())
            mel_bins = led.audio_decoder().config.mel_bins // led.audio_decoder().mel_compression_ratio
            audio_latent = unpack_audio(audio_norm.denormalize(s2.audio), mel_bins)
            stage1_raw = video_norm.denormalize(unpack_video(s1.video, s1.grid.frames, s1.grid.height,
                                                             s1.grid.width))

            frames = audio = None
            sample_rate = int(led.vocoder().config.output_sampling_rate)
            if output_type != "latent":
                t0 = time.perf_counter()
                frames = self.decode_video(final)[:delivered]
                timings["decode_video"] = time.perf_counter() - t0
                t0 = time.perf_counter()
                audio = self.decode_audio(audio_latent)
                audio = fit_audio(audio, round(delivered / fps * sample_rate))
                timings["decode_audio"] = time.perf_counter() - t0
        finally:
            close_bar()
        timings["total"] = time.perf_counter() - t_total
        return ShotResult(
            request=request, frames=frames, audio=audio, sample_rate=sample_rate, fps=fps,
            latent=final.cpu(), audio_latent=audio_latent.cpu(), stage1_latent=stage1_raw.cpu(),
            rendered_frames=rendered, timings=timings,
            loras={"stage1": stage1_loras, "stage2": stage2_loras}, model_id=led.model_id,
        )

    # ---------------------------------------------------------------- pieces
    def guider_for(self, request: ShotRequest) -> Guider:
        blocks = request.guidance.stg_blocks
        if blocks is None:
            blocks = self.ledger.manifest.stg_blocks
        num_layers = self.ledger.transformer().config.num_layers
        bad = [b for b in blocks if not 0 <= b < num_layers]
        if bad and (request.guidance.stg > 0 or request.guidance.audio_stg > 0):
            raise InvalidGuidanceError("guidance.stg_blocks", tuple(blocks),
                                       f"this transformer has blocks 0..{num_layers - 1}",
                                       nearest=tuple(min(max(b, 0), num_layers - 1) for b in blocks))
        return MultiModalGuider(request.guidance, tuple(blocks))

    def encode(self, request: ShotRequest, guided: bool) -> TextEmbeddings:
        led = self.ledger
        max_len = request.max_sequence_length
        if max_len == 1024:
            max_len = led.manifest.max_sequence_length
        return encode_prompt(led.tokenizer(), led.text_encoder(), led.connectors(), request.prompt,
                             request.negative_prompt, max_sequence_length=max_len, device=led.device, guided=guided)

    def audio_latent_frames(self, pixel_frames: int, fps: float) -> int:
        """Enough latent audio frames to cover the rendered video once decoded (the decoder's
        causal padding eats a few mel frames, hence the extra one)."""
        vae = self.ledger.audio_decoder()
        per_second = vae.config.sample_rate / vae.config.mel_hop_length / vae.temporal_compression_ratio
        return int(np.ceil(pixel_frames / fps * per_second)) + 1

    def initial_noise(self, generator: torch.Generator, latent_f: int, height: int, width: int,
                      audio_frames: int) -> tuple[torch.Tensor, torch.Tensor]:
        """Video noise then audio noise, drawn from the shot's generator in that order."""
        led = self.ledger
        transformer = led.transformer()
        cfg = transformer.config
        video = gaussian_noise((1, cfg.in_channels, latent_f, height, width), generator, led.device)
        audio_vae = led.audio_decoder()
        mel = audio_vae.config.mel_bins // audio_vae.mel_compression_ratio
        audio = gaussian_noise((1, audio_vae.config.latent_channels, audio_frames, mel), generator, led.device)
        return pack_video(video, cfg.patch_size, cfg.patch_size_t), pack_audio(audio)

    def stage1(self, request: ShotRequest, text: TextEmbeddings, guider: Guider, generator: torch.Generator,
               latent_f: int, audio_frames: int, callback: StepCallback | None,
               sigmas: torch.Tensor | None = None) -> StageLatents:
        led = self.ledger
        ratio = led.video_decoder().spatial_compression_ratio
        grid = LatentGrid(latent_f, request.height // 2 // ratio, request.width // 2 // ratio, audio_frames,
                          request.fps)
        video, audio = self.initial_noise(generator, latent_f, grid.height, grid.width, audio_frames)
        if sigmas is None:
            schedule = schedule_from(request.stage1_sigmas, self.stage1_schedule)
            sigmas = schedule.sigmas(request.steps, video.shape[1])
        video, audio = denoise(led.transformer(), video, audio, text, sigmas, grid, guider, stage="stage1",
                               cross_timestep=led.manifest.cross_timestep, callback=callback)
        return StageLatents(video, audio, grid)

    def upsample_spatial(self, s1: StageLatents) -> StageLatents:
        """Upsample in VAE space (the upsampler was trained on raw latents), then renormalise."""
        led = self.ledger
        norm = VideoNorm.of(led.video_decoder())
        g = s1.grid
        raw = norm.denormalize(unpack_video(s1.video, g.frames, g.height, g.width))
        up = led.spatial_upsampler()
        raw = up(raw.to(up.dtype)).float()
        grid = LatentGrid(raw.shape[2], raw.shape[3], raw.shape[4], g.audio_frames, g.fps)
        return StageLatents(pack_video(norm.normalize(raw)), s1.audio, grid)

    def stage2(self, request: ShotRequest, text: TextEmbeddings, up: StageLatents, generator: torch.Generator,
               callback: StepCallback | None) -> StageLatents:
        led = self.ledger
        sigmas = schedule_from(request.distilled_sigmas, self.distilled_schedule).sigmas()
        noiser = FlowNoiser()
        video = noiser(up.video, float(sigmas[0]), generator)
        audio = noiser(up.audio, float(sigmas[0]), generator)
        video, audio = denoise(led.transformer(), video, audio, text.positive(), sigmas, up.grid, NoGuider(),
                               stage="stage2", cross_timestep=led.manifest.cross_timestep, callback=callback)
        return StageLatents(video, audio, up.grid)

    def upsample_temporal(self, raw: torch.Tensor) -> torch.Tensor:
        """F latent frames -> 2F-1 (the causal first frame is not doubled)."""
        up = self.ledger.temporal_upsampler()
        return up(raw.to(up.dtype)).float()

    def decode_video(self, raw: torch.Tensor) -> np.ndarray:
        vae = self.ledger.video_decoder()
        h, w = raw.shape[3] * vae.spatial_compression_ratio, raw.shape[4] * vae.spatial_compression_ratio
        if h * w > TILED_DECODE_ABOVE_PIXELS:
            vae.enable_tiling()
        else:
            vae.disable_tiling()
        timestep = None
        if vae.config.timestep_conditioning:
            timestep = torch.zeros(raw.shape[0], device=raw.device, dtype=vae.dtype)
        video = vae.decode(raw.to(self.ledger.device, vae.dtype), timestep, return_dict=False)[0]
        video = ((video.float().clamp(-1, 1) + 1) * 127.5).round().to(torch.uint8)
        return video[0].permute(1, 2, 3, 0).cpu().numpy()

    def decode_audio(self, audio_latent: torch.Tensor) -> np.ndarray:
        audio_vae = self.ledger.audio_decoder()
        mel = audio_vae.decode(audio_latent.to(self.ledger.device, audio_vae.dtype), return_dict=False)[0]
        vocoder = self.ledger.vocoder()
        wave = vocoder(mel.to(vocoder.dtype))
        return wave[0].float().cpu().numpy()


def fit_audio(wave: np.ndarray, samples: int) -> np.ndarray:
    """Trim (or, if the decoder came up short, pad with the last sample) to exactly `samples`."""
    if wave.shape[-1] >= samples:
        return np.ascontiguousarray(wave[..., :samples])
    pad = np.repeat(wave[..., -1:], samples - wave.shape[-1], axis=-1)
    return np.concatenate([wave, pad], axis=-1)
