"""The `milimo` command as a user runs it."""

import hashlib
import json
from pathlib import Path

from conftest import milimo

from milimo_engine.media import probe

ROOT = Path(__file__).resolve().parents[1]


def test_model_tiny_writes_a_loadable_bundle_deterministically(tmp_path, tiny_model_dir):
    proc = milimo("model", "tiny", str(tmp_path / "m"))
    assert proc.returncode == 0, proc.stderr
    manifest = json.loads((tmp_path / "m" / "milimo-model.json").read_text())
    assert manifest["random_weights"] is True
    for part in ("transformer/diffusion_pytorch_model.safetensors", "text_encoder/model.safetensors",
                 "loras/ltx-2-distilled-lora.safetensors"):
        a = hashlib.sha256((tmp_path / "m" / part).read_bytes()).hexdigest()
        b = hashlib.sha256((tiny_model_dir / part).read_bytes()).hexdigest()
        assert a == b, part  # same seed, same weights
    assert milimo("model", "tiny", str(tmp_path / "m")).returncode == 2  # exists: refuse, don't clobber


def test_demo_renders_and_says_it_is_noise(tmp_path, tiny_model_dir):
    proc = milimo("demo", "--out", tmp_path / "out", "--steps", "3", "--frames", "17",
                  env={"MILIMO_CACHE_DIR": str(tmp_path / "cache")})
    assert proc.returncode == 0, proc.stderr
    assert "RANDOM weights" in proc.stderr
    info = probe(tmp_path / "out" / "demo.mp4")
    assert info.frames == 17 and info.has_audio
    summary = json.loads((tmp_path / "out" / "demo.json").read_text())
    assert summary["frames"] == 17 and {e["component"] for e in summary["ledger"]} >= {"transformer", "vae"}


def test_invalid_input_exits_2_without_traceback(tmp_path, tiny_model_dir):
    proc = milimo("demo", "--model", str(tiny_model_dir), "--width", "250", "--out", str(tmp_path))
    assert proc.returncode == 2
    assert "width=250" in proc.stderr and "256" in proc.stderr and "Traceback" not in proc.stderr
