"""Storyboard renders through real Prefect flows, the real store and the tiny model."""

import json
import os
import signal
import subprocess
import sys
from pathlib import Path

import opentimelineio as otio
import pytest
from conftest import copy_example, milimo, milimo_process

import storyboards
from milimo.context import Context
from milimo.prepare import prepare
from milimo.request import RenderRequest
from milimo.settings import Settings
from milimo_engine import Handoff, TwoStagePipeline
from milimo_engine.media import probe
from storyboards.store import Store

ROOT = Path(__file__).resolve().parents[1]
EXAMPLES = ROOT / "storyboards" / "examples"


@pytest.fixture
def render_env(tmp_path, tiny_model_dir, prefect_api):
    board = copy_example(tmp_path / "board", steps=2)
    return {"storyboard": str(board), "model": str(tiny_model_dir), "out": str(tmp_path / "renders"),
            "db": f"sqlite:///{tmp_path / 'milimo.db'}"}


def take_ids(store: Store, name: str = "lighthouse") -> dict[str, list[tuple[int, str]]]:
    return {r.shot_id: [(t.id, t.status) for t in store.takes(name, r.shot_id)] for r in store.status(name)}


# ------------------------------------------------------------------ pure planning, no Prefect
def test_plan_without_prefect(tmp_path, tiny_model_dir):
    board = copy_example(tmp_path / "board")
    plan = prepare(RenderRequest(storyboard=str(board), model=str(tiny_model_dir), db=f"sqlite:///{tmp_path / 'p.db'}",
                                 out=str(tmp_path)), Context(Settings.load()))
    assert [s.shot_id for s in plan.shots] == ["lighthouse-wide", "lighthouse-push", "lamp-close", "harbour",
                                               "harbour-pan"]
    assert {s.shot_id: s.needs_handoff for s in plan.shots} == {
        "lighthouse-wide": True, "lighthouse-push": True, "lamp-close": False, "harbour": True, "harbour-pan": False}
    assert [s.predecessor for s in plan.shots] == [None, "lighthouse-wide", "lighthouse-push", None, "harbour"]
    assert [s.reason for s in plan.shots] == ["new", "upstream re-renders", "upstream re-renders", "new",
                                             "upstream re-renders"]
    only = prepare(RenderRequest(storyboard=str(board), model=str(tiny_model_dir),
                                 db=f"sqlite:///{tmp_path / 'p.db'}", only=["lamp-close"]), Context(Settings.load()))
    assert [s.shot_id for s in only.shots] == ["lighthouse-wide", "lighthouse-push", "lamp-close"]


def test_invalid_storyboard_fails_before_anything_is_written(tmp_path, tiny_model_dir):
    def break_it(timeline):
        clips = list(timeline.tracks[0].find_clips())
        clips[0].metadata["milimo"]["prompt"] = ""
        clips[3].metadata["milimo"]["loras"] = [{"path": "../../etc/passwd"}]

    board = copy_example(tmp_path / "board", edit=break_it)
    db = tmp_path / "p.db"
    with pytest.raises(storyboards.StoryboardInvalid) as err:
        prepare(RenderRequest(storyboard=str(board), model=str(tiny_model_dir), db=f"sqlite:///{db}"),
                Context(Settings.load()))
    assert (
        "2 problem(s)" in str(err.value) and "prompt" in str(err.value) and "outside the asset roots" in str(err.value)
    )
    assert not db.exists()  # nothing stored: not even a database is created


# ------------------------------------------------------------------ end to end
# Counts what one `milimo render` does in its own process: storyboard loads, validations, store engines opened and
# status reads, wherever in the process they happen (CLI, prepare, flow, tasks, outputs).
COUNTING = r"""
import json, sys
import storyboards, storyboards.spec
import milimo.context
from storyboards.store import Store
counts = {"loads": 0, "validations": 0, "status": 0}
def counted(owner, name, key):
    real = getattr(owner, name)
    def wrapper(*a, **k):
        counts[key] += 1
        return real(*a, **k)
    setattr(owner, name, wrapper)
counted(storyboards, "load", "loads")
counted(storyboards, "validate", "validations")
counted(storyboards.spec, "validate", "validations")
counted(Store, "status", "status")
from flows.cli import main
code = main(sys.argv[1:])
counts["stores"] = len(milimo.context.opened_stores())
print("COUNTS " + json.dumps(counts))
sys.exit(code)
"""


