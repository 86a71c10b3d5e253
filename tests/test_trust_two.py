"""Trust, round two (issue 25): no storyboard writes over another's takes, no output over an input, no shot list
row onto the wrong clip, and bad input of every kind is exit 2 naming file, row or field and the fix. Each test is
one defect, driven through the interface where a user meets it (the `milimo` command, HTTP), and fails on the
code before the fix."""

import csv
import json
import os
import shutil
import signal
import subprocess
import time
import zlib
from pathlib import Path

import opentimelineio as otio
import pytest
from conftest import copy_example, milimo, wait_for_takes

from storyboards.fields import folder_key
from storyboards.paths import MARKER, OutputLayout
from storyboards.store.artifacts import artifact_record

FAST_STEPS = 4


def refused(proc, *needles):
    """Exit 2, one line per problem, no traceback, and every needle in what it said."""
    assert proc.returncode == 2, (proc.returncode, proc.stdout[-2000:], proc.stderr[-3000:])
    assert "Traceback" not in proc.stderr and "render failed" not in proc.stderr, proc.stderr
    for needle in needles:
        assert needle in proc.stderr, (needle, proc.stderr)


def _named(name):
    def edit(timeline):
        timeline.name = name
    return edit


@pytest.fixture
def env(prefect_api):
    return {"PREFECT_API_URL": prefect_api}


# ------------------------------------------------------------------ one folder per storyboard
@pytest.mark.fast
def test_folder_keys_differ_for_every_name_a_slug_would_merge():
    names = ["lighthouse", "Lighthouse", "LIGHTHOUSE", "灯台", "ライトハウス", "מגדלור", "🌊🌊", "🌊",
             "a" * 96 + "x", "a" * 96 + "y", "storyboard", "lighthouse demo", "lighthouse-demo"]
    keys = [folder_key(n) for n in names]
    assert len({k.casefold() for k in keys}) == len(names), keys  # distinct on a case-insensitive disk too
    assert folder_key("lighthouse") == "lighthouse"  # a plain name keeps its folder
    assert folder_key("灯台").startswith("灯台-")  # readable, with a short id
    for key in keys:
        assert "/" not in key and "\\" not in key and key not in (".", "..") and len(key.encode()) < 200


def test_non_latin_storyboards_render_into_folders_of_their_own(tmp_path, env, tiny_model_dir):
    """Before: both names became the folder `storyboard`, the second render wrote over the first's take-001 with
    exit 0, and the first storyboard's recorded hashes no longer matched its files."""
    out, db = tmp_path / "renders", f"sqlite:///{tmp_path / 'milimo.db'}"
    boards = [copy_example(tmp_path / "a", steps=FAST_STEPS, edit=_named("灯台")),
              copy_example(tmp_path / "b", steps=FAST_STEPS, edit=_named("ライトハウス"))]
    for board in boards:
        proc = milimo("render", board, "--only", "harbour", "--model", tiny_model_dir, "--db", db, "--out", out,
                      env=env, timeout=400)
        assert proc.returncode == 0, proc.stderr[-3000:]
    takes = sorted(out.glob("*/harbour/take-001/*.mp4"))
    assert len(takes) == 2 and takes[0].parent.parent.parent != takes[1].parent.parent.parent, takes
    for board in boards:  # each storyboard's recorded hashes still match its files (the other four shots: unrendered)
        proc = milimo("verify", board, "--db", db, env=env)
        assert "0 damaged or missing file(s), 4 shot(s) without a good take" in proc.stdout, proc.stdout + proc.stderr
    markers = {(p.parent.name, p.read_text().splitlines()[0]) for p in out.glob(f"*/{MARKER}")}
    assert {name for _, name in markers} == {"灯台", "ライトハウス"}


