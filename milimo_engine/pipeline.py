"""TwoStagePipeline: LTX-2's two-stage render of one shot, as `ltx_pipelines/ti2vid_two_stages.py` does it.

Stage 1 renders at half size with the base model and the shot's LoRAs under guidance; the spatial upsampler doubles
the latent; stage 2 re-noises it to the first distilled sigma and refines it at full size with the distilled LoRA,
unguided; an optional temporal x2 doubles the frame rate. The prompt is encoded once per shot. Noise is drawn as
ltx-core's `GaussianNoiser` draws it: one draw over each stage's whole video state (generated, keyframe and
reference tokens), then one over its audio, from a CPU generator seeded with the shot's seed, so a seed gives
the official pipeline's noise.
"""

from __future__ import annotations

import time
from typing import Literal

import numpy as np
import torch

from . import frames as fr
from .codec import Codec, fit_audio
from .components.guiders import Guider, MultiModalGuider, NoGuider
from .components.latents import AudioNorm, VideoNorm, pack_video, unpack_audio, unpack_video
from .components.schedules import FixedSchedule, TokenShiftedSchedule, schedule_from
from .conditioning import ConditionBuilder, ImageCondition, StageConditioning
from .denoise import LatentGrid, StepCallback, denoise
from .errors import InvalidConditionError, InvalidGuidanceError
from .handoff import Handoff, make_handoff
from .in_context import InContext, reference_tokens
from .ledger import ModelLedger
from .noise import NoiseDraws, StageLatents, Trace, trace_stage
from .progress import step_hook
from .recipe import DISTILLED_SIGMA_VALUES, STAGE1_SHIFT_TOKENS, TEMPORAL_REFINE_SIGMAS, recipe_id
from .request import MAX_SEED, ShotRequest
from .result import ShotResult
from .segments import join_segments, place_images, plan_segments
from .text import TextEmbeddings, encode_prompt


