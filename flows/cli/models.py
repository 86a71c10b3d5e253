"""`milimo model tiny|import|info` and `milimo demo`: model folders, and one shot straight through the engine."""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from milimo.context import Context

from .args import memory_amount, positive_int, size
from .tables import print_table

NOISE_NOTICE = ("NOTE: no --model given, so this uses the embedded tiny LTX-2 bundle with RANDOM weights. "
                "Its output is noise; it shows the pipeline works, not what LTX-2 looks like.")


def model_tiny(args: argparse.Namespace, context: Context) -> int:
    from milimo_engine import build_tiny_model

    path = build_tiny_model(args.dir, seed=args.seed, overwrite=args.force)
    print(f"wrote tiny random LTX-2 bundle to {path}")
    return 0


def model_import(args: argparse.Namespace, context: Context) -> int:
    from milimo_engine.official import import_model

    report = import_model([Path(p) for p in args.sources], Path(args.output), force=args.force,
                          model_id=args.model_id, on_step=lambda msg: print(f"  {msg}", file=sys.stderr, flush=True))
    print(f"{report.folder}: LTX-{report.version} model {report.model_id!r}, "
          f"{len(report.components)} components, {len(report.loras)} LoRA(s)")
    for note in report.notes:
        print(f"  note: {note}")
    for path, why in report.ignored:
        print(f"  ignored {path}: {why}")
    print(f"  render with --model {report.folder}; `milimo model info {report.folder}` shows its defaults")
    return 0


def model_info(args: argparse.Namespace, context: Context) -> int:
    from milimo_engine.official import model_info as info_of

    info = info_of(Path(args.dir))
    if args.json:
        print(json.dumps(info, indent=2))
        return 0
    print(f"{info['folder']}: LTX-{info['version']} {info['model_id']!r}"
          + (" (RANDOM weights)" if info["random_weights"] else "") + f", {info['bytes'] / 2**20:.1f} MiB on disk")
    rows = [(name, c["class"], c["dtype"], f"{c['bytes'] / 2**20:.1f}") for name, c in info["components"].items()]
    rows += [(rel, "LoRA", "-", f"{size / 2**20:.1f}") for rel, size in info["loras"].items()]
    print_table(("component", "class", "dtype", "MiB"), rows)
    defaults = {k: v for k, v in info["defaults"].items() if k != "negative_prompt"}
    print("defaults: " + ", ".join(f"{k}={v}" for k, v in defaults.items()))
    print(f"negative prompt: {info['defaults']['negative_prompt'][:100]}...")
    return 0


def model_plan(args: argparse.Namespace, context: Context) -> int:
    import tempfile

    from milimo_engine.limits import format_bytes
    from milimo_engine.memory import PHASES, MemoryPlanner, ShotShape, model_loras

    with tempfile.TemporaryDirectory(prefix="milimo-plan-") as scratch:
        if args.full_size:
            from milimo_engine.full_size import write_full_size_configs

            folder = write_full_size_configs(Path(scratch) / "ltx", args.full_size)
        else:
            folder = Path(args.dir)
        planner = MemoryPlanner(folder, args.dtype)
        width, height = args.size or planner.manifest.default_size
        shape = ShotShape(width, height, args.frames, rows=1 if args.draft else 4,
                          lora_files=model_loras(planner.manifest, folder, args.lora or ()),
                          temporal=args.temporal, lora_ranks=tuple(args.lora_rank or ()))
        plan = planner.plan(shape)
        capacity = args.gpu_memory
        if args.json:
            print(json.dumps({"model": str(args.full_size or folder), "dtype": plan.dtype, "width": width,
                              "height": height, "frames": args.frames, "device_memory": capacity,
                              "modes": plan.table(), "activations": dict(plan.activations),
                              "fits": [m.mode for m in plan.modes if m.fits(capacity)]}, indent=2))
            return 0
        name = f"LTX-{args.full_size} at full size (configs only)" if args.full_size else str(folder)
        print(f"{name}: {width}x{height}x{args.frames}, {plan.dtype}"
              + (f", on a device with {format_bytes(capacity)}" if capacity else ""))
        phases = [p for p in PHASES if p in plan.modes[0].phases]
        print_table(("mode", "peak", *phases, *(("fits",) if capacity else ())), [
            (m.mode, format_bytes(m.peak), *(format_bytes(m.phases[p]) for p in phases),
             *(("yes" if m.fits(capacity) else "no",) if capacity else ())) for m in plan.modes])
        weights = plan.modes[0].weights
        print("weights: " + ", ".join(f"{k} {format_bytes(v)}" for k, v in weights.items()))
        if capacity:
            chosen = plan.fitting("auto", capacity)
            print(f"auto picks: {chosen.mode}" if chosen else "fits in no mode: " + (
                f"{s[0]}x{s[1]} would ({s[2]})" if (s := planner.largest_fitting(shape, "auto", capacity))
                else "no smaller size fits either"))
    return 0


