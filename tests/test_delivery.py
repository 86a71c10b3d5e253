"""Delivery: `milimo deliver` turns each chosen take into a studio's format and names (editorial QuickTimes, a VFX
vendor's image sequences), read back with ffprobe and sha256sum as the people receiving them would; bad profiles and
names are refused before anything is written."""

import hashlib
import json
import subprocess
from pathlib import Path

from conftest import ffprobe, milimo

from storyboards.store import Store

ENTRIES = ("stream=codec_type,codec_name,profile,pix_fmt,r_frame_rate,sample_rate,nb_frames:"
           "stream_tags=timecode,reel_name")


def _streams(path: Path) -> dict[str, dict]:
    streams = ffprobe(path, ENTRIES)["streams"]
    return {s["codec_type"]: s for s in streams if s["codec_type"] in ("video", "audio")} | {
        "data": next((s for s in streams if s["codec_type"] == "data"), {})}


def _takes(db: str) -> dict[str, dict]:
    return {r.shot_id: r for r in Store.open(db).status("lighthouse")}


def test_each_built_in_profile_delivers_every_chosen_take(tmp_path, rendered_example):
    board, db, out = rendered_example(tmp_path)
    where = ["--db", db, "--out", out]
    takes = _takes(db)
    harbour = takes["harbour"]

    editorial = milimo("deliver", board, *where)  # the default profile
    assert editorial.returncode == 0, editorial.stderr
    assert "5 take(s) delivered, 0 kept" in editorial.stdout and "[5/5]" in editorial.stdout, editorial.stdout
    folder = out / "lighthouse" / "delivery" / "editorial"
    mov = folder / "lighthouse_harbour_final_v001.mov"
    assert sorted(p.name for p in folder.iterdir()) == sorted(
        f"lighthouse_{s}_final_v001.mov" for s in takes), list(folder.iterdir())
    s = _streams(mov)
    assert (s["video"]["codec_name"], s["video"]["profile"], s["video"]["pix_fmt"]) == ("prores", "HQ", "yuv422p10le")
    assert s["video"]["r_frame_rate"] == "24/1" and int(s["video"]["nb_frames"]) == harbour.outputs.frames
    assert (s["audio"]["codec_name"], s["audio"]["sample_rate"]) == ("pcm_s24le", "48000")
    assert s["data"]["tags"]["timecode"] == harbour.outputs.timecode  # the take's start timecode, in tmcd
    assert s["data"]["tags"]["reel_name"] == harbour.outputs.reel  # and its own reel

    preview = milimo("deliver", board, *where, "--delivery", "preview", "--only", "harbour")
    assert preview.returncode == 0 and "1 take(s) delivered" in preview.stdout, preview.stderr
    s = _streams(out / "lighthouse" / "delivery" / "preview" / "lighthouse_harbour_final_v001.mp4")
    assert (s["video"]["codec_name"], s["video"]["pix_fmt"], s["audio"]["codec_name"]) == ("h264", "yuv420p", "aac")

    vfx = milimo("deliver", board, *where, "--delivery", "vfx")
    assert vfx.returncode == 0 and "5 take(s) delivered" in vfx.stdout, vfx.stderr
    sequence = out / "lighthouse" / "delivery" / "vfx" / "lighthouse_harbour_final_v001"
    frames = sorted(sequence.glob("*.png"))
    assert len(frames) == harbour.outputs.frames
    assert frames[0].name == "lighthouse_harbour_final_v001.1001.png"
    assert frames[-1].name == f"lighthouse_harbour_final_v001.{1000 + harbour.outputs.frames}.png"
    assert _streams(frames[0])["video"]["pix_fmt"] == "rgb48be"  # 16 bits a channel
    checked = subprocess.run(["sha256sum", "-c", "--strict", "lighthouse_harbour_final_v001.sha256"], cwd=sequence,
                             capture_output=True, text=True)
    assert checked.returncode == 0 and checked.stdout.count(": OK") == len(frames), checked.stdout
    reference = _streams(sequence.with_suffix(".mov"))
    assert reference["video"]["codec_name"] == "prores" and int(reference["video"]["nb_frames"]) == len(frames)

    recorded = Store.open(db).under(out).deliveries([harbour.take_id], "vfx")[harbour.take_id]
    assert {f.kind for f in recorded} == {"sequence", "reference"}
    assert all(f.bytes == f.path.stat().st_size for f in recorded)
    listed = json.loads(milimo("takes", board, "harbour", *where, "--json").stdout)[0]["deliveries"]
    assert {(d["profile"], d["kind"]) for d in listed} == {("editorial", "movie"), ("preview", "movie"),
                                                            ("vfx", "sequence"), ("vfx", "reference")}
    movie = next(d for d in listed if d["profile"] == "editorial")
    assert movie["path"] == str(mov) and movie["bytes"] == mov.stat().st_size and movie["frames"] == len(frames)
    assert movie["sha256"] == hashlib.sha256(mov.read_bytes()).hexdigest()

    # Again: what is still as delivered is kept; a frame someone deleted is delivered again, with its take alone.
    frames[3].unlink()
    again = milimo("deliver", board, *where, "--delivery", "vfx")
    assert again.returncode == 0 and "1 take(s) delivered, 4 kept" in again.stdout, again.stdout
    assert "harbour take 1: lighthouse_harbour_final_v001 delivered" in again.stdout
    assert len(list(sequence.glob("*.png"))) == harbour.outputs.frames
    assert not list(sequence.parent.glob(".*partial*"))  # nothing half-written left


