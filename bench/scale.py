"""Scale: a generated cut of 100 / 1,000 / 5,000 shots through what a turnover runs, timed, with the growth
from one size to the next (issue 23's targets: every command on 5,000 shots within 10 s except the preview,
1,000 -> 5,000 at most 6x, the preview's peak memory flat in the shot count).

Commands run as a user runs them (`milimo prompts`, `import`, `validate`, `conform`, `status`, `verify`, each a
process of its own, start-up included); the store's import and the plan, the dashboard's storyboard page and the
preview of slates are timed in-process (a child process for the preview, so its peak memory is its own). Every
shot has one finished take (one small shared mp4), so conform, status and the page read real rows.

    python bench/scale.py [--sizes 100,1000,5000] [--preview-max 1000]
"""

from __future__ import annotations

import argparse
import csv
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

os.environ.setdefault("DO_NOT_TRACK", "1")
os.environ.setdefault("PREFECT_SERVER_ANALYTICS_ENABLED", "false")
ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

import opentimelineio as otio  # noqa: E402

FPS = 24


def cut_edl(shots: int) -> str:
    """A CMX 3600 cut of `shots` events, 24 to 47 frames each, one after another from 01:00:00:00."""
    lines = [f"TITLE: SCALE {shots}", "FCM: NON-DROP FRAME", ""]
    record = 3600 * FPS
    for i in range(shots):
        frames = 24 + (i * 7) % 24
        source = (10 * 3600 + i * 10) * FPS

        def tc(frame: int) -> str:
            return otio.opentime.to_timecode(otio.opentime.RationalTime(frame, FPS), FPS)

        lines += [f"{i + 1:06d}  A{i % 9999:04d}    V     C        {tc(source)} {tc(source + frames)} "
                  f"{tc(record)} {tc(record + frames)}", f"* FROM CLIP NAME: shot {i + 1}"]
        record += frames
    return "\n".join(lines) + "\n"


def milimo(*args: object) -> float:
    t0 = time.perf_counter()
    proc = subprocess.run([sys.executable, "-m", "flows.cli", *map(str, args)], cwd=ROOT, capture_output=True,
                          text=True)
    if proc.returncode != 0:
        raise SystemExit(f"milimo {' '.join(map(str, args))} failed ({proc.returncode}): {proc.stderr[-2000:]}")
    return time.perf_counter() - t0


def fill_prompts(sheet: Path) -> None:
    with open(sheet, encoding="utf-8-sig", newline="") as fh:
        rows = list(csv.DictReader(fh))
    for i, row in enumerate(rows):
        row["prompt"] = f"shot {i + 1}: a harbour at dawn, boats at anchor"
    with open(sheet, "w", encoding="utf-8-sig", newline="") as fh:
        writer = csv.DictWriter(fh, fieldnames=list(rows[0]))
        writer.writeheader()
        writer.writerows(rows)


def timed(work) -> float:
    t0 = time.perf_counter()
    work()
    return time.perf_counter() - t0


def record_takes(db: str, board, media: Path) -> None:
    """One finished take per shot, written in bulk (the bench's set-up, not what it times)."""
    from sqlalchemy import insert, select, update

    from storyboards.store import Store
    from storyboards.store.models import ShotRow, StoryboardRow, TakeRow, TakeStatus

    store = Store.open(db)
    with store.session.begin() as s:
        shots = list(s.execute(select(ShotRow.id, ShotRow.spec_hash).join(StoryboardRow)
                               .where(StoryboardRow.name == board.name)))
        s.execute(insert(TakeRow), [{"shot_pk": pk, "number": 1, "status": TakeStatus.succeeded, "spec_hash": spec,
                                     "outputs": {"mp4": str(media), "frames": 24, "fps": FPS}} for pk, spec in shots])
        for take_id, shot_pk in s.execute(select(TakeRow.id, TakeRow.shot_pk)):
            s.execute(update(ShotRow).where(ShotRow.id == shot_pk).values(current_take_id=take_id))
    store.engine.dispose()


PREVIEW = """
import resource, sys, time
sys.path.insert(0, {root!r})
import storyboards
from milimo.preview import preview
from storyboards.paths import OutputLayout
from storyboards.store import Store
board = storyboards.load({board!r})
store = Store.open({db!r})
rows = store.status(board.name)
rows = rows[:1] + [r.__class__(**{{**r.__dict__, "status": "not rendered"}}) for r in rows[1:]]
t0 = time.perf_counter()
preview(OutputLayout.at({out!r}), board, rows)
seconds = time.perf_counter() - t0
child = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss
me = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
print(seconds, child, me)
"""


