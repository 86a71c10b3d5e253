"""The recipe's parts that ltx-pipelines 1.0.0 cannot be run for (1.2.0 behaviour, milimo's own additions) or
that are about milimo's records: stage-1 audio, draft mode, temporal refine, tiling, recipe ids, model defaults.
Each test names the official file it follows; what can be run is compared in tests/test_official_parity.py."""

import numpy as np
import torch
from conftest import copy_example, milimo

from milimo_engine import ShotRequest
from milimo_engine.components.latents import AudioNorm, unpack_audio
from milimo_engine.components.schedules import TokenShiftedSchedule
from milimo_engine.recipe import (
    DEFAULT_NEGATIVE_PROMPT,
    DISTILLED_SIGMA_VALUES,
    RECIPE_VERSION,
    STAGE_2_DISTILLED_SIGMA_VALUES,
)


def test_one_step_schedule_is_finite():
    """One stage-1 step is sigma 1 then 0; the terminal stretch has nothing to stretch (it divided 0 by 0)."""
    assert TokenShiftedSchedule().sigmas(1, 4096).tolist() == [1.0, 0.0]


def test_audio_length_is_the_rounded_duration_in_latent_frames(pipeline, ledger, request_256):
    """Official: `ltx_core/types.py` AudioLatentShape.from_video_pixel_shape: round(frames / fps * 25) latent
    frames (16 kHz / hop 160 / 4), and that is what the stage denoises; the delivered audio is then exactly the
    delivered frames' duration."""
    assert pipeline.codec.audio_latent_rate() == 25.0
    for frames, fps, expected in ((25, 24.0, 26), (121, 24.0, 126), (49, 25.0, 49), (33, 30.0, 28), (9, 24.0, 9)):
        assert pipeline.codec.audio_latent_frames(frames, fps) == expected == round(frames / fps * 25)
    r = pipeline(request_256.replace(num_frames=33, fps=30.0))
    assert r.audio_latent.shape[2] == round(33 / 30 * 25)
    assert r.audio.shape[-1] == round(33 / 30 * r.sample_rate)


def test_short_decoded_audio_is_filled_by_mirroring_its_tail():
    """The causal decoder returns ~30 ms less than the latent's duration; the take still gets its video's
    exact length, continuous at the join (a mirror, not a held sample)."""
    from milimo_engine.codec import fit_audio

    wave = np.arange(6, dtype=np.float32)[None]
    assert fit_audio(wave, 9).tolist() == [[0, 1, 2, 3, 4, 5, 4, 3, 2]]
    assert fit_audio(wave, 4).tolist() == [[0, 1, 2, 3]]


def test_the_shot_keeps_stage_one_audio(pipeline, ledger, request_256):
    """Official (1.2.0): `ltx_pipelines/ti2vid_two_stages.py` decodes the audio latent of stage 1 (guided, audio
    cfg 7): "stage 2 refines video only; discard its audio". (1.0.0, the runnable oracle, decoded stage 2's; the
    parity test compares both stages' audio with it.)"""
    last = {}
    r = pipeline(request_256, output_type="latent", callback_on_step_end=lambda info: last.__setitem__(
        info.stage, info.audio.clone()))
    norm = AudioNorm.of(ledger.audio_decoder())
    stage1 = unpack_audio(norm.denormalize(last["stage1"]), pipeline.codec.audio_mel_bins())
    assert torch.equal(r.audio_latent, stage1.cpu())
    assert not torch.equal(last["stage1"], last["stage2"])


def test_draft_is_the_distilled_recipe(pipeline, ledger, request_256):
    """Official: `ltx_pipelines/distilled.py` (DistilledPipeline): stage 1 on DISTILLED_SIGMA_VALUES, unguided,
    then stage 2 on STAGE_2_DISTILLED_SIGMA_VALUES."""
    draft = request_256.replace(quality="draft", steps=40)
    assert (
        draft.recipe == f"ltx2-distilled@{RECIPE_VERSION}" and request_256.recipe == f"ltx2-two-stage@{RECIPE_VERSION}"
    )
    assert torch.equal(pipeline.stage1_sigmas(draft), torch.tensor(DISTILLED_SIGMA_VALUES, dtype=torch.float32))
    batches, steps = [], []
    hook = ledger.transformer().register_forward_pre_hook(
        lambda mod, args, kwargs: batches.append(kwargs["hidden_states"].shape[0]), with_kwargs=True
    )
    try:
        r = pipeline(
            draft,
            output_type="latent",
            callback_on_step_end=lambda info: steps.append((info.stage, info.step, round(info.sigma, 6))),
        )
    finally:
        hook.remove()
    stage1 = [s for s in steps if s[0] == "stage1"]
    stage2 = [s for s in steps if s[0] == "stage2"]
    assert len(stage1) == len(DISTILLED_SIGMA_VALUES) - 1 and len(stage2) == len(STAGE_2_DISTILLED_SIGMA_VALUES) - 1
    assert [s[2] for s in stage1] == [round(v, 6) for v in DISTILLED_SIGMA_VALUES[1:]]
    assert batches == [1] * len(steps)  # one unguided pass per step: no negative, no STG, no isolation
    assert any("distilled" in a.path for a in r.loras["stage1"])  # the distilled model renders stage 1 too
    final = pipeline(request_256.replace(steps=4), output_type="latent")
    assert not torch.equal(r.latent, final.latent)


