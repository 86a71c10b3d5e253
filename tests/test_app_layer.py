"""The application layer (`milimo`): settings read once, one context and one prepare per process, one request
type, one layout, one error table; each through what a user touches where there is one."""

import json
import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
from conftest import ISOLATED, ROOT, copy_example, milimo

from milimo.errors import outcome
from milimo.request import RenderRequest
from milimo.settings import ENVIRONMENT, Settings

pytestmark = pytest.mark.fast

def test_settings_read_once_in_their_order(tmp_path):
    config = tmp_path / "milimo.toml"
    config.write_text('[paths]\nout = "from-file"\n')
    env = {"MILIMO_DB_URL": "sqlite:///env.db", "MILIMO_OUT": "/env/out", "MILIMO_LEASE_TTL_S": "7"}
    settings = Settings.load(str(config), env)
    assert settings.db_url == "sqlite:///env.db"  # the environment, where the file says nothing
    assert settings.out_root == tmp_path / "from-file"  # the file over the environment, relative to the file
    assert settings.lease_ttl_s == 7.0
    assert Settings.load(str(config), env, out_root=Path("/cli")).out_root == Path("/cli")  # the command line wins
    assert set(ENVIRONMENT) >= {"MILIMO_DB_URL", "MILIMO_CACHE_DIR", "MILIMO_LOCK_DIR", "MILIMO_WORKER_NAME",
                                "MILIMO_RENDER_RETRIES", "MILIMO_RETRY_BACKOFF_S", "MILIMO_LEASE_TTL_S",
                                "MILIMO_HEARTBEAT_TIMEOUT_S", "MILIMO_DASHBOARD_TOKEN"}
    modules = [p for p in (ROOT / d for d in ("milimo", "milimo_engine", "storyboards", "tasks", "flows",
                                              "dashboard")) for p in p.rglob("*.py")]
    reads = re.compile(r"""(environ\.get\(|environ\[|getenv\()["']MILIMO_""")
    readers = sorted(str(p.relative_to(ROOT)) for p in modules if reads.search(p.read_text())
                     and p.name != "settings.py")
    assert readers == [], f"MILIMO_* read outside milimo/settings.py: {readers}"


def test_a_bad_variable_exits_2_naming_it(tmp_path):
    proc = milimo("validate", copy_example(tmp_path / "b"), env={"MILIMO_LEASE_TTL_S": "soon"})
    assert proc.returncode == 2 and "Traceback" not in proc.stderr, proc.stderr
    assert "MILIMO_LEASE_TTL_S='soon'" in proc.stderr and "Fix:" in proc.stderr


def test_a_typo_in_milimo_model_json_exits_2_naming_the_key(tmp_path, tiny_model_dir):
    model = tmp_path / "model"
    shutil.copytree(tiny_model_dir, model)
    manifest = json.loads((model / "milimo-model.json").read_text())
    manifest["cross_timstep"] = manifest.pop("cross_timestep", True)
    (model / "milimo-model.json").write_text(json.dumps(manifest))
    proc = milimo("render", copy_example(tmp_path / "b"), "--model", model, "--db", f"sqlite:///{tmp_path / 'm.db'}")
    assert proc.returncode == 2 and "Traceback" not in proc.stderr, proc.stderr
    assert "cross_timstep" in proc.stderr and "unknown key" in proc.stderr and "cross_timestep" in proc.stderr
    assert not (tmp_path / "m.db").exists()


def test_the_error_table_gives_each_way_out_its_answer(tmp_path):
    from milimo_engine.errors import ManifestError, RenderCancelled
    from storyboards.errors import ConfigError, Interrupted, ShotsFailed, StoreError, UnknownShot

    cases = [
        (ShotsFailed("b", {"s": "boom"}), 1, 500, "Failed"),
        (ConfigError("x", "y"), 2, 422, "Failed"),
        (UnknownShot("b", "nope", ["a"]), 2, 404, "Failed"),
        (StoreError("cannot open the store", "fix it"), 2, 503, "Failed"),
        (ManifestError(tmp_path / "milimo-model.json", "k: unknown key", "did you mean 'key'?"), 2, 422, "Failed"),
        (Interrupted(2), 130, 503, "Cancelled"),
        (Interrupted(15), 143, 503, "Cancelled"),
        (KeyboardInterrupt(), 130, 503, "Cancelled"),
        (RenderCancelled("stage1", 3), 130, 503, "Cancelled"),
        (FileExistsError("out exists"), 2, 409, "Failed"),
        (ZeroDivisionError("bug"), 1, 500, "Failed"),
    ]
    for exc, code, status, state in cases:
        said = outcome(exc)
        assert (said.exit_code, said.http_status, said.state) == (code, status, state), exc
        assert said.lines and all("\n" not in line for line in said.lines)
    assert outcome(ZeroDivisionError("x"), rendering=True).lines == ("render failed: ZeroDivisionError: x",)
    assert not outcome(ZeroDivisionError("x")).fixable


