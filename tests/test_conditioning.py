"""Image conditions as official LTX-2 applies them: frame 0 replaces the latent, any other frame is appended
as keyframe tokens at its time; exact at strength 1, a no-op at strength 0, partial strength at per-token sigma."""

import numpy as np
import pytest
import torch
from PIL import Image

from milimo_engine import ImageCondition, InvalidConditionError
from milimo_engine.components.latents import VideoNorm
from milimo_engine.components.latents import pack_video
from milimo_engine.conditioning import fit_image, load_rgb
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
    full = pipeline.encode_image(cond, 256, 256)
    half = pipeline.encode_image(cond, 128, 128)
    assert torch.equal(r.latent[:, :, :1], roundtrip(ledger, full).cpu())
    assert torch.equal(r.stage1_latent[:, :, :1], roundtrip(ledger, half).cpu())
    assert not torch.allclose(r.latent[:, :, 1:], roundtrip(ledger, full).cpu().expand(-1, -1, r.latent.shape[2] - 1,
                                                                                        -1, -1))


@pytest.mark.parametrize("frame", [24, 5])
def test_a_later_frame_is_appended_as_keyframe_tokens_at_its_time(pipeline, ledger, request_256, picture, frame):
    """Official: `ltx_core/conditioning/types/keyframe_cond.py` (VideoConditionByKeyframeIndex): the image's
    tokens are appended with denoise mask 1 - strength, positioned at [frame, frame + 1) / fps, and dropped
    before decoding; their starting value is a zero placeholder (`torch.zeros_like(tokens)` in the latent, the
    image in the clean latent), noised by `GaussianNoiser` at sigma * mask: zero at strength 1, reaching the image
    by the last step. Any frame works, on a latent boundary or not."""
    cond = ImageCondition(picture, frame=frame, strength=1.0)
    request = request_256.replace(images=(cond,))
    seen = []
    transformer = ledger.transformer()
    hook = transformer.register_forward_pre_hook(
        lambda mod, args, kwargs: seen.append((kwargs["hidden_states"].shape[1], kwargs["video_coords"].clone(),
                                               kwargs["hidden_states"][0].clone())), with_kwargs=True)
    last = {}

    def keep_last(info):
        last[info.stage] = info.video.clone()
    try:
        r = pipeline(request, callback_on_step_end=keep_last)
    finally:
        hook.remove()
    plain = pipeline(request_256, output_type="latent")
    assert r.latent.shape == plain.latent.shape and r.frames.shape[0] == request.num_frames  # tokens restored
    norm = VideoNorm.of(ledger.video_decoder())
    for stage, size, tokens in (("stage1", 128, 16), ("stage2", 256, 64)):
        generated = 4 * tokens
        counts = {n for n, _, _ in seen}
        assert generated + tokens in counts  # every pass saw the shot's tokens and one frame of keyframe tokens
        first = next(h for n, _, h in seen if n == generated + tokens)
        assert torch.count_nonzero(first[generated:]) == 0  # the zero placeholder, not noised at strength 1
        kf = pack_video(norm.normalize(pipeline.encode_image(cond, size, size)))
        torch.testing.assert_close(last[stage][:, generated:], kf.cpu(), atol=1e-5, rtol=1e-5)  # the image at the end
    n, coords = next((n, c) for n, c, _ in seen if n == 4 * 16 + 16)
    kf_time = coords[0, 0, 64:]
    assert torch.allclose(kf_time[:, 0], torch.full((16,), frame / request.fps))
    assert torch.allclose(kf_time[:, 1], torch.full((16,), (frame + 1) / request.fps))
    assert torch.equal(coords[0, 1:, 64:], coords[0, 1:, :16])  # the same spatial grid as a frame of the shot


def test_partial_strength_x0_uses_each_tokens_own_sigma():
    """Official: ltx-core's X0 model computes x0 = x - v * (sigma * denoise_mask) per token."""
    x = torch.tensor([[[1.0, 2.0], [3.0, 4.0], [5.0, 6.0]]])
    v = torch.tensor([[[0.5, 0.5], [1.0, 1.0], [2.0, 2.0]]])
    mask = torch.tensor([[1.0, 0.4, 0.0]])  # free, strength 0.6, strength 1
    out = x0_from_velocity(x, v, torch.tensor(0.5), mask)
    expected = torch.tensor([[[1.0 - 0.25, 2.0 - 0.25], [3.0 - 0.2, 4.0 - 0.2], [5.0, 6.0]]])
    torch.testing.assert_close(out, expected)
    torch.testing.assert_close(x0_from_velocity(x, v, torch.tensor(0.5)), x - v * 0.5)


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


def test_frames_outside_the_shot_and_bad_strength_are_clear_errors(pipeline, request_256, picture):
    with pytest.raises(InvalidConditionError, match=r"images\[0\].frame=25: must be a frame of the shot, 0..24"):
        pipeline(request_256.replace(images=(ImageCondition(picture, frame=25),)))
    with pytest.raises(InvalidConditionError, match="strength"):
        pipeline(request_256.replace(images=(ImageCondition(picture, frame=0, strength=1.5),)))


def test_crf_compression_happens_at_the_source_size_before_the_resize(pipeline, picture, monkeypatch):
    """Official: ltx-pipelines' image conditioner re-compresses the loaded image, then resizes it."""
    import milimo_engine.pipeline as pl

    seen = []
    real = pl.h264_roundtrip
    monkeypatch.setattr(pl, "h264_roundtrip", lambda img, crf: (seen.append(img.shape), real(img, crf))[1])
    pipeline.encode_image(ImageCondition(picture, frame=0), 128, 128)
    assert seen == [picture.shape]


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
