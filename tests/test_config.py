"""milimo.toml and asset roots, through the CLI a user runs."""

import os
import shutil
from pathlib import Path

import pytest
from conftest import milimo

pytestmark = pytest.mark.fast  # the pure layer: `make test-fast`

EXAMPLES = Path(__file__).resolve().parents[1] / "storyboards" / "examples"


def _split_example(tmp_path: Path) -> tuple[Path, Path]:
    """The example storyboard in one folder, its assets in a library elsewhere (as a studio keeps them)."""
    boards, library = tmp_path / "boards", tmp_path / "library"
    boards.mkdir()
    shutil.copy(EXAMPLES / "lighthouse.otio", boards)
    shutil.copytree(EXAMPLES / "assets", library / "assets")
    return boards / "lighthouse.otio", library


def test_asset_roots_from_the_command_line_and_from_milimo_toml(tmp_path):
    board, library = _split_example(tmp_path)
    lost = milimo("validate", board)
    assert lost.returncode == 2 and "first_frame.png" in lost.stderr and "asset root" in lost.stderr
    assert milimo("validate", board, "--asset-root", library).returncode == 0
    config = tmp_path / "milimo.toml"
    config.write_text('[paths]\nasset_roots = ["library"]\n')  # relative to the file
    ok = milimo("validate", board, "--config", config)
    assert ok.returncode == 0, ok.stderr
    escape = milimo("validate", board, "--asset-root", library / "assets" / "loras")
    assert escape.returncode == 2 and ("outside the asset roots" in escape.stderr or "does not exist" in escape.stderr)


def test_a_config_with_an_unknown_key_is_refused_naming_it(tmp_path):
    config = tmp_path / "milimo.toml"
    config.write_text('[paths]\nasset_root = ["x"]\n[qa]\npixel_ratio = -1\n[dashbord]\nport = 1\n')
    proc = milimo("validate", EXAMPLES / "lighthouse.otio", "--config", config)
    assert proc.returncode == 2 and "Traceback" not in proc.stderr
    lines = proc.stderr.strip().splitlines()
    assert any("paths.asset_root: unknown key" in line and "'asset_roots'" in line for line in lines), lines
    assert any("qa.pixel_ratio" in line for line in lines) and any("dashbord: unknown key" in line for line in lines)
    sample = milimo("validate", EXAMPLES / "lighthouse.otio", "--config", Path(__file__).parents[1] / "infra" /
                    "milimo.toml")
    assert sample.returncode == 0, sample.stderr  # the committed sample is valid
    broken = tmp_path / "broken.toml"
    broken.write_text("[paths\n")
    bad = milimo("validate", EXAMPLES / "lighthouse.otio", "--config", broken)
    assert bad.returncode == 2 and "not valid TOML" in bad.stderr


def test_the_farms_prefect_server_from_milimo_toml(tmp_path, monkeypatch):
    """`[farm] prefect_api_url` is the Prefect server a render on the farm and its workers report to; an exported
    PREFECT_API_URL wins, and a command that is not on the farm is left alone."""
    from flows.cli import apply_config, build_parser

    config = tmp_path / "milimo.toml"
    config.write_text('[farm]\nscheduler = "tcp://head:8786"\nprefect_api_url = "http://head:4200/api"\n')
    monkeypatch.setattr(os, "environ", dict(os.environ))  # apply_config writes os.environ: a copy, put back after
    os.environ.pop("PREFECT_API_URL", None)
    apply_config(build_parser().parse_args(["status", "x.otio", "--config", str(config)]))
    assert "PREFECT_API_URL" not in os.environ
    for argv in (["render", "x.otio", "--config", str(config)], ["worker", "--scheduler", "tcp://head:8786",
                                                                   "--config", str(config)]):
        os.environ.pop("PREFECT_API_URL", None)
        args = build_parser().parse_args(argv)
        apply_config(args)
        assert os.environ["PREFECT_API_URL"] == "http://head:4200/api"
    assert args.command == "worker"
    os.environ["PREFECT_API_URL"] = "http://mine:4200/api"
    apply_config(build_parser().parse_args(["render", "x.otio", "--config", str(config)]))
    assert os.environ["PREFECT_API_URL"] == "http://mine:4200/api"
