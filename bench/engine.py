"""Two-stage render: our TwoStagePipeline vs diffusers' three calls, same weights, alternating runs.

diffusers' recipe: LTX2Pipeline (stage 1, half size, guided, output_type="latent") ->
LTX2LatentUpsamplePipeline -> LTX2Pipeline again with the distilled LoRA, the distilled
sigmas and noise_scale = first sigma, decoding video and audio. Both sides produce frames
and a waveform. Prints the median wall time of each and the ratio ours/diffusers (target <= 0.8);
on CUDA also the transformer's achieved TFLOP/s per stage.

    python bench/engine.py                      # tiny random bundle, CPU
    python bench/engine.py --profile bench      # larger random config
    python bench/engine.py --model DIR --device cuda --dtype bfloat16 --width 768 --height 512 --frames 121
    python bench/engine.py --chain              # shot A, then shot B continuing from A's last 9 frames
    python bench/engine.py --draft              # ours: draft (distilled, 8 unguided steps) vs final, same shot
    python bench/engine.py --fuse-distilled     # ours with opt-in speed-ups (also --attention, --compile) vs without

With --chain, ours is A (which also builds its handoff) then B taking that handoff; diffusers'
is its recipe for A, then B through LTX2ConditionPipeline with A's last 9 frames as a video
condition at frame 0 in both stages (its way of continuing a clip), B's first 9 frames dropped.
"""

from __future__ import annotations

import argparse
import statistics
import sys
import tempfile
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from milimo_engine import Guidance, ModelLedger, ShotRequest, TwoStagePipeline, build_tiny_model  # noqa: E402
from milimo_engine.manifest import DISTILLED_SIGMAS  # noqa: E402
from milimo_engine.speed import SpeedOptions  # noqa: E402


def sync(device: str) -> None:
    if device.startswith("cuda"):
        torch.cuda.synchronize()


