"""The metadata store on SQLite and on PostgreSQL (whenever a server answers; own schema per test)."""

import multiprocessing
import os
import shutil
import socket
import time
from pathlib import Path

import opentimelineio as otio
import pytest

import storyboards as sb
from storyboards.planner import plan
from storyboards.store import Store, artifact_record

pytestmark = pytest.mark.fast  # the pure layer: `make test-fast`


EXAMPLES = Path(__file__).resolve().parents[1] / "storyboards" / "examples"


@pytest.fixture
def board_and_specs():
    board = sb.load(EXAMPLES / "lighthouse.otio")
    return board, sb.resolve_specs(board, "milimo/test")


def _plan(store, board):
    return plan(sb.ShotGraph.of(board), store.shot_states(board.name))[0]


def _render_all(store, name, planned, folder: Path):
    """Record takes as the flows would: each shot consumes its predecessor's handoff; real files, real hashes."""
    made = {}
    preds = {"lighthouse-push": "lighthouse-wide", "lamp-close": "lighthouse-push", "harbour-pan": "harbour"}
    for item in planned:
        pred = preds.get(item.shot_id)
        up = store.current_take(name, pred) if pred else None
        take = store.start_take(name, item.shot_id, handoff_in_take_id=up.id if up else None,
                                handoff_in_path=up.handoff_out_path if up else None,
                                handoff_in_sha256=up.handoff_out_sha256 if up else None)
        mp4 = folder / f"{item.shot_id}-{take}.mp4"
        mp4.write_bytes(f"video of take {take}".encode())
        handoff = folder / f"{item.shot_id}-{take}.safetensors"
        handoff.write_bytes(f"handoff of take {take}".encode())
        store.finish_take(take, handoff_out_path=str(handoff), handoff_out_sha256=f"{take:064d}",
                          outputs={"mp4": str(mp4)},
                          artifacts=[artifact_record("mp4", mp4, 25, 24.0), artifact_record("handoff", handoff)])
        made[item.shot_id] = take
    return made


def _edited_copy(tmp_path, prompt):
    copy = tmp_path / "b"
    if not copy.exists():
        shutil.copytree(EXAMPLES, copy)
    tl = otio.adapters.read_from_file(str(EXAMPLES / "lighthouse.otio"))
    if prompt:
        meta = dict(tl.tracks[0][2].metadata["milimo"])
        meta["prompt"] = prompt
        tl.tracks[0][2].metadata["milimo"] = meta
    otio.adapters.write_to_file(tl, str(copy / "lighthouse.otio"))
    board = sb.load(copy / "lighthouse.otio")
    return board, sb.resolve_specs(board, "milimo/test")


def test_import_is_idempotent_and_changed_spec_is_new(store_url, board_and_specs, tmp_path):
    store = Store.open(store_url)
    board, specs = _edited_copy(tmp_path, None)
    assert store.import_revision(board, specs) == 1
    assert store.import_revision(board, specs) == 1
    assert sorted(kind for kind, _, _ in store.files_seen()) == ["image", "lora"]
    board2, specs2 = _edited_copy(tmp_path, "a different lamp")
    assert store.import_revision(board2, specs2) == 2
    assert specs2["lamp-close"].spec_hash != specs["lamp-close"].spec_hash


def test_reverting_the_file_makes_the_earlier_revision_current(store_url, tmp_path):
    """Defect 1: the file on disk is the truth, also when it goes back to content the store has seen."""
    store = Store.open(store_url)
    first, specs1 = _edited_copy(tmp_path, None)
    store.import_revision(first, specs1)
    edited, specs2 = _edited_copy(tmp_path, "an edited lamp")
    assert store.import_revision(edited, specs2) == 2
    assert {r.shot_id: r.prompt for r in store.status("lighthouse")}["lamp-close"] == "an edited lamp"
    reverted, specs3 = _edited_copy(tmp_path, None)
    assert store.import_revision(reverted, specs3) == 1
    status = {r.shot_id: r for r in store.status("lighthouse")}
    assert status["lamp-close"].prompt == specs1["lamp-close"].prompt
    assert status["lamp-close"].spec_hash == specs1["lamp-close"].spec_hash


