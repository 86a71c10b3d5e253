"""Image conditions replace latents: exact at strength 1, a no-op at strength 0, frames on latent boundaries."""

import numpy as np
import pytest
import torch
from PIL import Image

from milimo_engine import ImageCondition, InvalidConditionError
from milimo_engine.components.latents import VideoNorm
from milimo_engine.conditioning import fit_image, latent_index_for_frame, load_rgb, valid_condition_frames
from milimo_engine.media import h264_roundtrip


@pytest.fixture(scope="module")
def picture():
    rng = np.random.default_rng(3)
    return rng.integers(0, 256, (300, 420, 3), dtype=np.uint8)


def roundtrip(ledger, raw):
    norm = VideoNorm.of(ledger.video_decoder())
    return norm.denormalize(norm.normalize(raw))


@pytest.mark.parametrize("frame,index", [(0, 0), (24, 3)])
def test_strength_one_pins_the_latent_at_both_stages(pipeline, ledger, request_256, picture, frame, index):
    cond = ImageCondition(picture, frame=frame, strength=1.0)
    r = pipeline(request_256.replace(images=(cond,)), output_type="latent")
    full = pipeline.encode_image(cond, 256, 256)
    half = pipeline.encode_image(cond, 128, 128)
    assert torch.equal(r.latent[:, :, index:index + 1], roundtrip(ledger, full).cpu())
    assert torch.equal(r.stage1_latent[:, :, index:index + 1], roundtrip(ledger, half).cpu())
    others = [i for i in range(r.latent.shape[2]) if i != index]
    assert not torch.allclose(r.latent[:, :, others], roundtrip(ledger, full).cpu().expand(-1, -1, len(others), -1, -1))


def test_strength_zero_is_the_unconditioned_render(pipeline, request_256, picture):
    plain = pipeline(request_256, output_type="latent")
    zero = pipeline(request_256.replace(images=(ImageCondition(picture, frame=0, strength=0.0),)),
                    output_type="latent")
    assert torch.equal(plain.latent, zero.latent)
    assert torch.equal(plain.audio_latent, zero.audio_latent)


def test_partial_strength_pulls_towards_the_image(pipeline, ledger, request_256, picture):
    cond = ImageCondition(picture, frame=0, strength=0.6)
    target = roundtrip(ledger, pipeline.encode_image(cond, 256, 256)).cpu()
    plain = pipeline(request_256, output_type="latent")
    soft = pipeline(request_256.replace(images=(cond,)), output_type="latent")
    assert (soft.latent[:, :, :1] - target).abs().mean() < (plain.latent[:, :, :1] - target).abs().mean()
    assert not torch.equal(soft.latent[:, :, :1], target)


def test_frame_off_a_latent_boundary_names_the_nearest_valid_frames(pipeline, request_256, picture):
    with pytest.raises(InvalidConditionError) as err:
        pipeline(request_256.replace(images=(ImageCondition(picture, frame=5),)))
    assert "images[0].frame=5" in str(err.value) and "[0, 8]" in str(err.value)
    with pytest.raises(InvalidConditionError, match=r"images\[0\].frame=25: must be a frame of the shot, 0..24"):
        pipeline(request_256.replace(images=(ImageCondition(picture, frame=25),)))
    with pytest.raises(InvalidConditionError, match="strength"):
        pipeline(request_256.replace(images=(ImageCondition(picture, frame=0, strength=1.5),)))


def test_frame_arithmetic_with_a_handoff_offset():
    assert latent_index_for_frame(0, 0, 25, "f") == 0
    assert latent_index_for_frame(24, 0, 25, "f") == 3
    # After a 9-frame handoff, delivered frame 7 is rendered frame 16 = latent 2.
    assert latent_index_for_frame(7, 9, 24, "f") == 2
    assert valid_condition_frames(9, 24)[:3] == [7, 15, 23]
    with pytest.raises(InvalidConditionError, match=r"\[7, 15\]|\[15, 7\]"):
        latent_index_for_frame(10, 9, 24, "f")


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
    fitted = fit_image(bars, 64, 64)
    assert fitted.shape == (64, 64, 3) and fitted.mean() > 250  # cover + centre crop keeps only the centre


def test_unreadable_image_is_a_clear_error(tmp_path, pipeline, request_256):
    bad = tmp_path / "not-an-image.png"
    bad.write_text("hello")
    with pytest.raises(InvalidConditionError, match="cannot be read as an image"):
        pipeline(request_256.replace(images=(ImageCondition(bad, frame=0),)))


def test_h264_roundtrip_compresses_like_training(picture):
    img = fit_image(picture, 64, 64)
    assert h264_roundtrip(img, 0) is img
    squeezed = h264_roundtrip(img, 33)
    assert squeezed.shape == img.shape and squeezed.dtype == np.uint8
    assert 0 < np.abs(squeezed.astype(int) - img.astype(int)).mean() < 128
    assert np.array_equal(squeezed, h264_roundtrip(img, 33))  # deterministic
