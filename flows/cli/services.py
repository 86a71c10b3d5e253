"""Long-running commands: `dashboard`, `serve` (Prefect deployments), and the farm's `worker` and `farm`."""

from __future__ import annotations

import argparse
from pathlib import Path

from milimo.context import Context

from .args import add_config, add_memory_options, gpu_list, port_number, positive_float
from .tables import print_table


def dashboard(args: argparse.Namespace, context: Context) -> int:
    import uvicorn

    from dashboard import DashboardSettings, create_app
    from dashboard.security import resolve_token, served_names

    if getattr(args, "users_command", None):
        return dashboard_users(args, context)
    settings = context.settings
    section = settings.config.dashboard
    host, port = args.host or section.host, args.port or section.port
    token = resolve_token(host, section.token or settings.dashboard_token, args.token_file, section.users)
    app = create_app(DashboardSettings(db_url=settings.db_url, out_root=settings.out_root, model=settings.model,
                                       read_only=args.read_only, token=token, qa=args.qa,
                                       hosts=served_names(host, tuple(section.names)), users=dict(section.users),
                                       farm=args.farm or settings.config.farm.scheduler),
                     context)
    print(f"milimo dashboard on http://{host}:{port}/" + (" (read-only)" if args.read_only else "")
          + (" (token required)" if token or section.users else ""), flush=True)
    uvicorn.run(app, host=host, port=port, log_level="warning")
    return 0


def dashboard_users(args: argparse.Namespace, context: Context) -> int:
    """`users add NAME`: a token of their own, printed once; milimo.toml keeps its hash. `users list`: the names."""
    from dashboard.security import display_name, new_user_token, token_hash
    from milimo.config import CONFIG_NAME, with_dashboard_user
    from milimo_engine.atomic import atomic_write
    from storyboards.errors import ConfigError

    config = context.settings.config
    if args.users_command == "list":
        for person in sorted(config.dashboard.users):
            print(person)
        return 0
    name = display_name(args.name)
    if name is None:
        raise ConfigError(f"{args.name!r} is not a display name", "give 1 to 60 printable characters")
    path = config.source or Path(CONFIG_NAME)
    text = path.read_text(encoding="utf-8") if path.is_file() else ""
    token = new_user_token()
    atomic_write(path, with_dashboard_user(text, name, token_hash(token)))
    print(f"{path}: [dashboard.users] {name}: token written as its sha256; give {name} this token (shown once):")
    print(token)
    return 0


def serve(args: argparse.Namespace, context: Context) -> int:
    from flows.prefect_server import prefect_api
    from milimo.config import with_cli

    config = with_cli(context.settings.config, storyboard=args.storyboard, cron=args.cron, watch=args.watch,
                      interval_s=args.interval)
    # Ours, in a session of its own (a SIGTERM to the group leaves it answering while serve stops), with its
    # scheduler running, its output kept beside the renders. Prefect is imported inside, so that it reads the
    # server's address.
    watch = config.serve.watch
    with prefect_api(scheduler_s=min(10.0, watch.interval_s) if watch else 10.0,
                     log=context.layout().server_log()):
        from flows.serve import serve as serve_deployments

        serve_deployments(config, context.settings)
    return 0


def worker(args: argparse.Namespace, context: Context) -> int:
    from flows.farm import run_workers

    gpus = None if args.cpu else args.gpus or _all_gpus()
    return run_workers(args.scheduler, gpus, args.name, context.settings.config.engine.model_dump())


def _all_gpus() -> list[int] | None:
    import torch

    return list(range(torch.cuda.device_count())) or None


def farm(args: argparse.Namespace, context: Context) -> int:
    from flows.farm import farm_view, run_scheduler

    if args.farm_command == "scheduler":
        return run_scheduler(args.host, args.port)
    seen = farm_view(args.scheduler)
    print_table(("worker", "address", "GPU", "model", "rendering"), [
        (w.name, w.address, w.gpus, ", ".join(w.warm) + " (warm)" if w.warm else "cold", ", ".join(w.rendering) or "-")
        for w in seen.workers])
    print(f"{len(seen.workers)} worker(s); {len(seen.queued)} shot(s) queued"
          + (f": {', '.join(seen.queued)}" if seen.queued else ""))
    return 0


def add(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("dashboard", help="the web dashboard: watch, compare and pin takes, rerun, cancel")
    p.add_argument("--host", help="address to bind (default [dashboard] host, else 127.0.0.1)")
    p.add_argument("--port", type=port_number, help="port (default [dashboard] port, else 8765)")
    p.add_argument("--read-only", action="store_true", help="hide and refuse every action")
    p.add_argument("--token-file", metavar="FILE",
                   help="the token every request must carry (else MILIMO_DASHBOARD_TOKEN); needed off loopback")
    p.add_argument("--db")
    p.add_argument("--out", help="the output root the renders write to (default [paths] out, else ./renders)")
    p.add_argument("--model", help="model for renders started from the dashboard")
    p.add_argument("--farm", metavar="tcp://HOST:8786",
                   help="the farm's scheduler, whose workers the queue page lists (default [farm] scheduler)")
    add_config(p)
    p.set_defaults(func=dashboard)
    users = p.add_subparsers(dest="users_group", metavar="users")
    people = users.add_parser("users", help="each person's own token ([dashboard.users] in milimo.toml)")
    which = people.add_subparsers(dest="users_command", required=True)
    add = which.add_parser("add", help="a token for NAME, printed once; milimo.toml keeps only its hash")
    add.add_argument("name", metavar="NAME")
    add_config(add)
    listed = which.add_parser("list", help="the names that have a token")
    add_config(listed)

    p = sub.add_parser("worker", help="farm: one Dask worker per GPU (or one CPU worker) for a scheduler")
    p.add_argument("--scheduler", required=True, metavar="tcp://HOST:8786")
    which = p.add_mutually_exclusive_group()
    which.add_argument("--gpus", metavar="0,1", type=gpu_list, help="the GPUs to serve (default: every visible GPU)")
    which.add_argument("--cpu", action="store_true", help="one CPU worker (tests, a machine without GPU)")
    p.add_argument("--name", help="worker name (default: host/gpuN, host/cpu)")
    add_memory_options(p)
    add_config(p)
    p.set_defaults(func=worker)

    p = sub.add_parser("farm", help="farm: the Dask scheduler, and what the workers are doing")
    farm_sub = p.add_subparsers(dest="farm_command", required=True)
    scheduler = farm_sub.add_parser("scheduler", help="run Dask's scheduler (loopback unless --host)")
    scheduler.add_argument("--host", default="127.0.0.1", help="address to bind (default 127.0.0.1)")
    scheduler.add_argument("--port", type=int, default=8786)
    scheduler.set_defaults(func=farm)
    status = farm_sub.add_parser("status", help="workers, their GPU and what each is rendering")
    status.add_argument("--scheduler", required=True, metavar="tcp://HOST:8786")
    status.set_defaults(func=farm)

    p = sub.add_parser("serve", help="serve Prefect deployments: scheduled renders, reruns, a watched folder")
    add_config(p)
    p.add_argument("--storyboard", help="storyboard to render on --cron")
    p.add_argument("--cron", help='cron schedule for --storyboard, e.g. "0 2 * * *"')
    p.add_argument("--watch", help="folder where dropped cuts are imported and rendered")
    p.add_argument("--interval", type=positive_float, help="seconds between scans of --watch (default 30)")
    p.add_argument("--model")
    p.add_argument("--out")
    p.add_argument("--db")
    p.set_defaults(func=serve)