def test_a_folder_another_storyboard_holds_is_refused(tmp_path, env, tiny_model_dir):
    board = copy_example(tmp_path / "b", steps=FAST_STEPS)
    out, db_file = tmp_path / "renders", tmp_path / "milimo.db"
    folder = OutputLayout.at(out).storyboard_dir("lighthouse")
    folder.mkdir(parents=True)
    (folder / MARKER).write_text("another storyboard\n")
    proc = milimo("render", board, "--model", tiny_model_dir, "--db", f"sqlite:///{db_file}", "--out", out, env=env)
    refused(proc, "holds the takes of storyboard 'another storyboard'", "--out")
    assert not db_file.exists()  # nothing stored


def test_a_second_store_rendering_into_the_same_out_is_refused_its_folder(tmp_path, env, tiny_model_dir):
    """Before: the marker held only the name, so a second store (another --db, or the first one deleted and made
    anew) rendering the same storyboard into the same --out wrote its take-001 over the first store's, exit 0."""
    board = copy_example(tmp_path / "b", steps=FAST_STEPS)
    out, first, second = tmp_path / "renders", tmp_path / "first.db", tmp_path / "second.db"
    folder = OutputLayout.at(out).storyboard_dir("lighthouse")
    folder.mkdir(parents=True)
    (folder / MARKER).write_text("lighthouse\n")  # as milimo wrote it before stores had ids: the first store claims it
    proc = milimo("render", board, "--only", "harbour", "--model", tiny_model_dir, "--db", f"sqlite:///{first}",
                  "--out", out, env=env)
    assert proc.returncode == 0, proc.stderr[-3000:]
    from storyboards.store import Store

    uid = Store.open(f"sqlite:///{first}").storyboard_uid("lighthouse")
    assert uid and (folder / MARKER).read_text() == f"lighthouse\nstore-id {uid}\n"
    files = {p: p.read_bytes() for p in folder.rglob("*") if p.is_file()}
    again = milimo("render", board, "--only", "harbour", "--model", tiny_model_dir, "--db", f"sqlite:///{second}",
                   "--out", out, env=env)
    refused(again, "holds the takes of storyboard 'lighthouse' recorded in another store", "--db")
    assert not second.exists()  # nothing stored
    assert {p: p.read_bytes() for p in folder.rglob("*") if p.is_file()} == files  # the first store's takes intact
    verified = milimo("verify", board, "--db", f"sqlite:///{first}", env=env)
    assert "0 damaged or missing file(s), 4 shot(s) without a good take" in verified.stdout, verified.stdout


def test_a_prompt_longer_than_the_text_encoders_window_is_refused_not_cut(tmp_path, env, tiny_model_dir):
    """Before (issue 21): a 23,600-character prompt rendered from its first 1,024 tokens, and nothing said so."""
    def long_prompt(timeline):
        clip = list(timeline.tracks[0].find_clips())[1]
        clip.metadata["milimo"] = {**dict(clip.metadata["milimo"]), "prompt": "the lamp turns slowly, " * 1000}

    board = copy_example(tmp_path / "b", steps=FAST_STEPS, edit=long_prompt)
    db_file = tmp_path / "milimo.db"
    proc = milimo("render", board, "--model", tiny_model_dir, "--db", f"sqlite:///{db_file}", "--out",
                  tmp_path / "renders", env=env)
    refused(proc, "shot 2 'Lighthouse push in': prompt: ", "(23000 characters); the text encoder reads 128 and would",
            "Fix: shorten it to 128 tokens or less")  # the tiny model's window (LTX-2's: 1024)
    assert "Token indices" not in proc.stderr, proc.stderr
    assert not db_file.exists()


@pytest.mark.skipif(os.geteuid() != 0 or not shutil.which("mount"),
                    reason="a read-only or small folder needs a mount of its own, which only root can make")
