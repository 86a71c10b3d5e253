"""The dashboard's pages on a big review: 100 shots with 10 takes each, every take with a verdict and two notes
(issue 21's target: each page in under a second on this machine). Timed in-process through the app (no network),
median of `--repeats` loads after one warm-up, with the SQL statements each page sent.

    python bench/review_pages.py [--shots 100] [--takes 10] [--repeats 5]
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path

os.environ.setdefault("DO_NOT_TRACK", "1")
ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

import opentimelineio as otio  # noqa: E402
from opentimelineio.opentime import RationalTime, TimeRange  # noqa: E402


def review_board(folder: Path, shots: int, takes: int) -> tuple[str, str]:
    """(storyboard name, store URL): a cut of `shots` clips, `takes` finished takes each, each take reviewed."""
    import storyboards as sb
    from storyboards.store import ReviewState, Store

    timeline = otio.schema.Timeline("Review")
    track = otio.schema.Track("V1")
    timeline.tracks.append(track)
    for i in range(shots):
        clip = otio.schema.Clip(name=f"Shot {i}", media_reference=otio.schema.MissingReference(),
                                source_range=TimeRange(RationalTime(i * 100, 24), RationalTime(24, 24)))
        clip.metadata["milimo"] = {"prompt": f"shot {i}: harbour at night", "handoff": "previous" if i % 4 else "none"}
        track.append(clip)
    cut = folder / "review.otio"
    otio.adapters.write_to_file(timeline, str(cut))
    board = sb.load(cut)
    db = f"sqlite:///{folder / 'm.db'}"
    store = Store.open(db, root=folder)
    store.import_revision(board, sb.resolve_specs(board, "m"))
    states = (ReviewState.needs_changes, ReviewState.rejected, ReviewState.approved)
    for shot in board.shots:
        for number in range(1, takes + 1):
            take = store.start_take(board.name, shot.shot_id, requested_by="Ada")
            mp4 = folder / f"{shot.shot_id}-{number}.mp4"
            mp4.write_bytes(bytes([number]))
            store.finish_take(take, outputs={"mp4": str(mp4), "thumbnail": str(mp4), "frames": 24, "fps": 24})
            store.review_take(board.name, shot.shot_id, number, states[number % 3], "Ada", note="why")
            for frame in (3, 12):
                store.add_note(board.name, shot.shot_id, number, f"note at {frame}", "Ben", frame=frame)
    store.engine.dispose()
    return board.name, db


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--shots", type=int, default=100)
    parser.add_argument("--takes", type=int, default=10)
    parser.add_argument("--repeats", type=int, default=5)
    args = parser.parse_args()
    from fastapi.testclient import TestClient
    from sqlalchemy import Engine, event

    from dashboard import DashboardSettings, create_app
    from storyboards.store import Store

    with tempfile.TemporaryDirectory(prefix="milimo-review-") as tmp:
        folder = Path(tmp)
        t0 = time.perf_counter()
        name, db = review_board(folder, args.shots, args.takes)
        print(f"{args.shots} shots x {args.takes} takes, each reviewed with 2 notes: built in "
              f"{time.perf_counter() - t0:.1f} s")
        client = TestClient(create_app(DashboardSettings(db_url=db, out_root=folder)), base_url="http://127.0.0.1:8765")
        client.cookies.set("milimo_user", "Ada")
        shot_id = Store.open(db).status(name)[args.shots // 2].shot_id
        pages = {"index": "/", "storyboard": f"/s/{name}", "storyboard, filtered": f"/s/{name}?only=not-approved",
                 "live state (polled)": f"/api/s/{name}/state", "shot (10 takes, A/B)": f"/s/{name}/shot/{shot_id}",
                 "shot, compare 1 and 10": f"/s/{name}/shot/{shot_id}?a=1&b={args.takes}"}
        statements = [0]

        def count(*_: object) -> None:
            statements[0] += 1

        print(f"{'page':28} {'median s':>9} {'max s':>7} {'SQL':>5}  {'KiB':>6}")
        worst = 0.0
        for label, url in pages.items():
            client.get(url).raise_for_status()  # warm
            times = []
            for _ in range(args.repeats):
                statements[0] = 0
                event.listen(Engine, "before_cursor_execute", count)
                t = time.perf_counter()
                response = client.get(url)
                times.append(time.perf_counter() - t)
                event.remove(Engine, "before_cursor_execute", count)
                response.raise_for_status()
            worst = max(worst, max(times))
            print(f"{label:28} {statistics.median(times):9.3f} {max(times):7.3f} {statements[0]:5d}  "
                  f"{len(response.content) / 1024:6.0f}")
        print(f"slowest load: {worst:.3f} s (target: under 1 s)")


if __name__ == "__main__":
    main()
