"""The engine against Lightricks' own code, run: ltx-pipelines 1.0.0 on the same weights, prompts and noise.

For LTX-2 (19B-shaped) and LTX-2.3 (22B-shaped), tiny checkpoints are built by ltx-core's own configurators in the
reference environment and written as the official files are (tests/oracle/build_official.py); milimo imports them
with `milimo model import`, as a user would import the real downloads. Each official pipeline we offer runs in the
reference environment on CPU in float32 (tests/oracle/run_official.py says exactly what its harness changes), and
ours runs on the imported folder with the same request. Compared stage by stage: the prompt embeddings, every
noise draw, the stage-1 latents, the upsampled latent, the stage-2 latents, the decoded frames and audio. Each
comparison has its tolerance; a failure names the stage and the first element past it.

Where we differ on purpose, the test measures the difference and docs/engine.md gives the figure and the reason:
- LoRAs: ltx-core fuses each LoRA into the weights, computing B·A in the file's bfloat16; we apply them unfused
  in float32 (peft), so a stage with a LoRA differs by the bfloat16 rounding of the delta. A variant run with the
  delta in float32 shows that this is the whole difference.
- Audio of the two-stage recipe: 1.0.0 decodes stage 2's audio; 1.2.0 (which we follow) keeps stage 1's. Both
  stages' audio latents are compared; the decode is compared on stage 2's.
- Decoded audio: ours is fitted to the video's exact length (`fit_audio`); compared on the official length.
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pytest
import torch
from conftest import milimo

from milimo_engine import ImageCondition, LoraSpec, ModelLedger, ShotRequest, TwoStagePipeline
from milimo_engine.components.latents import AudioNorm, unpack_audio
from milimo_engine.ic_lora import ICLoraPipeline
from milimo_engine.pipeline import KeyframeInterpolationPipeline
from milimo_engine.request import Guidance, ModalityGuidance

# One worker runs this module's tests, in order (they share a module-scoped render).
pytestmark = pytest.mark.xdist_group("oracle")

REPORT: list[dict] = []
PROMPT, NEGATIVE, SEED = "a lighthouse on a cliff at dusk, waves below", "blurry, low quality", 7
SIZE, FRAMES, FPS, STEPS = 256, 25, 24.0, 4
STEM = {"2.0": "ltx-2-tiny", "2.3": "ltx-2.3-tiny"}


def guider(cfg: float) -> dict:
    return {"cfg_scale": cfg, "stg_scale": 1.0, "rescale_scale": 0.7, "modality_scale": 3.0, "skip_step": 0,
            "stg_blocks": [1]}


OUR_GUIDANCE = Guidance(
    video=ModalityGuidance(cfg=3.0, stg_blocks=(1,)), audio=ModalityGuidance(cfg=7.0, stg_blocks=(1,))
)


@dataclass
class Case:
    version: str
    official: Path
    folder: Path
    ledger: ModelLedger
    results: dict
    assets: dict


def _write_assets(folder: Path) -> dict:
    from PIL import Image

    rng = np.random.default_rng(5)
    first = folder / "first.png"
    last = folder / "last.png"
    Image.fromarray(rng.integers(0, 256, (200, 300, 3), dtype=np.uint8)).save(first)
    Image.fromarray(rng.integers(0, 256, (300, 240, 3), dtype=np.uint8)).save(last)
    gradient = np.linspace(0, 255, 64 * 64 * 3).reshape(64, 64, 3)
    reference = np.stack([np.roll(gradient, 4 * i, axis=1) for i in range(FRAMES)]).astype(np.uint8)
    from milimo_engine.media import write_mp4

    video = write_mp4(folder / "pose.mp4", reference, FPS)
    return {"first": first, "last": last, "reference": video}


def _runs(version: str, official: Path, assets: dict) -> list[dict]:
    base = {
        "model": str(official),
        "version": version,
        "prompt": PROMPT,
        "negative_prompt": NEGATIVE,
        "seed": SEED,
        "height": SIZE,
        "width": SIZE,
        "num_frames": FRAMES,
        "frame_rate": FPS,
        "steps": STEPS,
        "video_guider": guider(3.0),
        "audio_guider": guider(7.0),
    }
    images = [[str(assets["first"]), 0, 1.0, 0], [str(assets["last"]), 16, 0.5, 0]]
    ic_lora = str(official / f"{STEM[version]}-ic-lora-pose.safetensors")
    return [
        {"name": "t2v", "pipeline": "two_stages", **base},
        {"name": "t2v_fp32_lora", "pipeline": "two_stages", "lora_delta_fp32": True, **base},
        {"name": "i2v", "pipeline": "two_stages", "images": images, **base},
        {
            "name": "keyframes",
            "pipeline": "keyframes",
            **base,
            "images": [[str(assets["first"]), 0, 1.0, 0], [str(assets["last"]), 24, 1.0, 0]],
        },
        {"name": "distilled", "pipeline": "distilled", **base, "images": [[str(assets["first"]), 0, 1.0, 0]]},
        {
            "name": "ic_lora",
            "pipeline": "ic_lora",
            **base,
            "loras": [[ic_lora, 1.0]],
            "reference_video": str(assets["reference"]),
        },
        {"name": "schedule40", "component": "schedule", "steps": 40},
        {"name": "schedule30", "component": "schedule", "steps": 30},
        {"name": "constants", "component": "constants"},
        {
            "name": "image_crf33",
            "component": "image",
            "path": str(assets["first"]),
            "height": 128,
            "width": 128,
            "crf": 33,
        },
    ]


_CASES: dict[str, Case] = {}


@pytest.fixture(scope="module", params=["2.0", "2.3"], ids=["ltx-2.0", "ltx-2.3"])
def case(request, oracle, tmp_path_factory) -> Case:
    """Once per version per session: pytest (and xdist's scheduling) may set a parametrised module fixture up more
    than once when the tests of its two versions interleave."""
    if request.param not in _CASES:
        _CASES[request.param] = _build_case(request.param, oracle, tmp_path_factory)
    return _CASES[request.param]


def _build_case(version: str, oracle, tmp_path_factory) -> Case:
    from flows.cli import main

    official = oracle.build(version)
    work = tmp_path_factory.mktemp(f"parity-{version}")
    folder = work / "model"
    assert main(["model", "import", str(official), "-o", str(folder)]) == 0  # the command a user runs
    assets = _write_assets(work)
    results = oracle.run(_runs(version, official, assets))
    return Case(version, official, folder, ModelLedger.open(folder), results, assets)


def compare(case: Case, run: str, stage: str, ours: torch.Tensor, official: torch.Tensor, rel: float) -> float:
    """max |ours - official| relative to max |official|; fails past `rel`, naming the first element past it."""
    ours, official = ours.detach().float().cpu(), official.detach().float().cpu()
    assert tuple(ours.shape) == tuple(official.shape), (
        f"{run} {stage}: shape {tuple(ours.shape)} vs official {tuple(official.shape)}"
    )
    scale = float(official.abs().max()) or 1.0
    diff = (ours - official).abs()
    measured = float(diff.max()) / scale
    REPORT.append(
        {
            "version": case.version,
            "run": run,
            "stage": stage,
            "max_abs": float(diff.max()),
            "relative": measured,
            "tolerance": rel,
        }
    )
    if measured > rel:
        index = tuple(int(i) for i in np.unravel_index(int(torch.argmax((diff > rel * scale).float())), diff.shape))
        raise AssertionError(
            f"LTX-{case.version} {run}: {stage} first differs past {rel:g} (relative) at {index}: "
            f"ours {float(ours[index]):.6g}, official {float(official[index]):.6g}; "
            f"max relative difference {measured:.3g}"
        )
    return measured


def official(case: Case, run: str) -> dict[str, torch.Tensor]:
    return case.results[run][0]


def ours(case: Case, request: ShotRequest, pipeline_class=TwoStagePipeline, **kwargs):
    trace: dict = {}
    pipe = pipeline_class(case.ledger, progress=False)
    return pipe, pipe.run(request, trace=trace, **kwargs), trace


def request_for(case: Case, **changes) -> ShotRequest:
    return ShotRequest(
        prompt=PROMPT,
        negative_prompt=NEGATIVE,
        seed=SEED,
        width=SIZE,
        height=SIZE,
        num_frames=FRAMES,
        fps=FPS,
        steps=STEPS,
        guidance=OUR_GUIDANCE,
    ).replace(**changes)


def audio_tokens(recorded: torch.Tensor) -> torch.Tensor:
    """ltx-core's unpatchified audio latent [1, C, T, M] as our packed tokens [1, T, C*M]."""
    return recorded.transpose(1, 2).flatten(2, 3)


def check_stages(case: Case, run: str, trace: dict, *, lora_stage_rel: float, stage1_rel: float = 2e-4) -> None:
    ref = official(case, run)
    counts = json.loads(case.results[run][1]["counts"])
    for i in range(counts["noise"]):
        assert torch.equal(trace[f"noise.{i}"].cpu(), ref[f"noise.{i}"]), f"{run}: noise draw {i} differs"
        REPORT.append(
            {
                "version": case.version,
                "run": run,
                "stage": f"noise {i}",
                "max_abs": 0.0,
                "relative": 0.0,
                "tolerance": 0.0,
            }
        )
    compare(case, run, "stage-1 video", trace["stage1.video"], ref["stage.video.0"], stage1_rel)
    compare(case, run, "stage-1 audio", trace["stage1.audio"], audio_tokens(ref["stage.audio.0"]), stage1_rel)
    compare(case, run, "upsampled", trace["upsampled"], ref["upsampled.0"], stage1_rel)
    compare(case, run, "stage-2 video", trace["stage2.video"], ref["stage.video.1"], lora_stage_rel)
    compare(case, run, "stage-2 audio", trace["stage2.audio"], audio_tokens(ref["stage.audio.1"]), lora_stage_rel)


def check_frames(case: Case, run: str, frames: np.ndarray) -> None:
    """uint8 frames: at most 2 levels apart (both truncate nearly equal floats), and rarely at all."""
    ref = official(case, run)["frames.0"].numpy().astype(int)
    diff = np.abs(frames.astype(int) - ref)
    REPORT.append(
        {
            "version": case.version,
            "run": run,
            "stage": "frames (uint8 levels)",
            "max_abs": float(diff.max()),
            "relative": float(diff.mean()),
            "tolerance": 2,
        }
    )
    assert frames.shape == ref.shape and diff.max() <= 2 and diff.mean() < 0.1, (run, diff.max(), diff.mean())


def check_audio(case: Case, run: str, pipe, rel: float = 1e-4) -> None:
    """Our audio decode (audio VAE, vocoder, on 2.3 the bandwidth extension) of the official stage-2 audio latent,
    against the official waveform, on the official length (ours is then fitted to the video's)."""
    led = case.ledger
    tokens = audio_tokens(official(case, run)["stage.audio.1"]).to(led.device)
    latent = unpack_audio(AudioNorm.of(led.audio_decoder()).denormalize(tokens), pipe.codec.audio_mel_bins())
    wave = torch.from_numpy(pipe.codec.decode_audio(latent))
    ref = official(case, run)["audio.0"]
    assert case.results[run][1]["sample_rate"] == str(led.vocoder().config.output_sampling_rate)
    compare(case, run, "audio decode", wave[..., : ref.shape[-1]], ref, rel)


def check_audio_end_to_end(case: Case, run: str, audio: np.ndarray) -> None:
    """Our delivered audio against the official, where the vocoder is smooth (2.0). The 2.3 bandwidth extension on
    random weights saturates almost every sample at +-1, so a 1e-4 difference in the latent flips samples there:
    its decode is compared on the official latent (`check_audio`), the latents stage by stage."""
    if case.version != "2.0":
        return
    ref = official(case, run)["audio.0"]
    compare(case, run, "delivered audio", torch.from_numpy(audio)[..., : ref.shape[-1]], ref, 2e-3)


# ------------------------------------------------------------------ components
def test_the_official_files_import_and_describe_themselves(case):
    """`milimo model import` reads the version from the checkpoint's metadata and writes the official defaults."""
    from milimo_engine.official import model_info

    info = model_info(case.folder)
    assert info["version"] == case.version and info["model_id"].startswith(
        "Lightricks/LTX-2.3@" if case.version == "2.3" else "Lightricks/LTX-2@"
    )
    params = json.loads(case.results["constants"][1]["params"])[case.version]
    defaults = info["defaults"]
    assert defaults["stage1_steps"] == params["steps"]
    assert defaults["default_size"] == params["stage_2_size"] and defaults["segment_frames"] == params["num_frames"]
    assert defaults["image_crf"] == int(case.results["constants"][1]["image_crf"])
    assert defaults["distilled_lora_strength"] == float(case.results["constants"][1]["lora_strength"])
    assert defaults["distilled_sigmas"] == json.loads(case.results["constants"][1]["stage_2_sigmas"])
    assert defaults["cross_timestep"] is True  # the other stream's sigma, as ltx-core does for every version
    # The official STG block (29 / 28) does not exist in the tiny 2-block transformer: the import says so and
    # perturbs the last block (a real checkpoint keeps the official one).
    assert max(params["stg_blocks"]) >= 2 and defaults["stg_blocks"] == [1]
    vocoder = info["components"]["vocoder"]["class"]
    assert vocoder == ("LTX2VocoderWithBWE" if case.version == "2.3" else "LTX2Vocoder")


def test_the_negative_prompt_is_the_official_text(case):
    """ltx-pipelines 1.2.0 prepends five terms to the 1.0.0 text; the 1.0.0 file is the one that can be run."""
    from milimo_engine.recipe import DEFAULT_NEGATIVE_PROMPT

    prefix = "has_subtitles, has_blurbox, transition from black, transition to black, speech_ending_short, "
    assert DEFAULT_NEGATIVE_PROMPT == prefix + case.results["constants"][1]["negative_prompt"]
    assert ShotRequest(prompt="x").negative_prompt is None  # unset: the model's (its manifest's) default
    assert case.ledger.manifest.default_negative_prompt == DEFAULT_NEGATIVE_PROMPT


def test_the_stage1_schedule_is_the_official_scheduler(case):
    from milimo_engine.recipe import DISTILLED_SIGMA_VALUES

    pipe = TwoStagePipeline(case.ledger, progress=False)
    for steps in (40, 30):
        official_sigmas = case.results[f"schedule{steps}"][0]["sigmas"]
        ours_sigmas = pipe.stage1_sigmas(request_for(case, steps=steps))
        compare(case, f"schedule {steps}", "sigmas", ours_sigmas, official_sigmas, 1e-6)
    assert list(DISTILLED_SIGMA_VALUES) == json.loads(case.results["constants"][1]["distilled_sigmas"])


def test_an_image_is_prepared_as_the_official_conditioner_does(case):
    """H.264 at CRF 33 through PyAV as `preprocess` does it (odd sides cropped), cover-resize, centre-crop."""
    from milimo_engine.codec import cover_resize
    from milimo_engine.conditioning import load_rgb
    from milimo_engine.media import h264_roundtrip

    pixels = load_rgb(case.assets["first"])
    prepared = cover_resize(h264_roundtrip(pixels, 33), 128, 128)
    ours_image = torch.from_numpy(prepared).permute(2, 0, 1)[None, :, None] / 127.5 - 1.0
    compare(case, "image crf 33", "preprocessed pixels", ours_image, case.results["image_crf33"][0]["image"], 1e-6)


# ------------------------------------------------------------------ pipelines
def test_text_embeddings_match(case):
    _, _, trace = ours(case, request_for(case), output_type="latent")
    ref = official(case, "t2v")
    compare(case, "t2v", "prompt embedding (video)", trace["text.video"][1:], ref["text0.video.0"], 1e-5)
    compare(case, "t2v", "prompt embedding (audio)", trace["text.audio"][1:], ref["text0.audio.0"], 1e-5)
    compare(case, "t2v", "negative embedding (video)", trace["text.video"][:1], ref["text1.video.0"], 1e-5)


def test_two_stage_pipeline_matches_stage_by_stage(case):
    """`TI2VidTwoStagesPipeline`: guided stage 1 (CFG, STG, modality isolation, rescale), upsample, distilled
    stage 2."""
    pipe, result, trace = ours(case, request_for(case))
    check_stages(case, "t2v", trace, lora_stage_rel=2e-3)
    check_frames(case, "t2v", result.frames)
    check_audio(case, "t2v", pipe)


def test_the_lora_delta_precision_is_the_whole_stage2_difference(case):
    """With ltx-core's LoRA delta computed in float32 (the one harness variant), stage 2 agrees as stage 1 does."""
    _, _, trace = ours(case, request_for(case), output_type="latent")
    check_stages(case, "t2v_fp32_lora", trace, lora_stage_rel=2e-4)


def test_image_and_keyframe_conditions_match(case):
    """`combined_image_conditionings`: the frame-0 image replaces the first latent (strength 1), the frame-16 image
    is appended as keyframe tokens (strength 0.5: a mask of 0.5, starting from the image, spanning 8 frames)."""
    images = (
        ImageCondition(case.assets["first"], frame=0, strength=1.0, crf=0),
        ImageCondition(case.assets["last"], frame=16, strength=0.5, crf=0),
    )
    _, result, trace = ours(case, request_for(case, images=images))
    check_stages(case, "i2v", trace, lora_stage_rel=2e-3)
    check_frames(case, "i2v", result.frames)


def test_keyframe_interpolation_pipeline_matches(case):
    """`KeyframeInterpolationPipeline`: first and last frame both appended as keyframes, stage 2's audio decoded."""
    images = (
        ImageCondition(case.assets["first"], frame=0, strength=1.0, crf=0),
        ImageCondition(case.assets["last"], frame=24, strength=1.0, crf=0),
    )
    pipe, result, trace = ours(case, request_for(case, images=images), KeyframeInterpolationPipeline)
    check_stages(case, "keyframes", trace, lora_stage_rel=2e-3)
    check_frames(case, "keyframes", result.frames)
    check_audio(case, "keyframes", pipe)
    check_audio_end_to_end(case, "keyframes", result.audio)
    torch.testing.assert_close(
        result.audio_latent,
        unpack_audio(
            AudioNorm.of(case.ledger.audio_decoder()).denormalize(trace["stage2.audio"]), pipe.codec.audio_mel_bins()
        ).cpu(),
    )


def test_distilled_pipeline_matches(case):
    """`DistilledPipeline` (our draft recipe): 8 unguided steps on the distilled sigmas, then stage 2's 3, the
    distilled LoRA in both stages, stage 2's audio decoded."""
    images = (ImageCondition(case.assets["first"], frame=0, strength=1.0, crf=0),)
    pipe, result, trace = ours(case, request_for(case, quality="draft", images=images))
    check_stages(case, "distilled", trace, lora_stage_rel=2e-3, stage1_rel=2e-3)
    check_frames(case, "distilled", result.frames)
    check_audio(case, "distilled", pipe)
    check_audio_end_to_end(case, "distilled", result.audio)


def test_ic_lora_pipeline_matches(case):
    """`ICLoraPipeline`: the reference video's tokens appended in stage 1 at half the stage-1 size (the LoRA's
    reference_downscale_factor 2), the IC-LoRA and the distilled LoRA in stage 1, the distilled model alone in
    stage 2. The reference is the frames ltx-pipelines decoded from the file (PyAV), so both sides see the same
    pixels."""
    ref = official(case, "ic_lora")
    frames = np.concatenate([ref[f"reference_frame.{i}"].numpy() for i in range(FRAMES)])
    ic = ICLoraPipeline(case.ledger, progress=False)
    trace: dict = {}
    lora = LoraSpec(case.folder / "loras" / f"{STEM[case.version]}-ic-lora-pose.safetensors", 1.0)
    result = ic.two_stage.run(request_for(case), trace=trace, in_context=ic.in_context(frames, lora))
    check_stages(case, "ic_lora", trace, lora_stage_rel=2e-3, stage1_rel=2e-3)
    check_frames(case, "ic_lora", result.frames)
    check_audio(case, "ic_lora", ic.two_stage)
    check_audio_end_to_end(case, "ic_lora", result.audio)


@pytest.fixture(scope="module", autouse=True)
def write_report():
    yield
    target = os.environ.get("MILIMO_PARITY_REPORT")
    if target and REPORT:
        Path(target).write_text(json.dumps(REPORT, indent=1) + "\n")


def test_a_storyboard_renders_from_the_official_files_through_the_cli(oracle, prefect_api, tmp_path):
    """A user with Lightricks' downloads and no manifest: `--model` names the folder of files as downloaded; it is
    imported once into the cache and the storyboard renders from it, offline, through `milimo render`."""
    import shutil

    import opentimelineio as otio

    from storyboards.store import Store

    official_files = oracle.build("2.3")
    board_dir = tmp_path / "board"
    shutil.copytree(Path(__file__).resolve().parents[1] / "storyboards" / "examples", board_dir)
    board = board_dir / "lighthouse.otio"
    timeline = otio.adapters.read_from_file(str(board))
    timeline.metadata["milimo"]["defaults"] = {**dict(timeline.metadata["milimo"]["defaults"]), "steps": 2}
    for clip in list(timeline.tracks[0])[:2]:
        clip.metadata["milimo"].pop("loras", None)  # the example's LoRAs are for the tiny random bundle
    for clip in list(timeline.tracks[0])[2:]:
        timeline.tracks[0].remove(clip)
    otio.adapters.write_to_file(timeline, str(board))
    db = f"sqlite:///{tmp_path / 'milimo.db'}"
    env = {
        **os.environ,
        "PREFECT_API_URL": prefect_api,
        "MILIMO_CACHE_DIR": str(tmp_path / "cache"),
        "HF_HUB_OFFLINE": "1",
    }
    proc = milimo(
        "render", board, "--model", official_files, "--db", db, "--out", tmp_path / "renders", environ=env, timeout=600
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert "NOTE: no --model" not in proc.stderr
    imported = list((tmp_path / "cache" / "models").glob("imported-*"))
    assert len(imported) == 1 and (imported[0] / "milimo-model.json").is_file()
    store = Store.open(db)
    rows = store.status("lighthouse")
    assert [r.status for r in rows] == ["succeeded", "succeeded"]
    assert all(Path(r.outputs.mp4).is_file() for r in rows)
    assert store.current_take("lighthouse", rows[0].shot_id).outputs.model_id.startswith("Lightricks/LTX-2.3@")
