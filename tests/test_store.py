"""The metadata store on SQLite and on PostgreSQL (MILIMO_TEST_POSTGRES_URL; own schema per run)."""

import multiprocessing
import os
import shutil
import uuid
from pathlib import Path

import opentimelineio as otio
import pytest
from sqlalchemy import create_engine

import storyboards as sb
from storyboards.store import Store, TakeStatus

EXAMPLES = Path(__file__).resolve().parents[1] / "storyboards" / "examples"
PG_URL = os.environ.get("MILIMO_TEST_POSTGRES_URL")


@pytest.fixture(params=["sqlite", "postgresql"])
def store_url(request, tmp_path):
    if request.param == "sqlite":
        yield f"sqlite:///{tmp_path / 'milimo.db'}"
        return
    if not PG_URL:
        pytest.skip("MILIMO_TEST_POSTGRES_URL is not set")
    schema = f"milimo_test_{uuid.uuid4().hex[:12]}"
    admin = create_engine(PG_URL)
    with admin.begin() as conn:
        conn.exec_driver_sql(f'CREATE SCHEMA "{schema}"')
    sep = "&" if "?" in PG_URL else "?"
    yield f"{PG_URL}{sep}options=-csearch_path%3D{schema}"
    with admin.begin() as conn:
        conn.exec_driver_sql(f'DROP SCHEMA "{schema}" CASCADE')
    admin.dispose()


@pytest.fixture
def board_and_specs():
    board = sb.load(EXAMPLES / "lighthouse.otio")
    return board, sb.resolve_specs(board, "milimo/test")


def _render_all(store, name, plan):
    """Record takes as the flows would: each shot consumes its predecessor's handoff."""
    made = {}
    for item in plan:
        cur = {s: store.current_take(name, s) for s in ("lighthouse-wide", "lighthouse-push", "lamp-close",
                                                         "harbour", "harbour-pan")}
        pred = {"lighthouse-push": "lighthouse-wide", "lamp-close": "lighthouse-push",
                "harbour-pan": "harbour"}.get(item.shot_id)
        up = cur[pred] if pred else None
        take = store.start_take(name, item.shot_id, handoff_in_take_id=up.id if up else None,
                                handoff_in_path=up.handoff_out_path if up else None,
                                handoff_in_sha256=up.handoff_out_sha256 if up else None)
        store.finish_take(take, handoff_out_path=f"/r/{item.shot_id}/{take}.safetensors",
                          handoff_out_sha256=f"{take:064d}", outputs={"mp4": f"/r/{item.shot_id}/{take}.mp4"},
                          artifacts=[{"kind": "mp4", "uri": f"/r/{take}.mp4", "sha256": "0" * 64, "frames": 25,
                                      "fps": 24.0}])
        made[item.shot_id] = take
    return made


def test_import_is_idempotent_and_changed_spec_is_new(store_url, board_and_specs, tmp_path):
    store = Store.open(store_url)
    board, specs = board_and_specs
    assert store.import_revision(board, specs) == 1
    assert store.import_revision(board, specs) == 1
    assert sorted(kind for kind, _, _ in store.files_seen()) == ["image", "lora"]
    copy = tmp_path / "b"
    shutil.copytree(EXAMPLES, copy)
    tl = otio.adapters.read_from_file(str(copy / "lighthouse.otio"))
    meta = dict(tl.tracks[0][2].metadata["milimo"])
    meta["prompt"] = "a different lamp"
    tl.tracks[0][2].metadata["milimo"] = meta
    otio.adapters.write_to_file(tl, str(copy / "lighthouse.otio"))
    board2 = sb.load(copy / "lighthouse.otio")
    specs2 = sb.resolve_specs(board2, "milimo/test")
    assert store.import_revision(board2, specs2) == 2
    assert specs2["lamp-close"].spec_hash != specs["lamp-close"].spec_hash


def test_plan_skip_stale_and_failed(store_url, board_and_specs):
    store = Store.open(store_url)
    board, specs = board_and_specs
    store.import_revision(board, specs)
    plan = store.plan(board.name)
    assert [(p.shot_id, p.reason) for p in plan][:2] == [("lighthouse-wide", "new"), ("lighthouse-push", "upstream re-renders")]
    first = _render_all(store, board.name, plan)
    assert store.plan(board.name) == []

    # Re-render from shot 2: shots 2-3 go stale; shot 1 and the other chain keep their takes.
    assert store.rerender_from(board.name, "lighthouse-push") == ["lighthouse-push", "lamp-close"]
    assert [p.shot_id for p in store.plan(board.name)] == ["lighthouse-push", "lamp-close"]
    second = _render_all(store, board.name, store.plan(board.name))
    assert store.plan(board.name) == []
    assert store.current_take(board.name, "lighthouse-wide").id == first["lighthouse-wide"]
    assert store.current_take(board.name, "harbour-pan").id == first["harbour-pan"]
    assert [t.status for t in store.takes(board.name, "lamp-close")] == ["stale", "succeeded"]

    # A failed take leaves the earlier good take current.
    failed = store.start_take(board.name, "harbour")
    store.fail_take(failed, "CUDA out of memory")
    assert store.current_take(board.name, "harbour").id == first["harbour"]
    assert store.plan(board.name) == []

    # The lineage of the last shot goes back through its chain.
    assert [s for _, s, _ in store.lineage(second["lamp-close"])] == ["lamp-close", "lighthouse-push",
                                                                      "lighthouse-wide"]


def test_dead_process_takes_become_failed(store_url, board_and_specs):
    store = Store.open(store_url)
    board, specs = board_and_specs
    store.import_revision(board, specs)
    store.start_take(board.name, "harbour")
    assert store.abandon_running(board.name) == 1
    (take,) = store.takes(board.name, "harbour")
    assert take.status == TakeStatus.failed.value and "abandoned" in take.error
    assert store.plan(board.name)[0].shot_id == "lighthouse-wide"


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