def test_another_file_with_the_same_timeline_name_is_refused(store_url, board_and_specs, tmp_path):
    store = Store.open(store_url)
    board, specs = board_and_specs
    store.import_revision(board, specs)
    other, other_specs = _edited_copy(tmp_path, None)
    with pytest.raises(sb.StoryboardFileError, match="storyboard_id"):
        store.import_revision(other, other_specs)
    claimed_tl = otio.adapters.read_from_file(str(other.source_path))
    claimed_tl.metadata["milimo"] = {**dict(claimed_tl.metadata["milimo"]), "storyboard_id": "lighthouse"}
    otio.adapters.write_to_file(claimed_tl, str(other.source_path))
    claimed = sb.load(other.source_path)
    assert store.import_revision(claimed, sb.resolve_specs(claimed, "milimo/test")) == 2  # the file changed
    assert {sid: st.spec_hash for sid, st in store.shot_states("lighthouse").items()} == \
        {sid: spec.spec_hash for sid, spec in specs.items()}  # ... but no shot did


def test_plan_skip_stale_failed_and_damaged(store_url, board_and_specs, tmp_path):
    store = Store.open(store_url)
    board, specs = board_and_specs
    store.import_revision(board, specs)
    planned = _plan(store, board)
    assert [(p.shot_id, p.reason) for p in planned][:2] == [("lighthouse-wide", "new"),
                                                            ("lighthouse-push", "upstream re-renders")]
    first = _render_all(store, board.name, planned, tmp_path)
    assert _plan(store, board) == []

    # Re-render from shot 2: shots 2-3 go stale; shot 1 and the other chain keep their takes.
    assert store.rerender_from(board.name, "lighthouse-push") == ["lighthouse-push", "lamp-close"]
    assert [p.shot_id for p in _plan(store, board)] == ["lighthouse-push", "lamp-close"]
    second = _render_all(store, board.name, _plan(store, board), tmp_path)
    assert _plan(store, board) == []
    assert store.current_take(board.name, "lighthouse-wide").id == first["lighthouse-wide"]
    assert [t.status for t in store.takes(board.name, "lamp-close")] == ["stale", "succeeded"]

    # A failed take leaves the earlier good take current.
    failed = store.start_take(board.name, "harbour")
    store.fail_take(failed, "CUDA out of memory")
    assert store.current_take(board.name, "harbour").id == first["harbour"]
    assert _plan(store, board) == []

    # A deleted or damaged artifact: the shot is not done; status and verify say so.
    Path(store.current_take(board.name, "harbour-pan").outputs.mp4).unlink()
    mp4 = Path(store.current_take(board.name, "harbour").outputs.mp4)
    mp4.write_bytes(b"truncated")
    reasons = {p.shot_id: p.reason for p in _plan(store, board)}
    assert reasons["harbour"].startswith("mp4 damaged") and reasons["harbour-pan"] == "upstream re-renders"
    status = {r.shot_id: r for r in store.status(board.name)}
    assert status["harbour-pan"].problem == "mp4 missing" and status["harbour"].problem.startswith("mp4 damaged")
    assert {(c.shot_id, c.kind) for c in store.verify(board.name)} == {("harbour", "mp4"), ("harbour-pan", "mp4")}
    # Same size, same mtime, other bytes: only a full check (verify) sees it.
    wide = Path(store.current_take(board.name, "lighthouse-wide").outputs.mp4)
    st = wide.stat()
    wide.write_bytes(bytes(b ^ 1 for b in wide.read_bytes()))
    os.utime(wide, ns=(st.st_atime_ns, st.st_mtime_ns))
    assert ("lighthouse-wide", "mp4") in {(c.shot_id, c.kind) for c in store.verify(board.name)}

    # The lineage of the last shot goes back through its chain.
    assert [s for _, s, _ in store.lineage(second["lamp-close"])] == ["lamp-close", "lighthouse-push",
                                                                      "lighthouse-wide"]


def test_a_take_finishing_after_a_pin_keeps_the_pin_current(store_url, board_and_specs, tmp_path):
    """Before (issue 21): a render already running replaced a take the director pinned meanwhile."""
    store = Store.open(store_url)
    board, specs = board_and_specs
    store.import_revision(board, specs)
    _render_all(store, board.name, _plan(store, board), tmp_path)  # take 1 of every shot
    store.rerender_from(board.name, "harbour")
    _render_all(store, board.name, _plan(store, board), tmp_path)  # take 2 of harbour, current
    running = store.start_take(board.name, "harbour")  # take 3 renders while...
    store.pin_take(board.name, "harbour", 1)  # ...the director pins take 1
    (tmp_path / "t3.mp4").write_bytes(b"take 3")
    store.finish_take(running, outputs={"mp4": str(tmp_path / "t3.mp4")},
                      artifacts=[artifact_record("mp4", tmp_path / "t3.mp4", 25, 24.0)])
    assert store.current_take(board.name, "harbour").number == 1  # the pin holds
    assert store.shot_states(board.name)["harbour"].pinned
    assert [t.status for t in store.takes(board.name, "harbour")][-1] == "succeeded"  # take 3 kept beside it
    later = store.start_take(board.name, "harbour")  # a take started after the pin (a render asked for it)
    (tmp_path / "t4.mp4").write_bytes(b"take 4")
    store.finish_take(later, outputs={"mp4": str(tmp_path / "t4.mp4")},
                      artifacts=[artifact_record("mp4", tmp_path / "t4.mp4", 25, 24.0)])
    assert store.current_take(board.name, "harbour").number == 4


