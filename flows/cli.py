"""The `milimo` command line. It starts small: the demo render and the tiny model bundle.

Exit codes: 0 done, 2 invalid input (message on stderr, no traceback), 1 a render failed.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from pathlib import Path

os.environ.setdefault("DO_NOT_TRACK", "1")
os.environ.setdefault("PREFECT_SERVER_ANALYTICS_ENABLED", "false")
os.environ.setdefault("HF_HUB_OFFLINE", "1")

NOISE_NOTICE = ("NOTE: no --model given, so this uses the embedded tiny LTX-2 bundle with RANDOM weights. "
                "Its output is noise; it shows the pipeline works, not what LTX-2 looks like.")


def _model_tiny(args: argparse.Namespace) -> int:
    from milimo_engine import build_tiny_model

    path = build_tiny_model(args.dir, seed=args.seed, overwrite=args.force)
    print(f"wrote tiny random LTX-2 bundle to {path}")
    return 0


def _demo(args: argparse.Namespace) -> int:
    from milimo_engine import LoraSpec, ModelLedger, ShotRequest, TwoStagePipeline, ensure_tiny_model
    from milimo_engine.media import probe

    if args.model:
        model_dir = Path(args.model)
    else:
        print(NOISE_NOTICE, file=sys.stderr)
        model_dir = ensure_tiny_model()
    ledger = ModelLedger.open(model_dir, device=args.device, dtype=args.dtype)
    loras = ()
    style = ledger.manifest.loras.get("style")
    if style and not args.model:
        loras = (LoraSpec(model_dir / style, 0.8),)
    request = ShotRequest(prompt=args.prompt, seed=args.seed, width=args.width, height=args.height,
                          num_frames=args.frames, fps=args.fps, steps=args.steps, loras=loras,
                          temporal_upsample=args.temporal)
    result = TwoStagePipeline(ledger)(request)
    out = Path(args.out)
    mp4 = result.save_mp4(out / "demo.mp4")
    info = probe(mp4)
    (out / "demo.json").write_text(json.dumps({"model_dir": str(model_dir), **result.summary(),
                                               "ledger": ledger.report()}, indent=2, default=str))
    print(f"{mp4}: {info.frames} frames at {float(info.fps):g} fps, {info.width}x{info.height}, "
          f"audio={'yes' if info.has_audio else 'no'}; total {result.timings['total']:.2f}s "
          f"(stage1 {result.timings['stage1']:.2f}s, stage2 {result.timings['stage2']:.2f}s)")
    return 0


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="milimo", description="Milimo: LTX-2 render pipeline")
    sub = parser.add_subparsers(dest="command", required=True)

    model = sub.add_parser("model", help="model bundles")
    model_sub = model.add_subparsers(dest="model_command", required=True)
    tiny = model_sub.add_parser("tiny", help="write the tiny random LTX-2 bundle to DIR")
    tiny.add_argument("dir")
    tiny.add_argument("--seed", type=int, default=0)
    tiny.add_argument("--force", action="store_true", help="replace DIR if it exists")
    tiny.set_defaults(func=_model_tiny)

    demo = sub.add_parser("demo", help="render one demo shot (tiny model unless --model)")
    demo.add_argument("--model", help="model folder (diffusers LTX-2 layout + milimo-model.json)")
    demo.add_argument("--out", default="renders/demo")
    demo.add_argument("--prompt", default="a lighthouse on a cliff at dusk, waves crashing below")
    demo.add_argument("--seed", type=int, default=0)
    demo.add_argument("--width", type=int, default=256)
    demo.add_argument("--height", type=int, default=256)
    demo.add_argument("--frames", type=int, default=25)
    demo.add_argument("--fps", type=float, default=24.0)
    demo.add_argument("--steps", type=int, default=40)
    demo.add_argument("--temporal", action="store_true", help="temporal x2 (doubles fps)")
    demo.add_argument("--device", default="cpu")
    demo.add_argument("--dtype", default="float32")
    demo.set_defaults(func=_demo)
    return parser


def main(argv: list[str] | None = None) -> int:
    from milimo_engine.errors import InvalidRequestError, MissingComponentError

    args = build_parser().parse_args(argv)
    try:
        return args.func(args)
    except (InvalidRequestError, MissingComponentError, FileExistsError) as exc:
        print(f"milimo: invalid input: {exc}", file=sys.stderr)
        return 2
    except Exception as exc:  # noqa: BLE001 - the CLI reports, the traceback goes to --debug later
        print(f"milimo: render failed: {type(exc).__name__}: {exc}", file=sys.stderr)
        return 1


if __name__ == "__main__":
    sys.exit(main())