def test_every_exit_code_in_the_readme_has_a_test():
    """The README's exit codes, each asserted by a test that runs milimo."""
    readme = (ROOT / "README.md").read_text()
    codes = {int(c) for c in ("0", "1", "2", "130", "143") if f"`{c}`" in readme}
    assert codes == {0, 1, 2, 130, 143}
    tests = "".join(p.read_text() for p in (ROOT / "tests").glob("test_*.py"))
    for code, evidence in ((0, "returncode == 0"), (1, "returncode == 1"), (2, "returncode == 2"),
                           (130, "returncode == 130"), (143, "returncode == 128 + sig")):
        assert evidence in tests, code


def test_a_render_request_is_one_json_document(tmp_path):
    request = RenderRequest.rerender("cut.edl", "harbour", {"seed": 4, "prompt": None}, prompts="shots.csv",
                                     size=(768, 512), rate=25)
    again = RenderRequest.model_validate_json(request.model_dump_json())
    assert again == request and again.overrides == {"harbour": {"seed": 4, "prompt": None}}
    assert again.shot_ids() == ["harbour", "harbour"]
    with pytest.raises(ValueError):
        RenderRequest(storyboard="x.otio", colour="red")
    bad = tmp_path / "bad.json"
    bad.write_text('{"storyboard": "x.otio", "rate": -1}')
    proc = milimo("run", bad)
    assert proc.returncode == 2 and "not a render request" in proc.stderr and "Traceback" not in proc.stderr


def test_every_output_name_comes_from_the_layout(tmp_path):
    from storyboards.errors import ConfigError
    from storyboards.paths import OutputLayout

    layout = OutputLayout.at(tmp_path)
    names = [layout.take_file("lighthouse", "harbour", 3, ".mp4"), layout.imported_storyboard("lighthouse"),
             layout.rendered_timeline("lighthouse", "cut"), layout.conformed("lighthouse", ".xml"),
             layout.preview("lighthouse"), layout.contact_sheet("lighthouse"), layout.preview_parts("lighthouse"),
             layout.job_log("lighthouse", 2)]
    assert all(p.is_relative_to(tmp_path.resolve()) for p in names)
    assert [p.name for p in names] == ["lighthouse_harbour_t003.mp4", "lighthouse.storyboard.otio",
                                       "cut.rendered.otio", "lighthouse.conformed.xml", "preview.mp4",
                                       "contact_sheet.png", ".preview-parts", "lighthouse-2.log"]
    assert layout.preview_parts("../../escape").is_relative_to(tmp_path.resolve())  # hostile names stay inside
    (tmp_path / "lighthouse").symlink_to("/tmp")
    with pytest.raises(ConfigError):
        layout.preview("lighthouse")  # a symlink out of the root is refused
    code = "".join(p.read_text() for d in ("milimo", "tasks", "flows", "dashboard") for p in (ROOT / d).rglob("*.py"))
    for name in ('"preview.mp4"', '"contact_sheet.png"', '.rendered.otio"', '.storyboard.otio"', '".preview-parts"'):
        assert name not in code, name


def test_progress_never_runs_backwards():
    from tasks.progress import progress_fraction

    for stages in (("stage1", "stage2"), ("stage1", "stage2", "temporal_refine")):
        seen = [progress_fraction(stage, step, total, stages) for stage, total in
                zip(stages, (8, 3, 3), strict=False) for step in range(1, total + 1)]
        assert seen == sorted(seen) and seen[-1] == pytest.approx(1.0) and seen[0] > 0


def test_status_and_qa_do_not_import_prefect():
    code = ("import sys; import flows.cli.reads, milimo.reports, milimo.qa, milimo.outputs, dashboard; "
            "print('prefect' in sys.modules)")
    proc = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, timeout=60)
    assert proc.stdout.strip() == "False", proc.stderr


def test_the_suite_is_isolated_from_the_users_milimo():
    """Every test (and every milimo it starts) gets the session's own default store, outputs, config, cache and
    locks; `conftest.pytest_sessionfinish` fails the run if anything under the repository's renders/ changed."""
    settings = Settings.load()
    for path in (Path(settings.db_url.removeprefix("sqlite:///")), settings.out_root, settings.cache_dir,
                 settings.locks, Path(os.environ["MILIMO_CONFIG"])):
        assert path.is_relative_to(ISOLATED), path
    proc = subprocess.run([sys.executable, "-c", "from milimo.settings import Settings; "
                           "print(Settings.load().model_dump_json())"], cwd=ROOT, capture_output=True, text=True)
    child = json.loads(proc.stdout)
    assert child["db_url"] == settings.db_url and child["out_root"] == str(settings.out_root)


def test_a_relative_model_folder_is_the_one_where_the_command_runs(tmp_path, monkeypatch):
    """`--model t` (or a request's "model": "t") names ./t; it reached the engine relative, and the distilled
    LoRA was then looked for at t/t/loras/…: every shot failed."""
    import storyboards
    from milimo.prepare import resolve_model_dir

    monkeypatch.chdir(tmp_path)
    assert resolve_model_dir("t") == (str(tmp_path / "t"), True)

    def with_model(timeline):
        timeline.metadata["milimo"] = {**dict(timeline.metadata["milimo"]),
                                       "defaults": {**dict(timeline.metadata["milimo"]["defaults"]), "model": "m"}}

    board = storyboards.load(copy_example(tmp_path / "b", edit=with_model))
    assert resolve_model_dir(None, board) == (str(tmp_path / "b" / "m"), True)
