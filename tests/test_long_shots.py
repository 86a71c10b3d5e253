"""Shots longer than the segment limit render as chained segments and deliver exactly what was asked."""

import numpy as np
import pytest
import torch

from milimo_engine import ImageCondition, InvalidConditionError, InvalidFrameCountError
from milimo_engine.segments import Segment, place_images, plan_segments


def test_plan_fills_segments_and_tops_up_a_short_remainder():
    assert plan_segments(70, 33, 0, 9) == [Segment(0, 0, 33, 0), Segment(1, 33, 24, 9), Segment(2, 57, 13, 9)]
    # 58 = 33 + 24 + 1: the last segment would deliver 1 frame, too few to hand off 9; it borrows 8.
    assert plan_segments(58, 33, 0, 9) == [Segment(0, 0, 33, 0), Segment(1, 33, 16, 9), Segment(2, 49, 9, 9)]
    assert plan_segments(30, 33, 0, 9) == [Segment(0, 0, 30, 0)]
    # With an incoming 9-frame handoff, 30 frames need two segments: 24 + 6, topped up to 21 + 9.
    assert plan_segments(30, 33, 9, 9) == [Segment(0, 0, 21, 9), Segment(1, 21, 9, 9)]
    segments = plan_segments(500, 121, 9, 9)
    assert sum(s.frames for s in segments) == 500 and all(s.frames + s.overlap <= 121 for s in segments)
    assert all(s.frames >= 9 for s in segments)


def test_long_shot_renders_in_segments_with_exact_frames_and_audio(pipeline, request_256):
    long = request_256.replace(num_frames=70, segment_frames=33)
    r = pipeline(long)
    assert r.segments == 3
    assert r.frames.shape == (70, 256, 256, 3)
    assert r.audio.shape[1] == round(70 / 24 * r.sample_rate)
    # Segment 0 is an ordinary render of its 33 frames with the shot's seed.
    first = pipeline(request_256.replace(num_frames=33))
    assert np.array_equal(r.frames[:33], first.frames)
    # The shot's own handoff comes from its last delivered frames.
    assert torch.equal(r.handoff.video, pipeline.codec.encode_pixels(r.frames[-9:]).cpu())


def test_segments_use_seed_plus_index(pipeline, request_256):
    a = pipeline(request_256.replace(num_frames=50, segment_frames=33), output_type="latent")
    b = pipeline(request_256.replace(num_frames=50, segment_frames=33), output_type="latent")
    assert torch.equal(a.latent, b.latent)
    # The second segment is the render of (seed + 1) with the first segment's handoff.
    first = pipeline(request_256.replace(num_frames=33))
    second = pipeline(request_256.replace(num_frames=17, seed=request_256.seed + 1, handoff=first.handoff),
                      output_type="latent")
    assert torch.equal(a.latent, second.latent)


def test_image_condition_lands_in_its_segment(pipeline, request_256):
    rng = np.random.default_rng(1)
    picture = rng.integers(0, 256, (64, 64, 3), dtype=np.uint8)
    # Frame 40 is delivered frame 7 of segment 1 (which starts after a 9-frame overlap): rendered 16; frame 36,
    # off a latent boundary, is keyframe tokens at rendered 12 of the same segment.
    at40, at36 = ImageCondition(picture, frame=40), ImageCondition(picture, frame=36)
    request = request_256.replace(num_frames=50, segment_frames=33, images=(at40, at36))
    from milimo_engine.segments import plan_segments

    segments = plan_segments(50, 33, 0, 9)
    assert place_images(request, segments)[1] == [(at40, 16), (at36, 12)]
    r = pipeline(request)
    assert r.frames.shape[0] == 50
    with pytest.raises(InvalidConditionError, match=r"images\[0\].frame=50: must be a frame of the shot, 0..49"):
        pipeline(request_256.replace(num_frames=50, segment_frames=33, images=(ImageCondition(picture, frame=50),)))


def test_segment_limit_is_validated(pipeline, request_256):
    with pytest.raises(InvalidFrameCountError, match="segment_frames=17"):
        pipeline(request_256.replace(num_frames=70, segment_frames=17))
    with pytest.raises(InvalidFrameCountError, match="segment_frames=30"):
        pipeline(request_256.replace(num_frames=70, segment_frames=30))