@pytest.mark.parametrize("mount_options, problem", [
    ("ro,size=1m", "{out} cannot be written"),
    ("size=32m", "{out} has 32 MiB free; the 5 shot(s) planned need about"),  # the estimate: 256 MiB of margin alone
], ids=["read-only", "small-disk"])
def test_an_output_root_it_cannot_write_or_fill_is_refused_before_the_first_shot(tmp_path, env, tiny_model_dir,
                                                                                    mount_options, problem):
    """Before: every chain's first shot rendered, then failed writing its take (exit 1, tracebacks in the takes)."""
    board = copy_example(tmp_path / "b", steps=FAST_STEPS)
    out, db_file = tmp_path / "mounted", tmp_path / "milimo.db"
    out.mkdir()
    subprocess.run(["mount", "-t", "tmpfs", "-o", mount_options, "tmpfs", str(out)], check=True)
    try:
        proc = milimo("render", board, "--model", tiny_model_dir, "--db", f"sqlite:///{db_file}", "--out", out,
                      env=env)
    finally:
        subprocess.run(["umount", str(out)], check=True)
    refused(proc, problem.format(out=out), "--out")
    assert not db_file.exists()


# ------------------------------------------------------------------ outputs never overwrite inputs
@pytest.mark.fast
def test_no_command_writes_over_its_own_input_or_an_existing_file(tmp_path):
    board = copy_example(tmp_path / "b")
    sheet = tmp_path / "b" / "shots.csv"
    assert milimo("prompts", board, "-o", sheet).returncode == 0
    before = {p: p.read_bytes() for p in (board, sheet)}
    refused(milimo("import", board, "--prompts", sheet, "-o", sheet), "own input")
    refused(milimo("import", board, "--prompts", sheet, "-o", board, "--force"), "own input")
    refused(milimo("conform", board, "--format", "otio", "-o", board, "--force"), "own input")
    refused(milimo("prompts", board, "-o", board, "--force"), "own input")
    assert {p: p.read_bytes() for p in before} == before
    target = tmp_path / "b" / "imported.otio"
    assert milimo("import", board, "--prompts", sheet, "-o", target).returncode == 0
    refused(milimo("import", board, "--prompts", sheet, "-o", target), "exists", "--force")
    assert milimo("import", board, "--prompts", sheet, "-o", target, "--force").returncode == 0


# ------------------------------------------------------------------ shot list rows and their clips
def _cut(path: Path, names: list[str]) -> Path:
    timeline = otio.schema.Timeline(name="harbour cut")
    track = otio.schema.Track(name="V1")
    timeline.tracks.append(track)
    for name in names:  # each clip keeps its own source range wherever the editor moves it
        start = 24 + 100 * sorted(names).index(name)
        track.append(otio.schema.Clip(name=name, source_range=otio.opentime.TimeRange(
            otio.opentime.RationalTime(start, 24), otio.opentime.RationalTime(25, 24))))
    otio.adapters.write_to_file(timeline, str(path))
    return path


def _fill(sheet: Path, prompts: dict[str, str]) -> None:
    rows = list(csv.DictReader(sheet.read_text(encoding="utf-8-sig").splitlines()))
    for row in rows:
        row["prompt"] = prompts[row["clip"]]
    with open(sheet, "w", encoding="utf-8-sig", newline="") as fh:
        writer = csv.DictWriter(fh, fieldnames=list(rows[0]))
        writer.writeheader()
        writer.writerows(rows)


def _filled(tmp_path: Path, prompts: dict[str, str], sheet_name: str = "shots.csv") -> tuple[Path, Path]:
    """A cut of clips named as `prompts`' keys, and its shot list written by `milimo prompts`, filled."""
    cut = _cut(tmp_path / "cut.otio", list(prompts))
    sheet = tmp_path / sheet_name
    assert milimo("prompts", cut, "-o", sheet).returncode == 0
    _fill(sheet, prompts)
    return cut, sheet


@pytest.mark.fast
def test_prompts_follow_their_clips_when_the_editor_swaps_non_latin_clips(tmp_path):
    """Before: clips named 灯台 and 港 got the ids `shot` and `shot-2` by position; after the editor swapped them,
    each prompt landed on the other clip."""
    cut, sheet = _filled(tmp_path, {"灯台": "a lighthouse at dusk", "港": "boats in a harbour"})
    _cut(cut, ["港", "灯台"])  # the re-cut
    target = tmp_path / "board.otio"
    proc = milimo("import", cut, "--prompts", sheet, "-o", target)
    assert proc.returncode == 0, proc.stderr
    clips = list(otio.adapters.read_from_file(str(target)).video_tracks()[0])
    assert {c.name: c.metadata["milimo"]["prompt"] for c in clips} == {
        "灯台": "a lighthouse at dusk", "港": "boats in a harbour"}


