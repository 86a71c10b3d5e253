"""Opt-in speed-ups (`milimo_engine.speed`): the distilled LoRA fused into stage 2 and restored bit for bit, another
attention backend, each recorded with the take; a backend that is not installed is refused before anything
renders."""

from __future__ import annotations

import hashlib

import pytest
import torch
from conftest import milimo

from milimo_engine import ModelLedger, TwoStagePipeline
from milimo_engine.speed import SpeedOptions


def _base_weights(transformer) -> str:
    h = hashlib.sha256()
    for name, tensor in sorted(transformer.state_dict().items()):
        if "lora_" not in name:
            h.update(name.replace(".base_layer", "").encode() + tensor.detach().cpu().numpy().tobytes())
    return h.hexdigest()


def test_fused_distilled_lora_renders_as_the_adapter_does_and_leaves_the_weights_as_loaded(tiny_model_dir,
                                                                                         request_256, pipeline):
    reference = pipeline(request_256, output_type="latent").latent
    ledger = ModelLedger.open(tiny_model_dir, speed=SpeedOptions(fuse_distilled=True))
    before = _base_weights(ledger.transformer())
    first = TwoStagePipeline(ledger, progress=False)(request_256, output_type="latent").latent
    assert ledger.fused_last
    assert _base_weights(ledger.transformer()) == before  # restored from a copy, not by subtracting the merge
    again = TwoStagePipeline(ledger, progress=False)(request_256, output_type="latent").latent
    assert torch.equal(first, again)
    # the same render up to float32 rounding (measured 1.1e-7 relative L2)
    assert ((first - reference).norm() / reference.norm()).item() < 1e-5
    fp8 = ModelLedger.open(tiny_model_dir, speed=SpeedOptions(fuse_distilled=True), memory_mode="fp8")
    TwoStagePipeline(fp8, progress=False)(request_256, output_type="latent")
    assert not fp8.fused_last  # fp8 weights keep the adapter path


def test_another_attention_backend_renders_the_same_shot(tiny_model_dir, request_256, pipeline):
    reference = pipeline(request_256, output_type="latent").latent
    ledger = ModelLedger.open(tiny_model_dir, speed=SpeedOptions(attention="_native_math"))
    latent = TwoStagePipeline(ledger, progress=False)(request_256, output_type="latent").latent
    assert ((latent - reference).norm() / reference.norm()).item() < 1e-5


@pytest.mark.fast
def test_a_backend_that_is_not_installed_is_refused_before_anything_is_stored(tmp_path, tiny_model_dir):
    from conftest import copy_example

    board = copy_example(tmp_path / "b")
    db = tmp_path / "m.db"
    proc = milimo("render", board, "--model", tiny_model_dir, "--db", f"sqlite:///{db}", "--out", tmp_path / "out",
                  "--attention", "flash")
    assert proc.returncode == 2, proc.stderr[-2000:]
    assert "--attention flash ([engine] attention): is not usable here" in proc.stderr and "flash-attn" in proc.stderr
    assert "Traceback" not in proc.stderr and not db.exists()
    hub = milimo("render", board, "--model", tiny_model_dir, "--db", f"sqlite:///{db}", "--attention", "sage_hub")
    assert hub.returncode == 2 and "not one of" in hub.stderr and not db.exists()


@pytest.mark.fast
def test_compile_asks_torch_to_compile_each_repeated_block(tiny_model_dir):
    """Compiling is measured on a GPU (bench/engine.py --compile); on this CPU host a first compiled render takes
    minutes, so the test checks the wiring: every transformer block is handed to torch.compile, nothing else."""
    ledger = ModelLedger.open(tiny_model_dir, speed=SpeedOptions(compile=True))
    transformer = ledger.transformer()
    blocks = list(transformer.transformer_blocks)
    assert blocks and all(getattr(b, "_compiled_call_impl", None) is not None for b in blocks)
    assert getattr(transformer, "_compiled_call_impl", None) is None
