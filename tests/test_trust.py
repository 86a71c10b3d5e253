"""Trust: bad input refused before anything is stored; concurrent, interrupted and damaged renders lose and
duplicate nothing. Each test is one defect of issue 10, driven through the `milimo` command as a user meets it,
on SQLite and (where the store is involved) on PostgreSQL."""

import json
import os
import shutil
import signal
import sqlite3
import subprocess
import time
from pathlib import Path

import opentimelineio as otio
import pytest
from conftest import RENDERED_STEPS, copy_example, milimo, milimo_process, wait_for_takes

from milimo_engine.media import probe
from storyboards.fields import derived_id, folder_key
from storyboards.store import Store

ROOT = Path(__file__).resolve().parents[1]
EXAMPLES = ROOT / "storyboards" / "examples"
FAST_STEPS = RENDERED_STEPS  # as the session's rendered example (conftest's `rendered_example`)


def clean_error(proc, code=2):
    assert proc.returncode == code, (proc.returncode, proc.stdout[-2000:], proc.stderr[-3000:])
    assert "Traceback" not in proc.stderr and "render failed" not in proc.stderr, proc.stderr


@pytest.fixture
def db(store_url):
    """The store on SQLite and on PostgreSQL (conftest's `store_url`)."""
    return store_url


@pytest.fixture
def env(prefect_api):
    return {"PREFECT_API_URL": prefect_api}


def takes_of(db_url: str, name: str = "lighthouse") -> dict[str, list[str]]:
    store = Store.open(db_url)
    return {r.shot_id: [t.status for t in store.takes(name, r.shot_id)] for r in store.status(name)}


# ------------------------------------------------------------------ 8. files and fields, refused with the fix
BAD_FILES = {
    "garbage.otio": (b"\x00\x01 not json", "is not OpenTimelineIO JSON"),
    "truncated.otio": (None, "is not OpenTimelineIO JSON (truncated or damaged"),
    "plain.otio": (b'{"name": "not a timeline"}', "is JSON but not an OpenTimelineIO file"),
    "newer.otio": (None, "was written by a newer OpenTimelineIO (Marker.3"),
    "audio_only.otio": (None, "has no video track"),
    "cut.txt": (b"hello", "is not a cut format milimo reads"),
}