@pytest.mark.fast
def test_a_row_whose_clip_is_not_its_shots_clip_is_refused(tmp_path):
    cut, sheet = _filled(tmp_path, {"Harbour wide": "wide", "Harbour close": "close"})
    text = sheet.read_text(encoding="utf-8-sig").replace(",Harbour close,", ",Harbour closer,")
    sheet.write_text(text, encoding="utf-8-sig")
    refused(milimo("import", cut, "--prompts", sheet, "-o", tmp_path / "board.otio"),
            "row 3", "clip", "'Harbour closer' is not the clip of shot 'harbour-close'")
    assert not (tmp_path / "board.otio").exists()


@pytest.mark.fast
def test_cells_a_spreadsheet_would_run_are_written_as_text_and_read_back_unchanged(tmp_path):
    prompts = {"A": '=HYPERLINK("http://x.example","open")', "B": "-a boat, +waves, @dusk"}
    cut, first = _filled(tmp_path, prompts, "first.csv")
    board = tmp_path / "board.otio"
    assert milimo("import", cut, "--prompts", first, "-o", board).returncode == 0
    sheet = tmp_path / "shots.csv"
    assert milimo("prompts", board, "-o", sheet).returncode == 0  # the filled storyboard's sheet
    cells = [row["prompt"] for row in csv.DictReader(sheet.read_text(encoding="utf-8-sig").splitlines())]
    assert all(cell.startswith("'") for cell in cells), cells  # a spreadsheet shows text, runs nothing
    again = tmp_path / "again.otio"
    assert milimo("import", cut, "--prompts", sheet, "-o", again).returncode == 0
    clips = list(otio.adapters.read_from_file(str(again)).video_tracks()[0])
    assert {c.name: c.metadata["milimo"]["prompt"] for c in clips} == prompts


@pytest.mark.fast
def test_a_shot_list_with_mac_line_ends_and_a_superscript_seed(tmp_path):
    """Before: CR-only line ends (Excel for Mac) and a seed cell `5²` were exit 1 with Python's messages."""
    cut, sheet = _filled(tmp_path, {"A": "a lighthouse", "B": "a harbour"})
    sheet.write_bytes(sheet.read_bytes().replace(b"\r\n", b"\r"))
    assert milimo("import", cut, "--prompts", sheet, "-o", tmp_path / "mac.otio").returncode == 0
    rows = list(csv.DictReader(sheet.read_text(encoding="utf-8-sig").replace("\r", "\n").splitlines()))
    rows[1]["seed"] = "5²"
    with open(sheet, "w", encoding="utf-8-sig", newline="") as fh:
        writer = csv.DictWriter(fh, fieldnames=list(rows[0]))
        writer.writeheader()
        writer.writerows(rows)
    refused(milimo("import", cut, "--prompts", sheet, "-o", tmp_path / "seed.otio"), "row 3", "seed", "'5²'")


# ------------------------------------------------------------------ what validate must refuse
@pytest.mark.fast
def test_a_nested_sequence_on_the_shots_track_is_refused_not_dropped(tmp_path):
    def nest(timeline):
        track = timeline.video_tracks()[0]
        inner = otio.schema.Stack(name="harbour nest")
        inner_track = otio.schema.Track(name="inner")
        inner_track.append(track[3].clone())
        inner.append(inner_track)
        track[3] = inner
    board = copy_example(tmp_path / "b", edit=nest)
    refused(milimo("validate", board), "harbour nest", "nested sequence", "flatten")