class DiffusersRecipe:
    """diffusers' own two-stage LTX-2 recipe, on the same folder."""

    def __init__(self, model_dir: Path, device: str, dtype: torch.dtype, distilled: Path):
        from diffusers import LTX2Pipeline
        from diffusers.pipelines.ltx2 import LTX2LatentUpsamplerModel

        pipe = LTX2Pipeline.from_pretrained(model_dir, torch_dtype=dtype).to(device)
        upsampler = LTX2LatentUpsamplerModel.from_pretrained(model_dir / "latent_upsampler", torch_dtype=dtype)
        self._use(pipe, upsampler, device, distilled)

    @classmethod
    def on_ledger(cls, ledger: ModelLedger, distilled: Path) -> DiffusersRecipe:
        """The recipe on the modules a ledger holds (random weights at full size: bench/gpu.py), not read again."""
        from diffusers import FlowMatchEulerDiscreteScheduler, LTX2Pipeline

        scheduler = FlowMatchEulerDiscreteScheduler.from_pretrained(ledger.model_dir / "scheduler")
        pipe = LTX2Pipeline(scheduler=scheduler, vae=ledger.video_decoder(), audio_vae=ledger.audio_decoder(),
                            text_encoder=ledger.text_encoder(), tokenizer=ledger.tokenizer(),
                            connectors=ledger.connectors(), transformer=ledger.transformer(), vocoder=ledger.vocoder())
        recipe = cls.__new__(cls)
        recipe._use(pipe, ledger.spatial_upsampler(), str(ledger.device), distilled)
        return recipe

    def _use(self, pipe, upsampler, device: str, distilled: Path) -> None:
        from diffusers import FlowMatchEulerDiscreteScheduler, LTX2LatentUpsamplePipeline

        self.pipe = pipe
        self.pipe.set_progress_bar_config(disable=True)
        self.upsample = LTX2LatentUpsamplePipeline(vae=self.pipe.vae, latent_upsampler=upsampler).to(device)
        self.upsample.set_progress_bar_config(disable=True)
        self.pipe.load_lora_weights(str(distilled), adapter_name="distilled")
        self.stage1_scheduler = self.pipe.scheduler
        self.stage2_scheduler = FlowMatchEulerDiscreteScheduler.from_config(
            self.pipe.scheduler.config, use_dynamic_shifting=False, shift_terminal=None)

    def __call__(self, r: ShotRequest, stg_blocks: list[int], max_len: int):
        return self._two_stages(self.pipe, r, r.num_frames, stg_blocks, max_len)

    def chained(self, a: ShotRequest, b: ShotRequest, stg_blocks: list[int], max_len: int):
        """A by the recipe above, then B continuing from A's last 9 delivered frames (a video condition at frame 0
        in both stages, through LTX2ConditionPipeline), B's first 9 frames dropped."""
        from diffusers import LTX2ConditionPipeline
        from diffusers.pipelines.ltx2.pipeline_ltx2_condition import LTX2VideoCondition
        from PIL import Image

        frames_a, _ = self(a, stg_blocks, max_len)
        tail = [Image.fromarray((f * 255).round().astype("uint8")) for f in frames_a[0][-9:]]
        cond = LTX2ConditionPipeline.from_pipe(self.pipe)
        cond.set_progress_bar_config(disable=True)
        rendered = b.replace(num_frames=b.num_frames + 9).render_frames  # B plus the 9 continued frames
        condition = {"conditions": [LTX2VideoCondition(frames=tail, index=0, strength=1.0)]}
        frames_b, _ = self._two_stages(cond, b, rendered, stg_blocks, max_len, condition)
        return frames_a, frames_b[:, 9 : 9 + b.num_frames]

    def _two_stages(self, pipe, r: ShotRequest, frames: int, stg_blocks: list[int], max_len: int,
                    extra: dict | None = None):
        """Stage 1 at half size (guided, latent out), the latent upsampler, stage 2 with the distilled LoRA."""
        assert r.width is not None and r.height is not None, "a request with its size"
        g, extra = r.guidance, extra or {}
        gen = torch.Generator().manual_seed(r.seed)
        common = dict(prompt=r.prompt, num_frames=frames, frame_rate=r.fps, use_cross_timestep=True,
                      max_sequence_length=max_len, generator=gen, **extra)
        pipe.scheduler = self.stage1_scheduler
        pipe.disable_lora()
        s1 = pipe(
            negative_prompt=r.negative_prompt, height=r.height // 2, width=r.width // 2, num_inference_steps=r.steps,
            guidance_scale=g.video.cfg, audio_guidance_scale=g.audio.cfg, stg_scale=g.video.stg,
            audio_stg_scale=g.audio.stg, spatio_temporal_guidance_blocks=stg_blocks, modality_scale=g.video.modality,
            audio_modality_scale=g.audio.modality, guidance_rescale=g.video.rescale,
            audio_guidance_rescale=g.audio.rescale, output_type="latent", **common)
        up = self.upsample(latents=s1.frames, height=r.height // 2, width=r.width // 2, num_frames=frames,
                           output_type="latent", latents_normalized=False).frames
        pipe.enable_lora()
        pipe.set_adapters(["distilled"], [1.0])
        pipe.scheduler = self.stage2_scheduler
        sig = list(DISTILLED_SIGMAS[:-1])
        out = pipe(
            height=r.height, width=r.width, sigmas=sig, num_inference_steps=len(sig), latents=up,
            audio_latents=s1.audio, noise_scale=sig[0], guidance_scale=1.0, audio_guidance_scale=1.0, stg_scale=0.0,
            audio_stg_scale=0.0, modality_scale=1.0, audio_modality_scale=1.0, guidance_rescale=0.0,
            audio_guidance_rescale=0.0, spatio_temporal_guidance_blocks=None, output_type="np", **common)
        return out.frames, out.audio


def transformer_flops(ledger: ModelLedger, request: ShotRequest,
                      steps: dict[str, int] | None = None) -> dict[str, float]:
    """Transformer forward FLOPs per stage: each forward's FLOPs are counted, and each step
    callback files what was counted since the previous step under that step's stage (and counts the step in
    `steps`, when given)."""
    from torch.utils.flop_counter import FlopCounterMode

    counts = {"stage1": 0.0, "stage2": 0.0}
    steps = steps if steps is not None else {}
    pending = 0.0
    transformer = ledger.transformer()
    forward = transformer.forward

    def counted(*args, **kwargs):
        nonlocal pending
        with FlopCounterMode(display=False) as mode:
            out = forward(*args, **kwargs)
        pending += mode.get_total_flops()
        return out

    def on_step(info) -> None:
        nonlocal pending
        counts[info.stage] = counts.get(info.stage, 0.0) + pending
        steps[info.stage] = steps.get(info.stage, 0) + 1
        pending = 0.0

    transformer.forward = counted
    try:
        TwoStagePipeline(ledger, progress=False)(request, output_type="latent", callback_on_step_end=on_step)
    finally:
        transformer.forward = forward
    return counts