def demo(args: argparse.Namespace, context: Context) -> int:
    from milimo_engine import LoraSpec, ModelLedger, ShotRequest, TwoStagePipeline, ensure_tiny_model
    from milimo_engine.atomic import atomic_write
    from milimo_engine.media import probe
    from milimo_engine.tiny import TINY_DIR_NAME

    if args.model:
        model_dir = Path(args.model)
    else:
        print(NOISE_NOTICE, file=sys.stderr)
        model_dir = ensure_tiny_model(context.settings.models_dir / TINY_DIR_NAME)
    ledger = ModelLedger.open(model_dir, device=args.device, dtype=args.dtype)
    style = ledger.manifest.loras.get("style")
    loras = (LoraSpec(model_dir / style, 0.8),) if style and not args.model else ()
    request = ShotRequest(prompt=args.prompt, seed=args.seed, width=args.width, height=args.height,
                          num_frames=args.frames, fps=args.fps, steps=args.steps, loras=loras,
                          temporal_upsample=args.temporal)
    result = TwoStagePipeline(ledger)(request)
    out = Path(args.demo_out)
    mp4 = result.save_mp4(out / "demo.mp4")
    info = probe(mp4)
    atomic_write(out / "demo.json", json.dumps({"model_dir": str(model_dir), **result.summary(),
                                                "ledger": ledger.report()}, indent=2, default=str))
    print(f"{mp4}: {info.frames} frames at {float(info.fps):g} fps, {info.width}x{info.height}, "
          f"audio={'yes' if info.has_audio else 'no'}; total {result.timings['total']:.2f}s "
          f"(stage1 {result.timings['stage1']:.2f}s, stage2 {result.timings['stage2']:.2f}s)")
    return 0


def add(sub: argparse._SubParsersAction) -> None:
    model = sub.add_parser("model", help="model bundles")
    model_sub = model.add_subparsers(dest="model_command", required=True)
    tiny = model_sub.add_parser("tiny", help="write the tiny random LTX-2 bundle to DIR")
    tiny.add_argument("dir")
    tiny.add_argument("--seed", type=int, default=0)
    tiny.add_argument("--force", action="store_true", help="replace DIR if it exists")
    tiny.set_defaults(func=model_tiny)
    imp = model_sub.add_parser("import", help="Lightricks' files as downloaded -> a model folder (offline)")
    imp.add_argument("sources", nargs="+", metavar="SRC",
                     help="the checkpoint, upscalers, LoRAs and Gemma folder (or a folder holding them)")
    imp.add_argument("-o", "--output", required=True, metavar="DIR")
    imp.add_argument("--force", action="store_true", help="replace DIR if it exists")
    imp.add_argument("--model-id", help="the id takes and handoffs record (default: the version's, with the "
                     "checkpoint's hash)")
    imp.set_defaults(func=model_import)
    info = model_sub.add_parser("info", help="what a model folder is: version, components, dtype, size, defaults")
    info.add_argument("dir")
    info.add_argument("--json", action="store_true")
    info.set_defaults(func=model_info)
    plan = model_sub.add_parser("plan", help="the memory one shot needs on a device in each memory mode")
    which = plan.add_mutually_exclusive_group(required=True)
    which.add_argument("dir", nargs="?", help="a model folder (its configs are read; no weights load)")
    which.add_argument("--full-size", choices=("2.0",), help="the official full-size LTX-2 configuration")
    plan.add_argument("--gpu-memory", type=memory_amount, metavar="24GB", help="what the device has")
    plan.add_argument("--size", type=size, metavar="WxH", help="the final size (default: the model's)")
    plan.add_argument("--frames", type=positive_int, default=121)
    plan.add_argument("--dtype", default="bfloat16", choices=("bfloat16", "float16", "float32"))
    plan.add_argument("--draft", action="store_true", help="the unguided draft recipe (one row a step)")
    plan.add_argument("--temporal", action="store_true", help="with the temporal x2 upsampler")
    plan.add_argument("--lora", action="append", metavar="FILE", help="a LoRA the shot carries (repeat)")
    plan.add_argument("--lora-rank", action="append", type=positive_int, metavar="R",
                      help="a LoRA of rank R on every layer, planned before it is downloaded (repeat)")
    plan.add_argument("--json", action="store_true")
    plan.set_defaults(func=model_plan)

    p = sub.add_parser("demo", help="render one demo shot (tiny model unless --model)")
    p.add_argument("--model", help="model folder (diffusers LTX-2 layout + milimo-model.json)")
    p.add_argument("--out", dest="demo_out", default="renders/demo")
    p.add_argument("--prompt", default="a lighthouse on a cliff at dusk, waves crashing below")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--width", type=int, default=256)
    p.add_argument("--height", type=int, default=256)
    p.add_argument("--frames", type=int, default=25)
    p.add_argument("--fps", type=float, default=24.0)
    p.add_argument("--steps", type=int, default=40)
    p.add_argument("--temporal", action="store_true", help="temporal x2 (doubles fps)")
    p.add_argument("--device", default="cpu")
    p.add_argument("--dtype", default="float32")
    p.set_defaults(func=demo, renders=True)
