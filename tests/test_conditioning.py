"""Image conditions: what they do to a render, and the clear errors. How exactly they match the official
conditioning items (frame 0 replaced, later frames appended as keyframes, the keyframes' start, time span and
noise) is proven against ltx-pipelines itself in tests/test_official_parity.py."""

import numpy as np
import pytest
import torch
from PIL import Image

from milimo_engine import ImageCondition, InvalidConditionError
from milimo_engine.codec import cover_resize
from milimo_engine.components.latents import VideoNorm
from milimo_engine.conditioning import load_rgb
from milimo_engine.denoise import x0_from_velocity
from milimo_engine.media import h264_roundtrip


@pytest.fixture(scope="module")
def picture():
    rng = np.random.default_rng(3)
    return rng.integers(0, 256, (300, 420, 3), dtype=np.uint8)


def roundtrip(ledger, raw):
    norm = VideoNorm.of(ledger.video_decoder())
    return norm.denormalize(norm.normalize(raw))


def test_strength_one_pins_the_first_latent_at_both_stages(pipeline, ledger, request_256, picture):
    """Official: `ltx_core/conditioning/types/latent_cond.py` (VideoConditionByLatentIndex, frame 0)."""
    cond = ImageCondition(picture, frame=0, strength=1.0)
    r = pipeline(request_256.replace(images=(cond,)), output_type="latent")
    full = pipeline.conditions.encode_image(cond, 256, 256)
    half = pipeline.conditions.encode_image(cond, 128, 128)
    assert torch.equal(r.latent[:, :, :1], roundtrip(ledger, full).cpu())
    assert torch.equal(r.stage1_latent[:, :, :1], roundtrip(ledger, half).cpu())
    assert not torch.allclose(r.latent[:, :, 1:], roundtrip(ledger, full).cpu().expand(-1, -1, r.latent.shape[2] - 1,
                                                                                        -1, -1))


@pytest.mark.parametrize("frame", [24, 5])
def test_a_later_frame_is_appended_as_keyframe_tokens_and_dropped(pipeline, ledger, request_256, picture, frame):
    """The image's tokens join every forward of both stages and are gone from what is decoded; any frame works,
    on a latent boundary or not. (Their values, mask and positions: the keyframe parity test.)"""
    cond = ImageCondition(picture, frame=frame, strength=1.0)
    request = request_256.replace(images=(cond,))
    counts = set()
    hook = ledger.transformer().register_forward_pre_hook(
        lambda mod, args, kwargs: counts.add(kwargs["hidden_states"].shape[1]), with_kwargs=True)
    try:
        r = pipeline(request)
    finally:
        hook.remove()
    plain = pipeline(request_256, output_type="latent")
    assert r.latent.shape == plain.latent.shape and r.frames.shape[0] == request.num_frames  # tokens dropped
    assert {4 * 16 + 16, 4 * 64 + 64} <= counts  # stage 1 (4x4 grid) and stage 2 (8x8) each saw one keyframe


def test_partial_strength_x0_uses_each_tokens_own_sigma():
    """Official: ltx-core's X0 model computes x0 = x - v * (sigma * denoise_mask) per token."""
    x = torch.tensor([[[1.0, 2.0], [3.0, 4.0], [5.0, 6.0]]])
    v = torch.tensor([[[0.5, 0.5], [1.0, 1.0], [2.0, 2.0]]])
    mask = torch.tensor([[1.0, 0.4, 0.0]])  # free, strength 0.6, strength 1
    out = x0_from_velocity(x, v, torch.tensor(0.5), mask)
    expected = torch.tensor([[[1.0 - 0.25, 2.0 - 0.25], [3.0 - 0.2, 4.0 - 0.2], [5.0, 6.0]]])
    torch.testing.assert_close(out, expected)
    torch.testing.assert_close(x0_from_velocity(x, v, torch.tensor(0.5)), x - v * 0.5)


def test_strength_zero_leaves_stage_one_unconditioned(pipeline, request_256, picture):
    """Mask 1 everywhere: stage 1 (from pure noise) is the unconditioned render. Stage 2 starts, as ltx-core's
    `VideoConditionByLatentIndex` has it, from the image's latent in place of the upsampled one at sigma 0.909, so
    it may differ a little (the official behaviour: strength only sets the mask)."""
    plain = pipeline(request_256, output_type="latent")
    zero = pipeline(request_256.replace(images=(ImageCondition(picture, frame=0, strength=0.0),)),
                    output_type="latent")
    assert torch.equal(plain.stage1_latent, zero.stage1_latent)
    assert torch.equal(plain.audio_latent, zero.audio_latent)


