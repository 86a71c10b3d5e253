"""LTX-2 on a GPU at full size: wall time per stage, peak memory against the planner's, transformer TFLOP/s and MFU,
in every memory mode the GPU fits, and ours against diffusers' own recipe on the same weights.

The weights are random bf16 at the official configuration (`milimo_engine.full_size`: the 19B transformer,
Gemma 3 12B, the VAEs, upsampler, vocoder, and a random rank-384 distilled LoRA), built on the device through
the real model classes (`ModelLedger.with_random_weights`), so nothing is downloaded and 70 GiB of safetensors are
never written. Two shots, as the official recipes render them:

- `distilled`: 768x512x121, the distilled recipe (8 unguided steps at 384x256, x2, 3 distilled steps);
- `two-stage`: 1536x1024x121, the guided two-stage recipe (stage 1 at 768x512 with cfg + STG + modality
  isolation, 4 rows a step; x2; stage 2 distilled), `--steps` stage-1 steps (default 10; the official 40 takes
  4x the stage-1 time, which the per-step column gives).

    python bench/gpu.py                         # a GPU machine: prints the table, writes bench-gpu.json
    python bench/gpu.py --dry-run               # CPU: the tiny configuration, the same code path (make test runs it)
    make gpu-bench                              # a bare GPU machine with PyPI: a CUDA torch venv, then the above

On a lent H200 (no network there: diffusers and av travel as wheels, `make gpu-wheels` fetches them into .whl):
    python3 -m pip install -q --no-index --no-deps --target /tmp/site .whl/*.whl && \\
        PYTHONPATH=/tmp/site:. python3 bench/gpu.py --json $OUT/gpu.json
MFU is against the GPU's dense bf16 peak (989 TFLOP/s for H100 and H200). The budget: under 8 minutes on an H200.
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import tempfile
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from bench.engine import DiffusersRecipe, sync, transformer_flops  # noqa: E402
from milimo_engine import ModelLedger, ShotRequest, TwoStagePipeline, build_tiny_model  # noqa: E402
from milimo_engine.limits import GIB, MEMORY_MODES, format_bytes  # noqa: E402
from milimo_engine.memory import MemoryPlanner, ShotShape, model_loras  # noqa: E402

DENSE_BF16_TFLOPS = {"H100": 989.0, "H200": 989.0}
PROMPT = "a lighthouse on a cliff at dusk, waves crashing below, the lamp turning"


@dataclass(frozen=True)
class Case:
    name: str
    width: int
    height: int
    frames: int
    quality: str  # "draft": the distilled recipe; "final": the guided two-stage one


FULL_CASES = (Case("distilled", 768, 512, 121, "draft"), Case("two-stage", 1536, 1024, 121, "final"))
DRY_CASES = (Case("distilled", 256, 256, 25, "draft"), Case("two-stage", 256, 256, 25, "final"))


@dataclass
class Row:
    case: str
    mode: str
    seconds: dict[str, float]  # per stage (the pipeline's own timings), and "total"
    step_seconds: dict[str, float]  # median per step, per denoising stage
    peak_bytes: int | None  # torch.cuda.max_memory_allocated over the timed run (None on CPU)
    planned_bytes: int
    tflops: dict[str, float] = field(default_factory=dict)  # transformer TFLOP/s per denoising stage
    mfu: dict[str, float] = field(default_factory=dict)


def parse_args() -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--dry-run", action="store_true", help="CPU, the tiny configuration: the same code path")
    p.add_argument("--steps", type=int, help="stage-1 steps of the two-stage shot (default 10 to fit the 8-minute "
                   "budget; the official 40 takes 4x the stage-1 column; dry run 2)")
    p.add_argument("--modes", nargs="+", choices=MEMORY_MODES, help="default: every mode the device fits")
    p.add_argument("--lora-rank", type=int, default=384, help="the random distilled LoRA's rank (full size)")
    p.add_argument("--no-diffusers", action="store_true", help="skip diffusers' recipe")
    p.add_argument("--json", default="bench-gpu.json", metavar="FILE")
    return p.parse_args()


def model_folder(args: argparse.Namespace, scratch: Path, device: str) -> Path:
    """The tiny bundle (dry run), or the full-size configs with the tiny bundle's tokenizer and scheduler and a random
    distilled LoRA of `--lora-rank` drawn on the device."""
    tiny = build_tiny_model(scratch / "tiny", seed=0)
    if args.dry_run:
        return tiny
    from safetensors.torch import save_file

    from milimo_engine.full_size import write_full_size_configs
    from milimo_engine.tiny import random_lora_state_dict

    folder = write_full_size_configs(scratch / "ltx2", tokenizer_from=tiny)
    meta = MemoryPlanner(folder, "bfloat16")._meta("transformer")
    lora = random_lora_state_dict(meta, rank=args.lora_rank, seed=0, scale=0.01, key_format="ltx", device=device,
                                  dtype=torch.bfloat16)
    path = folder / "loras" / "ltx-2-distilled-lora.safetensors"
    save_file({k: v.cpu() for k, v in lora.items()}, str(path))
    del lora
    return folder


def step_timer(device: str):
    """A step callback that times each step, by stage."""
    times: dict[str, list[float]] = {}
    last = [time.perf_counter()]

    def on_step(info) -> None:
        sync(device)
        now = time.perf_counter()
        times.setdefault(info.stage, []).append(now - last[0])
        last[0] = now

    def reset() -> None:
        last[0] = time.perf_counter()

    return on_step, times, reset


def run_case(case: Case, mode: str, folder: Path, device: str, dtype: torch.dtype, steps: int,
             flops_per_step: dict[str, float] | None, peak_tflops: float | None) -> tuple[Row, ModelLedger]:
    ledger = ModelLedger.with_random_weights(folder, device, dtype, memory_mode=mode)  # type: ignore[arg-type]
    request = ShotRequest(prompt=PROMPT, seed=1, width=case.width, height=case.height, num_frames=case.frames,
                          steps=steps, quality=case.quality)
    plan = ledger.fit(request, mode, None)
    pipe = TwoStagePipeline(ledger, progress=False)
    pipe(request.replace(num_frames=9, steps=1), output_type="latent")  # warm: weights built, kernels chosen
    if device.startswith("cuda"):
        torch.cuda.reset_peak_memory_stats()
    on_step, times, reset = step_timer(device)
    sync(device)
    reset()
    result = pipe(request, output_type="np", callback_on_step_end=on_step)
    sync(device)
    seconds = {k: round(v, 3) for k, v in result.timings.items()}
    per_step = {stage: statistics.median(ts) for stage, ts in times.items()}
    row = Row(case.name, mode, seconds, {k: round(v, 4) for k, v in per_step.items()},
              torch.cuda.max_memory_allocated() if device.startswith("cuda") else None, plan.peak)
    for stage, flops in (flops_per_step or {}).items():
        if stage in per_step and per_step[stage] > 0:
            row.tflops[stage] = float(f"{flops / per_step[stage] / 1e12:.3g}")
            if peak_tflops:
                row.mfu[stage] = round(row.tflops[stage] / peak_tflops, 3)
    return row, ledger


def count_flops(case: Case, folder: Path, device: str, dtype: torch.dtype) -> dict[str, float]:
    """Transformer FLOPs of one step of each denoising stage (a 2-step render counted, then divided)."""
    ledger = ModelLedger.with_random_weights(folder, device, dtype)
    request = ShotRequest(prompt=PROMPT, seed=1, width=case.width, height=case.height, num_frames=case.frames,
                          steps=2, quality=case.quality)
    steps: dict[str, int] = {}
    totals = transformer_flops(ledger, request, steps)
    ledger.close()
    return {stage: totals[stage] / n for stage, n in steps.items() if n}


def diffusers_row(case: Case, ledger: ModelLedger, device: str, steps: int) -> dict[str, float]:
    """diffusers' recipe (bench/engine.py) on the ledger's own modules, same shot: its wall time."""
    distilled = ledger.model_dir / str(ledger.manifest.distilled_lora)
    theirs = DiffusersRecipe.on_ledger(ledger, distilled)
    request = ShotRequest(prompt=PROMPT, negative_prompt="blurry", seed=1, width=case.width, height=case.height,
                          num_frames=case.frames, steps=steps)
    stg = list(ledger.manifest.stg_blocks)
    theirs(request.replace(num_frames=9, steps=1), stg, ledger.manifest.max_sequence_length)  # warm
    sync(device)
    t0 = time.perf_counter()
    theirs(request, stg, ledger.manifest.max_sequence_length)
    sync(device)
    return {"total": round(time.perf_counter() - t0, 3)}


def main() -> int:
    args = parse_args()
    torch.set_grad_enabled(False)
    if not args.dry_run and not torch.cuda.is_available():
        print("bench/gpu.py: no CUDA device here. Fix: run it on a GPU machine, or `--dry-run` for the CPU check",
              file=sys.stderr)
        return 2
    device = "cpu" if args.dry_run else "cuda"
    dtype = torch.float32 if args.dry_run else torch.bfloat16
    steps = args.steps or (2 if args.dry_run else 10)
    name = "cpu" if args.dry_run else torch.cuda.get_device_name(0)
    peak = next((v for k, v in DENSE_BF16_TFLOPS.items() if k in name), None)
    capacity = torch.cuda.mem_get_info()[1] if device == "cuda" else None
    report: dict = {"device": name, "torch": torch.__version__, "dtype": str(dtype).removeprefix("torch."),
                    "steps": steps, "capacity_bytes": capacity, "peak_tflops": peak, "rows": [], "diffusers": {}}
    t_start = time.perf_counter()
    with tempfile.TemporaryDirectory(prefix="milimo-gpu-") as scratch:
        folder = model_folder(args, Path(scratch), device)
        planner = MemoryPlanner(folder, dtype)
        for case in DRY_CASES if args.dry_run else FULL_CASES:
            shape = ShotShape(case.width, case.height, case.frames, rows=1 if case.quality == "draft" else 4,
                              lora_files=model_loras(planner.manifest, folder))
            plan = planner.plan(shape)
            modes = [m for m in (args.modes or MEMORY_MODES) if plan.mode(m).fits(capacity)]
            flops = count_flops(case, folder, device, dtype)
            for mode in modes:
                row, ledger = run_case(case, mode, folder, device, dtype, steps, flops, peak)
                report["rows"].append(asdict(row))
                print(f"  {case.name} {mode}: {row.seconds.get('total', 0):.2f}s", file=sys.stderr, flush=True)
                if mode == "resident" and case.quality == "final" and not args.no_diffusers:
                    report["diffusers"][case.name] = diffusers_row(case, ledger, device, steps)
                ledger.close()
                del ledger
                if device == "cuda":
                    torch.cuda.empty_cache()
    report["seconds"] = round(time.perf_counter() - t_start, 1)
    print_table(report)
    Path(args.json).write_text(json.dumps(report, indent=2))
    print(f"wrote {args.json}")
    return 0


def print_table(report: dict) -> None:
    print(f"{report['device']}, torch {report['torch']}, {report['dtype']}, stage-1 steps {report['steps']}, "
          f"{report['seconds']}s in all")
    head = ("shot", "mode", "total s", "stage1 s", "stage2 s", "s/step 1", "s/step 2", "peak", "planned",
            "TFLOP/s 1", "TFLOP/s 2", "MFU 1", "MFU 2")
    print(" | ".join(head))
    for r in report["rows"]:
        measured = format_bytes(r["peak_bytes"]) if r["peak_bytes"] is not None else "-"
        print(" | ".join(str(c) for c in (
            r["case"], r["mode"], r["seconds"].get("total"), r["seconds"].get("stage1"), r["seconds"].get("stage2"),
            r["step_seconds"].get("stage1"), r["step_seconds"].get("stage2"), measured,
            format_bytes(r["planned_bytes"]), r["tflops"].get("stage1", "-"), r["tflops"].get("stage2", "-"),
            r["mfu"].get("stage1", "-"), r["mfu"].get("stage2", "-"))))
    for case, theirs in report["diffusers"].items():
        ours = next(r for r in report["rows"] if r["case"] == case and r["mode"] == "resident")
        print(f"{case}: ours {ours['seconds']['total']}s, diffusers {theirs['total']}s, "
              f"ratio {ours['seconds']['total'] / theirs['total']:.3f}")
    if report["capacity_bytes"]:
        print(f"device memory {report['capacity_bytes'] / GIB:.1f} GiB")


if __name__ == "__main__":
    raise SystemExit(main())
