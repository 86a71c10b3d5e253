"""Memory modes and the planner (`milimo_engine.memory`): exact weight counts against what the tiny models hold, the
full-size table docs/engine.md prints, the same latents in every lossless mode, and the CLI choosing or refusing."""

from __future__ import annotations

import json
import re
from pathlib import Path

import pytest
import torch
from conftest import RENDERED_DEVICE_MEMORY, ROOT, milimo

from milimo_engine import ModelLedger, TwoStagePipeline
from milimo_engine.limits import GIB, parse_bytes
from milimo_engine.memory import MODES, MemoryPlanner, ShotShape, module_bytes

# fp8 (e4m3: 3 mantissa bits) weights against the render dtype, the tiny model's latents after both stages: relative
# L2 error measured 1.3 % (float32 compute) and 1.7 % (bfloat16); documented in docs/engine.md.
FP8_TOLERANCE = 0.05


@pytest.mark.fast
@pytest.mark.parametrize("dtype", ["float32", "bfloat16"])
def test_the_planner_counts_exactly_what_the_tiny_models_hold(tiny_model_dir, dtype):
    planner = MemoryPlanner(tiny_model_dir, dtype)
    for mode in ("resident", "fp8"):
        ledger = ModelLedger.open(tiny_model_dir, dtype=dtype, memory_mode=mode)
        planned = planner.weights(mode)
        held = {name: module_bytes(ledger._get(name)) for name in planned}
        assert held == planned, mode
    # fp8 stores the transformer's and Gemma's layers in one byte a weight: less than half of float32's four
    assert planner.weights("fp8")["transformer"] < planner.weights("resident")["transformer"] / (2 if dtype ==
                                                                                                 "float32" else 1.2)
    # the adapters peft adds for the distilled LoRA, counted from the file's header alone
    ledger = ModelLedger.open(tiny_model_dir, dtype=dtype)
    before = module_bytes(ledger.transformer())
    ledger.use_loras([ledger.distilled_lora()])
    added = module_bytes(ledger.transformer()) - before
    assert added == planner.lora_bytes([tiny_model_dir / ledger.manifest.distilled_lora]) > 0
    assert ledger.loaded()["transformer"] == before + added  # the ledger's budget counts them too


@pytest.mark.fast
def test_amounts_of_memory_read_as_people_write_them():
    assert parse_bytes("24GB") == parse_bytes("24 GiB") == 24 * GIB
    assert parse_bytes("512m") == 512 * 2**20
    with pytest.raises(ValueError, match="not an amount of memory"):
        parse_bytes("lots")


def _documented_table() -> dict[tuple[str, str], dict[str, str]]:
    """docs/engine.md's memory table: (size, mode) -> its cells."""
    text = (ROOT / "docs" / "engine.md").read_text()
    block = text.split("<!-- memory-table -->")[1]
    rows = {}
    for line in block.strip().splitlines()[2:]:
        cells = [c.strip() for c in line.strip("|").split("|")]
        rows[(cells[0], cells[1])] = dict(zip(("peak", "24", "48", "80", "141"), cells[2:], strict=True))
    return rows


@pytest.mark.fast
def test_full_size_configs_give_the_documented_table(tmp_path):
    """The table in docs/engine.md is what the planner says for LTX-2 at full size (configs on the meta device)."""
    from milimo_engine.full_size import DISTILLED_LORA_RANK, write_full_size_configs

    planner = MemoryPlanner(write_full_size_configs(tmp_path / "ltx2"), "bfloat16")
    weights = planner.weights("resident")
    assert round(weights["transformer"] / GIB, 1) == 35.2 and round(weights["text_encoder"] / GIB, 1) == 22.7
    documented = _documented_table()
    assert documented, "docs/engine.md has its memory table"
    for (size, mode), cells in documented.items():
        w, h, f = (int(v) for v in re.split("[x×]", size))
        plan = planner.plan(ShotShape(w, h, f, lora_ranks=(DISTILLED_LORA_RANK,)))
        peak = plan.mode(mode).peak
        assert cells["peak"] == f"{peak / GIB:.1f} GiB", (size, mode)
        for gb in ("24", "48", "80", "141"):
            assert cells[gb] == ("yes" if peak <= int(gb) * GIB else "no"), (size, mode, gb)
    # fastest first, and each mode needs less than the one before it at the official size
    peaks = [planner.plan(ShotShape(1536, 1024, 121)).mode(m).peak for m in MODES]
    assert peaks == sorted(peaks, reverse=True)


def test_every_lossless_mode_renders_the_same_latents_and_fp8_stays_close(tiny_model_dir, request_256, pipeline):
    reference = pipeline(request_256, output_type="latent").latent
    for mode in MODES:
        ledger = ModelLedger.open(tiny_model_dir)
        plan = ledger.fit(request_256, mode)
        assert plan.mode == mode and ledger.memory_mode == mode
        latent = TwoStagePipeline(ledger, progress=False)(request_256, output_type="latent").latent
        released = {e.component for e in ledger.events if e.action in ("release", "offload")}
        if mode == "resident":
            assert released == set() and torch.equal(latent, reference)
            continue
        assert {"connectors", "spatial_upsampler"} <= released  # freed after their phase, as official does
        if mode == "fp8":
            error = ((latent - reference).norm() / reference.norm()).item()
            assert 0 < error < FP8_TOLERANCE, error
        else:
            assert torch.equal(latent, reference), mode


