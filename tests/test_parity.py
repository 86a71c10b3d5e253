"""Our stage-1 loop against diffusers' own LTX2Pipeline on the same tiny weights.

Same weights, prompt, seed, sigmas and guidance, no conditioning: the latents must agree to
float32 rounding. This is what shows we drive the model (text stack, RoPE coordinates,
timesteps, guidance, Euler steps, normalisation) the way the library does.
"""

import pytest
import torch

from milimo_engine import Guidance
from milimo_engine.request import ModalityGuidance


@pytest.mark.parametrize("guidance", [
    Guidance(video=ModalityGuidance(stg_blocks=(1,)), audio=ModalityGuidance(cfg=7.0, stg_blocks=(1,))),  # the
    # official recipe: CFG + STG + modality isolation + rescale (diffusers has one STG block list for both streams)
    Guidance.cfg_only(3.0, 7.0),
], ids=["full-guidance", "cfg-only"])
def test_stage1_matches_diffusers_ltx2pipeline(tiny_model_dir, pipeline, request_256, guidance):
    from diffusers import LTX2Pipeline

    request = request_256.replace(steps=6, guidance=guidance)
    reference = LTX2Pipeline.from_pretrained(tiny_model_dir)
    reference.set_progress_bar_config(disable=True)
    g = request.guidance
    out = reference(
        prompt=request.prompt, negative_prompt=request.negative_prompt,
        height=request.height // 2, width=request.width // 2, num_frames=request.num_frames,
        frame_rate=request.fps, num_inference_steps=request.steps,
        guidance_scale=g.video.cfg, audio_guidance_scale=g.audio.cfg,
        stg_scale=g.video.stg, audio_stg_scale=g.audio.stg, spatio_temporal_guidance_blocks=list(g.video.stg_blocks or []) or None,
        modality_scale=g.video.modality, audio_modality_scale=g.audio.modality,
        guidance_rescale=g.video.rescale, audio_guidance_rescale=g.audio.rescale,
        use_cross_timestep=False, max_sequence_length=128,
        generator=torch.Generator().manual_seed(request.seed), output_type="latent",
    )
    ref_video, ref_audio = out.frames, out.audio

    # Ours, through the same stage-1 code the two-stage render uses, with diffusers' audio length rule.
    audio_frames = round(request.num_frames / request.fps * 25)
    guider = pipeline.guider_for(request)
    pipeline.ledger.use_loras([])
    text = pipeline.encode(request, guided=guider.wants_uncond)
    # diffusers shifts the schedule by the real token count (4 x 4 x 4 here); official, and so our default, by
    # 4096 tokens (docs/engine.md). Given diffusers' schedule, everything else must agree exactly.
    sigmas = pipeline.stage1_schedule.sigmas(request.steps, 4 * 4 * 4)
    s1 = pipeline.stage1(request, text, guider, torch.Generator().manual_seed(request.seed), 4, audio_frames, None,
                         sigmas=sigmas)

    from milimo_engine.components.latents import AudioNorm, VideoNorm, unpack_audio, unpack_video
    led = pipeline.ledger
    ours_video = VideoNorm.of(led.video_decoder()).denormalize(unpack_video(s1.video, 4, 4, 4))
    ours_audio = unpack_audio(AudioNorm.of(led.audio_decoder()).denormalize(s1.audio), 4)

    assert ours_video.shape == ref_video.shape
    assert ours_audio.shape == ref_audio.shape
    torch.testing.assert_close(ours_video, ref_video.float(), atol=1e-5, rtol=1e-5)
    torch.testing.assert_close(ours_audio, ref_audio.float(), atol=1e-5, rtol=1e-5)