@pytest.mark.fast
def test_a_chain_after_a_shot_too_short_to_hand_off_is_refused(tmp_path):
    """Before: validated, then every render re-rendered the 5-frame shot and failed the next one, forever."""
    def shorten(timeline):
        clip = timeline.video_tracks()[0][0]
        clip.source_range = otio.opentime.TimeRange(clip.source_range.start_time,
                                                    otio.opentime.RationalTime(5, clip.source_range.duration.rate))
    board = copy_example(tmp_path / "b", edit=shorten)
    refused(milimo("validate", board), "Lighthouse push in", "handoff", "5 frame(s)", "9 frames")


@pytest.mark.fast
def test_shot_ids_that_differ_only_in_case_are_refused(tmp_path):
    """`Harbour` and `harbour` are one folder on a case-insensitive disk: the second shot's takes would land in
    the first's."""
    def case(timeline):
        timeline.video_tracks()[0][4].metadata["milimo"]["shot_id"] = "Harbour"
    board = copy_example(tmp_path / "b", edit=case)
    refused(milimo("validate", board), "'Harbour' differs only in case from 'harbour'", "shot_id")


def _png_claiming(path: Path, width: int, height: int) -> Path:
    def chunk(kind: bytes, data: bytes) -> bytes:
        return len(data).to_bytes(4, "big") + kind + data + zlib.crc32(kind + data).to_bytes(4, "big")
    header = width.to_bytes(4, "big") + height.to_bytes(4, "big") + bytes([8, 2, 0, 0, 0])
    path.write_bytes(b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", header) + chunk(b"IDAT", zlib.compress(b"\0" * 64))
                     + chunk(b"IEND", b""))
    return path


@pytest.mark.fast
def test_an_image_whose_header_claims_a_huge_picture_is_refused(tmp_path):
    board = copy_example(tmp_path / "b")
    _png_claiming(tmp_path / "b" / "assets" / "first_frame.png", 20000, 20000)
    refused(milimo("validate", board), "images[0].path", "too large to decode", "give a PNG, JPEG or WebP image")


@pytest.mark.fast
def test_a_port_out_of_range_is_refused_in_one_line(tmp_path):
    proc = milimo("dashboard", "--port", "70000")
    refused(proc, "'70000' is not a TCP port")


# ------------------------------------------------------------------ the dashboard over HTTP
def _dashboard(tmp_path):
    from fastapi.testclient import TestClient

    from dashboard import DashboardSettings, create_app
    from dashboard.security import served_names

    settings = DashboardSettings(db_url=f"sqlite:///{tmp_path / 'milimo.db'}", out_root=tmp_path / "renders",
                                 hosts=served_names("127.0.0.1"))
    return TestClient(create_app(settings), base_url="http://127.0.0.1:8765", raise_server_exceptions=False)


@pytest.mark.fast
def test_the_dashboard_answers_only_to_the_names_it_serves(tmp_path):
    """DNS rebinding: a page of evil.example, its name rebound to 127.0.0.1, sends `Host: evil.example`."""
    client = _dashboard(tmp_path)
    assert client.get("/").status_code == 200
    assert client.get("/", headers={"Host": "localhost:8765"}).status_code == 200
    rebound = client.get("/", headers={"Host": "evil.example:8765"})
    assert rebound.status_code == 403 and "host" in rebound.text
    assert client.post("/s/x/render", headers={"Host": "evil.example:8765"}).status_code == 403


@pytest.mark.fast
def test_the_dashboard_says_404_for_any_id_that_is_not_a_row(tmp_path):
    client = _dashboard(tmp_path)
    for url in ("/files/take/99999999999999999999999/mp4", "/files/take/0/mp4", "/files/take/abc/thumbnail",
                "/files/take/5/mp4", "/s/" + "x" * 5000, "/api/s/nope/state"):
        assert client.get(url).status_code == 404, url