def draft_vs_final(ours: TwoStagePipeline, request: ShotRequest, repeats: int) -> None:
    """The wall-time ratio a director gains iterating on drafts: the same shot, both recipes, alternating."""
    draft = request.replace(quality="draft")
    ours(request), ours(draft)  # warm
    times: dict[str, list[float]] = {"final": [], "draft": []}
    for _ in range(repeats):
        for name, r in (("final", request), ("draft", draft)):
            t0 = time.perf_counter()
            ours(r)
            times[name].append(time.perf_counter() - t0)
    med = {k: statistics.median(v) for k, v in times.items()}
    print(
        f"shot: {request.width}x{request.height}, {request.num_frames} frames; final: {request.steps} guided "
        f"stage-1 steps; draft: distilled, 8 unguided; {repeats} alternating runs"
    )
    print(f"final median {med['final']:.3f}s  runs {[round(t, 3) for t in times['final']]}")
    print(f"draft median {med['draft']:.3f}s  runs {[round(t, 3) for t in times['draft']]}")
    print(f"ratio draft/final = {med['draft'] / med['final']:.3f}")


def speed_vs_eager(eager: TwoStagePipeline, model_dir: Path, args, speed: SpeedOptions, request: ShotRequest) -> None:
    """Ours with the opt-in speed-ups against ours without them (the adapter path, native SDPA, eager), alternating,
    and how far apart their latents are."""
    fast = TwoStagePipeline(ModelLedger.open(model_dir, device=args.device, dtype=args.dtype, speed=speed),
                            progress=False)
    reference, candidate = eager(request, output_type="latent"), fast(request, output_type="latent")  # warm
    error = ((candidate.latent - reference.latent).norm() / reference.latent.norm()).item()
    times, _ = alternate(lambda: fast(request), lambda: eager(request), args.repeats, args.device)
    med = {k: statistics.median(v) for k, v in times.items()}
    print(f"shot: {request.width}x{request.height}, {request.num_frames} frames, {request.steps} steps; "
          f"{args.repeats} alternating runs; options {speed}")
    print(f"with    median {med['ours']:.3f}s  runs {[round(t, 3) for t in times['ours']]}")
    print(f"without median {med['diffusers']:.3f}s  runs {[round(t, 3) for t in times['diffusers']]}")
    print(f"ratio with/without = {med['ours'] / med['diffusers']:.3f}; latents differ by {error:.2e} relative L2")


def alternate(run_ours, run_theirs, repeats: int, device: str):
    """Wall times of both sides, alternating (and our stage times), after both are warm."""
    times: dict[str, list[float]] = {"ours": [], "diffusers": []}
    stage_times: dict[str, list[float]] = {"stage1": [], "stage2": []}
    for _ in range(repeats):
        for name in ("ours", "diffusers"):
            sync(device)
            t0 = time.perf_counter()
            if name == "ours":
                result = run_ours()
                for k in stage_times:
                    stage_times[k].append(result.timings[k])
            else:
                run_theirs()
            sync(device)
            times[name].append(time.perf_counter() - t0)
    return times, stage_times


def parse_args() -> argparse.Namespace:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--model", type=Path, help="model folder; default: a random bundle built now")
    ap.add_argument("--profile", default="tiny", choices=["tiny", "bench"], help="random bundle size")
    ap.add_argument("--device", default="cpu")
    ap.add_argument("--dtype", default="float32")
    ap.add_argument("--width", type=int, default=256)
    ap.add_argument("--height", type=int, default=256)
    ap.add_argument("--frames", type=int, default=25)
    ap.add_argument("--steps", type=int, default=40)
    ap.add_argument("--repeats", type=int, default=5)
    ap.add_argument("--cfg-only", action="store_true", help="plain CFG instead of the full guidance recipe")
    ap.add_argument("--chain", action="store_true", help="time shot A then shot B continuing from A (a handoff)")
    ap.add_argument("--draft", action="store_true", help="time our draft recipe against our final one")
    ap.add_argument("--fuse-distilled", action="store_true", help="ours with the distilled LoRA fused in stage 2, "
                    "against the adapter path")
    ap.add_argument("--attention", default="native", help="ours with this attention backend, against native SDPA")
    ap.add_argument("--compile", action="store_true", help="ours with the transformer's blocks compiled, against "
                    "eager")
    return ap.parse_args()


