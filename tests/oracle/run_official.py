"""Run one of Lightricks' own pipelines (ltx-pipelines 1.0.0) on CPU and record what every stage produced.

Runs in the reference environment (`.venv-ref`), as a subprocess of milimo's parity tests; milimo never imports
this or ltx-core. The harness changes four things about how the official code runs, all for CPU and the tiny model:

1. `torch.cuda.synchronize` is a no-op (the pipelines call it between stages; a CPU build of torch has no CUDA);
2. every model and latent is float32 (the pipelines hard-code bfloat16): the ledgers' and the pipeline's `dtype`
   are set, every model a ledger builds is cast to float32 after building (ltx-core fuses LoRAs only into the
   file's bfloat16 weights and leaves the others as loaded), and the module-level helpers that take a `dtype`
   argument get float32;
3. ltx-core's Gemma 3 12B config constant is the tiny Gemma's (`build_official._text_config_patched`);
4. the distilled and IC-LoRA pipelines take a distilled checkpoint; the tiny model has the dev checkpoint and the
   distilled LoRA, so every ledger those pipelines build gets the distilled LoRA (ltx-core fuses it): the IC-LoRA
   pipeline's stage-2 ledger, built with no LoRAs, gets that one alone;
5. in a run marked `"lora_delta_fp32": true` (a variant, never the main comparison), ltx-core computes each LoRA
   delta B·A in float32 instead of in the file's bfloat16, to show that this alone is what separates the stages
   that use LoRAs;
6. otherwise nothing is computed differently: the noiser's draws, the prompt embeddings, each stage's latents, the
   upsampled latent, the reference video frames and the decoded frames and audio are recorded on the way
   (wrapping, never replacing, the functions).

    .venv-ref/bin/python tests/oracle/run_official.py REQUEST.json OUT_DIR

REQUEST.json: {"runs": [RUN, ...]}, each run written to OUT_DIR/<name>.safetensors. A pipeline RUN: {"name",
"pipeline": "two_stages" | "distilled" | "keyframes" | "ic_lora", "model": DIR (build_official's output), "version",
"prompt", "negative_prompt", "seed", "height", "width", "num_frames", "frame_rate", "steps", "video_guider",
"audio_guider", "images": [[path, frame, strength, crf]], "loras": [[path, strength]], "reference_video": path}.
A component RUN: {"name", "component": "schedule", "steps"} (LTX2Scheduler's sigmas), {"name", "component": "image",
"path", "height", "width", "crf"} (load_image_conditioning), {"name", "component": "constants"} (the negative
prompt and the per-version parameters, as metadata).
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).parent))

from build_official import VERSIONS, _text_config_patched  # noqa: E402

F32 = torch.float32


class Recorder:
    def __init__(self):
        self.tensors: dict[str, torch.Tensor] = {}
        self.counts: dict[str, int] = {}

    def add(self, name: str, tensor: torch.Tensor) -> None:
        n = self.counts.get(name, 0)
        self.counts[name] = n + 1
        self.tensors[f"{name}.{n}"] = tensor.detach().to("cpu").contiguous().clone()


CURRENT: list[Recorder] = []  # the run being recorded; the wrappers below are installed once per process


def record(name: str, tensor: torch.Tensor) -> None:
    if CURRENT:
        CURRENT[-1].add(name, tensor)


def _wrap_once(owner, name: str, make) -> None:
    fn = getattr(owner, name)
    if not getattr(fn, "_milimo_wrapped", False):
        wrapped = make(fn)
        wrapped._milimo_wrapped = True
        setattr(owner, name, wrapped)


def install(pipeline_module) -> None:
    from ltx_core.components import noisers
    from ltx_pipelines.utils import media_io
    from ltx_pipelines.utils.model_ledger import ModelLedger

    torch.cuda.synchronize = lambda *a, **k: None  # (1)

    def as_f32(fn):  # (2)
        def wrapped(self, *args, **kwargs):
            return fn(self, *args, **kwargs).to(F32)
        return wrapped

    for name in ("transformer", "video_decoder", "video_encoder", "text_encoder", "gemma_embeddings_processor",
                 "audio_decoder", "audio_encoder", "vocoder", "spatial_upsampler"):
        _wrap_once(ModelLedger, name, as_f32)

    def noiser(original):  # (6): the noise drawn, as drawn
        def call(self, latent_state, noise_scale=1.0):
            real_randn = torch.randn

            def recording_randn(*args, **kwargs):
                noise = real_randn(*args, **kwargs)
                record("noise", noise)
                return noise

            torch.randn = recording_randn
            try:
                result = original(self, latent_state, noise_scale)
            finally:
                torch.randn = real_randn
            record("noised", result.latent)
            record("mask", result.denoise_mask)
            return result
        return call

    _wrap_once(noisers.GaussianNoiser, "__call__", noiser)

    def force_f32(fn):  # (2)
        def wrapped(*args, **kwargs):
            if "dtype" in kwargs:
                kwargs["dtype"] = F32
            return fn(*args, **kwargs)
        return wrapped

    for name in ("combined_image_conditionings", "image_conditionings_by_adding_guiding_latent",
                 "image_conditionings_by_replacing_latent"):
        if hasattr(pipeline_module, name):
            _wrap_once(pipeline_module, name, force_f32)

    def record_denoise(fn):
        def wrapped(*args, **kwargs):
            kwargs["dtype"] = F32
            video_state, audio_state = fn(*args, **kwargs)
            record("stage.video", video_state.latent)
            record("stage.audio", audio_state.latent)
            return video_state, audio_state
        return wrapped

    _wrap_once(pipeline_module, "denoise_audio_video", record_denoise)

    def record_prompts(fn):
        def wrapped(prompts, *args, **kwargs):
            outputs = fn(prompts, *args, **kwargs)
            for i, out in enumerate(outputs):
                record(f"text{i}.video", out.video_encoding)
                if out.audio_encoding is not None:
                    record(f"text{i}.audio", out.audio_encoding)
                record(f"text{i}.mask", out.attention_mask)
            return outputs
        return wrapped

    _wrap_once(pipeline_module, "encode_prompts", record_prompts)

    def record_upsample(fn):
        def wrapped(*args, **kwargs):
            out = fn(*args, **kwargs)
            record("upsampled", out)
            return out
        return wrapped

    _wrap_once(pipeline_module, "upsample_video", record_upsample)

    def record_reference(fn):
        def wrapped(*args, **kwargs):
            for frame in fn(*args, **kwargs):
                record("reference_frame", frame)
                yield frame
        return wrapped

    _wrap_once(media_io, "decode_video_from_file", record_reference)


def build_pipeline(request: dict):
    model = Path(request["model"])
    stem = VERSIONS[request.get("version", "2.0")]["stem"]
    checkpoint = str(model / f"{stem}-dev.safetensors")
    upsampler = str(model / f"{stem}-spatial-upscaler-x2.safetensors")
    gemma = str(model / "gemma")
    distilled = str(model / f"{stem}-distilled-lora-384.safetensors")
    from ltx_core.loader import LTXV_LORA_COMFY_RENAMING_MAP, LoraPathStrengthAndSDOps

    def lora(path: str, strength: float = 1.0):
        return LoraPathStrengthAndSDOps(path, strength, LTXV_LORA_COMFY_RENAMING_MAP)

    loras = [lora(p, s) for p, s in request.get("loras", [])]
    device = torch.device("cpu")
    kind = request["pipeline"]
    if kind == "two_stages":
        from ltx_pipelines import ti2vid_two_stages as module

        pipe = module.TI2VidTwoStagesPipeline(checkpoint, [lora(distilled, request.get("distilled_strength", 1.0))],
                                              upsampler, gemma, loras, device=device)
    elif kind == "keyframes":
        from ltx_pipelines import keyframe_interpolation as module

        pipe = module.KeyframeInterpolationPipeline(
            checkpoint,
            [lora(distilled, request.get("distilled_strength", 1.0))],
            upsampler,
            gemma,
            loras,
            device=device,
        )
    elif kind == "distilled":
        from ltx_pipelines import distilled as module

        # The distilled model: the dev checkpoint with the distilled LoRA fused by ltx-core itself.
        pipe = module.DistilledPipeline(checkpoint, gemma, upsampler, [lora(distilled)] + loras, device=device)
    elif kind == "ic_lora":
        from ltx_pipelines import ic_lora as module

        pipe = module.ICLoraPipeline(checkpoint, upsampler, gemma, [lora(distilled)] + loras, device=device)
        pipe.stage_2_model_ledger = pipe.stage_2_model_ledger.with_loras((lora(distilled),))  # (4)
    else:
        raise SystemExit(f"unknown pipeline {kind!r}")
    pipe.dtype = F32  # (2)
    for name in ("stage_1_model_ledger", "stage_2_model_ledger", "model_ledger"):
        ledger = getattr(pipe, name, None)
        if ledger is not None:
            ledger.dtype = F32
    pipe.pipeline_components.dtype = F32
    return module, pipe


def guider(params: dict | None, default):
    from ltx_core.components.guiders import MultiModalGuiderParams

    if params is None:
        return default
    return MultiModalGuiderParams(**params)


def run(request: dict, out: Path) -> None:
    from ltx_pipelines.utils.args import ImageConditioningInput
    from ltx_pipelines.utils.constants import LTX_2_3_PARAMS, LTX_2_PARAMS

    recorder = Recorder()
    CURRENT[:] = [recorder]
    gemma_config = Path(request["model"]) / "gemma" / "config.json"
    with _text_config_patched(json.loads(gemma_config.read_text())), _lora_deltas(request.get("lora_delta_fp32")):
        module, pipe = build_pipeline(request)
        install(module)
        params = LTX_2_3_PARAMS if request.get("version") == "2.3" else LTX_2_PARAMS
        images = [ImageConditioningInput(p, int(f), float(s), int(c)) for p, f, s, c in request.get("images", [])]
        common = dict(
            prompt=request["prompt"],
            seed=int(request["seed"]),
            height=int(request["height"]),
            width=int(request["width"]),
            num_frames=int(request["num_frames"]),
            frame_rate=float(request["frame_rate"]),
            images=images,
        )
        kind = request["pipeline"]
        with torch.inference_mode():
            if kind in ("two_stages", "keyframes"):
                video, audio = pipe(
                    negative_prompt=request["negative_prompt"],
                    num_inference_steps=int(request["steps"]),
                    video_guider_params=guider(request.get("video_guider"), params.video_guider_params),
                    audio_guider_params=guider(request.get("audio_guider"), params.audio_guider_params),
                    **common,
                )
            elif kind == "distilled":
                video, audio = pipe(**common)
            else:
                video, audio = pipe(
                    video_conditioning=[(request["reference_video"], float(request.get("reference_strength", 1.0)))],
                    **common,
                )
            frames = torch.cat([chunk for chunk in video], dim=0)
        recorder.add("frames", frames)
        recorder.add("audio", audio.waveform)
    from safetensors.torch import save_file

    save_file(
        recorder.tensors,
        str(out),
        metadata={"sample_rate": str(audio.sampling_rate), "counts": json.dumps(recorder.counts)},
    )


class _lora_deltas:
    """(5): each LoRA delta computed from float32 copies of A and B, for one variant run."""

    def __init__(self, fp32: bool | None):
        self.fp32 = bool(fp32)

    def __enter__(self):
        from ltx_core.loader import fuse_loras
        from ltx_core.loader.primitives import LoraStateDictWithStrength, StateDict

        self.module, self.saved = fuse_loras, fuse_loras._prepare_deltas
        if not self.fp32:
            return
        original = self.saved

        def prepare(loras, key, dtype, device):
            upcast = [
                LoraStateDictWithStrength(
                    StateDict({k: v.float() for k, v in sd.sd.items()}, sd.device, sd.size, sd.dtype), coef
                )
                for sd, coef in loras
            ]
            return original(upcast, key, dtype, device)

        fuse_loras._prepare_deltas = prepare

    def __exit__(self, *exc):
        self.module._prepare_deltas = self.saved


def component(request: dict, out: Path) -> None:
    from safetensors.torch import save_file

    kind = request["component"]
    tensors: dict[str, torch.Tensor] = {"empty": torch.zeros(1)}
    metadata: dict[str, str] = {}
    if kind == "schedule":
        from ltx_core.components.schedulers import LTX2Scheduler

        tensors = {"sigmas": LTX2Scheduler().execute(steps=int(request["steps"])).float()}
    elif kind == "image":
        from ltx_pipelines.utils.media_io import load_image_conditioning

        tensors = {
            "image": load_image_conditioning(
                request["path"],
                int(request["height"]),
                int(request["width"]),
                F32,
                torch.device("cpu"),
                crf=int(request["crf"]),
            )
        }
    elif kind == "constants":
        from ltx_pipelines.utils import constants

        metadata = {
            "negative_prompt": constants.DEFAULT_NEGATIVE_PROMPT,
            "params": json.dumps(
                {
                    name: {
                        "steps": p.num_inference_steps,
                        "stg_blocks": list(p.video_guider_params.stg_blocks),
                        "audio_stg_blocks": list(p.audio_guider_params.stg_blocks),
                        "stage_2_size": [p.stage_2_width, p.stage_2_height],
                        "num_frames": p.num_frames,
                    }
                    for name, p in (("2.0", constants.LTX_2_PARAMS), ("2.3", constants.LTX_2_3_PARAMS))
                }
            ),
            "image_crf": str(constants.DEFAULT_IMAGE_CRF),
            "lora_strength": str(constants.DEFAULT_LORA_STRENGTH),
            "distilled_sigmas": json.dumps(constants.DISTILLED_SIGMA_VALUES),
            "stage_2_sigmas": json.dumps(constants.STAGE_2_DISTILLED_SIGMA_VALUES),
        }
    else:
        raise SystemExit(f"unknown component {kind!r}")
    save_file(tensors, str(out), metadata=metadata)


def main() -> None:
    request = json.loads(Path(sys.argv[1]).read_text())
    out = Path(sys.argv[2])
    out.mkdir(parents=True, exist_ok=True)
    for item in request["runs"]:
        target = out / f"{item['name']}.safetensors"
        if "component" in item:
            component(item, target)
        else:
            run(item, target)


if __name__ == "__main__":
    main()