def test_partial_strength_pulls_towards_the_image(pipeline, ledger, request_256, picture):
    cond = ImageCondition(picture, frame=0, strength=0.6)
    target = roundtrip(ledger, pipeline.conditions.encode_image(cond, 256, 256)).cpu()
    plain = pipeline(request_256, output_type="latent")
    soft = pipeline(request_256.replace(images=(cond,)), output_type="latent")
    assert (soft.latent[:, :, :1] - target).abs().mean() < (plain.latent[:, :, :1] - target).abs().mean()
    assert not torch.equal(soft.latent[:, :, :1], target)


def test_frames_outside_the_shot_and_bad_strength_are_clear_errors(pipeline, request_256, picture):
    with pytest.raises(InvalidConditionError, match=r"images\[0\].frame=25: must be a frame of the shot, 0..24"):
        pipeline(request_256.replace(images=(ImageCondition(picture, frame=25),)))
    with pytest.raises(InvalidConditionError, match="strength"):
        pipeline(request_256.replace(images=(ImageCondition(picture, frame=0, strength=1.5),)))


def test_crf_compression_happens_at_the_source_size_before_the_resize(pipeline, picture, monkeypatch):
    """As `load_image_conditioning`: the loaded image (cropped to even sides) is re-compressed, then resized."""
    import milimo_engine.media as media

    seen = []
    real = media.h264_roundtrip
    monkeypatch.setattr(media, "h264_roundtrip", lambda img, crf: (seen.append(img.shape), real(img, crf))[1])
    pipeline.conditions.encode_image(ImageCondition(picture[:299, :419], frame=0), 128, 128)
    assert seen == [(299, 419, 3)]
    assert real(picture[:299, :419], 33).shape == (298, 418, 3)  # odd sides cropped to even ones, as PyAV needs


def test_images_are_oriented_flattened_and_cropped(tmp_path):
    wide = np.zeros((40, 80, 3), np.uint8)
    wide[:, :40] = 255  # left half white
    exif = Image.Exif()
    exif[0x0112] = 6  # "rotate 90 CW to display"
    path = tmp_path / "rotated.jpg"
    Image.fromarray(wide).save(path, exif=exif, quality=100)
    upright = load_rgb(path)
    assert upright.shape == (80, 40, 3)  # orientation applied
    assert upright[:30].mean() > 200 and upright[-30:].mean() < 50  # white half is now on top

    rgba = np.zeros((10, 10, 4), np.uint8)
    rgba[..., 0] = 255
    rgba[:5, :, 3] = 255  # top opaque red, bottom transparent
    flat = load_rgb(rgba)
    assert flat.shape == (10, 10, 3)
    assert tuple(flat[0, 0]) == (255, 0, 0) and tuple(flat[9, 0]) == (0, 0, 0)
    grey = load_rgb(np.full((6, 8), 77, np.uint8))
    assert grey.shape == (6, 8, 3) and (grey == 77).all()

    bars = np.zeros((100, 300, 3), np.uint8)
    bars[:, 100:200] = 255  # white centre third
    fitted = cover_resize(bars, 64, 64)
    assert fitted.shape == (64, 64, 3) and fitted.mean() > 250  # cover + centre crop keeps only the centre


def test_unreadable_image_is_a_clear_error(tmp_path, pipeline, request_256):
    bad = tmp_path / "not-an-image.png"
    bad.write_text("hello")
    with pytest.raises(InvalidConditionError, match="cannot be read as an image"):
        pipeline(request_256.replace(images=(ImageCondition(bad, frame=0),)))


def test_h264_roundtrip_compresses_like_training(picture):
    img = cover_resize(picture, 64, 64).round().astype(np.uint8)
    assert h264_roundtrip(img, 0) is img
    squeezed = h264_roundtrip(img, 33)
    assert squeezed.shape == img.shape and squeezed.dtype == np.uint8
    assert 0 < np.abs(squeezed.astype(int) - img.astype(int)).mean() < 128
    assert np.array_equal(squeezed, h264_roundtrip(img, 33))  # deterministic


def test_temporal_upsampling_keeps_a_pinned_frame_pinned(pipeline, ledger, request_256, picture):
    """The refine round after temporal x2 re-noises the video; the shot's image conditions are applied again at
    their doubled frames, so a strength-1 first frame is still exactly the image."""
    cond = ImageCondition(picture, frame=0, strength=1.0)
    r = pipeline(request_256.replace(images=(cond,), temporal_upsample=True, steps=2), output_type="latent")
    full = pipeline.conditions.encode_image(cond, 256, 256)
    assert r.fps == 2 * request_256.fps
    assert torch.equal(r.latent[:, :, :1], roundtrip(ledger, full).cpu())
