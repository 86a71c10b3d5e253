"""Latent handoffs: B starts exactly where A ended, A+B plays frame- and sample-exact, bad files are refused."""

import dataclasses

import numpy as np
import pytest
import torch

from milimo_engine import Handoff, HandoffIntegrityError, HandoffMismatchError, InvalidRequestError
from milimo_engine.components.latents import VideoNorm


def roundtrip(ledger, raw):
    norm = VideoNorm.of(ledger.video_decoder())
    return norm.denormalize(norm.normalize(raw))


@pytest.fixture(scope="module")
def shot_a(pipeline):
    from milimo_engine import ShotRequest

    return pipeline(ShotRequest(prompt="a lighthouse", seed=7, width=256, height=256, num_frames=25, steps=4))


def test_handoff_is_the_reencoded_tail_of_what_a_delivered(pipeline, shot_a):
    h = shot_a.handoff
    assert h.m == 1 and h.overlap_frames == 9
    assert tuple(h.video.shape) == (1, 128, 2, 8, 8) and tuple(h.video_half.shape) == (1, 128, 2, 4, 4)
    assert torch.equal(h.video, pipeline.codec.encode_pixels(shot_a.frames[-9:]).cpu())
    # Re-encoding differs from slicing A's latent: the tail's first frame is a causal "frame 0".
    assert not torch.allclose(h.video, shot_a.latent[:, :, -2:])
    assert h.audio.shape[2] == round(9 / 24 * pipeline.codec.audio_latent_rate())
    assert (h.width, h.height, h.fps, h.model_id) == (256, 256, 24.0, pipeline.ledger.model_id)


def test_b_starts_from_the_handoff_and_delivers_exactly_its_frames(pipeline, ledger, shot_a, request_256):
    b = pipeline(request_256.replace(seed=11, num_frames=20, handoff=shot_a.handoff))
    assert b.overlap_frames == 9 and b.rendered_frames == 33  # 20 + 9 -> 29 -> 33
    assert torch.equal(b.latent[:, :, :2], roundtrip(ledger, shot_a.handoff.video))
    assert torch.equal(b.stage1_latent[:, :, :2], roundtrip(ledger, shot_a.handoff.video_half))
    assert b.frames.shape[0] == 20
    joined = np.concatenate([shot_a.frames, b.frames])
    assert joined.shape[0] == 25 + 20
    for r in (shot_a, b):
        assert r.audio.shape[1] == round(r.frames.shape[0] / r.fps * r.sample_rate)
    assert shot_a.audio.shape[1] + b.audio.shape[1] == round(45 / 24 * b.sample_rate)


def test_a_b_c_chain_hands_off_from_each_previous_shot(pipeline, ledger, shot_a, request_256):
    b = pipeline(request_256.replace(seed=11, num_frames=24, handoff=shot_a.handoff))
    c = pipeline(request_256.replace(seed=12, num_frames=17, handoff=b.handoff))
    assert torch.equal(b.handoff.video, pipeline.codec.encode_pixels(b.frames[-9:]).cpu())
    assert not torch.equal(b.handoff.video, shot_a.handoff.video)
    assert torch.equal(c.latent[:, :, :2], roundtrip(ledger, b.handoff.video))
    assert c.frames.shape[0] == 17


def test_wider_handoff_m(pipeline, ledger, request_256):
    a = pipeline(request_256.replace(num_frames=33, handoff_m=2))
    assert a.handoff.overlap_frames == 17 and a.handoff.video.shape[2] == 3
    b = pipeline(request_256.replace(seed=3, num_frames=16, handoff=a.handoff))
    assert b.frames.shape[0] == 16 and torch.equal(b.latent[:, :, :3], roundtrip(ledger, a.handoff.video))


def test_save_load_round_trip_and_atomic_write(tmp_path, shot_a):
    labelled = dataclasses.replace(shot_a.handoff, source_shot="lighthouse-wide", source_take="42")
    path = labelled.save(tmp_path / "a.handoff.safetensors")
    assert [p.name for p in tmp_path.iterdir()] == ["a.handoff.safetensors"]  # no partial left behind
    back = Handoff.load(path)
    for name in ("video", "video_half", "audio"):
        assert torch.equal(getattr(back, name), getattr(labelled, name))
    assert (back.source_shot, back.source_take, back.m, back.fps) == ("lighthouse-wide", "42", 1, 24.0)
    assert back.sha256() == labelled.sha256() == labelled.metadata()["tensors_sha256"]


def test_tampered_truncated_and_foreign_files_are_refused(tmp_path, shot_a):
    path = shot_a.handoff.save(tmp_path / "a.safetensors")
    data = bytearray(path.read_bytes())
    data[-5] ^= 0xFF  # one flipped byte inside the tensor data
    tampered = tmp_path / "tampered.safetensors"
    tampered.write_bytes(bytes(data))
    with pytest.raises(HandoffIntegrityError, match="does not match the recorded"):
        Handoff.load(tampered)
    truncated = tmp_path / "truncated.safetensors"
    truncated.write_bytes(path.read_bytes()[:-100])
    with pytest.raises(HandoffIntegrityError):
        Handoff.load(truncated)
    from safetensors.torch import save_file

    foreign = tmp_path / "lora.safetensors"
    save_file({"video": torch.zeros(1)}, str(foreign))
    with pytest.raises(HandoffIntegrityError, match="format"):
        Handoff.load(foreign)


@pytest.mark.parametrize("change,field", [
    (dict(width=512), "width"), (dict(fps=25.0), "fps"),
])
def test_incompatible_request_is_refused_naming_both_values(pipeline, shot_a, request_256, change, field):
    with pytest.raises(HandoffMismatchError) as err:
        pipeline(request_256.replace(handoff=shot_a.handoff, **change))
    text = str(err.value)
    assert f"handoff.{field}" in text and repr(getattr(shot_a.handoff, field)) in text
    assert repr(change[field]) in text


@pytest.mark.parametrize("field,value", [("model_id", "someone/else"), ("vae_sha256", "0" * 64)])
def test_handoff_from_another_model_or_vae_is_refused(pipeline, shot_a, request_256, field, value):
    foreign = dataclasses.replace(shot_a.handoff, **{field: value})
    with pytest.raises(HandoffMismatchError, match=f"handoff.{field}"):
        pipeline(request_256.replace(handoff=foreign))


def test_handoff_with_temporal_upsample_is_refused(pipeline, shot_a, request_256):
    with pytest.raises(InvalidRequestError, match="temporal_upsample"):
        pipeline(request_256.replace(handoff=shot_a.handoff, temporal_upsample=True))


def test_short_shots_hand_off_what_they_have(pipeline, request_256):
    assert pipeline(request_256.replace(num_frames=8)).handoff is None  # fewer than 9 frames: nothing to give
    assert pipeline(request_256.replace(num_frames=16, handoff_m=2)).handoff.m == 1  # 16 frames hold 1+8, not 1+16
    assert pipeline(request_256.replace(handoff_m=0)).handoff is None
    with pytest.raises(InvalidRequestError, match="handoff_m"):
        pipeline(request_256.replace(handoff_m=-1))


def test_handoff_is_built_only_when_asked_for_and_also_from_latent_output(pipeline, request_256):
    r = pipeline(request_256)
    assert "handoff" not in r.timings  # a shot nobody continues pays nothing
    h = r.handoff
    assert "handoff" in r.timings and r.handoff is h
    latent_only = pipeline(request_256, output_type="latent")
    assert latent_only.frames is None
    assert torch.equal(latent_only.handoff.video, h.video)  # decoded on demand, same tail