class TwoStagePipeline:
    """Call with a `ShotRequest`; see the module docstring for the stages. `keyframes_only` makes every image a
    keyframe, frame 0 included (`KeyframeInterpolationPipeline`)."""

    keyframes_only = False

    def __init__(self, ledger: ModelLedger, *, progress: bool | None = None):
        self.ledger = ledger
        self.progress = progress
        self.codec = Codec(ledger)
        self.conditions = ConditionBuilder(ledger, self.codec)
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
            in_context: InContext | None = None, trace: Trace | None = None) -> ShotResult:
        """Validate, then render the shot in one piece or, beyond the segment limit, as chained segments.
        `trace` (a test seam): a dict that receives every noise draw and each stage's latents by name."""
        led = self.ledger
        request = self.with_model_defaults(request)
        request.validate(max_frames=led.manifest.max_frames, segment_frames=led.manifest.segment_frames)
        assert request.width is not None and request.height is not None
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
        images = place_images(request, segments)
        guider = self.guider_for(request)
        deadline = time.monotonic() + time_limit_s if time_limit_s is not None else None
        callback, close_bar = step_hook(callback_on_step_end, show_bar=self.progress, deadline=deadline)
        try:
            t0 = time.perf_counter()
            text = self.encode(request, guided=guider.wants_uncond)
            led.phase_done("encode")
            text_seconds = time.perf_counter() - t0
            if trace is not None:
                trace["text.video"], trace["text.audio"] = text.video, text.audio
            if len(segments) == 1:
                result = self.render_segment(request, text, guider, images[0], callback, output_type, in_context,
                                             trace)
                result.timings["text"] = text_seconds
                return result
            parts: list[ShotResult] = []
            handoff = request.handoff
            for seg, seg_images in zip(segments, images, strict=False):
                last = seg.index == len(segments) - 1
                part_request = request.replace(
                    num_frames=seg.frames, seed=(request.seed + seg.index) % (MAX_SEED + 1), handoff=handoff,
                    handoff_m=request.handoff_m if last else max(request.handoff_m, 1), images=())
                part = self.render_segment(part_request, text, guider, seg_images, callback,
                                           "np" if not last or output_type != "latent" else "latent", None, None)
                parts.append(part)
                handoff = part.handoff
            return join_segments(request, parts, text_seconds, output_type)
        finally:
            close_bar()

    def with_model_defaults(self, request: ShotRequest) -> ShotRequest:
        """Size, steps and negative prompt the request leaves out, from the model's manifest."""
        missing = {k: v for k, v in self.ledger.manifest.shot_defaults().items() if getattr(request, k) is None}
        return request.replace(**missing) if missing else request

    @property
    def vae_sha256(self) -> str:
        if self._vae_sha256 is None:
            self._vae_sha256 = self.ledger.weights_sha256("vae")
        return self._vae_sha256

    def render_segment(self, request: ShotRequest, text: TextEmbeddings, guider: Guider,
                       images: list[tuple[ImageCondition, int]], callback: StepCallback | None,
                       output_type: str, in_context: InContext | None, trace: Trace | None) -> ShotResult:
        """One render within the model's limit: stages 1 and 2, optional temporal, decode, handoff."""
        t_total = time.perf_counter()
        timings: dict[str, float] = {}
        noise = NoiseDraws(torch.Generator("cpu").manual_seed(request.seed), self.ledger.device, trace)
        s1, s2, loras = self._two_stages(request, text, guider, images, callback, in_context, noise, timings, trace)
        # The two-stage recipe keeps stage 1's audio, guided at audio cfg 7 (ltx-pipelines 1.2.0: "stage 2 refines
        # video only; discard its audio"); the distilled (draft), keyframe and IC-LoRA recipes decode stage 2's.
        kept = s1.audio if request.quality == "final" and in_context is None and not self.keyframes_only else s2.audio
        video_norm = VideoNorm.of(self.ledger.video_decoder())
        final = video_norm.denormalize(unpack_video(s2.video, s2.grid.frames, s2.grid.height, s2.grid.width))
        fps, delivered = request.fps, request.num_frames
        if request.temporal_upsample:
            t0 = time.perf_counter()
            final = self.temporal_refine(self.upsample_temporal(final), kept, text, request, images, noise, callback)
            timings["temporal"] = time.perf_counter() - t0
            fps, delivered = request.fps * 2, 2 * request.num_frames - 1
        stage1_raw = video_norm.denormalize(unpack_video(s1.video, s1.grid.frames, s1.grid.height, s1.grid.width))
        return self._delivered(request, final, kept, stage1_raw, fps, delivered, output_type, loras, in_context,
                               timings, t_total)

    def _two_stages(self, request: ShotRequest, text: TextEmbeddings, guider: Guider,
                    images: list[tuple[ImageCondition, int]], callback: StepCallback | None,
                    in_context: InContext | None, noise: NoiseDraws, timings: dict[str, float],
                    trace: Trace | None) -> tuple[StageLatents, StageLatents, dict[str, list]]:
        """Stage 1 at half size (the shot's LoRAs, guided), the spatial x2, stage 2 at full size (distilled)."""
        led = self.ledger
        rendered = request.render_frames
        grid1 = self.stage_grid(request, fr.latent_frames(rendered), self.codec.audio_latent_frames(rendered,
                                                                                                    request.fps),
                                half=True)
        t0 = time.perf_counter()
        distilled = led.distilled_lora()
        extra_loras = [in_context.lora] if in_context is not None else []
        if request.quality == "draft" and distilled is not None:
            extra_loras.append(distilled)  # the distilled model renders both stages
        stage1_loras = led.use_loras(list(request.loras) + extra_loras)
        appended = reference_tokens(self.codec, in_context, request, grid1) if in_context is not None else None
        cond1 = self.conditions.build(images, request.handoff, grid1, True, self.zero_video(grid1),
                                      self.zero_audio(grid1), appended, self.keyframes_only)
        s1 = self.stage1(request, text, guider, noise, grid1, callback, cond1)
        timings["stage1"] = time.perf_counter() - t0
        trace_stage(trace, "stage1", s1)

        t0 = time.perf_counter()
        up = self.upsample_spatial(s1)
        timings["upsample"] = time.perf_counter() - t0
        if trace is not None:
            trace["upsampled"] = unpack_video(up.video, up.grid.frames, up.grid.height, up.grid.width)

        t0 = time.perf_counter()
        # Stage 2 of an IC-LoRA render is the bare distilled model: no IC-LoRA, no shot LoRAs (official).
        stage2_loras = led.use_loras(([] if in_context is not None else list(request.loras))
                                     + ([distilled] if distilled else []))
        cond2 = self.conditions.build(images, request.handoff, up.grid, False, up.video, up.audio, None,
                                      self.keyframes_only)
        with led.fused_distilled(stage2_loras):
            s2 = self.stage2(request, text, up.grid, noise, callback, cond2)
        timings["stage2"] = time.perf_counter() - t0
        trace_stage(trace, "stage2", s2)
        return s1, s2, {"stage1": stage1_loras, "stage2": stage2_loras}

    def _delivered(self, request: ShotRequest, final: torch.Tensor, kept_audio: torch.Tensor,
                   stage1_raw: torch.Tensor, fps: float, delivered: int, output_type: str, loras: dict[str, list],
                   in_context: InContext | None, timings: dict[str, float], t_total: float) -> ShotResult:
        """What the shot delivers: its frames and audio decoded (not for latents), trimmed to what was asked,
        and its handoff, made on first use."""
        led = self.ledger
        audio_latent = unpack_audio(AudioNorm.of(led.audio_decoder()).denormalize(kept_audio),
                                    self.codec.audio_mel_bins())
        frames = audio = None
        sample_rate = int(led.vocoder().config.output_sampling_rate)
        skip = request.overlap_frames

        def delivered_frames() -> np.ndarray:
            return self.codec.decode_video(final)[skip:skip + delivered]

        if output_type != "latent":
            t0 = time.perf_counter()
            frames = delivered_frames()
            timings["decode_video"] = time.perf_counter() - t0
            t0 = time.perf_counter()
            audio = self.codec.decode_audio(audio_latent)[..., round(skip / request.fps * sample_rate):]
            audio = fit_audio(audio, round(delivered / fps * sample_rate))
            timings["decode_audio"] = time.perf_counter() - t0
        handoff_m = request.produced_handoff_m

        def handoff_factory(frames: np.ndarray | None = frames) -> Handoff:
            tail = frames if frames is not None else delivered_frames()
            return make_handoff(self.codec, request, tail, audio_latent, fps, handoff_m, led.model_id,
                                self.vae_sha256)

        timings["total"] = time.perf_counter() - t_total
        return ShotResult(
            request=request, frames=frames, audio=audio, sample_rate=sample_rate, fps=fps,
            latent=final.cpu(), audio_latent=audio_latent.cpu(), stage1_latent=stage1_raw.cpu(),
            rendered_frames=request.render_frames, timings=timings, loras=loras, model_id=led.model_id,
            overlap_frames=skip, handoff_factory=handoff_factory if handoff_m else None,
            recipe=recipe_id("ic-lora") if in_context is not None else "",
        )

    # ---------------------------------------------------------------- conditioning
    def stage_grid(self, request: ShotRequest, latent_f: int, audio_frames: int, half: bool) -> LatentGrid:
        ratio = self.codec.spatial_ratio
        div = 2 if half else 1
        assert request.width is not None and request.height is not None, "with_model_defaults first"
        return LatentGrid(latent_f, request.height // div // ratio, request.width // div // ratio, audio_frames,
                          request.fps)

    def zero_video(self, grid: LatentGrid) -> torch.Tensor:
        channels = self.ledger.transformer().config.in_channels
        return torch.zeros(1, grid.frames * grid.height * grid.width, channels, device=self.ledger.device)

    def zero_audio(self, grid: LatentGrid) -> torch.Tensor:
        vae = self.ledger.audio_decoder()
        return torch.zeros(1, grid.audio_frames, vae.config.latent_channels * self.codec.audio_mel_bins(),
                           device=self.ledger.device)

    # ---------------------------------------------------------------- pieces
    def guider_for(self, request: ShotRequest) -> Guider:
        if request.quality == "draft":
            return NoGuider()  # the distilled recipe is unguided
        manifest = self.ledger.manifest
        audio_blocks = manifest.audio_stg_blocks if manifest.audio_stg_blocks is not None else manifest.stg_blocks
        defaults = {"video": manifest.stg_blocks, "audio": audio_blocks}
        num_layers = self.ledger.transformer().config.num_layers
        blocks = {}
        for name, stream in zip(("video", "audio"), request.guidance.streams, strict=False):
            blocks[name] = tuple(stream.stg_blocks if stream.stg_blocks is not None else defaults[name])
            bad = [b for b in blocks[name] if not 0 <= b < num_layers]
            if bad and stream.wants_perturbed:
                raise InvalidGuidanceError(
                    f"guidance.{name}.stg_blocks",
                    blocks[name],
                    f"this transformer has blocks 0..{num_layers - 1}",
                    nearest=tuple(min(max(b, 0), num_layers - 1) for b in blocks[name]),
                )
        return MultiModalGuider(request.guidance, blocks["video"], blocks["audio"])

    def encode(self, request: ShotRequest, guided: bool) -> TextEmbeddings:
        led = self.ledger
        max_len = request.max_sequence_length or led.manifest.max_sequence_length
        return encode_prompt(
            led.tokenizer(),
            led.text_encoder(),
            led.connectors(),
            request.prompt,
            request.negative_prompt,
            max_sequence_length=max_len,
            device=led.device,
            guided=guided,
        )

    def stage1(
        self,
        request: ShotRequest,
        text: TextEmbeddings,
        guider: Guider,
        noise: NoiseDraws,
        grid: LatentGrid,
        callback: StepCallback | None,
        conditioning: StageConditioning,
    ) -> StageLatents:
        generated = grid.frames * grid.height * grid.width
        video, audio = noise.state("stage1", conditioning, 1.0)
        sigmas = self.stage1_sigmas(request)
        video, audio = denoise(
            self.ledger.transformer(),
            video,
            audio,
            text,
            sigmas,
            grid,
            guider,
            stage="stage1",
            cross_timestep=self.ledger.manifest.cross_timestep,
            callback=callback,
            conditioning=conditioning,
        )
        return StageLatents(video[:, :generated], audio, grid)  # keyframe tokens end here

    def stage1_sigmas(self, request: ShotRequest) -> torch.Tensor:
        """Draft: the distilled schedule. Final: `steps` on the token-shifted schedule, shifted for 4096 tokens
        whatever the real count, as `TI2VidTwoStagesPipeline` does."""
        default = FixedSchedule(DISTILLED_SIGMA_VALUES) if request.quality == "draft" else self.stage1_schedule
        assert request.steps is not None, "with_model_defaults first"
        return schedule_from(request.stage1_sigmas, default).sigmas(request.steps, STAGE1_SHIFT_TOKENS)

    def upsample_spatial(self, s1: StageLatents) -> StageLatents:
        """Upsample in VAE space (the upsampler was trained on raw latents), then renormalise (`upsample_video`)."""
        norm = VideoNorm.of(self.ledger.video_decoder())
        g = s1.grid
        raw = norm.denormalize(unpack_video(s1.video, g.frames, g.height, g.width))
        up = self.ledger.spatial_upsampler()
        raw = up(raw.to(up.dtype)).float()
        self.ledger.phase_done("upsample")
        grid = LatentGrid(raw.shape[2], raw.shape[3], raw.shape[4], g.audio_frames, g.fps)
        return StageLatents(pack_video(norm.normalize(raw)), s1.audio, grid)

    def stage2(
        self,
        request: ShotRequest,
        text: TextEmbeddings,
        grid: LatentGrid,
        noise: NoiseDraws,
        callback: StepCallback | None,
        conditioning: StageConditioning,
    ) -> StageLatents:
        """Re-noised to the first distilled sigma from the upsampled video and stage 1's audio, then refined."""
        sigmas = schedule_from(request.distilled_sigmas, self.distilled_schedule).sigmas()
        generated = grid.frames * grid.height * grid.width
        video, audio = noise.state("stage2", conditioning, float(sigmas[0]))
        video, audio = denoise(
            self.ledger.transformer(),
            video,
            audio,
            text.positive(),
            sigmas,
            grid,
            NoGuider(),
            stage="stage2",
            cross_timestep=self.ledger.manifest.cross_timestep,
            callback=callback,
            conditioning=conditioning,
        )
        return StageLatents(video[:, :generated], audio, grid)  # keyframe tokens end here

    def temporal_refine(
        self,
        raw: torch.Tensor,
        audio: torch.Tensor,
        text: TextEmbeddings,
        request: ShotRequest,
        images: list[tuple[ImageCondition, int]],
        noise: NoiseDraws,
        callback: StepCallback | None,
    ) -> torch.Tensor:
        """After temporal x2 the in-between frames are blurry guesses: re-noise to the distilled schedule's fifth
        sigma and refine on `DISTILLED_SIGMA_VALUES[4:]` with the distilled model, unguided, the audio held, and
        the shot's image conditions applied again at their doubled frames, so a pinned frame stays pinned."""
        led = self.ledger
        norm = VideoNorm.of(led.video_decoder())
        grid = LatentGrid(raw.shape[2], raw.shape[3], raw.shape[4], audio.shape[1], request.fps * 2)
        sigmas = FixedSchedule(TEMPORAL_REFINE_SIGMAS).sigmas()
        doubled = [(image, 2 * frame) for image, frame in images]
        conditioning = self.conditions.build(doubled, None, grid, False, pack_video(norm.normalize(raw)), audio)
        assert conditioning.audio is not None
        conditioning.audio.mask.zero_()  # the audio is held as it is
        generated = grid.frames * grid.height * grid.width
        video, audio = noise.state("temporal", conditioning, float(sigmas[0]))
        video, _ = denoise(
            led.transformer(),
            video,
            audio,
            text.positive(),
            sigmas,
            grid,
            NoGuider(),
            stage="temporal_refine",
            cross_timestep=led.manifest.cross_timestep,
            callback=callback,
            conditioning=conditioning,
        )
        return norm.denormalize(unpack_video(video[:, :generated], grid.frames, grid.height, grid.width))

    def upsample_temporal(self, raw: torch.Tensor) -> torch.Tensor:
        """F latent frames -> 2F-1 (the causal first frame is not doubled)."""
        up = self.ledger.temporal_upsampler()
        raw = up(raw.to(up.dtype)).float()
        self.ledger.phase_done("temporal")
        return raw


class KeyframeInterpolationPipeline(TwoStagePipeline):
    """First + last frame (or any frames) interpolation, as `ltx_pipelines/keyframe_interpolation.py`: every image,
    frame 0 included, is a keyframe appended to the state rather than a replaced latent, and the audio that is
    decoded is stage 2's."""

    keyframes_only = True
