"""ICLoraPipeline: reference tokens ride along in every stage-1 step, never come out, and the IC-LoRA stays local."""

import numpy as np
import pytest
import torch

from milimo_engine import ICLoraPipeline, InvalidConditionError, LoraSpec
from milimo_engine.ic_lora import reference_frames
from milimo_engine.in_context import InContext, reference_tokens
from milimo_engine.media import write_mp4


@pytest.fixture(scope="module")
def reference(tmp_path_factory):
    rng = np.random.default_rng(5)
    frames = rng.integers(0, 256, (30, 96, 128, 3), dtype=np.uint8)  # 30 frames: trimmed to 25 (8k+1)
    path = write_mp4(tmp_path_factory.mktemp("ref") / "pose.mp4", frames, 24.0)
    return path


@pytest.fixture(scope="module")
def ic_lora(tiny_model_dir):
    return LoraSpec(tiny_model_dir / "loras" / "tiny-ic-lora.safetensors", 1.0)


def test_reference_tokens_are_in_every_stage1_input_and_not_in_the_output(ledger, pipeline, request_256,
                                                                           reference, ic_lora):
    ic = ICLoraPipeline(ledger, progress=False)
    transformer = ledger.transformer()
    seen: list[torch.Tensor] = []
    hook = transformer.register_forward_pre_hook(lambda mod, args, kwargs: seen.append(kwargs["hidden_states"]),
                                                 with_kwargs=True)
    try:
        r = ic(request_256, reference_video=reference, ic_lora=ic_lora)
    finally:
        hook.remove()
    generated_s1, generated_s2 = 4 * 4 * 4, 4 * 8 * 8  # latent frames x h x w at half and full size
    ref_tokens = 4 * 4 * 4  # the reference (25 frames at stage-1 size) has the same grid
    stage1 = [h for h in seen if h.shape[1] == generated_s1 + ref_tokens]
    stage2 = [h for h in seen if h.shape[1] == generated_s2]
    assert len(stage1) + len(stage2) == len(seen)
    assert len(stage2) == 3  # the distilled schedule's steps, without the reference
    assert len(stage1) == 8  # official: the distilled sigmas, unguided, one pass per step
    grid = ic.two_stage.stage_grid(request_256, 4, 10, half=True)
    expected = reference_tokens(ic.two_stage.codec, InContext(reference_frames(reference), ic_lora), request_256,
                                grid).tokens
    for h in stage1:
        assert torch.equal(h[:1, generated_s1:].float(), expected.float())
    assert tuple(r.latent.shape) == (1, 128, 4, 8, 8) and tuple(r.stage1_latent.shape) == (1, 128, 4, 4, 4)
    assert r.frames.shape == (25, 256, 256, 3)
    assert r.audio.shape[1] == round(25 / 24 * r.sample_rate)


def test_ic_lora_is_active_only_in_this_pipelines_stage1(ledger, pipeline, request_256, reference, ic_lora):
    before = pipeline(request_256, output_type="latent")
    r = ICLoraPipeline(ledger, progress=False)(request_256, reference_video=reference, ic_lora=ic_lora,
                                               output_type="latent")
    (ic_applied,) = [a for a in r.loras["stage1"] if a.path.endswith("tiny-ic-lora.safetensors")]
    ic_sha = ic_applied.sha256
    assert ic_sha not in {a.sha256 for a in r.loras["stage2"]}
    # Official `ltx_pipelines/ic_lora.py`: stage 2 is the bare distilled model, whatever the shot's LoRAs.
    assert [a.path.rsplit("/", 1)[-1] for a in r.loras["stage2"]] == ["ltx-2-distilled-lora.safetensors"]
    after = pipeline(request_256, output_type="latent")
    assert ic_sha not in {a.sha256 for stage in after.loras.values() for a in stage}
    assert torch.equal(before.latent, after.latent)  # the plain pipeline is untouched by the IC-LoRA
    assert not torch.equal(before.latent, r.latent)


def test_reference_frames_as_arrays_and_bad_input(ledger, request_256, ic_lora, tmp_path):
    ic = ICLoraPipeline(ledger, progress=False)
    frames = np.random.default_rng(0).integers(0, 256, (9, 64, 64, 3), dtype=np.uint8)
    r = ic(request_256, reference_video=frames, ic_lora=ic_lora, output_type="latent")
    assert tuple(r.latent.shape) == (1, 128, 4, 8, 8)
    with pytest.raises(InvalidConditionError, match="reference_video"):
        ic(request_256, reference_video=tmp_path / "missing.mp4", ic_lora=ic_lora)
    with pytest.raises(InvalidConditionError, match="one segment"):
        ic(request_256.replace(num_frames=200), reference_video=frames, ic_lora=ic_lora)


def test_reference_scales_come_from_the_lora_metadata(ledger, request_256, ic_lora, tmp_path):
    """Official (ltx-pipelines 1.2.0; the runnable 1.0.0 has no temporal factor): `iclora_utils.py` reads
    reference_downscale_factor and reference_temporal_scale_factor from the IC-LoRA's safetensors metadata,
    `temporal_subsample` keeps frames 0, 1, 1+S, 1+2S..., and `VideoConditionByReferenceLatent` scales the
    positions back up: spatially by the factor, in time by S and shifted by -(S-1)/fps. The downscale alone is
    also checked against ltx-pipelines run (tests/test_official_parity.py)."""
    from safetensors import safe_open
    from safetensors.torch import save_file

    from milimo_engine.ic_lora import reference_scales

    with safe_open(str(ic_lora.path), framework="pt") as f:
        tensors = {k: f.get_tensor(k) for k in f.keys()}
        meta = dict(f.metadata() or {})
    scaled = tmp_path / "scaled-ic-lora.safetensors"
    save_file(tensors, str(scaled), metadata={**meta, "reference_downscale_factor": "2",
                                              "reference_temporal_scale_factor": "2"})
    assert reference_scales(ic_lora.path) == (1, 1) and reference_scales(scaled) == (2, 2)
    ic = ICLoraPipeline(ledger, progress=False)
    frames = np.random.default_rng(2).integers(0, 256, (25, 64, 64, 3), dtype=np.uint8)
    seen = []
    hook = ledger.transformer().register_forward_pre_hook(
        lambda mod, args, kwargs: seen.append((kwargs["hidden_states"].shape[1], kwargs["video_coords"])),
        with_kwargs=True)
    try:
        r = ic(request_256, reference_video=frames, ic_lora=LoraSpec(scaled, 1.0), output_type="latent")
    finally:
        hook.remove()
    assert r.summary()["recipe"].startswith("ltx2-ic-lora@")
    generated = 4 * 4 * 4
    # 25 frames -> 0, 1, 3, 5, ... 23: 13 -> 9 (8k+1) = 2 latent frames, at a quarter of stage 1's 4x4 grid.
    n, coords = next((n, c) for n, c in seen if n > generated)
    assert n == generated + 2 * 2 * 2
    ref, shot = coords[0, :, generated:], coords[0, :, :generated]
    assert ref[1:].amax() == shot[1:].amax()  # scaled back up: the reference spans the whole frame
    # In time: the second latent frame spans reference frames [1, 9), that is shot frames [1, 17) once scaled by 2
    # and shifted back by 1; the first (causal) frame stays at [0, 1).
    assert abs(float(ref[0].amax()) - 17 / request_256.fps) < 1e-6
    assert float(ref[0, :4].amin()) == 0.0 and abs(float(ref[0, :4, 1].amax()) - 1 / request_256.fps) < 1e-6