# ------------------------------------------------------------------ the watched folder
def _edl_with_sheet(folder: Path, prompt: str, age_s: float = 60) -> Path:
    cut = folder / "cut.edl"
    cut.write_text("TITLE: WATCHED\nFCM: NON-DROP FRAME\n\n"
                   "001  AX       V     C        00:00:00:00 00:00:00:12 00:00:00:00 00:00:00:12\n"
                   "* FROM CLIP NAME: Dropped\n")
    (folder / "cut.csv").write_text(f"shot_id,clip,prompt\ndropped,Dropped,{prompt}\n")
    past = time.time() - age_s
    for path in (cut, folder / "cut.csv"):
        os.utime(path, (past, past))
    return cut


def test_the_watched_folder_scans_once_at_a_time_waits_for_writes_and_backs_off(tmp_path, tiny_model_dir,
                                                                              prefect_api):
    """Before: a scan started while the last still rendered (ten at once), a cut half written was read, and a
    failing cut was rendered again on every scan, forever."""
    from flows.serve import import_cuts
    from flows.watch import Failures, one_scan, state_dir
    from milimo.config import WatchRules
    from milimo.request import RenderRequest

    incoming, out = tmp_path / "incoming", tmp_path / "renders"
    incoming.mkdir()
    request = RenderRequest(storyboard="", model=str(tiny_model_dir), out=str(out), db=f"sqlite:///{tmp_path}/w.db",
                            rate=24)
    state = state_dir(out, incoming)
    _edl_with_sheet(incoming, "")  # its prompt is empty: it cannot render
    with one_scan(state) as mine:
        assert mine
        assert import_cuts(str(incoming), request, WatchRules(backoff_s=0)) == []  # another scan holds the folder
    assert not (state / "failures.json").exists()  # ... so this one tried nothing
    rules = WatchRules(backoff_s=0, max_attempts=2)
    for _ in range(3):
        assert import_cuts(str(incoming), request, rules) == []
    assert list(Failures.read(state).record.values())[0]["attempts"] == 2  # tried twice, then left alone
    _edl_with_sheet(incoming, "a boat at the quay", age_s=0)  # fixed, but still being written
    assert import_cuts(str(incoming), request, WatchRules()) == []
    assert len(Failures.read(state).record) == 1  # the new content was not tried yet

    later = tmp_path / "later"
    later.mkdir()
    _edl_with_sheet(later, "")
    for _ in range(2):  # failed once; the second scan is within the hour's back-off
        assert import_cuts(str(later), request, WatchRules(backoff_s=3600)) == []
    assert list(Failures.read(state_dir(out, later)).record.values())[0]["attempts"] == 1


# ------------------------------------------------------------------ a project folder moved
def test_a_moved_project_keeps_its_takes(tmp_path, env, tiny_model_dir, store_url):
    """Before: the store kept absolute paths; after moving the project every take read as missing and the next
    render would have rendered them all again. SQLite inside the project (it moves too), or PostgreSQL beside."""
    def url(folder):
        return f"sqlite:///{folder / 'milimo.db'}" if store_url.startswith("sqlite") else store_url

    project, moved = tmp_path / "project", tmp_path / "elsewhere" / "project"
    board = copy_example(project / "board", steps=FAST_STEPS)
    first = milimo("render", board, "--only", "harbour", "--model", tiny_model_dir, "--db", url(project),
                   "--out", project / "renders", env=env, timeout=400)
    assert first.returncode == 0, first.stderr[-3000:]
    moved.parent.mkdir()
    project.rename(moved)
    board, out = moved / "board" / "lighthouse.otio", moved / "renders"
    verify = milimo("verify", board, "--db", url(moved), "--out", out, env=env)
    assert "0 damaged or missing file(s), 4 shot(s) without a good take" in verify.stdout, verify.stdout
    again = milimo("render", board, "--only", "harbour", "--model", tiny_model_dir, "--db", url(moved),
                   "--out", out, env=env, timeout=400)
    assert again.returncode == 0, again.stderr[-3000:]
    takes = milimo("takes", board, "harbour", "--json", "--db", url(moved), "--out", out, env=env)
    assert takes.returncode == 0, takes.stderr
    found = json.loads(takes.stdout)
    assert len(found) == 1 and Path(found[0]["outputs"]["mp4"]).is_relative_to(out), found  # kept, not re-rendered