def _counted_render(args, env):
    proc = subprocess.run(
        [sys.executable, "-c", COUNTING, *map(str, args)],
        cwd=ROOT,
        env={**os.environ, **env},
        capture_output=True,
        text=True,
        timeout=400,
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    return json.loads(proc.stdout.rsplit("COUNTS ", 1)[1])


def test_a_render_loads_validates_and_opens_the_store_once(tmp_path, tiny_model_dir, prefect_api):
    board = copy_example(tmp_path / "board", steps=2)
    args = [
        "render",
        board,
        "--model",
        tiny_model_dir,
        "--db",
        f"sqlite:///{tmp_path / 'm.db'}",
        "--out",
        tmp_path / "out",
    ]
    first = _counted_render(args, {"PREFECT_API_URL": prefect_api})
    again = _counted_render(args, {"PREFECT_API_URL": prefect_api})  # nothing to render
    for counts in (first, again):
        assert (counts["loads"], counts["validations"], counts["stores"]) == (1, 1, 1), counts
        assert counts["status"] <= 1, counts  # read once after the shots, for the outputs and the summary


def test_render_rerun_and_rerender(render_env):
    from flows import render_storyboard, rerender

    first = render_storyboard(RenderRequest(**render_env))
    assert first["rendered"] == ["lighthouse-wide", "lighthouse-push", "lamp-close", "harbour", "harbour-pan"]
    store = Store.open(render_env["db"])
    board = storyboards.load(render_env["storyboard"])
    status = {r.shot_id: r for r in store.status("lighthouse")}
    for shot in board.shots:
        row = status[shot.shot_id]
        assert row.status == "succeeded" and row.take_number == 1
        info = probe(row.outputs.mp4)
        assert info.frames == shot.frames and info.has_audio
        assert Path(row.outputs.thumbnail).is_file()

    # Shot B's take records shot A's handoff, and the file holds exactly that handoff.
    a = store.current_take("lighthouse", "lighthouse-wide")
    b = store.current_take("lighthouse", "lighthouse-push")
    assert b.handoff_in_take_id == a.id and b.handoff_in_sha256 == a.handoff_out_sha256
    assert Handoff.load(a.handoff_out_path).sha256() == a.handoff_out_sha256
    assert Handoff.load(a.handoff_out_path).source_shot == "lighthouse-wide"
    assert store.lineage(store.current_take("lighthouse", "lamp-close").id)[-1][1] == "lighthouse-wide"
    assert b.flow_run_id and b.task_run_id

    # Prefect, readable: the run is <storyboard>@r<revision>, tagged; shot task runs are named after the shot, and
    # a shot that waited for the one CPU device (two chains at once) went through "Waiting for device".
    from prefect.client.orchestration import get_client

    with get_client(sync_client=True) as client:
        run = client.read_flow_run(b.flow_run_id)
        assert run.name == "lighthouse@r1" and "storyboard:lighthouse" in run.tags
        shot_runs = {str(t.id): t for t in client.read_task_runs() if str(t.flow_run_id) == b.flow_run_id}
        assert {t.name for t in shot_runs.values()} >= set(first["rendered"])
        states = [st.name for tid in shot_runs for st in client.read_task_run_states(tid)]
        assert "Waiting for device" in states

    # The rendered OTIO points at the takes; preview and contact sheet exist.
    rendered = otio.adapters.read_from_file(first["otio"])
    for clip, shot in zip(rendered.tracks[0].find_clips(), board.shots, strict=False):
        ref = clip.media_reference
        assert clip.active_media_reference_key == "take-1"
        assert (Path(first["otio"]).parent / ref.target_url).resolve() == Path(  # the take's QuickTime
            status[shot.shot_id].outputs.mov
        ).resolve()
    assert probe(first["preview"]).frames == sum(s.frames for s in board.shots)
    assert Path(first["contact_sheet"]).stat().st_size > 1000

    # Nothing changed: nothing renders, every take id stays.
    before = take_ids(store)
    again = render_storyboard(RenderRequest(**render_env))
    assert again["rendered"] == [] and len(again["skipped"]) == 5
    assert take_ids(store) == before

    # Re-render from shot 3 with a new seed: shots 1-2 and the other chain keep their takes.
    redo = rerender(
        RenderRequest.rerender(
            render_env["storyboard"],
            "lamp-close",
            {"seed": 4242},
            model=render_env["model"],
            out=render_env["out"],
            db=render_env["db"],
        )
    )
    assert redo["rendered"] == ["lamp-close"]
    after = take_ids(store)
    for sid in ("lighthouse-wide", "lighthouse-push", "harbour", "harbour-pan"):
        assert after[sid] == before[sid]
    assert [s for _, s in after["lamp-close"]] == ["stale", "succeeded"]
    assert store.spec_data("lighthouse", "lamp-close")["seed"] == 4242

    # Re-render from shot 2: it and the rest of its chain get new takes, in order.
    redo2 = rerender(
        RenderRequest(
            storyboard=render_env["storyboard"],
            from_shot="lighthouse-push",
            model=render_env["model"],
            out=render_env["out"],
            db=render_env["db"],
        )
    )
    assert redo2["rendered"] == ["lighthouse-push", "lamp-close"]
    final = take_ids(store)
    assert final["lighthouse-wide"] == before["lighthouse-wide"] and final["harbour"] == before["harbour"]
    assert len(final["lighthouse-push"]) == 2 and len(final["lamp-close"]) == 3
    new_push = store.current_take("lighthouse", "lighthouse-push")
    assert store.current_take("lighthouse", "lamp-close").handoff_in_take_id == new_push.id
    # The override stays in force: a plain render afterwards renders nothing.
    assert render_storyboard(RenderRequest(**render_env))["rendered"] == []


def test_transient_failure_is_retried_and_invalid_input_is_not(render_env, monkeypatch):
    import torch

    from flows import ShotsFailed, render_storyboard

    real = TwoStagePipeline.__call__
    calls = {"harbour": 0, "harbour-pan": 0}

    def flaky(self, request, **kwargs):
        if request.prompt.startswith("fishing boats"):
            calls["harbour"] += 1
            if calls["harbour"] == 1:  # on the allow-list: retried
                raise torch.OutOfMemoryError("CUDA out of memory. Tried to allocate 2.00 GiB (injected)")
        if request.prompt.startswith("the camera pans"):
            calls["harbour-pan"] += 1
            if calls["harbour-pan"] == 1:  # a coding error: fails at once, traceback kept
                raise TypeError("unsupported operand type(s) for +: 'int' and 'NoneType' (injected)")
        return real(self, request, **kwargs)

    monkeypatch.setattr(TwoStagePipeline, "__call__", flaky)
    with pytest.raises(ShotsFailed, match="harbour-pan"):
        render_storyboard(RenderRequest(**render_env))
    assert calls == {"harbour": 2, "harbour-pan": 1}
    store = Store.open(render_env["db"])
    takes = store.takes("lighthouse", "harbour")
    assert [t.status for t in takes] == ["failed", "succeeded"] and "injected" in takes[0].error
    (pan,) = store.takes("lighthouse", "harbour-pan")
    assert pan.status == "failed" and "Traceback" in pan.error and "TypeError" in pan.error
    result = render_storyboard(RenderRequest(**render_env))  # the next render picks it up
    assert result["rendered"] == ["harbour-pan"]

    # A LoRA for another model is invalid input the engine finds: one failed take, no retry,
    # the other chain still renders, and the flow fails naming the shot.
    from conftest import write_foreign_lora

    board = storyboards.load(render_env["storyboard"])
    write_foreign_lora(Path(render_env["storyboard"]).parent / "assets" / "loras" / "foreign.safetensors")
    timeline = board.timeline
    clip = list(timeline.tracks[0].find_clips())[0]
    clip.metadata["milimo"]["loras"] = [{"path": "assets/loras/foreign.safetensors", "weight": 1.0}]
    otio.adapters.write_to_file(timeline, render_env["storyboard"])
    with pytest.raises(ShotsFailed, match="lighthouse-wide"):
        render_storyboard(RenderRequest(**render_env))
    wide = store.takes("lighthouse", "lighthouse-wide")
    assert [t.status for t in wide] == ["succeeded", "failed"]
    assert "UnknownLoraKeysError" in wide[-1].error and "another model" in wide[-1].error
    assert "Traceback" not in wide[-1].error  # input a person fixes: the message, not a traceback
    assert store.current_take("lighthouse", "lighthouse-wide").id == wide[0].id  # the good take stays current


def test_crash_mid_chain_then_resume(tmp_path, tiny_model_dir, prefect_api):
    from flows import render_storyboard

    board = copy_example(tmp_path / "board", steps=40)  # slow enough to be killed mid-chain
    db_file = tmp_path / "milimo.db"
    db = f"sqlite:///{db_file}"
    out = tmp_path / "renders"
    proc = milimo_process(
        "render",
        board,
        "--model",
        tiny_model_dir,
        "--db",
        db,
        "--out",
        out,
        env={"PREFECT_API_URL": prefect_api},
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        start_new_session=True,
    )
    from conftest import wait_for_takes

    def mid_chain(rows):
        statuses = [status for status, _ in rows]
        return "succeeded" in statuses and "running" in statuses

    killed = wait_for_takes(db_file, mid_chain, while_alive=lambda: proc.poll() is None)
    if killed:
        os.killpg(proc.pid, signal.SIGKILL)
    proc.wait(timeout=30)
    assert killed, "the render finished before it could be killed; make the shots slower"

    store = Store.open(db)
    assert any(t[1] == "running" for ts in take_ids(store).values() for t in ts)
    result = render_storyboard(RenderRequest(storyboard=str(board), model=str(tiny_model_dir), out=str(out), db=db))
    assert result["abandoned"]
    takes = take_ids(store)
    for shot_id, ts in takes.items():
        assert [s for _, s in ts].count("succeeded") == 1, (shot_id, ts)
        assert "running" not in [s for _, s in ts]
    dead = [t for ts in takes.values() for t in ts if t[1] == "failed"]
    assert dead and all("abandoned" in store.take(i).error for i, _ in dead)
    for row in store.status("lighthouse"):
        assert probe(row.outputs.mp4).frames > 0


def test_cli_as_a_user_runs_it(render_env):
    env = {"PREFECT_API_URL": os.environ.get("PREFECT_API_URL", "")}
    from prefect.settings import PREFECT_API_URL

    env["PREFECT_API_URL"] = PREFECT_API_URL.value()
    common = ["--model", render_env["model"], "--db", render_env["db"], "--out", render_env["out"]]
    run = milimo("render", render_env["storyboard"], *common, env=env)
    assert run.returncode == 0, run.stderr[-3000:]
    assert "rendered 5 shot(s)" in run.stdout
    status = milimo("status", render_env["storyboard"], "--db", render_env["db"], "--json")
    rows = json.loads(status.stdout)
    assert [r["status"] for r in rows] == ["succeeded"] * 5
    table = milimo("status", render_env["storyboard"], "--db", render_env["db"])
    assert "lighthouse-wide" in table.stdout and "succeeded" in table.stdout
    redo = milimo(
        "rerender",
        render_env["storyboard"],
        "--from-shot",
        "harbour-pan",
        "--set",
        "prompt=a quieter pan",
        *common,
        env=env,
    )
    assert redo.returncode == 0, redo.stderr[-3000:]
    takes = milimo("takes", render_env["storyboard"], "harbour-pan", "--db", render_env["db"])
    assert takes.stdout.count("succeeded") == 1 and "stale" in takes.stdout
    bad_set = milimo("rerender", render_env["storyboard"], "--from-shot", "harbour-pan", "--set", "colour=red", *common)
    assert bad_set.returncode == 2 and "unknown key" in bad_set.stderr and "Traceback" not in bad_set.stderr
    qa = json.loads(milimo("qa", render_env["storyboard"], "--db", render_env["db"], "--json").stdout)
    assert len(qa) == 4 and {s["kind"] for s in qa} == {"handoff", "hard"}  # one seam per cut of the 5 shots
    assert all(s["pixel_ratio"] is not None and s["audio_jump"] is not None for s in qa)
    assert not any(s["flagged"] for s in qa if s["kind"] == "hard")
    bad_shot = milimo("rerender", render_env["storyboard"], "--from-shot", "nope", *common, env=env)
    assert bad_shot.returncode == 2 and "nope" in bad_shot.stderr and "Traceback" not in bad_shot.stderr


def test_invalid_storyboard_exits_2_listing_every_problem(tmp_path):
    def break_it(timeline):
        clips = list(timeline.tracks[0].find_clips())
        clips[1].metadata["milimo"]["prompt"] = "  "
        clips[2].metadata["milimo"]["seed"] = -3
        clips[4].metadata["milimo"]["handof"] = "previous"

    board = copy_example(tmp_path / "board", edit=break_it)
    for command in ("render", "validate"):
        run = (
            milimo(command, str(board), "--db", f"sqlite:///{tmp_path / 'x.db'}")
            if command == "render"
            else milimo(command, str(board))
        )
        assert run.returncode == 2, run.stderr
        assert "Traceback" not in run.stderr
        for expected in ("3 problem(s)", "Lighthouse push in", "prompt", "Lamp close up", "seed", "handof", "handoff"):
            assert expected in run.stderr, (command, expected, run.stderr)
    assert not (tmp_path / "x.db").exists()


def test_serve_builds_the_deployments(tmp_path):
    from flows.serve import build_deployments
    from milimo.config import MilimoConfig, with_cli
    from storyboards.errors import ConfigError

    config_file = tmp_path / "milimo.toml"
    config_file.write_text(f"""
[paths]
out = "renders"
[[serve.schedule]]
storyboard = "{EXAMPLES / "lighthouse.otio"}"
cron = "0 2 * * *"
[serve.watch]
folder = "incoming"
interval_s = 15
""")
    config = MilimoConfig.read(config_file)
    deployments = build_deployments(config, Settings.load(str(config_file)))
    by_name = {d.name: d for d in deployments}
    assert set(by_name) == {"render-lighthouse", "rerun", "watch"}
    render = by_name["render-lighthouse"]
    assert render.schedules[0].schedule.cron == "0 2 * * *"
    assert render.parameters["request"]["storyboard"].endswith("lighthouse.otio")
    assert by_name["watch"].schedules[0].schedule.interval.total_seconds() == 15
    assert by_name["watch"].concurrency_limit == 1  # a scan due while one still renders is not started
    assert by_name["watch"].parameters["folder"] == str(tmp_path / "incoming")  # relative to the file
    assert by_name["rerun"].parameters["request"]["out"] == str(tmp_path / "renders")
    with pytest.raises(ConfigError, match="go together"):
        with_cli(config, storyboard="x.otio", cron=None, watch=None, interval_s=None)


def test_watched_folder_renders_a_dropped_cut_once(tmp_path, tiny_model_dir, prefect_api):
    from flows.serve import import_cuts as scan
    from milimo.config import WatchRules

    incoming = tmp_path / "incoming"
    incoming.mkdir()
    timeline = otio.schema.Timeline(name="drop")
    timeline.metadata["milimo"] = {"schema": 1, "defaults": {"width": 256, "height": 256, "steps": 4}}
    track = otio.schema.Track(name="shots")
    clip = otio.schema.Clip(
        name="Only shot",
        source_range=otio.opentime.TimeRange(otio.opentime.RationalTime(0, 24), otio.opentime.RationalTime(12, 24)),
    )
    clip.metadata["milimo"] = {"prompt": "a single dropped shot", "shot_id": "only"}
    track.append(clip)
    timeline.tracks.append(track)
    otio.adapters.write_to_file(timeline, str(incoming / "drop.otio"))
    (incoming / "notes.txt").write_text("not a cut")
    db = f"sqlite:///{tmp_path / 'w.db'}"
    watch = RenderRequest(storyboard="", model=str(tiny_model_dir), out=str(tmp_path / "renders"), db=db)
    rules = WatchRules(settle_s=0, backoff_s=0)  # scanned as soon as written; a failure is tried again at once

    def import_cuts(folder, request):
        return scan(folder, request, rules)

    first = import_cuts(str(incoming), watch)
    assert first == [str(incoming / "drop.otio")]
    assert Store.open(db).current_take("drop", "only").status == "succeeded"
    assert import_cuts(str(incoming), watch) == []

    # An editor's cut with its shot list beside it; a sheet that cannot render is not marked seen.
    (incoming / "cut.edl").write_text(
        "TITLE: WATCHED\nFCM: NON-DROP FRAME\n\n"
        "001  AX       V     C        00:00:00:00 00:00:00:12 00:00:00:00 00:00:00:12\n"
        "* FROM CLIP NAME: Dropped\n"
    )
    sheet = "shot_id,clip,prompt\ndropped,Dropped,{}\n"
    (incoming / "cut.csv").write_text(sheet.format(""))
    assert import_cuts(str(incoming), watch) == []
    assert import_cuts(str(incoming), watch) == []  # tried again, still failing, still not seen
    (incoming / "cut.csv").write_text(sheet.format("a boat at the quay"))
    assert import_cuts(str(incoming), watch) == [str(incoming / "cut.edl")]
    assert Store.open(db).current_take("watched", "dropped").status == "succeeded"
    assert import_cuts(str(incoming), watch) == []
