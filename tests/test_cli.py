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


def test_the_suites_warm_start_runs_milimo_as_a_fresh_process_would(tmp_path):
    """The suite's renders start warm (tests/warm_start.py); what they see must be what a cold `python -m
    flows.cli` gives: the same output and exit status, the caller's folder and its environment read fresh."""
    import conftest

    board = "cut.otio"  # relative: read from the caller's folder
    (tmp_path / board).write_text("not a timeline")
    cases = [(("render", "--help"), {}),
             (("render", board), {}),
             (("render", board), {"MILIMO_ENGINE": '{"memory_mode": "fp9"}'})]
    for args, env in cases:
        env = {**env, "PREFECT_API_URL": "http://127.0.0.1:9/api"}  # each is answered before a flow starts
        warm = milimo(*args, env=env, cwd=tmp_path)
        cold = milimo(*args, env={**env, "MILIMO_TEST_COLD_START": "1"}, cwd=tmp_path)
        assert (warm.returncode, warm.stdout, warm.stderr) == (cold.returncode, cold.stdout, cold.stderr), args
    assert conftest._WARM.runs >= len(cases), "the warm start was not used"
    assert cold.returncode == 2 and "engine.memory_mode" in cold.stderr
