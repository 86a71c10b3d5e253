"""Our stage-1 loop against diffusers' own LTX2Pipeline on the same tiny weights and the same noise.

diffusers is the second runnable reference (the first is Lightricks' own code, tests/test_official_parity.py; for
LTX-2.5, which ltx-core 1.0.0 predates, diffusers is the only one). Same weights, prompt, sigmas, guidance and
starting noise (ours handed to diffusers through its `latents` arguments, since the two draw noise in different
layouts), no conditioning: the latents must agree to float32 rounding.
"""

import pytest
import torch

from milimo_engine import Guidance
from milimo_engine.components.latents import AudioNorm, VideoNorm, unpack_audio
from milimo_engine.request import ModalityGuidance


@pytest.mark.parametrize("guidance", [
    Guidance(video=ModalityGuidance(stg_blocks=(1,)), audio=ModalityGuidance(cfg=7.0, stg_blocks=(1,))),  # the
    # official recipe: CFG + STG + modality isolation + rescale (diffusers has one STG block list for both streams)
    Guidance.cfg_only(3.0, 7.0),
], ids=["full-guidance", "cfg-only"])
def test_stage1_matches_diffusers_ltx2pipeline(tiny_model_dir, pipeline, request_256, guidance):
    from diffusers import LTX2Pipeline

    # diffusers shifts the schedule by the real token count (4 x 4 x 4 here); official, and so our default, by
    # 4096 tokens (docs/engine.md). Both are given diffusers' schedule.
    sigmas = pipeline.stage1_schedule.sigmas(6, 4 * 4 * 4)
    request = request_256.replace(steps=6, guidance=guidance, stage1_sigmas=tuple(sigmas.tolist()))
    trace: dict = {}
    pipeline.run(request, output_type="latent", trace=trace)
    led = pipeline.ledger
    video_norm, audio_norm = VideoNorm.of(led.video_decoder()), AudioNorm.of(led.audio_decoder())

    reference = LTX2Pipeline.from_pretrained(tiny_model_dir)
    reference.set_progress_bar_config(disable=True)
    g = request.guidance
    out = reference(
        prompt=request.prompt, negative_prompt=request.negative_prompt,
        height=request.height // 2, width=request.width // 2, num_frames=request.num_frames,
        frame_rate=request.fps, num_inference_steps=request.steps,
        guidance_scale=g.video.cfg, audio_guidance_scale=g.audio.cfg,
        stg_scale=g.video.stg, audio_stg_scale=g.audio.stg,
        spatio_temporal_guidance_blocks=list(g.video.stg_blocks or []) or None,
        modality_scale=g.video.modality, audio_modality_scale=g.audio.modality,
        guidance_rescale=g.video.rescale, audio_guidance_rescale=g.audio.rescale,
        use_cross_timestep=led.manifest.cross_timestep, max_sequence_length=led.manifest.max_sequence_length,
        latents=trace["noise.0"],  # packed, used as they are
        audio_latents=audio_norm.denormalize(trace["noise.1"]),  # diffusers normalises audio latents it is given
        generator=torch.Generator().manual_seed(request.seed), output_type="latent",
    )
    ours_video = video_norm.denormalize(trace["stage1.video"])
    ours_audio = unpack_audio(audio_norm.denormalize(trace["stage1.audio"]), pipeline.codec.audio_mel_bins())
    assert ours_video.shape == out.frames.shape and ours_audio.shape == out.audio.shape
    torch.testing.assert_close(ours_video, out.frames.float(), atol=1e-5, rtol=1e-5)
    torch.testing.assert_close(ours_audio, out.audio.float(), atol=1e-5, rtol=1e-5)
