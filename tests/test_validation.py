"""Every way a request can be wrong raises its own error naming the field and the fix."""

import shutil

import pytest
import torch
from safetensors.torch import save_file

from milimo_engine import (
    Guidance,
    InvalidFrameCountError,
    InvalidGuidanceError,
    InvalidSizeError,
    LoraFileError,
    LoraSpec,
    MissingComponentError,
    ModelLedger,
    UnknownLoraKeysError,
    UnsupportedDtypeError,
)
from milimo_engine.request import ModalityGuidance

pytestmark = pytest.mark.fast  # the pure layer: `make test-fast`



@pytest.mark.parametrize("field,value,nearest", [("width", 250, 256), ("height", 300, 320), ("width", 20, 64)])
def test_size_not_multiple_of_64(pipeline, request_256, field, value, nearest):
    with pytest.raises(InvalidSizeError) as err:
        pipeline(request_256.replace(**{field: value}))
    assert err.value.field == field and err.value.nearest == nearest
    assert f"{field}={value}" in str(err.value) and f"Nearest valid value: {nearest}" in str(err.value)


def test_frame_count_out_of_range(pipeline, request_256):
    with pytest.raises(InvalidFrameCountError, match=r"num_frames=0.*Nearest valid value: 1"):
        pipeline(request_256.replace(num_frames=0))
    # Long shots render as segments; a segment itself may not exceed the model's limit.
    with pytest.raises(InvalidFrameCountError, match=r"segment_frames=265: .*limit of 257.*Nearest valid value: 257"):
        pipeline(request_256.replace(num_frames=300, segment_frames=265))


def _lora(path, keys):
    save_file({k: torch.randn(2, 32) if "lora_A" in k else torch.randn(32, 2) for k in keys}, str(path))
    return LoraSpec(path, 1.0)


def test_lora_for_another_model_is_refused(pipeline, request_256, tmp_path):
    spec = _lora(tmp_path / "flux.safetensors", ["transformer.single_transformer_blocks.0.attn.to_q.lora_A.weight",
                                                 "transformer.single_transformer_blocks.0.attn.to_q.lora_B.weight"])
    with pytest.raises(UnknownLoraKeysError, match=r"loras.path=.*flux.safetensors.*single_transformer_blocks"):
        pipeline(request_256.replace(loras=(spec,)))


def test_lora_keys_outside_this_transformer_are_ignored_and_recorded(pipeline, request_256, tmp_path):
    """As ltx-core fuses LoRAs: keys for weights the model does not have (another block, the text projection,
    which the official code builds without LoRAs) are not applied; the keys it has are. The take records which."""
    keys = [f"diffusion_model.transformer_blocks.0.attn1.to_q.{ab}.weight" for ab in ("lora_A", "lora_B")]
    extra = [f"diffusion_model.transformer_blocks.99.attn1.to_q.{ab}.weight" for ab in ("lora_A", "lora_B")]
    text = [f"text_embedding_projection.aggregate_embed.{ab}.weight" for ab in ("lora_A", "lora_B")]
    spec = _lora(tmp_path / "mixed.safetensors", keys + extra + text)
    r = pipeline(request_256.replace(loras=(spec,), steps=1), output_type="latent")
    applied = r.loras["stage1"][0]
    assert set(applied.ignored) == {k.removeprefix("diffusion_model.") for k in extra} | set(text)
    plain = pipeline(request_256.replace(steps=1), output_type="latent")
    assert not torch.equal(plain.stage1_latent, r.stage1_latent)  # block 0 got its LoRA


def test_lora_with_wrong_shapes_is_refused(pipeline, request_256, tmp_path):
    path = tmp_path / "big.safetensors"
    save_file({"transformer.transformer_blocks.0.attn1.to_q.lora_A.weight": torch.randn(4, 3072),
               "transformer.transformer_blocks.0.attn1.to_q.lora_B.weight": torch.randn(3072, 4)}, str(path))
    with pytest.raises(UnknownLoraKeysError, match="different model size"):
        pipeline(request_256.replace(loras=(LoraSpec(path),)))


def test_lora_that_is_not_safetensors_is_refused_without_unpickling(pipeline, request_256, tmp_path):
    path = tmp_path / "evil.safetensors"
    path.write_bytes(b"\x80\x04\x95 not a safetensors file")
    with pytest.raises(LoraFileError, match="not a readable safetensors file"):
        pipeline(request_256.replace(loras=(LoraSpec(path),)))
    with pytest.raises(LoraFileError, match="no such file"):
        pipeline(request_256.replace(loras=(LoraSpec(tmp_path / "missing.safetensors"),)))


def test_missing_component_folder(tiny_model_dir, tmp_path):
    copy = tmp_path / "broken"
    shutil.copytree(tiny_model_dir, copy)
    shutil.rmtree(copy / "audio_vae")
    with pytest.raises(MissingComponentError, match=r"'audio_vae' is missing.*broken/audio_vae"):
        ModelLedger.open(copy)
    with pytest.raises(MissingComponentError, match="milimo-model.json"):
        ModelLedger.open(tmp_path)


def test_dtype_the_device_cannot_run(tiny_model_dir):
    with pytest.raises(
        UnsupportedDtypeError, match=r"dtype='float16': cannot run on cpu.*Nearest valid value: 'float32'"
    ):
        ModelLedger.open(tiny_model_dir, dtype="float16")
    with pytest.raises(UnsupportedDtypeError, match="dtype='int8'"):
        ModelLedger.open(tiny_model_dir, dtype="int8")


def test_stg_block_beyond_the_transformer(pipeline, request_256):
    with pytest.raises(InvalidGuidanceError, match=r"guidance.audio.stg_blocks=\(29,\).*blocks 0..1.*\(1,\)"):
        pipeline(request_256.replace(guidance=Guidance(audio=ModalityGuidance(cfg=7.0, stg_blocks=(29,)))))
