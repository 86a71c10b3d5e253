"""The two-stage pipeline on the tiny model: determinism, shapes, frame counts, callbacks."""

import numpy as np
import pytest
import torch

from milimo_engine import RenderCancelled
from milimo_engine.media import probe


def test_same_request_gives_bit_identical_latents(pipeline, request_256):
    a = pipeline(request_256, output_type="latent")
    b = pipeline(request_256, output_type="latent")
    assert torch.equal(a.latent, b.latent)
    assert torch.equal(a.audio_latent, b.audio_latent)
    c = pipeline(request_256.replace(seed=8), output_type="latent")
    assert not torch.allclose(a.latent, c.latent)


def test_stage_shapes_half_then_full(pipeline, request_256):
    r = pipeline(request_256)
    # 256 px / 32 = 8 latent px at full size; stage 1 at half size = 4. 25 frames -> 4 latent frames.
    assert tuple(r.stage1_latent.shape) == (1, 128, 4, 4, 4)
    assert tuple(r.latent.shape) == (1, 128, 4, 8, 8)
    assert r.frames.shape == (25, 256, 256, 3) and r.frames.dtype == np.uint8
    assert r.audio.shape[0] == 2
    assert r.audio.shape[1] == round(25 / 24 * r.sample_rate)
    assert set(r.timings) >= {"text", "stage1", "upsample", "stage2", "decode_video", "decode_audio", "total"}


def test_editor_length_is_rendered_valid_and_trimmed(pipeline, request_256):
    r = pipeline(request_256.replace(num_frames=30))
    assert r.rendered_frames == 33
    assert r.frames.shape[0] == 30
    assert r.audio.shape[1] == round(30 / 24 * r.sample_rate)


def test_temporal_upsample_doubles_fps_and_frames(pipeline, request_256, tmp_path):
    r = pipeline(request_256.replace(temporal_upsample=True))
    assert r.latent.shape[2] == 2 * 4 - 1
    assert r.fps == 48.0
    assert r.frames.shape[0] == 2 * 25 - 1
    # Audio is untouched by the temporal stage and still ends with the video.
    assert r.audio.shape[1] == round(r.frames.shape[0] / r.fps * r.sample_rate)
    info = probe(r.save_mp4(tmp_path / "t.mp4"))
    assert info.frames == 49 and float(info.fps) == 48.0


def test_callback_sees_every_step_and_can_cancel(pipeline, request_256):
    seen = []
    pipeline(request_256, output_type="latent", callback_on_step_end=lambda i: seen.append((i.stage, i.step, i.total)))
    assert [s for s in seen if s[0] == "stage1"] == [("stage1", k, 4) for k in range(1, 5)]
    assert [s for s in seen if s[0] == "stage2"] == [("stage2", k, 3) for k in range(1, 4)]

    with pytest.raises(RenderCancelled, match="stage1 at step 2"):
        pipeline(request_256, output_type="latent", callback_on_step_end=lambda i: i.step < 2)


def test_time_limit_stops_between_steps(pipeline, request_256):
    with pytest.raises(RenderCancelled, match="time limit"):
        pipeline(request_256, output_type="latent", time_limit_s=0.0)
