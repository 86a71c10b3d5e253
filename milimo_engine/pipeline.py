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
from .recipe import DISTILLED_SIGMA_VALUES, STAGE1_SHIFT_TOKENS, TEMPORAL_REFINE_SIGMAS, recipe_id
from .conditioning import (AppendedTokens, ImageCondition, KeyframeTokens, StageConditioning, TokenConditioning,
                           fit_image, load_rgb)
from .denoise import LatentGrid, StepCallback, denoise
from .errors import HandoffMismatchError, InvalidConditionError, InvalidGuidanceError
from .handoff import Handoff
from .ledger import ModelLedger
from .media import h264_roundtrip
from .progress import step_hook
from .request import MAX_SEED, LoraSpec, ShotRequest
from .segments import Segment, plan_segments
from .result import ShotResult
from .text import TextEmbeddings, encode_prompt

TILED_DECODE_ABOVE_PIXELS = 768 * 768
# ltx-core's default VAE tiling: 768-pixel tiles overlapping by 64, 80-frame tiles overlapping by 24.
VAE_TILE, VAE_TILE_OVERLAP, VAE_TILE_FRAMES, VAE_TILE_FRAMES_OVERLAP = 768, 64, 80, 24


def vae_tiling(height: int, width: int, frames: int) -> dict | None:
    """How to tile the decode of a `frames`-frame `width`x`height` video, as ltx-core's default
    `TilingConfig` does; None when it decodes in one piece."""
    if height * width <= TILED_DECODE_ABOVE_PIXELS and frames <= VAE_TILE_FRAMES:
        return None
    return {"tile_sample_min_height": VAE_TILE, "tile_sample_min_width": VAE_TILE,
            "tile_sample_stride_height": VAE_TILE - VAE_TILE_OVERLAP,
            "tile_sample_stride_width": VAE_TILE - VAE_TILE_OVERLAP,
            "tile_sample_min_num_frames": VAE_TILE_FRAMES,
            "tile_sample_stride_num_frames": VAE_TILE_FRAMES - VAE_TILE_FRAMES_OVERLAP}


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
        self._vae_sha256: str | None = None

    # ---------------------------------------------------------------- public
    @torch.no_grad()
    def __call__(self, request: ShotRequest, *, callback_on_step_end: StepCallback | None = None,
                 output_type: Literal["np", "latent"] = "np", time_limit_s: float | None = None) -> ShotResult:
        return self.run(request, callback_on_step_end=callback_on_step_end, output_type=output_type,
                        time_limit_s=time_limit_s)

    @torch.no_grad()
    def run(self, request: ShotRequest, *, callback_on_step_end: StepCallback | None = None,
            output_type: Literal["np", "latent"] = "np", time_limit_s: float | None = None,
            in_context: InContext | None = None) -> ShotResult:
        """Validate, then render the shot in one piece or, beyond the segment limit, as chained segments."""
        led = self.ledger
        request = self.with_model_defaults(request)
        request.validate(max_frames=led.manifest.max_frames, segment_frames=led.manifest.segment_frames)
        if request.handoff is not None:
            request.handoff.check_fits(model_id=led.model_id, vae_sha256=self.vae_sha256, width=request.width,
                                       height=request.height, fps=request.fps)
        limit = request.segment_frames or led.manifest.segment_frames
        chain_overlap = 1 + fr.TEMPORAL_RATIO * max(request.handoff_m, 1)
        segments = plan_segments(request.num_frames, limit, request.overlap_frames, chain_overlap)
        if in_context is not None:  # IC-LoRA renders on the distilled recipe (`ltx_pipelines/ic_lora.py`)
            request = request.replace(quality="draft")
        if in_context is not None and len(segments) > 1:
            raise InvalidConditionError(
                "num_frames", request.num_frames,
                f"an in-context (IC-LoRA) shot renders in one segment of at most {limit} frames", nearest=limit)
        images = self.place_images(request, segments)
        guider = self.guider_for(request)
        deadline = time.monotonic() + time_limit_s if time_limit_s is not None else None
        callback, close_bar = step_hook(callback_on_step_end, show_bar=self.progress, deadline=deadline)
        try:
            t0 = time.perf_counter()
            text = self.encode(request, guided=guider.wants_uncond)
            text_seconds = time.perf_counter() - t0
            if len(segments) == 1:
                result = self.render_segment(request, text, guider, images[0], callback, output_type, in_context)
                result.timings["text"] = text_seconds
                return result
            parts: list[ShotResult] = []
            handoff = request.handoff
            for seg, seg_images in zip(segments, images):
                last = seg.index == len(segments) - 1
                part_request = request.replace(
                    num_frames=seg.frames, seed=(request.seed + seg.index) % (MAX_SEED + 1), handoff=handoff,
                    handoff_m=request.handoff_m if last else max(request.handoff_m, 1), images=())
                part = self.render_segment(part_request, text, guider, seg_images, callback,
                                           "np" if not last or output_type != "latent" else "latent", None)
                parts.append(part)
                handoff = part.handoff
            return join_segments(request, parts, text_seconds, output_type)
        finally:
            close_bar()

    def with_model_defaults(self, request: ShotRequest) -> ShotRequest:
        """Size and steps the request leaves out, from the model's manifest."""
        missing = {k: v for k, v in self.ledger.manifest.shot_defaults().items() if getattr(request, k) is None}
        return request.replace(**missing) if missing else request

    @property
    def vae_sha256(self) -> str:
        if self._vae_sha256 is None:
            self._vae_sha256 = self.ledger.weights_sha256("vae")
        return self._vae_sha256

    def render_segment(self, request: ShotRequest, text: TextEmbeddings, guider: Guider,
                       images: list[tuple[ImageCondition, int]], callback: StepCallback | None,
                       output_type: str, in_context: InContext | None) -> ShotResult:
        """One render within the model's limit: stages 1 and 2, optional temporal, decode, handoff."""
        led = self.ledger
        timings: dict[str, float] = {}
        t_total = time.perf_counter()
        generator = torch.Generator("cpu").manual_seed(request.seed)
        rendered = request.render_frames
        latent_f = fr.latent_frames(rendered)
        audio_frames = self.audio_latent_frames(rendered, request.fps)

        t0 = time.perf_counter()
        extra_loras = [in_context.lora] if in_context is not None else []
        if request.quality == "draft" and led.distilled_lora() is not None:
            extra_loras.append(led.distilled_lora())  # the distilled model renders both stages
        stage1_loras = led.use_loras(list(request.loras) + extra_loras)
        grid1 = self.stage_grid(request, latent_f, audio_frames, half=True)
        appended = self.reference_tokens(in_context, request, grid1) if in_context is not None else None
        cond1 = self.conditioning(request, images, grid1, half=True, appended=appended)
        s1 = self.stage1(request, text, guider, generator, latent_f, audio_frames, callback, conditioning=cond1)
        timings["stage1"] = time.perf_counter() - t0

        t0 = time.perf_counter()
        up = self.upsample_spatial(s1)
        timings["upsample"] = time.perf_counter() - t0

        t0 = time.perf_counter()
        distilled = led.distilled_lora()
        # Stage 2 of an IC-LoRA render is the bare distilled model: no IC-LoRA, no shot LoRAs (official).
        stage2_loras = led.use_loras(([] if in_context is not None else list(request.loras))
                                     + ([distilled] if distilled else []))
        cond2 = self.conditioning(request, images, up.grid, half=False)
        s2 = self.stage2(request, text, up, generator, callback, conditioning=cond2)
        timings["stage2"] = time.perf_counter() - t0

        video_norm = VideoNorm.of(led.video_decoder())
        final = video_norm.denormalize(unpack_video(s2.video, s2.grid.frames, s2.grid.height, s2.grid.width))
        fps = request.fps
        delivered = request.num_frames
        if request.temporal_upsample:
            t0 = time.perf_counter()
            final = self.temporal_refine(self.upsample_temporal(final), s1.audio, text, request, generator, callback)
            timings["temporal"] = time.perf_counter() - t0
            fps, delivered = request.fps * 2, 2 * request.num_frames - 1
        # The official two-stage pipeline keeps stage 1's audio (guided at audio cfg 7); stage 2 refines video.
        audio_norm = AudioNorm.of(led.audio_decoder())
        audio_latent = unpack_audio(audio_norm.denormalize(s1.audio), self.audio_mel_bins())
        stage1_raw = video_norm.denormalize(unpack_video(s1.video, s1.grid.frames, s1.grid.height,
                                                         s1.grid.width))

        frames = audio = None
        sample_rate = int(led.vocoder().config.output_sampling_rate)
        skip = request.overlap_frames

        def delivered_frames() -> np.ndarray:
            return self.decode_video(final)[skip:skip + delivered]

        if output_type != "latent":
            t0 = time.perf_counter()
            frames = delivered_frames()
            timings["decode_video"] = time.perf_counter() - t0
            t0 = time.perf_counter()
            audio = self.decode_audio(audio_latent)[..., round(skip / request.fps * sample_rate):]
            audio = fit_audio(audio, round(delivered / fps * sample_rate))
            timings["decode_audio"] = time.perf_counter() - t0
        handoff_m = request.produced_handoff_m

        def handoff_factory(frames=frames) -> Handoff:
            tail = frames if frames is not None else delivered_frames()
            return self.make_handoff(request, tail, audio_latent, fps, handoff_m)
        timings["total"] = time.perf_counter() - t_total
        return ShotResult(
            request=request, frames=frames, audio=audio, sample_rate=sample_rate, fps=fps,
            latent=final.cpu(), audio_latent=audio_latent.cpu(), stage1_latent=stage1_raw.cpu(),
            rendered_frames=rendered, timings=timings,
            loras={"stage1": stage1_loras, "stage2": stage2_loras}, model_id=led.model_id,
            overlap_frames=skip, handoff_factory=handoff_factory if handoff_m else None,
            recipe=recipe_id("ic-lora") if in_context is not None else "",
        )

    # ---------------------------------------------------------------- conditioning
    def place_images(self, request: ShotRequest, segments: list[Segment]) -> list[list[tuple[ImageCondition, int]]]:
        """Each image condition, in the segment that holds its frame, with its rendered frame index there
        (0: it replaces the first latent frame; anything else: keyframe tokens at that frame's time)."""
        placed: list[list[tuple[ImageCondition, int]]] = [[] for _ in segments]
        for i, image in enumerate(request.images):
            if not isinstance(image.frame, int) or isinstance(image.frame, bool) \
                    or not 0 <= image.frame < request.num_frames:
                raise InvalidConditionError(
                    f"images[{i}].frame", image.frame, f"must be a frame of the shot, 0..{request.num_frames - 1}",
                    nearest=min(max(int(image.frame) if isinstance(image.frame, (int, float)) else 0, 0),
                                request.num_frames - 1))
            seg = next(s for s in segments if s.start <= image.frame < s.start + s.frames)
            placed[seg.index].append((image, image.frame - seg.start + seg.overlap))
        return placed

    def stage_grid(self, request: ShotRequest, latent_f: int, audio_frames: int, half: bool) -> LatentGrid:
        ratio = self.ledger.video_decoder().spatial_compression_ratio
        div = 2 if half else 1
        return LatentGrid(latent_f, request.height // div // ratio, request.width // div // ratio, audio_frames,
                          request.fps)

    def conditioning(self, request: ShotRequest, images: list[tuple[ImageCondition, int]], grid: LatentGrid,
                     half: bool, appended: AppendedTokens | None = None) -> StageConditioning | None:
        """Images and the incoming handoff as clean tokens with their denoise mask, at this stage's size."""
        if not images and request.handoff is None and appended is None:
            return None
        led = self.ledger
        norm = VideoNorm.of(led.video_decoder())
        channels = led.transformer().config.in_channels
        tokens_per_frame = grid.height * grid.width
        video = TokenConditioning.free(torch.zeros(1, grid.frames * tokens_per_frame, channels, device=led.device))
        audio = None
        width, height = grid.width * self.spatial_ratio, grid.height * self.spatial_ratio
        keyframes = []
        for image, rendered in images:
            tokens = pack_video(norm.normalize(self.encode_image(image, width, height)))
            if rendered == 0:
                video.place(0, tokens, image.strength)
            else:
                keyframes.append((tokens, image.strength, rendered))
        handoff = request.handoff
        if handoff is not None:
            raw = handoff.video_half if half else handoff.video
            if tuple(raw.shape[3:]) != (grid.height, grid.width):
                raise HandoffMismatchError("latent size", tuple(raw.shape[3:]), (grid.height, grid.width),
                                           handoff.source)
            video.place(0, pack_video(norm.normalize(raw.to(led.device, torch.float32))), 1.0)
            audio_norm = AudioNorm.of(led.audio_decoder())
            tokens = audio_norm.normalize(pack_audio(handoff.audio.to(led.device, torch.float32)))
            mel = self.audio_mel_bins()
            audio = TokenConditioning.free(torch.zeros(1, grid.audio_frames, tokens.shape[-1], device=led.device))
            if handoff.audio.shape[-1] != mel:
                raise HandoffMismatchError("audio mel bins", handoff.audio.shape[-1], mel, handoff.source)
            audio.place(0, tokens[:, :grid.audio_frames], 1.0)
        extra = self.keyframe_tokens(keyframes, grid) if keyframes else None
        if extra is not None:  # the keyframe tokens join the video state: their clean values, mask, zero start
            video = video.with_placeholders(extra.tokens, extra.strength)
        return StageConditioning(video, audio, appended, extra)

    def keyframe_tokens(self, keyframes: list[tuple[torch.Tensor, float, int]], grid: LatentGrid) -> KeyframeTokens:
        """Each image's tokens with RoPE coordinates at [frame, frame + 1) / fps: one pixel frame's time,
        as `VideoConditionByKeyframeIndex` places a single-frame keyframe."""
        device = self.ledger.device
        rope = self.ledger.transformer().rope
        tokens, strength, coords = [], [], []
        for t, s, rendered in keyframes:
            c = rope.prepare_video_coords(1, 1, grid.height, grid.width, device, fps=grid.fps)
            c[:, 0] = c[:, 0] + rendered / grid.fps
            tokens.append(t)
            strength.append(torch.full(t.shape[:2], float(s), device=t.device, dtype=t.dtype))
            coords.append(c)
        return KeyframeTokens(torch.cat(tokens, dim=1), torch.cat(strength, dim=1), torch.cat(coords, dim=2))

    @property
    def spatial_ratio(self) -> int:
        return self.ledger.video_decoder().spatial_compression_ratio

    def encode_frames(self, frames: np.ndarray) -> torch.Tensor:
        """uint8 [F, H, W, 3] (F = 8k+1) -> raw VAE latent [1, C, k+1, H/32, W/32] (the distribution's mode)."""
        vae = self.ledger.video_encoder()
        x = torch.from_numpy(np.require(frames, requirements=["C", "W"])).to(self.ledger.device)  # read-only: copied
        x = (x.permute(3, 0, 1, 2).unsqueeze(0).float() / 127.5 - 1.0).to(vae.dtype)
        return vae.encode(x, return_dict=False)[0].mode().float()

    def encode_image(self, image: ImageCondition, width: int, height: int) -> torch.Tensor:
        """The condition as the model was trained to see it: fitted, H.264-compressed, VAE-encoded."""
        crf = self.ledger.manifest.image_crf if image.crf is None else int(image.crf)
        # As ltx-pipelines does: compress at the source resolution, then fit to the stage's size.
        pixels = fit_image(h264_roundtrip(load_rgb(image.image, "images.image"), crf), width, height)
        return self.encode_frames(pixels[None])

    def make_handoff(self, request: ShotRequest, delivered: np.ndarray, audio_latent: torch.Tensor,
                     fps: float, m: int) -> Handoff:
        """The last `1 + 8·m` delivered frames, re-encoded at full and half size, with their audio latent."""
        n = 1 + fr.TEMPORAL_RATIO * m
        tail = delivered[-n:]
        video = self.encode_frames(tail)
        pixels = torch.from_numpy(np.ascontiguousarray(tail)).permute(0, 3, 1, 2).float()
        half = torch.nn.functional.interpolate(pixels, scale_factor=0.5, mode="area")
        video_half = self.encode_frames(half.round().clamp(0, 255).to(torch.uint8).permute(0, 2, 3, 1).numpy())
        rate = self.audio_latent_rate()
        seconds_end = request.overlap_frames / request.fps + len(delivered) / fps
        count = max(1, round(n / fps * rate))
        first = max(0, min(round((seconds_end - n / fps) * rate), audio_latent.shape[2] - count))
        return Handoff(video.cpu(), video_half.cpu(), audio_latent[:, :, first:first + count].cpu(),
                       self.ledger.model_id, self.vae_sha256, request.width, request.height, fps, m)

    def reference_tokens(self, in_context: InContext, request: ShotRequest, grid: LatentGrid) -> AppendedTokens:
        """The reference video as clean tokens at the generated video's positions, at stage-1 size divided by the
        LoRA's `reference_downscale_factor` and every `reference_temporal_scale_factor`-th frame, its positions
        scaled back up so it still spans the shot (`ltx_pipelines/ic_lora.py`, `iclora_utils.py`)."""
        led = self.ledger
        d, t = in_context.downscale, in_context.temporal
        if grid.height % d or grid.width % d:
            raise InvalidConditionError(
                "ic_lora", d, f"the IC-LoRA's reference_downscale_factor {d} does not divide the stage-1 latent "
                f"grid {grid.width}x{grid.height}; use a size whose half is a multiple of {32 * d}")
        frames = in_context.frames[::t][:max(1, request.render_frames // t)]
        frames = frames[:fr.largest_valid_length(len(frames))]
        width, height = grid.width * self.spatial_ratio // d, grid.height * self.spatial_ratio // d
        pixels = np.stack([fit_image(f, width, height) for f in frames])
        raw = self.encode_frames(pixels)
        tokens = pack_video(VideoNorm.of(led.video_decoder()).normalize(raw))
        transformer = led.transformer()
        coords = transformer.rope.prepare_video_coords(1, raw.shape[2], raw.shape[3], raw.shape[4], led.device,
                                                       fps=request.fps)
        coords[:, 0] = coords[:, 0] * t + request.overlap_frames / request.fps  # a handoff shifts the shot's time
        coords[:, 1:] = coords[:, 1:] * d
        return AppendedTokens(tokens, coords)

    # ---------------------------------------------------------------- pieces
    def guider_for(self, request: ShotRequest) -> Guider:
        if request.quality == "draft":
            return NoGuider()  # the distilled recipe is unguided
        manifest = self.ledger.manifest
        defaults = {"video": manifest.stg_blocks,
                    "audio": manifest.audio_stg_blocks if manifest.audio_stg_blocks is not None else manifest.stg_blocks}
        num_layers = self.ledger.transformer().config.num_layers
        blocks = {}
        for name, stream in zip(("video", "audio"), request.guidance.streams):
            blocks[name] = tuple(stream.stg_blocks if stream.stg_blocks is not None else defaults[name])
            bad = [b for b in blocks[name] if not 0 <= b < num_layers]
            if bad and stream.wants_perturbed:
                raise InvalidGuidanceError(f"guidance.{name}.stg_blocks", blocks[name],
                                           f"this transformer has blocks 0..{num_layers - 1}",
                                           nearest=tuple(min(max(b, 0), num_layers - 1) for b in blocks[name]))
        return MultiModalGuider(request.guidance, blocks["video"], blocks["audio"])

    def encode(self, request: ShotRequest, guided: bool) -> TextEmbeddings:
        led = self.ledger
        max_len = request.max_sequence_length
        if max_len == 1024:
            max_len = led.manifest.max_sequence_length
        return encode_prompt(led.tokenizer(), led.text_encoder(), led.connectors(), request.prompt,
                             request.negative_prompt, max_sequence_length=max_len, device=led.device, guided=guided)

    def audio_latent_rate(self) -> float:
        """Latent audio frames per second."""
        vae = self.ledger.audio_decoder()
        return vae.config.sample_rate / vae.config.mel_hop_length / vae.temporal_compression_ratio

    def audio_mel_bins(self) -> int:
        vae = self.ledger.audio_decoder()
        return vae.config.mel_bins // vae.mel_compression_ratio

    def audio_latent_frames(self, pixel_frames: int, fps: float) -> int:
        """The rendered video's duration in latent audio frames, rounded, as ltx-core's
        `AudioLatentShape.from_video_pixel_shape` (25 a second on LTX-2). The decoded audio is then fitted to
        the delivered frames' exact sample count (`fit_audio`)."""
        return round(pixel_frames / fps * self.audio_latent_rate())

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
               sigmas: torch.Tensor | None = None, conditioning: StageConditioning | None = None) -> StageLatents:
        led = self.ledger
        grid = self.stage_grid(request, latent_f, audio_frames, half=True)
        video, audio = self.initial_noise(generator, latent_f, grid.height, grid.width, audio_frames)
        generated = video.shape[1]
        keyframes = conditioning.keyframes if conditioning is not None else None
        if keyframes is not None:  # their noise is drawn after the shot's, so the shot's own is unchanged
            extra = gaussian_noise(tuple(keyframes.tokens.shape), generator, led.device)
            video = torch.cat([video, extra], dim=1)
        if conditioning is not None:  # stage 1 starts from pure noise (sigma 1) where tokens are free
            video = conditioning.video.start(video, 1.0) if conditioning.video_active else video
            audio = conditioning.audio.start(audio, 1.0) if conditioning.audio_active else audio
        if sigmas is None:
            sigmas = self.stage1_sigmas(request)
        video, audio = denoise(led.transformer(), video, audio, text, sigmas, grid, guider, stage="stage1",
                               cross_timestep=led.manifest.cross_timestep, callback=callback,
                               conditioning=conditioning)
        return StageLatents(video[:, :generated], audio, grid)  # keyframe tokens end here

    def stage1_sigmas(self, request: ShotRequest) -> torch.Tensor:
        """Draft: the distilled schedule. Final: `steps` on the token-shifted schedule, shifted for 4096 tokens
        whatever the real count, as `TI2VidTwoStagesPipeline` does."""
        default = FixedSchedule(DISTILLED_SIGMA_VALUES) if request.quality == "draft" else self.stage1_schedule
        return schedule_from(request.stage1_sigmas, default).sigmas(request.steps, STAGE1_SHIFT_TOKENS)

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
               callback: StepCallback | None, conditioning: StageConditioning | None = None) -> StageLatents:
        led = self.ledger
        sigmas = schedule_from(request.distilled_sigmas, self.distilled_schedule).sigmas()
        noiser = FlowNoiser()
        sigma0 = float(sigmas[0])
        generated = up.video.shape[1]
        # Draw order: the shot's video noise, its audio noise, then any keyframe tokens' noise.
        video_noise = gaussian_noise(tuple(up.video.shape), generator, up.video.device, up.video.dtype)
        audio = noiser(up.audio, sigma0, generator, conditioning.audio if conditioning is not None else None)
        base = up.video
        keyframes = conditioning.keyframes if conditioning is not None else None
        if keyframes is not None:
            extra = gaussian_noise(tuple(keyframes.tokens.shape), generator, up.video.device, up.video.dtype)
            video_noise, base = torch.cat([video_noise, extra], dim=1), torch.cat([base, torch.zeros_like(extra)], dim=1)
        video = noiser(base, sigma0, generator, conditioning.video if conditioning is not None else None,
                       noise=video_noise)
        video, audio = denoise(led.transformer(), video, audio, text.positive(), sigmas, up.grid, NoGuider(),
                               stage="stage2", cross_timestep=led.manifest.cross_timestep, callback=callback,
                               conditioning=conditioning)
        return StageLatents(video[:, :generated], audio, up.grid)  # keyframe tokens end here

    def temporal_refine(self, raw: torch.Tensor, audio: torch.Tensor, text: TextEmbeddings, request: ShotRequest,
                        generator: torch.Generator, callback: StepCallback | None) -> torch.Tensor:
        """After temporal x2 the new in-between frames are blurry guesses: re-noise to the distilled schedule's
        fifth sigma and refine on `DISTILLED_SIGMA_VALUES[4:]` with the distilled model, unguided, the audio
        held as it is (`ltx_pipelines/dfr_pipeline.py`, its temporal round)."""
        led = self.ledger
        norm = VideoNorm.of(led.video_decoder())
        grid = LatentGrid(raw.shape[2], raw.shape[3], raw.shape[4], audio.shape[1], request.fps * 2)
        sigmas = FixedSchedule(TEMPORAL_REFINE_SIGMAS).sigmas()
        video = FlowNoiser()(pack_video(norm.normalize(raw)), float(sigmas[0]), generator)
        held = TokenConditioning(audio.clone(), torch.zeros(audio.shape[:2], dtype=audio.dtype, device=audio.device))
        video, _ = denoise(led.transformer(), video, audio, text.positive(), sigmas, grid, NoGuider(),
                           stage="temporal_refine", cross_timestep=led.manifest.cross_timestep, callback=callback,
                           conditioning=StageConditioning(None, held))
        return norm.denormalize(unpack_video(video, grid.frames, grid.height, grid.width))

    def upsample_temporal(self, raw: torch.Tensor) -> torch.Tensor:
        """F latent frames -> 2F-1 (the causal first frame is not doubled)."""
        up = self.ledger.temporal_upsampler()
        return up(raw.to(up.dtype)).float()

    def decode_video(self, raw: torch.Tensor) -> np.ndarray:
        vae = self.ledger.video_decoder()
        h, w = raw.shape[3] * vae.spatial_compression_ratio, raw.shape[4] * vae.spatial_compression_ratio
        tiling = vae_tiling(h, w, fr.pixel_frames(raw.shape[2]))
        if tiling is not None:
            vae.enable_tiling(**tiling)
            vae.use_framewise_decoding = fr.pixel_frames(raw.shape[2]) > VAE_TILE_FRAMES
        else:
            vae.disable_tiling()
            vae.use_framewise_decoding = False
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


