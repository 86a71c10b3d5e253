"""milimo.toml and asset roots, through the CLI a user runs."""

import shutil
from pathlib import Path

from tests.test_trust import milimo

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