@pytest.mark.fast
def test_absolute_paths_of_older_stores_become_relative(tmp_path):
    import sqlalchemy as sa

    import storyboards
    from storyboards.store import Store

    board = storyboards.load(copy_example(tmp_path / "b"))
    url = f"sqlite:///{tmp_path / 'old.db'}"
    old = Store.open(url)  # no output root: paths recorded absolute, as before
    old.import_revision(board, storyboards.resolve_specs(board, "tiny"))
    take = tmp_path / "renders" / "lighthouse" / "harbour" / "take-001"
    take.mkdir(parents=True)
    (take / "h.mp4").write_bytes(b"mp4")
    take_id = old.start_take("lighthouse", "harbour")
    old.finish_take(take_id, outputs={"mp4": str(take / "h.mp4")},
                    artifacts=[artifact_record("mp4", take / "h.mp4")])
    engine = sa.create_engine(url)
    with engine.begin() as conn:
        conn.execute(sa.text("update alembic_version set version_num = '0006'"))
        conn.execute(sa.text("alter table storyboards drop column uid"))  # as 0006 left it: no 0008,
        conn.execute(sa.text("alter table shots drop column pinned_by"))  # no 0009
        conn.execute(sa.text("drop table reviews"))
        for column in ("requested_by", "cancel_requested_by", "cancel_requested_at"):  # no 0010
            conn.execute(sa.text(f"alter table takes drop column {column}"))
        conn.execute(sa.text("drop table deliveries"))  # no 0011
    assert Store.open(url).storyboard_uid("lighthouse")  # upgraded: 0007, then 0008 gives the storyboard its id
    with engine.connect() as conn:
        outputs, = conn.execute(sa.text("select outputs from takes")).one()
        uri, = conn.execute(sa.text("select uri from artifacts")).one()
    assert json.loads(outputs)["mp4"] == "lighthouse/harbour/take-001/h.mp4" and uri == json.loads(outputs)["mp4"]
    (tmp_path / "renders").rename(tmp_path / "moved")
    moved = Store.open(url, root=tmp_path / "moved")
    assert moved.current_take("lighthouse", "harbour").outputs.mp4 == str(tmp_path / "moved" / take.relative_to(
        tmp_path / "renders") / "h.mp4")
    assert moved.verify("lighthouse") == []


def _one_shot_cut(path: Path) -> Path:
    timeline = otio.schema.Timeline(name="dropped")
    timeline.metadata["milimo"] = {"schema": 1, "defaults": {"width": 256, "height": 256, "steps": 4}}
    track = otio.schema.Track(name="shots")
    clip = otio.schema.Clip(name="Only shot", source_range=otio.opentime.TimeRange(
        otio.opentime.RationalTime(0, 24), otio.opentime.RationalTime(12, 24)))
    clip.metadata["milimo"] = {"prompt": "a single dropped shot", "shot_id": "only"}
    track.append(clip)
    timeline.tracks.append(track)
    otio.adapters.write_to_file(timeline, str(path))
    past = time.time() - 60
    os.utime(path, (past, past))
    return path


def test_serve_renders_a_dropped_cut_and_stops_on_sigterm(tmp_path, tiny_model_dir):
    """Before: on its temporary Prefect server (no PREFECT_API_URL) `serve` scheduled nothing, its watched folder
    was never scanned; and SIGTERM took 70-80 s, the Prefect server it started stopping first. Now the server is
    milimo's own, with its scheduler, and outlives the runner's shutdown."""
    from conftest import milimo_process

    incoming, out = tmp_path / "incoming", tmp_path / "renders"
    incoming.mkdir()
    _one_shot_cut(incoming / "drop.otio")
    environ = {k: v for k, v in os.environ.items() if k != "PREFECT_API_URL"}  # serve starts its own
    proc = milimo_process("serve", "--watch", incoming, "--interval", "5", "--db", f"sqlite:///{tmp_path}/w.db",
                          "--out", out, "--model", tiny_model_dir, environ=environ, cwd=tmp_path,
                          stdout=subprocess.PIPE, stderr=subprocess.STDOUT, start_new_session=True)
    try:
        assert wait_for_takes(tmp_path / "w.db", lambda takes: any(t[0] == "succeeded" for t in takes),
                              timeout=240, while_alive=lambda: proc.poll() is None), \
            "the watched folder was never scanned"
        os.killpg(proc.pid, signal.SIGTERM)  # as a service manager stops it: the whole group
        proc.wait(timeout=60)
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()
    said = proc.stdout.read().decode()
    assert "Traceback" not in said and "ConnectError" not in said, said[-3000:]
    left = subprocess.run(["pgrep", "-f", str(incoming)], capture_output=True, text=True).stdout.split()
    assert not left, left  # no scan left behind


