"""`milimo deliver`: each shot's chosen take in a delivery profile's format and names (editorial's QuickTimes, a
VFX vendor's image sequences), from the takes' masters, without rendering. No Prefect."""

from __future__ import annotations

import argparse

from milimo.context import Context

from .args import add_out, add_storyboard
from .reads import board_of, open_store


def deliver(args: argparse.Namespace, context: Context) -> int:
    from milimo.delivery import chosen_profile
    from milimo.delivery import deliver as deliver_takes

    profile = chosen_profile(context.settings.config, args.delivery)
    board = board_of(args)
    for shot_id in args.only or ():
        board.shot(shot_id)  # UnknownShot naming the storyboard's shots
    store = open_store(args, context)
    layout = context.layout()
    layout.check_claim(board.name, lambda: store.storyboard_uid(board.name))  # not into another store's folder
    rows = store.status(board.name)
    print(f"{board.name}: delivering as {args.delivery} ({profile.format}, named {profile.naming!r})")
    report = deliver_takes(layout, store, board, rows, args.delivery, profile, set(args.only or ()) or None,
                           say=lambda line: print(line, flush=True))
    without = f" ({', '.join(report.without)})" if report.without else ""
    print(f"{board.name}: {args.delivery}: {len(report.delivered)} take(s) delivered, {len(report.kept)} kept, "
          f"{len(report.without)} shot(s) without a good take{without} -> {report.folder}")
    return 0


def add(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("deliver", help="each chosen take in a delivery profile's format and names ([delivery.NAME]; "
                                       "built in: preview, editorial, vfx), without rendering")
    add_storyboard(p)
    p.add_argument("--delivery", default="editorial", metavar="NAME",
                   help="the profile: preview (H.264 mp4), editorial (ProRes 422 HQ QuickTime, the default), vfx "
                   "(PNG sequence from 1001 and a QuickTime reference), or one of milimo.toml's [delivery.NAME]")
    p.add_argument("--only", nargs="+", metavar="SHOT", help="deliver only these shots")
    add_out(p)
    p.set_defaults(func=deliver)