def main() -> None:
    args = parse_args()
    torch.set_grad_enabled(False)
    model_dir = args.model or build_tiny_model(Path(tempfile.mkdtemp()) / "bundle", profile=args.profile)
    ledger = ModelLedger.open(model_dir, device=args.device, dtype=args.dtype)
    ours = TwoStagePipeline(ledger, progress=False)
    guidance = Guidance.cfg_only() if args.cfg_only else Guidance()
    request = ShotRequest(prompt="a lighthouse on a cliff at dusk, waves crashing below", negative_prompt="blurry",
                          seed=1, width=args.width, height=args.height, num_frames=args.frames, steps=args.steps,
                          guidance=guidance)
    stg_blocks = list(guidance.video.stg_blocks or ledger.manifest.stg_blocks)  # diffusers: one list, both streams
    if args.draft:
        draft_vs_final(ours, request, args.repeats)
        return
    speed = SpeedOptions(args.attention, args.compile, args.fuse_distilled)
    if speed != SpeedOptions():
        speed_vs_eager(ours, model_dir, args, speed, request)
        return
    assert ledger.manifest.distilled_lora is not None, "the bundle has its distilled LoRA"
    theirs = DiffusersRecipe(model_dir, args.device, ledger.dtype, model_dir / ledger.manifest.distilled_lora)
    max_len = ledger.manifest.max_sequence_length

    shot_b = request.replace(prompt="the lamp of the lighthouse turns, light sweeping the sea", seed=2)

    def run_ours():
        a = ours(request)
        if args.chain:
            b = ours(shot_b.replace(handoff=a.handoff))  # B's own handoff is lazy: nobody asks, nobody pays
            assert b.frames.shape[0] == shot_b.num_frames
        return a

    def run_theirs():
        if args.chain:
            _, b = theirs.chained(request, shot_b, stg_blocks, max_len)
            assert b.shape[1] == shot_b.num_frames
        else:
            theirs(request, stg_blocks, max_len)

    run_ours()  # warm both (weights loaded, kernels chosen) before timing
    run_theirs()
    times, stage_times = alternate(run_ours, run_theirs, args.repeats, args.device)
    report(args, ledger, model_dir, request, times, stage_times)


def report(args, ledger: ModelLedger, model_dir: Path, request: ShotRequest, times, stage_times) -> None:
    med = {k: statistics.median(v) for k, v in times.items()}
    print(
        f"model: {ledger.model_id} ({model_dir}) device={args.device} dtype={args.dtype} "
        f"torch={torch.__version__} threads={torch.get_num_threads()}"
    )
    print(
        f"shot: {args.width}x{args.height}, {args.frames} frames, stage1 {args.steps} steps "
        f"({'cfg only' if args.cfg_only else 'cfg+stg+modality'}), stage2 {len(DISTILLED_SIGMAS) - 1} steps; "
        f"{args.repeats} alternating runs{'; chained A -> B (B continues from A)' if args.chain else ''}"
    )
    print(f"ours      median {med['ours']:.3f}s  runs {[round(t, 3) for t in times['ours']]}")
    print(f"diffusers median {med['diffusers']:.3f}s  runs {[round(t, 3) for t in times['diffusers']]}")
    print(f"ratio ours/diffusers = {med['ours'] / med['diffusers']:.3f}  (target <= 0.8)")
    if args.device.startswith("cuda"):
        flops = transformer_flops(ledger, request)
        for stage in ("stage1", "stage2"):
            seconds = statistics.median(stage_times[stage])
            print(
                f"{stage}: {flops[stage] / 1e12:.2f} TFLOP in {seconds:.3f}s = {flops[stage] / seconds / 1e12:.1f} "
                "TFLOP/s (transformer forward, stage wall time)"
            )


if __name__ == "__main__":
    main()