@pytest.mark.fast
def test_a_shot_that_fits_nowhere_is_refused_naming_what_would_fit(tiny_model_dir):
    from milimo_engine.memory import DeviceMemoryError

    planner = MemoryPlanner(tiny_model_dir, "float32")
    shape = ShotShape(512, 512, 49)
    small = ShotShape(256, 256, 49)
    capacity = planner.plan(small).mode("stream").peak
    assert planner.choose(small, "auto", planner.plan(small).mode("resident").peak).mode == "resident"
    assert planner.choose(small, "auto", capacity).mode in ("release", "fp8", "stream")
    with pytest.raises(DeviceMemoryError) as refused:
        planner.choose(shape, "auto", capacity)
    text = str(refused.value)
    assert "the device has" in text and "would fit: a smaller size such as" in text, text
    w, h = (int(v) for v in re.search(r"such as (\d+)x(\d+)", text).groups())
    assert w <= 256 and h <= 256 and w == h
    with pytest.raises(DeviceMemoryError, match="resident mode but the device has .* would fit: --memory-mode"):
        planner.choose(small, "resident", capacity)


def test_render_fits_a_small_device_or_refuses_it(tiny_model_dir, rendered_example, tmp_path):
    """`--device-memory` tells the planner what the device has: the rendered example was rendered as on a device
    too small for `resident` (conftest's RENDERED_DEVICE_MEMORY), so every take rendered in a leaner mode and says
    so; a shot that fits nowhere is refused (exit 2, a line per shot, nothing stored)."""
    import storyboards

    board, db_url, out = rendered_example(tmp_path / "p")
    planner = MemoryPlanner(tiny_model_dir, "float32")
    manifest = planner.manifest
    specs = storyboards.resolve_specs(storyboards.load(board), manifest.model_id,
                                      model_defaults=manifest.shot_defaults())
    where = ("--db", db_url, "--out", out)
    for shot_id, spec in specs.items():
        plan = planner.plan(ShotShape.of(spec.request(), manifest, tiny_model_dir))
        assert plan.mode("release").peak <= RENDERED_DEVICE_MEMORY < plan.mode("resident").peak, shot_id
        take = json.loads(milimo("takes", board, shot_id, "--json", *where).stdout)[-1]["outputs"]
        assert (take["memory_mode"], take["device_memory"]) == ("release", RENDERED_DEVICE_MEMORY), take
        assert take["memory_peak"] == plan.mode("release").peak
        assert take["speed"] == {"attention": "native", "compile": False, "fused": False}

    db_file = Path(db_url.removeprefix("sqlite:///"))
    before = db_file.stat().st_mtime_ns
    proc = milimo("rerender", board, "--from-shot", "harbour-pan", "--set", "seed=5", "--device-memory", "1MB",
                  "--model", tiny_model_dir, *where)
    assert proc.returncode == 2, proc.stderr[-2000:]
    lines = [line for line in proc.stderr.splitlines() if line.startswith("milimo: ")]
    assert any("'Harbour pan': memory: needs" in line and "the device has 1.0 MiB" in line and "Fix: would fit"
               in line for line in lines), proc.stderr[-2000:]
    assert not any("'Harbour':" in line for line in lines)  # a rerender from harbour-pan checks what it renders
    assert "Traceback" not in proc.stderr
    assert db_file.stat().st_mtime_ns == before  # nothing stored


@pytest.mark.fast
def test_model_plan_prints_the_table_for_a_device(tiny_model_dir):
    proc = milimo("model", "plan", "--full-size", "2.0", "--gpu-memory", "24GB", "--lora-rank", "384", "--json")
    assert proc.returncode == 0, proc.stderr[-2000:]
    table = json.loads(proc.stdout)
    assert table["width"] == 1536 and table["frames"] == 121 and table["fits"] == ["stream"]
    # the CLI's text table, on the tiny bundle (its configs build in a moment)
    text = milimo("model", "plan", tiny_model_dir, "--gpu-memory", "11MB", "--size", "256x256", "--frames", "25").stdout
    assert "auto picks: release" in text and re.search(r"^release\s+\d+\.\d MiB", text, re.M), text
    bad = milimo("model", "plan", "--full-size", "2.0", "--gpu-memory", "lots")
    assert bad.returncode == 2 and "not an amount of memory" in bad.stderr


@pytest.mark.fast
def test_a_farm_worker_hands_its_engine_settings_to_the_processes_that_render():
    from flows.farm import worker_commands
    from milimo.settings import ENGINE_VARIABLE, Settings
    from storyboards.errors import ConfigError

    engine = {"memory_mode": "fp8", "device_memory": 24 * GIB, "attention": "native", "compile": False,
              "fuse_distilled": True}
    (_, env), = worker_commands("tcp://127.0.0.1:8786", None, "w", engine)
    seen = Settings.load(environ={ENGINE_VARIABLE: env[ENGINE_VARIABLE]}).config.engine
    assert (seen.memory_mode, seen.device_memory, seen.fuse_distilled) == ("fp8", 24 * GIB, True)
    with pytest.raises(ConfigError, match="MILIMO_ENGINE="):
        Settings.load(environ={ENGINE_VARIABLE: '{"memory_mode": "fp9"}'})