def test_recipe_and_quality_are_part_of_the_spec_hash():
    """A change of semantics (a new RECIPE_VERSION) must never silently reuse takes of the old one."""
    import dataclasses
    from pathlib import Path

    import storyboards

    board = storyboards.load(Path(__file__).resolve().parents[1] / "storyboards" / "examples" / "lighthouse.otio")
    spec = storyboards.resolve_specs(board, "m")["harbour"]
    assert spec.recipe == f"ltx2-two-stage@{RECIPE_VERSION}" and spec.quality == "final"
    assert spec.negative_prompt == "worst quality, blurry, jittery"  # the storyboard's own default wins
    older = dataclasses.replace(spec, recipe="ltx2-two-stage@1")
    draft = dataclasses.replace(spec, quality="draft", recipe=f"ltx2-distilled@{RECIPE_VERSION}")
    assert len({spec.spec_hash, older.spec_hash, draft.spec_hash}) == 3


def test_draft_and_final_takes_coexist_through_the_cli(tmp_path, tiny_model_dir, prefect_api):
    import json
    import os
    from pathlib import Path

    root = Path(__file__).resolve().parents[1]
    board = copy_example(tmp_path / "b", steps=2)  # the final's steps; a draft has the distilled recipe's own
    common = ["--model", str(tiny_model_dir), "--db", f"sqlite:///{tmp_path / 'm.db'}", "--out", str(tmp_path / "o")]
    env = {**os.environ, "PREFECT_API_URL": prefect_api, "DO_NOT_TRACK": "1"}

    def ok(*args):
        proc = milimo(*args, environ=env, cwd=root, timeout=600)
        assert proc.returncode == 0, proc.stderr[-3000:]
        return proc.stdout

    def rows():
        return {r["shot_id"]: r for r in json.loads(ok("status", str(board), "--db", common[3], "--json"))}

    assert "rendered 5 shot(s)" in ok("render", str(board), "--draft", *common)
    drafts = rows()
    assert {r["quality"] for r in drafts.values()} == {"draft"}
    assert "rendered 5 shot(s)" in ok("render", str(board), *common)  # finals: other specs, other takes
    finals = rows()
    assert {r["quality"] for r in finals.values()} == {"final"}
    assert all(finals[s]["take_number"] == 2 and drafts[s]["spec_hash"] != finals[s]["spec_hash"] for s in finals)
    assert "rendered 0 shot(s)" in ok("render", str(board), "--draft", *common)  # the drafts are still there
    assert {r["take_number"] for r in rows().values()} == {1}
    table = ok("status", str(board), "--db", common[3])
    assert "draft" in table


def test_temporal_upsampling_is_followed_by_the_distilled_refine_round(pipeline, ledger, request_256):
    """After temporal x2, re-noise to DISTILLED_SIGMA_VALUES[4] and refine on DISTILLED_SIGMA_VALUES[4:],
    unguided, at the doubled frame rate; the audio stays as it was."""
    from milimo_engine.recipe import TEMPORAL_REFINE_SIGMAS

    steps, sizes = [], []
    hook = ledger.transformer().register_forward_pre_hook(
        lambda mod, args, kwargs: sizes.append((kwargs["hidden_states"].shape, kwargs["fps"])), with_kwargs=True
    )
    try:
        r = pipeline(
            request_256.replace(temporal_upsample=True, steps=3),
            callback_on_step_end=lambda info: steps.append((info.stage, round(info.sigma, 6))),
        )
    finally:
        hook.remove()
    refine = [s for stage, s in steps if stage == "temporal_refine"]
    assert refine == [round(v, 6) for v in TEMPORAL_REFINE_SIGMAS[1:]]
    refine_calls = sizes[-len(refine) :]
    assert all(shape[0] == 1 and shape[1] == 7 * 8 * 8 and fps == 48.0 for shape, fps in refine_calls)  # 2F-1 frames
    assert r.frames.shape[0] == 2 * 25 - 1 and r.fps == 48.0