def test_a_studios_own_profile_and_names(tmp_path, rendered_example):
    board, db, out = rendered_example(tmp_path)
    config = tmp_path / "milimo.toml"
    config.write_text('[delivery.comp]\nformat = "exr"\nnaming = "LH_{shot}.v{take:03d}"\nfirst_frame = 1\n'
                      'reference = false\n\n[delivery.avid]\nformat = "dnxhr_hq"\n')
    where = ["--db", db, "--out", out, "--config", config]
    proc = milimo("deliver", board, *where, "--delivery", "comp", "--only", "lamp-close", "harbour")
    assert proc.returncode == 0 and "2 take(s) delivered" in proc.stdout, proc.stderr
    folder = out / "lighthouse" / "delivery" / "comp"
    assert sorted(p.name for p in folder.iterdir()) == ["LH_harbour.v001", "LH_lamp-close.v001"]  # no reference
    first = folder / "LH_harbour.v001" / "LH_harbour.v001.0001.exr"
    assert _streams(first)["video"]["codec_name"] == "exr"
    # DNxHR takes no picture under 256x120: said for the first shot, nothing recorded for it.
    small = milimo("deliver", board, *where, "--delivery", "avid")
    assert small.returncode == 2 and "Traceback" not in small.stderr, small.stderr
    assert "is 128x128; dnxhr_hq needs at least 256x120" in small.stderr and "Fix:" in small.stderr
    nope = milimo("deliver", board, *where, "--only", "nope")
    assert nope.returncode == 2 and "nope" in nope.stderr and "Traceback" not in nope.stderr, nope.stderr
    unknown = milimo("deliver", board, *where, "--delivery", "dailies")
    assert unknown.returncode == 2 and "no delivery profile 'dailies'" in unknown.stderr
    assert "avid, comp, editorial, preview, vfx" in unknown.stderr


def test_bad_names_and_missing_encoders_are_refused_before_anything_is_written(tmp_path, rendered_example):
    board, db, out = rendered_example(tmp_path)
    delivery = out / "lighthouse" / "delivery"
    for naming, said in (("../{shot}", "'../' may hold only letters, digits"),
                         ("{shot}/{take}", "'/' may hold only letters"),
                         ("{who}_{shot}", "unknown field {who}"),
                         ("{shot:>9}", "{shot} takes no conversion or format")):
        config = tmp_path / "bad.toml"
        config.write_text(f'[delivery.x]\nformat = "png"\nnaming = "{naming}"\n')
        proc = milimo("deliver", board, "--db", db, "--out", out, "--config", config, "--delivery", "x")
        assert proc.returncode == 2 and "delivery.x.naming" in proc.stderr and said in proc.stderr, proc.stderr
        assert len(proc.stderr.strip().splitlines()) == 1
    config = tmp_path / "same.toml"
    config.write_text('[delivery.x]\nformat = "h264"\nnaming = "{storyboard}_v{take:03d}"\n')
    same = milimo("deliver", board, "--db", db, "--out", out, "--config", config, "--delivery", "x")
    assert same.returncode == 2 and "names lighthouse-wide and lighthouse-push both 'lighthouse_v001'" in same.stderr
    assert "put {shot}" in same.stderr and not delivery.exists()

    # An ffmpeg without an encoder a profile needs: `milimo validate` says which, before any render.
    fake = tmp_path / "ffmpeg"
    fake.write_text("#!/bin/sh\necho ' V....D libx264              H.264'\necho ' A....D aac                  AAC'\n")
    fake.chmod(0o755)
    checked = milimo("validate", board, "--db", db, env={"IMAGEIO_FFMPEG_EXE": str(fake)})
    assert checked.returncode == 2 and "Traceback" not in checked.stderr, checked.stderr
    lines = checked.stderr.strip().splitlines()
    assert any("delivery.editorial.format: prores_hq needs ffmpeg's prores_aw encoder" in line for line in lines)
    assert any("delivery.vfx.format: png needs ffmpeg's png encoder" in line for line in lines), lines
    assert all("Fix: choose another format (h264)" in line for line in lines), lines
    assert json.loads(milimo("status", board, "--db", db, "--json").stdout)  # the store is as it was