def _write_bad(folder: Path, name: str, raw: bytes | None) -> Path:
    path = folder / name
    if raw is not None:
        path.write_bytes(raw)
        return path
    timeline = otio.adapters.read_from_file(str(EXAMPLES / "lighthouse.otio"))
    if name == "audio_only.otio":
        for track in timeline.tracks:
            track.kind = otio.schema.TrackKind.Audio
    if name == "newer.otio":
        timeline.tracks[0][0].markers.append(otio.schema.Marker(name="note"))
    text = otio.adapters.write_to_string(timeline)
    if name == "truncated.otio":
        text = text[: len(text) // 2]
    if name == "newer.otio":
        text = text.replace('"Marker.2"', '"Marker.3"')
    path.write_text(text)
    return path


@pytest.mark.parametrize("name", sorted(BAD_FILES))
def test_a_bad_file_exits_2_naming_the_fix(tmp_path, name):
    raw, message = BAD_FILES[name]
    path = _write_bad(tmp_path, name, raw)
    for command in (["validate"], ["render", "--out", tmp_path / "out"]):
        proc = milimo(*command, path, "--db", f"sqlite:///{tmp_path / 'x.db'}")
        clean_error(proc)
        assert message in proc.stderr and "Fix:" in proc.stderr, proc.stderr
    assert not (tmp_path / "x.db").exists() and not (tmp_path / "out").exists()


def test_empty_storyboard_and_edl_rate(tmp_path):
    def remove_all(tl):
        del tl.tracks[0][:]
    empty = copy_example(tmp_path / "b", edit=remove_all, steps=FAST_STEPS)
    proc = milimo("validate", empty)
    clean_error(proc)
    assert "shots: the shots track 'shots' has no clips" in proc.stderr
    edl = tmp_path / "cut25.edl"
    edl.write_text("TITLE: cut at 25\nFCM: NON-DROP FRAME\n\n"
                   "001  A001     V     C        01:00:00:00 01:00:01:24 00:00:00:00 00:00:01:24\n"
                   "* FROM CLIP NAME: harbour wide\n")
    proc = milimo("validate", edl)
    clean_error(proc)
    assert "do not fit 24 fps" in proc.stderr and "--rate" in proc.stderr
    with_rate = milimo("validate", edl, "--rate", "25")
    clean_error(with_rate)  # now it reads: what is left is the prompt an editor's cut never has
    assert "harbour wide" in with_rate.stderr and "needs a prompt" in with_rate.stderr


def test_every_field_problem_is_one_line(tmp_path):
    def hostile(tl):
        clips = list(tl.tracks[0].find_clips())
        defaults = dict(tl.metadata["milimo"]["defaults"])
        defaults.update(seed=1.7, width=65536, guidance="strong")
        tl.metadata["milimo"] = {**dict(tl.metadata["milimo"]), "defaults": defaults}
        clips[0].metadata["milimo"] = {**dict(clips[0].metadata["milimo"]), "shot_id": "../../../escaped"}
        clips[1].metadata["milimo"] = {**dict(clips[1].metadata["milimo"]), "overrides": {"steps": -5}}
        clips[3].metadata["milimo"] = {**dict(clips[3].metadata["milimo"]),
                                       "loras": [{"path": "assets/first_frame.png"}]}
        clips[4].metadata["milimo"] = {**dict(clips[4].metadata["milimo"]),
                                       "images": [{"path": "assets/loras/tiny-style-lora.safetensors", "frame": 0}]}
    board = copy_example(tmp_path / "b", edit=hostile, steps=FAST_STEPS)
    proc = milimo("validate", board)
    clean_error(proc)
    lines = [line for line in proc.stderr.splitlines() if "Fix:" in line]
    for expected in (
        "defaults.seed: 1.7",
        "defaults.width: 65536",
        "defaults.guidance: 'strong'",
        "shot 1 'Lighthouse wide': shot_id: '../../../escaped' is not a safe name",
        "shot 2 'Lighthouse push in': overrides.steps: -5",
        "loras[0].path: 'assets/first_frame.png' is not a safetensors file",
        "is not a readable image",
    ):
        assert sum(expected in line for line in lines) == 1, (expected, proc.stderr)
    assert all(line.startswith(f"milimo: {board}: ") for line in lines)


# ------------------------------------------------------------------ 2. paths stay under --out
def test_hostile_names_never_write_outside_the_output_root(tmp_path, tiny_model_dir, env):
    def hostile(tl):
        tl.name = "../../../escaped-board"
        del tl.tracks[0][1:]
        clip = tl.tracks[0][0]
        clip.name = "/"
        clip.metadata["milimo"] = {k: v for k, v in dict(clip.metadata["milimo"]).items() if k != "shot_id"}

    board = copy_example(tmp_path / "b", edit=hostile, steps=FAST_STEPS)
    out = tmp_path / "deep" / "out"
    proc = milimo(
        "render", board, "--model", tiny_model_dir, "--db", f"sqlite:///{tmp_path / 'm.db'}", "--out", out, env=env
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    written = [
        p
        for p in tmp_path.rglob("*")
        if p.is_file() and p.suffix in (".mp4", ".png", ".otio") and "b" not in p.relative_to(tmp_path).parts[:1]
    ]
    assert written and all(p.resolve().is_relative_to(out.resolve()) for p in written), written
    folder, shot = folder_key("../../../escaped-board"), derived_id("/", "shot")  # issue 25: its own folder
    assert (out / folder / shot / "take-001" / f"{folder}_{shot}_t001.mp4").is_file()


# ------------------------------------------------------------------ 7. --set goes through validation first
def test_set_is_validated_before_it_is_stored_and_null_removes_it(tmp_path, tiny_model_dir, env, rendered_example):
    board, db_url, out = rendered_example(tmp_path)
    common = ["--model", tiny_model_dir, "--db", db_url, "--out", out]
    for value, message in (
        ("-5", "overrides.steps: -5 should be greater than or equal to 1"),
        ("abc", "overrides.steps: 'abc' should be a valid integer"),
        ("4.5", "overrides.steps: 4.5 should be a valid integer"),
    ):
        proc = milimo("rerender", board, "--from-shot", "harbour", "--set", f"steps={value}", *common, env=env)
        clean_error(proc)
        assert message in proc.stderr, proc.stderr
    assert Store.open(db_url).overrides("lighthouse") == {}
    assert milimo("validate", board, "--db", db_url).returncode == 0

    ok = milimo("rerender", board, "--from-shot", "harbour", "--set", "steps=3", "--set", "seed=11", *common, env=env)
    assert ok.returncode == 0, ok.stderr[-3000:]
    listed = milimo("overrides", board, "--db", db_url)
    assert "harbour" in listed.stdout and "steps" in listed.stdout and "11" in listed.stdout
    status = milimo("status", board, "--db", db_url)
    assert "override: seed=11, steps=3" in status.stdout
    removed = milimo("rerender", board, "--from-shot", "harbour", "--set", "steps=null", *common, env=env)
    assert removed.returncode == 0, removed.stderr[-3000:]
    assert Store.open(db_url).overrides("lighthouse") == {"harbour": {"seed": 11}}
    cleared = milimo("overrides", board, "--db", db_url, "--clear", "harbour")
    assert cleared.returncode == 0 and "cleared the overrides of 1 shot(s)" in cleared.stdout
    assert Store.open(db_url).overrides("lighthouse") == {}
    unknown = milimo("overrides", board, "--db", db_url, "--clear", "nope")
    clean_error(unknown)
    assert "no shot 'nope'" in unknown.stderr


# ------------------------------------------------------------------ 1. reverting the file
def example_rendered(tmp_path, db, rendered_example, model, env) -> tuple[Path, str, list]:
    """(storyboard, store URL, the render options) of the example rendered with FAST_STEPS: on SQLite a copy of the
    session's rendered example, on PostgreSQL rendered here."""
    if db.startswith("sqlite"):
        board, db, out = rendered_example(tmp_path)
        return board, db, ["--model", model, "--db", db, "--out", out]
    board = copy_example(tmp_path / "b", steps=FAST_STEPS)
    common = ["--model", model, "--db", db, "--out", tmp_path / "out"]
    assert milimo("render", board, *common, env=env).returncode == 0
    return board, db, common


def test_reverting_the_storyboard_file_brings_its_takes_back(tmp_path, tiny_model_dir, env, db, rendered_example):
    original, db, common = example_rendered(tmp_path, db, rendered_example, tiny_model_dir, env)

    def edit(tl):
        clip = list(tl.tracks[0].find_clips())[2]
        clip.metadata["milimo"] = {**dict(clip.metadata["milimo"]), "prompt": "an edited lamp"}

    copy_example(tmp_path / "b", edit=edit, steps=FAST_STEPS)
    edited = milimo("render", original, *common, env=env)
    assert edited.returncode == 0 and "rendered 1 shot(s) ['lamp-close']" in edited.stdout, edited.stdout
    copy_example(tmp_path / "b", steps=FAST_STEPS)  # back to the first revision
    reverted = milimo("render", original, *common, env=env)
    assert reverted.returncode == 0 and "rendered 0 shot(s)" in reverted.stdout, reverted.stdout
    rows = {r["shot_id"]: r for r in json.loads(milimo("status", original, "--db", db, "--json").stdout)}
    assert rows["lamp-close"]["prompt"].startswith("close up of the lighthouse lamp")
    assert rows["lamp-close"]["take_number"] == 1 and takes_of(db)["lamp-close"] == ["succeeded", "succeeded"]


# ------------------------------------------------------------------ 3. concurrent renders
def test_three_concurrent_renders_render_each_shot_once(tmp_path, tiny_model_dir, env, db):
    board = copy_example(tmp_path / "b", steps=FAST_STEPS)
    common = ["--model", tiny_model_dir, "--db", db, "--out", tmp_path / "out"]
    environment = {**os.environ, "DO_NOT_TRACK": "1", **env}
    procs = [
        milimo_process(
            "render", board, *common, environ=environment, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True
        )
        for _ in range(3)
    ]
    outputs = [p.communicate(timeout=600) for p in procs]
    assert [p.returncode for p in procs] == [0, 0, 0], [o[1][-2000:] for o in outputs]
    takes = takes_of(db)
    assert takes == {sid: ["succeeded"] for sid in takes} and len(takes) == 5, takes


# ------------------------------------------------------------------ 5, 6. damaged and missing files
def test_missing_or_damaged_files_are_seen_and_repaired(tmp_path, tiny_model_dir, env, db, rendered_example):
    board, db, common = example_rendered(tmp_path, db, rendered_example, tiny_model_dir, env)
    assert milimo("verify", board, "--db", db).returncode == 0
    store = Store.open(db)
    Path(store.current_take("lighthouse", "harbour-pan").outputs.mp4).unlink()
    mp4 = Path(store.current_take("lighthouse", "lamp-close").outputs.mp4)
    mp4.write_bytes(mp4.read_bytes()[:1000])
    handoff = Path(store.current_take("lighthouse", "lighthouse-wide").handoff_out_path)
    old_handoff_sha = store.current_take("lighthouse", "lighthouse-wide").handoff_out_sha256
    handoff.write_bytes(handoff.read_bytes()[:-100] + b"\0" * 100)

    status = milimo("status", board, "--db", db)
    assert "mp4 missing" in status.stdout and "mp4 damaged" in status.stdout and "handoff damaged" in status.stdout
    verify = milimo("verify", board, "--db", db)
    assert verify.returncode == 1 and verify.stdout.count("Fix: run `milimo render") == 3, verify.stdout

    repaired = milimo("render", board, *common, env=env)
    assert repaired.returncode == 0, repaired.stderr[-3000:]
    assert "rendered 3 shot(s) ['lighthouse-wide', 'lamp-close', 'harbour-pan']" in repaired.stdout, repaired.stdout
    takes = takes_of(db)
    assert takes["lighthouse-push"] == ["succeeded"]  # its upstream handed off exactly what it had before
    assert store.current_take("lighthouse", "lighthouse-wide").handoff_out_sha256 == old_handoff_sha
    assert milimo("verify", board, "--db", db).returncode == 0
    preview = tmp_path / "out" / "lighthouse" / "preview.mp4"
    assert probe(preview).frames == sum(r.outputs.frames for r in store.status("lighthouse"))


def test_preview_never_skips_a_shot(tmp_path, tiny_model_dir, env):
    """A shot with no good take gets a slate of its length in the preview, not a silent gap."""
    from conftest import write_foreign_lora

    def fail_one(tl):
        clip = list(tl.tracks[0].find_clips())[3]
        clip.metadata["milimo"] = {
            **dict(clip.metadata["milimo"]),
            "loras": [{"path": "assets/loras/foreign.safetensors"}],
        }  # a LoRA for another model

    (tmp_path / "b").mkdir()
    shutil.copytree(EXAMPLES / "assets", tmp_path / "b" / "assets")
    write_foreign_lora(tmp_path / "b" / "assets" / "loras" / "foreign.safetensors")
    board = copy_example(tmp_path / "b", edit=fail_one, steps=FAST_STEPS)
    db_url = f"sqlite:///{tmp_path / 'm.db'}"
    proc = milimo("render", board, "--model", tiny_model_dir, "--db", db_url, "--out", tmp_path / "out", env=env)
    assert proc.returncode == 1 and "render failed: lighthouse: shot harbour" in proc.stderr, proc.stderr[-2000:]
    timeline = otio.adapters.read_from_file(str(board))
    total = sum(round(c.duration().value) for c in timeline.tracks[0].find_clips())
    folder = tmp_path / "out" / "lighthouse"
    assert probe(folder / "preview.mp4").frames == total

    # `milimo preview` builds what people look at again from the store, without rendering (here: no burn-ins)
    for made in ("preview.mp4", "contact_sheet.png", "lighthouse.rendered.otio"):
        (folder / made).unlink()
    again = milimo("preview", board, "--db", db_url, "--out", tmp_path / "out", "--no-burn-ins", env=env)
    assert again.returncode == 0, again.stderr[-2000:]
    assert "3 of 5 shot(s) with a good take" in again.stdout and "shot harbour: not rendered" in again.stderr, again
    table = milimo("status", board, "--db", db_url, env=env).stdout  # its only take failed: status says so
    assert any("harbour " in line and "last try failed" in line for line in table.splitlines()), table
    assert probe(folder / "preview.mp4").frames == total
    assert (folder / "contact_sheet.png").is_file() and (folder / "lighthouse.rendered.otio").is_file()
    missing = milimo("preview", board, "--db", f"sqlite:///{tmp_path / 'none.db'}", env=env)
    assert missing.returncode == 2 and "no store at" in missing.stderr and "Traceback" not in missing.stderr


# ------------------------------------------------------------------ 4, 9. interrupts and kill -9
def _descendants(pid: int) -> set[int]:
    out, todo = set(), [pid]
    while todo:
        p = todo.pop()
        for task in Path(f"/proc/{p}/task").glob("*") if Path(f"/proc/{p}/task").exists() else []:
            try:
                children = [int(c) for c in (task / "children").read_text().split()]
            except OSError:
                continue
            for c in children:
                if c not in out:
                    out.add(c)
                    todo.append(c)
    return out


def _alive(pid: int) -> bool:
    try:
        return Path(f"/proc/{pid}/stat").read_text().split(")")[-1].split()[0] != "Z"
    except OSError:
        return False


def _one_slow_chain(timeline) -> None:
    """The example's first chain alone, its first shot quick: a render to interrupt is soon past that shot and then
    slow (40 steps) for two shots, and the resume renders only those two (not four shots at 40 steps)."""
    track = timeline.tracks[0]
    while len(track) > 3:
        del track[3]
    wide = track[0]
    wide.metadata["milimo"] = {**dict(wide.metadata["milimo"]), "overrides": {"steps": FAST_STEPS}}


def _rendering(rows) -> bool:
    return any(s == "succeeded" for s, _ in rows) and any(s == "running" and p and '"stage1"' in p for s, p in rows)


@pytest.mark.parametrize("sig", [signal.SIGINT, signal.SIGTERM], ids=["ctrl-c", "sigterm"])
def test_interrupt_stops_cleanly_and_resumes(tmp_path, tiny_model_dir, sig, prefect_api):
    """Ctrl-C is SIGINT to the whole process group. No PREFECT_API_URL: milimo's own temporary server must
    survive it long enough to record the ending, then stop with everything else."""
    board = copy_example(tmp_path / "b", steps=40, edit=_one_slow_chain)
    db_file = tmp_path / "m.db"
    environment = {k: v for k, v in os.environ.items() if k != "PREFECT_API_URL"}
    environment.update(DO_NOT_TRACK="1", PREFECT_HOME=str(tmp_path / "prefect"))
    proc = milimo_process(
        "render",
        board,
        "--model",
        tiny_model_dir,
        "--db",
        f"sqlite:///{db_file}",
        "--out",
        tmp_path / "out",
        environ=environment,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        start_new_session=True,
    )
    assert wait_for_takes(db_file, _rendering), "never saw a shot rendering"
    os.killpg(proc.pid, signal.SIGSTOP)  # held mid-shot while `status` starts (seconds on a loaded machine)
    try:
        status = milimo("status", board, "--db", f"sqlite:///{db_file}")  # what a user sees while it renders
    finally:
        os.killpg(proc.pid, signal.SIGCONT)
    assert "running: take 1 on " in status.stdout, status.stdout  # with its host, and its step once it has one
    assert wait_for_takes(db_file, _rendering), "no shot rendering any more"  # (status took a moment): signal mid-shot
    children = _descendants(proc.pid)
    sent = time.monotonic()
    os.killpg(proc.pid, sig)
    out, err = proc.communicate(timeout=60)
    took = time.monotonic() - sent
    assert proc.returncode == 128 + sig, (proc.returncode, err[-3000:])
    assert took < 15, took
    assert "interrupted:" in err and "done," in err and "left; run the same command to resume" in err, err[-2000:]
    assert "Traceback" not in err
    statuses = [s for ss in takes_of(f"sqlite:///{db_file}").values() for s in ss]
    assert "cancelled" in statuses and "running" not in statuses, statuses
    deadline = time.monotonic() + 15
    while any(_alive(c) for c in children) and time.monotonic() < deadline:
        time.sleep(0.2)
    assert not [c for c in children if _alive(c)], "a child process outlived milimo"
    assert not list((tmp_path / "out").rglob("*.partial.*")), "temporary files were left"

    resumed = milimo(
        "render",
        board,
        "--model",
        tiny_model_dir,
        "--db",
        f"sqlite:///{db_file}",
        "--out",
        tmp_path / "out",
        env={"PREFECT_HOME": str(tmp_path / "prefect"), "PREFECT_API_URL": prefect_api},  # the resume: any server
        timeout=600,
    )
    assert resumed.returncode == 0, resumed.stderr[-3000:]
    final = takes_of(f"sqlite:///{db_file}")
    assert all(ss.count("succeeded") == 1 for ss in final.values()), final


def test_kill_9_leaves_no_process_and_the_next_render_cleans_up(tmp_path, tiny_model_dir, prefect_api):
    board = copy_example(tmp_path / "b", steps=40, edit=_one_slow_chain)
    db_file = tmp_path / "m.db"
    out = tmp_path / "out"
    environment = {k: v for k, v in os.environ.items() if k != "PREFECT_API_URL"}
    environment.update(DO_NOT_TRACK="1", PREFECT_HOME=str(tmp_path / "prefect"))
    proc = milimo_process(
        "render",
        board,
        "--model",
        tiny_model_dir,
        "--db",
        f"sqlite:///{db_file}",
        "--out",
        out,
        environ=environment,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        start_new_session=True,
    )
    assert wait_for_takes(db_file, _rendering), "never saw a shot rendering"
    children = _descendants(proc.pid)
    assert children, "milimo started no temporary Prefect server"
    # What a killed writer leaves behind: a temporary file named for a process that no longer exists.
    from milimo_engine.atomic import _host

    leftover = out / "lighthouse" / "lighthouse-wide" / f".shot.mp4.partial.{_host()}.999999.0badf00d.mp4"
    leftover.parent.mkdir(parents=True, exist_ok=True)
    leftover.write_bytes(b"half")
    proc.kill()
    proc.wait(timeout=10)
    deadline = time.monotonic() + 30
    while any(_alive(c) for c in children) and time.monotonic() < deadline:
        time.sleep(0.2)
    assert not [c for c in children if _alive(c)], "a process milimo started outlived it by 30 s"
    resumed = milimo(
        "render",
        board,
        "--model",
        tiny_model_dir,
        "--db",
        f"sqlite:///{db_file}",
        "--out",
        out,
        env={"PREFECT_HOME": str(tmp_path / "prefect"), "PREFECT_API_URL": prefect_api},  # the resume: any server
        timeout=600,
    )
    assert resumed.returncode == 0, resumed.stderr[-3000:]
    assert not leftover.exists()
    final = takes_of(f"sqlite:///{db_file}")
    assert all(ss.count("succeeded") == 1 for ss in final.values()), final


# ------------------------------------------------------------------ 10. the store
def test_store_problems_exit_2_in_one_line(tmp_path):
    board = copy_example(tmp_path / "b", steps=FAST_STEPS)
    newer = tmp_path / "newer.db"
    Store.open(f"sqlite:///{newer}")
    with sqlite3.connect(newer) as conn:
        conn.execute("update alembic_version set version_num = '0099'")
    cases = {
        "postgresql+psycopg://postgres@127.0.0.1:1/test": "cannot open the store",
        f"sqlite:///{newer}": "newer than this milimo knows",
    }
    for url, message in cases.items():
        for command in (["status", board, "--db", url], ["render", board, "--db", url, "--out", tmp_path / "o"]):
            proc = milimo(*command, timeout=60)
            clean_error(proc)
            lines = proc.stderr.strip().splitlines()
            assert len(lines) == 1 and message in lines[0] and "Fix:" in lines[0], proc.stderr