def test_shot_lease_is_exclusive_until_released_expired_or_its_holder_dies(store_url, board_and_specs):
    store = Store.open(store_url)
    board, specs = board_and_specs
    store.import_revision(board, specs)
    assert store.acquire_lease("lighthouse", "harbour", "a:1", ttl_s=60) is None
    assert store.acquire_lease("lighthouse", "harbour", "b:2", ttl_s=60) == "a:1"
    assert store.acquire_lease("lighthouse", "harbour-pan", "b:2", ttl_s=60) is None  # per shot
    assert store.renew_lease("lighthouse", "harbour", "b:2", 60) is False
    store.release_lease("lighthouse", "harbour", "a:1")
    assert store.acquire_lease("lighthouse", "harbour", "b:2", ttl_s=0.2) is None
    time.sleep(0.4)  # b:2 stopped renewing
    assert store.acquire_lease("lighthouse", "harbour", "c:3", ttl_s=60) is None
    assert store.renew_lease("lighthouse", "harbour", "b:2", 60) is False
    assert store.acquire_lease("lighthouse", "harbour", "d:4", ttl_s=60, is_dead=lambda h: h == "c:3") is None
    with pytest.raises(sb.UnknownShot):
        store.acquire_lease("lighthouse", "nope", "d:4", ttl_s=60)


def _writer(url, n):
    store = Store.open(url)
    return [store.start_take("lighthouse", "harbour") for _ in range(n)]


def test_two_processes_record_takes_without_duplicates(store_url, board_and_specs):
    store = Store.open(store_url)
    board, specs = board_and_specs
    store.import_revision(board, specs)
    ctx = multiprocessing.get_context("spawn")
    with ctx.Pool(2) as pool:
        results = pool.starmap(_writer, [(store_url, 15), (store_url, 15)])
    ids = [i for r in results for i in r]
    assert len(set(ids)) == 30
    numbers = [t.number for t in store.takes(board.name, "harbour")]
    assert sorted(numbers) == list(range(1, 31))


def test_migrations_match_the_models(store_url):
    """No drift: the schema the migrations build is the schema the ORM models describe."""
    from alembic.autogenerate import compare_metadata
    from alembic.runtime.migration import MigrationContext

    from storyboards.store.models import Base

    store = Store.open(store_url)
    with store.engine.connect() as conn:
        diff = compare_metadata(MigrationContext.configure(conn, opts={"compare_type": True}), Base.metadata)
    assert diff == []


def test_migrations_ship_inside_the_package():
    import storyboards.store.db as db

    assert (db.MIGRATIONS_DIR / "env.py").is_file()
    assert db.MIGRATIONS_DIR.is_relative_to(Path(db.__file__).parent)
    assert sorted(p.name for p in (db.MIGRATIONS_DIR / "versions").glob("0*.py"))[-1].startswith("0011")


def test_store_problems_are_one_line_naming_the_fix(tmp_path):
    """Defect 10: unreachable, newer schema, missing version row, read-only: StoreError, never a traceback."""
    from sqlalchemy import create_engine, text

    with pytest.raises(sb.StoreError, match="cannot open the store .*Fix: start the database server"):
        with socket.socket() as s:
            s.bind(("127.0.0.1", 0))
            port = s.getsockname()[1]
        Store.open(f"postgresql+psycopg://postgres@127.0.0.1:{port}/test")
    for name, damage, message in (("newer", "update alembic_version set version_num = '0099'",
                                   "0099, newer than this milimo"),
                                  ("norow", "delete from alembic_version", "no schema version row")):
        url = f"sqlite:///{tmp_path / name}.db"
        Store.open(url)
        with create_engine(url).begin() as conn:
            conn.execute(text(damage))
        with pytest.raises(sb.StoreError, match=message):
            Store.open(url)
    ro = tmp_path / "ro.db"
    Store.open(f"sqlite:///{ro}")
    store = Store.open(f"sqlite:///file:{ro}?mode=ro&uri=true")
    board = sb.load(EXAMPLES / "lighthouse.otio")
    with pytest.raises(sb.StoreError, match="read-only"):
        store.import_revision(board, sb.resolve_specs(board, "m"))