@dataclass(frozen=True)
class InContext:
    """IC-LoRA conditioning: a reference video seen in context by a LoRA trained to follow it."""

    frames: np.ndarray  # uint8 [F, H, W, 3]
    lora: LoraSpec
    downscale: int = 1  # the LoRA's reference_downscale_factor (safetensors metadata)
    temporal: int = 1  # its reference_temporal_scale_factor


def join_segments(request: ShotRequest, parts: list[ShotResult], text_seconds: float, output_type: str) -> ShotResult:
    """One result for a segmented shot: frames and audio end to end; latents and handoff of the last segment."""
    last = parts[-1]
    timings: dict[str, float] = {"text": text_seconds}
    for part in parts:
        for key, value in part.timings.items():
            timings[key] = timings.get(key, 0.0) + value
    frames = audio = None
    if output_type != "latent":
        frames = np.concatenate([p.frames for p in parts])
        audio = fit_audio(np.concatenate([p.audio for p in parts], axis=-1),
                          round(request.num_frames / request.fps * last.sample_rate))
    return ShotResult(
        request=request, frames=frames, audio=audio, sample_rate=last.sample_rate, fps=last.fps,
        latent=last.latent, audio_latent=last.audio_latent, stage1_latent=last.stage1_latent,
        rendered_frames=sum(p.rendered_frames for p in parts), timings=timings, loras=last.loras,
        model_id=last.model_id, overlap_frames=parts[0].overlap_frames, segments=len(parts),
        segment_starts=tuple(sum(p.request.num_frames for p in parts[:i]) for i in range(1, len(parts))),
        handoff_factory=(lambda: last.handoff) if last.request.produced_handoff_m else None)


def fit_audio(wave: np.ndarray, samples: int) -> np.ndarray:
    """Trim to exactly `samples`, or fill a short tail: the causal audio decoder returns about 30 ms less than
    the latent's duration (official pipelines leave the take's audio that much shorter than its video). The gap
    is filled with the tail mirrored, which keeps the waveform continuous where a held sample would not."""
    if wave.shape[-1] >= samples:
        return np.ascontiguousarray(wave[..., :samples])
    missing = samples - wave.shape[-1]
    pad = [(0, 0)] * (wave.ndim - 1) + [(0, missing)]
    return np.pad(wave, pad, mode="reflect" if missing < wave.shape[-1] else "edge")
