"""The options commands share, and what they become: the process's `Settings` and a `RenderRequest`."""

from __future__ import annotations

import argparse
import os
from pathlib import Path
from typing import Any

from pydantic import ValidationError

from milimo import settings as settings_module
from milimo.context import Context
from milimo.request import RenderRequest
from milimo.settings import Settings
from storyboards.errors import ConfigError


def add_config(p: argparse.ArgumentParser) -> None:
    p.add_argument("--config", metavar="FILE", help="milimo.toml (default: $MILIMO_CONFIG, else ./milimo.toml)")


def add_cut_options(p: argparse.ArgumentParser) -> None:
    p.add_argument("--rate", type=positive_float, metavar="FPS",
                   help="frame rate of an EDL's timecodes (EDLs carry none; default: [rates] edl, else 24)")
    p.add_argument("--shots-track", metavar="NAME",
                   help="the video track whose clips are the shots (default: [cuts] shots_track, else the first)")
    p.add_argument("--max-shot-frames", type=positive_int, metavar="N",
                   help="refuse shots longer than N frames (default: [cuts] max_shot_frames, else any length: a "
                   "long shot renders as chained segments)")
    add_config(p)


def add_storyboard(p: argparse.ArgumentParser) -> None:
    p.add_argument("storyboard", help=".otio, .otioz, FCP XML, EDL or AAF")
    add_cut_options(p)
    p.add_argument("--prompts", metavar="CSV", help="the shot list that makes an editor's cut a storyboard")
    p.add_argument("--size", type=size, metavar="WxH", help="with --prompts: the shots' size, e.g. 768x512")
    p.add_argument("--handles", type=handle_frames, metavar="N",
                   help="with --prompts: frames each take renders before and after its cut, for dissolves, trims "
                   "and slips (default: [cuts] handles, else 8; a shot list's handles column sets one shot's)")
    p.add_argument("--asset-root", action="append", metavar="DIR",
                   help="where storyboard paths may point (repeat; default: [paths] asset_roots, else its folder)")
    p.add_argument("--db", help="store URL (default: [paths] db, MILIMO_DB_URL or sqlite:///renders/milimo.db)")


def add_out(p: argparse.ArgumentParser) -> None:
    p.add_argument("--out", help="the output root the takes were written to (default: [paths] out, else ./renders); "
                   "a moved project's new place")


def add_render_options(p: argparse.ArgumentParser) -> None:
    add_storyboard(p)
    p.add_argument("--model", help="model folder, or Lightricks' files (default: the embedded tiny random bundle)")
    p.add_argument("--out", help="output root (default: ./renders)")
    p.add_argument("--device", action="append",
                   help="device for the GPU pool (repeat; default: every visible GPU, or cpu)")
    p.add_argument("--time-limit", type=positive_float, help="per-shot limit in seconds, checked between steps")
    p.add_argument("--delivery", action="append", metavar="NAME",
                   help="after the render, deliver the chosen takes in this profile too (repeat; see `milimo deliver`)")
    p.add_argument("--by", metavar="NAME", help="who asks for the render, as each take records it "
                   "(default: $MILIMO_USER, else your login name)")
    p.add_argument("--farm", metavar="tcp://HOST:8786",
                   help="render on a Dask farm (default: [farm] scheduler in milimo.toml, else this host)")
    p.add_argument("--draft", action="store_true",
                   help="this run renders every shot on the fast draft recipe (its own takes, beside the finals)")
    add_memory_options(p)


def add_memory_options(p: argparse.ArgumentParser) -> None:
    from milimo_engine.limits import MEMORY_MODE_CHOICES

    p.add_argument("--memory-mode", choices=MEMORY_MODE_CHOICES,
                   help="how each shot's weights sit on its device: resident, release, fp8 or stream; auto (the "
                   "default, else [engine] memory_mode) picks the fastest that fits (see `milimo model plan`)")
    p.add_argument("--device-memory", type=memory_amount, metavar="24GB",
                   help="what each device has for a render (default: [engine] device_memory, else what it reports "
                   "free); the planner fits every shot to it")
    p.add_argument("--attention", metavar="BACKEND", help="diffusers' attention backend for the transformer: native "
                   "(torch SDPA, the default), flash, _flash_3, sage, flex (where installed)")
    p.add_argument("--compile", action="store_true", default=None,
                   help="torch.compile the transformer's repeated blocks (slower first shot)")
    p.add_argument("--fuse-distilled", action="store_true", default=None,
                   help="stage 2 with the distilled LoRA fused into the weights, as official (numerics differ "
                   "slightly; the base weights are restored exactly after)")


def memory_amount(text: str) -> int:
    from milimo_engine.limits import parse_bytes

    try:
        value = parse_bytes(text)
    except ValueError as exc:
        raise argparse.ArgumentTypeError(str(exc)) from None
    if value <= 0:
        raise argparse.ArgumentTypeError(f"{text!r} is not above 0")
    return value


