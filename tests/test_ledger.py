"""ModelLedger: warm components, budget eviction, LoRA adapters that never touch base weights."""

import hashlib
import shutil

import pytest
import torch

from milimo_engine import LoraSpec, ModelLedger, TwoStagePipeline
from milimo_engine.errors import OutOfMemoryBudgetError
from milimo_engine.manifest import ModelManifest


def _base_checksum(transformer) -> str:
    """sha256 over the base (non-LoRA) weights, as peft leaves them under `base_layer`."""
    h = hashlib.sha256()
    for name, tensor in sorted(transformer.state_dict().items()):
        if "lora_" in name:
            continue
        h.update(name.replace(".base_layer", "").encode())
        h.update(tensor.detach().cpu().contiguous().numpy().tobytes())
    return h.hexdigest()


def test_two_shots_load_each_component_once(tiny_model_dir, request_256):
    ledger = ModelLedger.open(tiny_model_dir)
    pipe = TwoStagePipeline(ledger, progress=False)
    pipe(request_256)
    pipe(request_256.replace(seed=11, prompt="a red car in the rain"))
    counts = ledger.load_counts()
    for component in ("tokenizer", "text_encoder", "connectors", "transformer", "vae", "audio_vae", "vocoder",
                      "spatial_upsampler"):
        assert counts[component] == 1, (component, counts)
    assert all(e.bytes >= 0 and e.seconds >= 0 for e in ledger.events)
    assert ledger.resident_bytes() == sum(ledger.loaded().values()) > 0


def test_budget_smaller_than_model_evicts_and_still_renders(tiny_model_dir, request_256, ledger, pipeline):
    reference = pipeline(request_256, output_type="latent").latent
    full = ModelLedger.open(tiny_model_dir)
    TwoStagePipeline(full, progress=False)(request_256, output_type="latent")
    whole, largest = full.resident_bytes(), max(full.loaded().values())
    budget = max(whole // 2, largest + largest // 4)
    assert budget < whole
    small = ModelLedger.open(tiny_model_dir, vram_budget=budget)
    result = TwoStagePipeline(small, progress=False)(request_256, output_type="latent")
    assert any(e.action == "evict" for e in small.events)
    assert small.resident_bytes() <= budget  # the LoRA adapters counted with the transformer
    assert torch.equal(result.latent, reference)
    # A component that cannot fit even alone is never loaded anyway
    tight = ModelLedger.open(tiny_model_dir, vram_budget=largest // 2)
    with pytest.raises(OutOfMemoryBudgetError, match="budget on cpu is"):
        TwoStagePipeline(tight, progress=False)(request_256, output_type="latent")


def test_loras_leave_base_weights_untouched(tiny_model_dir, request_256):
    ledger = ModelLedger.open(tiny_model_dir)
    pipe = TwoStagePipeline(ledger, progress=False)
    before = _base_checksum(ledger.transformer())
    style = LoraSpec(tiny_model_dir / "loras" / "tiny-style-lora.safetensors", 0.8)
    plain = pipe(request_256, output_type="latent").latent
    styled = pipe(request_256.replace(loras=(style,)), output_type="latent")
    assert _base_checksum(ledger.transformer()) == before
    assert not torch.allclose(plain, styled.latent)
    # Stage sets: stage 1 = the shot's LoRAs, stage 2 = those + the distilled LoRA.
    assert [a.weight for a in styled.loras["stage1"]] == [0.8]
    assert len(styled.loras["stage2"]) == 2
    assert {a.source_format for a in styled.loras["stage2"]} == {"ltx", "diffusers"}
    # And switching back off the LoRA gives the plain render again, bit for bit.
    assert torch.equal(pipe(request_256, output_type="latent").latent, plain)


def test_stage2_really_applies_the_distilled_lora(tiny_model_dir, tmp_path, request_256, pipeline):
    with_lora = pipeline(request_256, output_type="latent")
    copy = tmp_path / "no-distilled"
    shutil.copytree(tiny_model_dir, copy)
    manifest = ModelManifest.read(copy)
    ModelManifest(**{**manifest.__dict__, "distilled_lora": None}).write(copy)
    without = TwoStagePipeline(ModelLedger.open(copy), progress=False)(request_256, output_type="latent")
    assert torch.equal(with_lora.stage1_latent, without.stage1_latent)  # stage 1 never sees it
    assert not torch.allclose(with_lora.latent, without.latent)