def test_the_last_line_of_a_failed_render_names_the_shot_when_the_outputs_fail_too(tmp_path, env, tiny_model_dir):
    """Before: a full disk failed the shot, then the preview, and the last line named ffmpeg's preview failure.
    Here the shot runs out of time and the rendered timeline cannot be written (its name is taken by a folder)."""
    board = copy_example(tmp_path / "b", steps=FAST_STEPS)
    out = tmp_path / "renders"
    OutputLayout.at(out).rendered_timeline("lighthouse", "lighthouse").mkdir(parents=True)
    proc = milimo("render", board, "--only", "harbour", "--time-limit", "0.001", "--model", tiny_model_dir,
                  "--db", f"sqlite:///{tmp_path / 'm.db'}", "--out", out, env=env, timeout=400)
    assert proc.returncode == 1, proc.stderr[-3000:]
    lines = [line for line in proc.stderr.splitlines() if line.startswith("milimo:")]
    assert "shot harbour" in lines[0] and "were not written" in " ".join(lines[1:]), lines
    assert "harbour" in lines[-1], lines  # what a person reads first


# ------------------------------------------------------------------ PostgreSQL dropping connections
def test_a_render_holds_while_postgresql_terminates_its_connections(tmp_path, env, tiny_model_dir, pg_url):
    """Before: with the render's backends terminated every 0.1 s (a restart, a failover), shots failed on the
    dropped connections (exit 1: a store call inside a task, or in the flow's own reads, is not a task retry).
    Every store operation is now retried on a fresh connection."""
    import threading

    import sqlalchemy as sa

    from storyboards.store import Store

    url = f"{pg_url}&application_name=milimo_dropped"
    board = copy_example(tmp_path / "b", steps=FAST_STEPS)
    Store.open(pg_url).engine.dispose()  # the store exists: what is attacked is the render, not its creation
    admin = sa.create_engine(pg_url.split("?")[0])
    stop, killed = threading.Event(), []

    def terminate() -> None:
        while not stop.wait(0.1):
            with admin.connect() as conn:
                killed.append(conn.execute(sa.text("select count(pg_terminate_backend(pid)) from pg_stat_activity "
                                                   "where application_name = 'milimo_dropped'")).scalar())

    killer = threading.Thread(target=terminate, daemon=True)
    killer.start()
    try:
        proc = milimo("render", board, "--model", tiny_model_dir, "--db", url, "--out", tmp_path / "renders",
                      env=env, timeout=600)
    finally:
        stop.set()
        killer.join()
        admin.dispose()
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert sum(killed) > 0  # connections were dropped while it rendered
    store = Store.open(pg_url)
    rows = store.status("lighthouse")
    assert [r.status for r in rows] == ["succeeded"] * 5 and not store.running_takes("lighthouse")
    timeline = otio.adapters.read_from_file(str(board))
    prompts = {c.metadata["milimo"]["shot_id"]: c.metadata["milimo"]["prompt"] for c in timeline.video_tracks()[0]}
    assert all(r.prompt == prompts[r.shot_id] for r in rows)  # byte for byte
    verify = milimo("verify", board, "--db", pg_url, "--out", tmp_path / "renders", env=env)
    assert verify.returncode == 0, verify.stdout + verify.stderr