def gpu_list(text: str) -> list[int]:
    parts = [p.strip() for p in text.split(",")]
    if not parts or not all(p.isascii() and p.isdigit() for p in parts):
        raise argparse.ArgumentTypeError(f"{text!r} is not a list of GPU indices, e.g. 0,1")
    return [int(p) for p in parts]


def _whole(text: str, low: int, high: int | None = None) -> int | None:
    """`text` as a whole number from `low` to `high`, or None: ASCII digits only ("5²" is a digit, not a number)."""
    if not (text.isascii() and text.isdigit()) or int(text) < low or (high is not None and int(text) > high):
        return None
    return int(text)


def port_number(text: str) -> int:
    value = _whole(text, 1, 65535)
    if value is None:
        raise argparse.ArgumentTypeError(f"{text!r} is not a TCP port; give one from 1 to 65535, e.g. 8765")
    return value


def size(text: str) -> tuple[int, int]:
    from storyboards.fields import check

    width, sep, height = text.lower().partition("x")
    if not sep or not (width + height).isascii() or not width.strip().isdigit() or not height.strip().isdigit():
        raise argparse.ArgumentTypeError(f"{text!r} is not WIDTHxHEIGHT, e.g. 768x512")
    for key, value in (("width", int(width)), ("height", int(height))):
        wrong = check(key, value)
        if wrong:
            raise argparse.ArgumentTypeError(f"{key} {wrong[0]}; {wrong[1]}")
    return int(width), int(height)


def handle_frames(text: str) -> int:
    from milimo_engine.limits import MAX_HANDLES

    value = _whole(text, 0, MAX_HANDLES)
    if value is None:
        raise argparse.ArgumentTypeError(f"{text!r} is not a number of frames from 0 to {MAX_HANDLES}")
    return value


def positive_int(text: str) -> int:
    value = _whole(text, 1)
    if value is None:
        raise argparse.ArgumentTypeError(f"{text!r} is not a whole number above 0")
    return value


def positive_float(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a number") from None
    if not value > 0 or value != value:
        raise argparse.ArgumentTypeError(f"{text!r} is not above 0")
    return value


def apply_config(args: argparse.Namespace) -> Context:
    """Settings, read once: milimo.toml under the command line (an option given wins, the file fills what is
    left), the environment under both; installed as this process's, and its context returned."""
    settings = Settings.load(getattr(args, "config", None), db_url=getattr(args, "db", None),
                             out_root=getattr(args, "out", None), model=getattr(args, "model", None),
                             user=getattr(args, "by", None),
                             asset_roots=tuple(Path(r) for r in args.asset_root) if getattr(args, "asset_root", None)
                             else None)
    engine = {k: v for k in ("memory_mode", "device_memory", "attention", "compile", "fuse_distilled")
              if (v := getattr(args, k, None)) is not None}
    if engine:  # the command line over [engine]: one place the render, its flow and a farm worker read
        try:
            settings = settings.model_copy(update={"config": settings.config.with_engine(engine)})
        except ValidationError as exc:
            problem = exc.errors()[0]
            raise ConfigError(f"--{str(problem['loc'][0]).replace('_', '-')}: {problem['msg']}",
                              "see `milimo render --help`") from None
    settings_module.install(settings)
    config = settings.config
    args.config_loaded, args.qa = config, config.qa
    if hasattr(args, "farm") and not args.farm and config.farm.scheduler:
        args.farm = config.farm.scheduler
    # The farm's Prefect server, for a render on the farm and for its workers (PREFECT_API_URL, when set, wins).
    if config.farm.prefect_api_url and not os.environ.get("PREFECT_API_URL") and (
            getattr(args, "farm", None) or args.command == "worker"):
        os.environ["PREFECT_API_URL"] = config.farm.prefect_api_url
    cut = getattr(args, "storyboard", None) or getattr(args, "cut", None)
    if hasattr(args, "rate") and not args.rate and config.rates.edl and str(cut or "").lower().endswith(".edl"):
        args.rate = config.rates.edl
    for option in ("shots_track", "max_shot_frames", "handles"):
        if hasattr(args, option) and getattr(args, option) is None:
            setattr(args, option, getattr(config.cuts, option))
    return Context(settings)


def render_request(args: argparse.Namespace, context: Context, **fields: Any) -> RenderRequest:
    """The request the render flags ask for (the settings fill model, out, store and asset roots)."""
    settings = context.settings
    return RenderRequest(
        storyboard=args.storyboard, prompts=args.prompts, size=args.size, rate=args.rate,
        shots_track=args.shots_track, max_shot_frames=args.max_shot_frames, handles=args.handles,
        draft=getattr(args, "draft", False),
        model=settings.model, out=str(settings.out_root), db=settings.db_url,
        devices=getattr(args, "device", None) or None, time_limit_s=getattr(args, "time_limit", None),
        asset_roots=[str(r) for r in settings.asset_roots] or None, qa=args.qa,
        farm=getattr(args, "farm", None), requested_by=settings.user,
        deliveries=getattr(args, "delivery", None) or None, **fields)