def test_a_render_delivers_its_chosen_takes_when_asked(tmp_path, rendered_example, tiny_model_dir, prefect_api):
    board, db, out = rendered_example(tmp_path)
    common = ["--model", tiny_model_dir, "--db", db, "--out", out]
    env = {"PREFECT_API_URL": prefect_api}
    unknown = milimo("rerender", board, "--from-shot", "harbour-pan", "--set", "seed=9", *common, "--delivery",
                     "dailies", env=env)
    assert unknown.returncode == 2 and "no delivery profile 'dailies'" in unknown.stderr, unknown.stderr
    assert Store.open(db).overrides("lighthouse") == {}  # refused before anything was stored
    proc = milimo("rerender", board, "--from-shot", "harbour-pan", "--set", "seed=9", *common, "--delivery",
                  "preview", "--fuse-distilled", env=env)
    assert proc.returncode == 0, proc.stderr[-3000:]
    newest = json.loads(milimo("takes", board, "harbour-pan", "--db", db, "--out", out, "--json").stdout)[-1]
    # this host's memory holds the tiny model whole; the opt-in fused distilled LoRA is recorded with the take
    assert newest["outputs"]["memory_mode"] == "resident" and newest["outputs"]["speed"]["fused"] is True
    folder = out / "lighthouse" / "delivery" / "preview"
    assert f"delivery preview: {folder}" in proc.stdout, proc.stdout
    assert (folder / "lighthouse_harbour-pan_final_v002.mp4").is_file()  # the new take
    assert (folder / "lighthouse_harbour_final_v001.mp4").is_file()  # and every other chosen take


def test_the_takes_ale_says_each_chosen_takes_review(tmp_path, rendered_example):
    import opentimelineio as otio

    board, db, out = rendered_example(tmp_path)
    where = ["--db", db, "--out", out]
    assert milimo("approve", board, "harbour", "1", *where, "--by", "Ada").returncode == 0
    assert milimo("needs-changes", board, "lamp-close", "1", *where, "--by", "Ben").returncode == 0
    ale = milimo("conform", board, "--format", "ale", "-o", tmp_path / "takes.ale", *where)
    assert ale.returncode == 0, ale.stderr
    logged = otio.adapters.read_from_file(str(tmp_path / "takes.ale"), fps=24)
    rows = {c.metadata["ALE"]["Shot"]: dict(c.metadata["ALE"]) for c in logged.find_clips()}
    assert len(rows) == 5  # one row per clip
    assert (rows["harbour"]["Review"], rows["lamp-close"]["Review"], rows["harbour-pan"]["Review"]) == (
        "approved by Ada", "needs changes by Ben", "pending")
    # The preview burns each chosen take's verdict in beside its shot and take (none while pending).
    import storyboards
    from milimo.preview import parts_of
    from milimo.reports import verdict_labels

    store = Store.open(db).under(out)
    labels = {p.shot_id: p.label for p in parts_of(storyboards.load(board), store.status("lighthouse"),
                                                   verdict_labels(store, "lighthouse"))}
    assert labels["harbour"] == "harbour  take 1  approved by Ada" and labels["harbour-pan"] == "harbour-pan  take 1"
    rebuilt = milimo("preview", board, *where)
    assert rebuilt.returncode == 0 and "5 of 5 shot(s) with a good take" in rebuilt.stdout, rebuilt.stderr