def test_large_decodes_tile_as_ltx_core_does():
    """Official: ltx-core's `TilingConfig.default()`: spatial tiles of 768 overlapping by 64, temporal tiles of
    80 frames overlapping by 24, for outputs too large to decode in one piece."""
    from milimo_engine.codec import vae_tiling

    assert vae_tiling(256, 256, 25) is None
    big = vae_tiling(1024, 1536, 121)
    assert (big["tile_sample_min_width"], big["tile_sample_stride_width"]) == (768, 704)
    assert (big["tile_sample_min_num_frames"], big["tile_sample_stride_num_frames"]) == (80, 56)
    assert vae_tiling(512, 768, 121) is not None  # long, though small: tiled in time


def test_size_and_steps_default_to_the_models_manifest(pipeline, tmp_path):
    """Official defaults differ per model version (LTX-2: 1536x1024 final size; 2.3: 30 steps): a shot or a
    storyboard that names no size or step count takes them from the bundle's manifest."""
    import json
    from pathlib import Path

    import storyboards
    from milimo_engine.manifest import ModelManifest

    resolved = pipeline.with_model_defaults(ShotRequest(prompt="x"))
    assert (resolved.width, resolved.height, resolved.steps) == (768, 512, 40)  # the tiny bundle stays small
    explicit = ShotRequest(prompt="x", width=256, height=256, steps=4, negative_prompt="blurry")
    assert pipeline.with_model_defaults(explicit) is explicit
    (tmp_path / "milimo-model.json").write_text(
        json.dumps({"model_id": "Lightricks/LTX-2.3", "schedule": {"stage1_steps": 30}})
    )
    real = ModelManifest.read(tmp_path)
    assert real.shot_defaults() == {
        "width": 1536,
        "height": 1024,
        "steps": 30,
        "negative_prompt": DEFAULT_NEGATIVE_PROMPT,
    }

    import opentimelineio as otio

    example = Path(__file__).resolve().parents[1] / "storyboards" / "examples" / "lighthouse.otio"
    timeline = otio.adapters.read_from_file(str(example))
    defaults = {
        k: v for k, v in dict(timeline.metadata["milimo"]["defaults"]).items() if k not in ("width", "height", "steps")
    }
    timeline.metadata["milimo"] = {**dict(timeline.metadata["milimo"]), "defaults": defaults}
    board_dir = tmp_path / "b"
    import shutil

    shutil.copytree(example.parent, board_dir)
    otio.adapters.write_to_file(timeline, str(board_dir / "lighthouse.otio"))
    board = storyboards.load(board_dir / "lighthouse.otio")
    spec = storyboards.resolve_specs(board, real.model_id, model_defaults=real.shot_defaults())["lighthouse-wide"]
    assert (spec.width, spec.height, spec.steps) == (1536, 1024, 30)
    overridden = storyboards.resolve_specs(board, real.model_id, model_defaults=real.shot_defaults())["harbour-pan"]
    assert overridden.steps == 6  # the clip's own override still wins


def test_a_manifests_stg_blocks_must_exist_in_its_transformer(tmp_path, tiny_model_dir, prefect_api):
    """Each stream's STG blocks (`stg_blocks`, `audio_stg_blocks`, as ltx-pipelines' per-stream
    `MultiModalGuiderParams.stg_blocks`) are checked against the transformer's `num_layers` when the model folder
    is opened: a render exits 2 naming the file, the field and blocks that exist, and stores nothing."""
    import json
    import shutil
    from pathlib import Path

    root = Path(__file__).resolve().parents[1]
    model = tmp_path / "model"
    shutil.copytree(tiny_model_dir, model)
    manifest = json.loads((model / "milimo-model.json").read_text())
    manifest["audio_stg_blocks"] = [29]
    (model / "milimo-model.json").write_text(json.dumps(manifest))
    proc = milimo(
        "render",
        "storyboards/examples/lighthouse.otio",
        "--model",
        model,
        "--db",
        f"sqlite:///{tmp_path / 'm.db'}",
        "--out",
        tmp_path / "o",
        env={"PREFECT_API_URL": prefect_api},
        cwd=root,
        timeout=600,
    )
    assert proc.returncode == 2, proc.stderr[-2000:]
    assert "milimo-model.json: audio_stg_blocks=[29]" in proc.stderr and "blocks 0..1" in proc.stderr
    assert "Fix: write blocks that exist there, e.g. [1]" in proc.stderr and "Traceback" not in proc.stderr
    assert not (tmp_path / "m.db").exists()