def preview_of_slates(board_path: Path, db: str, out: Path) -> tuple[float, int, int]:
    """The preview with one good take and a slate for every other shot: (seconds, ffmpeg's peak RSS in KiB, this
    Python's peak RSS in KiB), in a child process so that each size's peak is its own."""
    code = PREVIEW.format(root=str(ROOT), board=str(board_path), db=db, out=str(out))
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=ROOT)
    if proc.returncode != 0:
        raise SystemExit(f"preview failed: {proc.stderr[-2000:]}")
    seconds, child, me = proc.stdout.split()[-3:]
    return float(seconds), int(child), int(me)


def one_size(shots: int, work: Path, preview_max: int) -> dict[str, float]:
    import numpy as np
    from fastapi.testclient import TestClient

    import storyboards
    from dashboard import DashboardSettings, create_app
    from milimo_engine.media import write_mp4
    from storyboards.graph import ShotGraph
    from storyboards.planner import plan as plan_shots
    from storyboards.store import Store

    folder = work / str(shots)
    folder.mkdir()
    cut, sheet, board_path = folder / "cut.edl", folder / "shots.csv", folder / "board.otio"
    db, out = f"sqlite:///{folder / 'm.db'}", folder / "renders"
    cut.write_text(cut_edl(shots))
    t: dict[str, float] = {"prompts": milimo("prompts", cut, "-o", sheet)}
    fill_prompts(sheet)
    t["import"] = milimo("import", cut, "--prompts", sheet, "--size", "64x64", "-o", board_path)
    t["validate"] = milimo("validate", board_path)

    board = storyboards.load(board_path)
    specs = storyboards.resolve_specs(board, "tiny")
    store = Store.open(db, root=out)
    t["store: import revision"] = timed(lambda: store.import_revision(board, specs))
    t["store: import again (no change)"] = timed(lambda: store.import_revision(board, specs))
    t["plan"] = timed(lambda: plan_shots(ShotGraph.of(board), store.shot_states(board.name), None))
    media = write_mp4(folder / "take.mp4", np.full((24, 64, 64, 3), 90, np.uint8), FPS)
    record_takes(db, board, media)
    for fmt in ("fcp_xml", "cmx_3600", "otio"):
        t[f"conform {fmt}"] = milimo("conform", board_path, "--format", fmt, "--db", db, "--out", out)
    t["status"] = milimo("status", board_path, "--db", db)
    t["verify"] = milimo("verify", board_path, "--db", db)
    client = TestClient(create_app(DashboardSettings(db_url=db, out_root=out)), base_url="http://127.0.0.1:8765")
    client.get("/")
    t["dashboard: storyboard page"] = timed(lambda: client.get(f"/s/{board.name}").raise_for_status())
    if shots <= preview_max:
        seconds, child_kib, own_kib = preview_of_slates(board_path, db, out)
        t["preview of slates"] = seconds
        t["preview: ffmpeg peak MiB"] = child_kib / 1024
        t["preview: python peak MiB"] = own_kib / 1024
    store.engine.dispose()
    return t


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--sizes", default="100,1000,5000")
    ap.add_argument("--preview-max", type=int, default=1000, help="largest cut whose preview of slates is built "
                    "(each slate is one ffmpeg encode: ~0.1 s a part here)")
    args = ap.parse_args()
    sizes = [int(s) for s in args.sizes.split(",")]
    with tempfile.TemporaryDirectory(prefix="milimo-scale-") as scratch:
        results = {n: one_size(n, Path(scratch), args.preview_max) for n in sizes}
    names = list(dict.fromkeys(k for r in results.values() for k in r))
    print(f"{'':34}" + "".join(f"{n:>10}" for n in sizes) + "".join(
        f"  {a}->{b}" for a, b in zip(sizes, sizes[1:], strict=False)))
    for name in names:
        cells = [results[n].get(name) for n in sizes]
        row = "".join(f"{c:>10.2f}" if c is not None else f"{'-':>10}" for c in cells)
        growth = "".join(f"  {b / a:>{len(str(x)) + len(str(y)) + 1}.1f}x" if a and b else
                         f"  {'-':>{len(str(x)) + len(str(y)) + 2}}"
                         for a, b, x, y in zip(cells, cells[1:], sizes, sizes[1:], strict=False))
        unit = "" if "MiB" in name else " s"
        print(f"{name + unit:34}{row}{growth}")


if __name__ == "__main__":
    main()
