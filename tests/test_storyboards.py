"""Storyboards: parse and validate the examples, and a table of broken ones (no torch needed)."""

import shutil
from pathlib import Path

import opentimelineio as otio
import pytest

import storyboards as sb
from storyboards.validate import ValidationConfig

pytestmark = pytest.mark.fast  # the pure layer: `make test-fast`


EXAMPLES = Path(__file__).resolve().parents[1] / "storyboards" / "examples"
RT, TR = otio.opentime.RationalTime, otio.opentime.TimeRange


def test_five_shot_example_parses_validates_and_chains():
    board = sb.load(EXAMPLES / "lighthouse.otio")
    assert sb.validate(board).ok
    assert [s.shot_id for s in board.shots] == ["lighthouse-wide", "lighthouse-push", "lamp-close", "harbour",
                                                "harbour-pan"]
    graph = sb.ShotGraph.of(board)
    assert [c.shot_ids for c in graph.chains] == [("lighthouse-wide", "lighthouse-push", "lamp-close"),
                                                  ("harbour", "harbour-pan")]
    assert graph.predecessor("lamp-close") == "lighthouse-push" and graph.predecessor("harbour") is None
    assert graph.downstream("lighthouse-push") == ("lighthouse-push", "lamp-close")
    assert graph.independent("lamp-close", "harbour-pan")
    specs = sb.resolve_specs(board, "milimo/ltx2-tiny-random-v4")
    assert specs["lamp-close"].num_frames == 30 and specs["harbour-pan"].steps == 6
    assert len(specs["harbour"].loras) == 1 and len(specs["lighthouse-wide"].images) == 1


def test_editor_cut_imports_and_lists_shots_needing_prompts():
    board = sb.load(EXAMPLES / "editor_cut.edl")
    assert [s.frames for s in board.shots] == [24, 20, 36]
    report = sb.validate(board)
    assert report.needs_prompt == ["Harbour establishing", "Boat close up", "Lanterns"]
    assert all(p.code == "missing_prompt" for p in report.problems)


def test_reimport_keeps_derived_shot_ids_and_otioz_reads(tmp_path):
    first = sb.load(EXAMPLES / "editor_cut.edl")
    again = sb.load(EXAMPLES / "editor_cut.edl")
    assert [s.shot_id for s in first.shots] == [s.shot_id for s in again.shots]
    assert all(s.shot_id_derived for s in first.shots)
    otio.adapters.write_to_file(sb.load(EXAMPLES / "lighthouse.otio").timeline, str(tmp_path / "b.otio"))
    board = sb.load(tmp_path / "b.otio")
    assert len(board.shots) == 5
    otio.adapters.write_to_file(board.timeline, str(tmp_path / "b.otioz"))
    zipped = sb.load(tmp_path / "b.otioz")
    assert [s.shot_id for s in zipped.shots] == [s.shot_id for s in board.shots]


def test_spec_hash_depends_on_content_not_paths(tmp_path):
    a = sb.resolve_specs(sb.load(EXAMPLES / "lighthouse.otio"), "m")
    moved = tmp_path / "elsewhere"
    shutil.copytree(EXAMPLES, moved)
    b = sb.resolve_specs(sb.load(moved / "lighthouse.otio"), "m")
    assert {k: v.spec_hash for k, v in a.items()} == {k: v.spec_hash for k, v in b.items()}
    c = sb.resolve_specs(sb.load(moved / "lighthouse.otio"), "another-model")
    assert a["harbour"].spec_hash != c["harbour"].spec_hash
    from PIL import Image

    changed = Image.open(moved / "assets" / "first_frame.png").convert("RGB")
    changed.putpixel((0, 0), (255, 0, 255))
    changed.save(moved / "assets" / "first_frame.png")
    d = sb.resolve_specs(sb.load(moved / "lighthouse.otio"), "m")
    assert d["lighthouse-wide"].spec_hash != a["lighthouse-wide"].spec_hash
    assert d["harbour"].spec_hash == a["harbour"].spec_hash


def _board(tmp_path, mutate):
    """The example with one thing broken, written next to the example's assets."""
    shutil.copytree(EXAMPLES / "assets", tmp_path / "assets", dirs_exist_ok=True)
    tl = otio.adapters.read_from_file(str(EXAMPLES / "lighthouse.otio"))
    mutate(tl, tl.tracks[0])
    path = tmp_path / "broken.otio"
    otio.adapters.write_to_file(tl, str(path))
    return sb.load(path)


def _set(index, key, value):
    def mutate(tl, track):
        meta = dict(track[index].metadata["milimo"])
        if value is None:
            meta.pop(key, None)
        else:
            meta[key] = value
        track[index].metadata["milimo"] = meta
    return mutate


def _set_default(key, value):
    def mutate(tl, track):
        meta = dict(tl.metadata["milimo"])
        meta["defaults"] = {**dict(meta["defaults"]), key: value}
        tl.metadata["milimo"] = meta
    return mutate


def _duration(index, frames, rate=24):
    def mutate(tl, track):
        track[index].source_range = TR(RT(0, rate), RT(frames, rate))
    return mutate


def _capped(index, frames, cap):
    """A shot of `frames` in a storyboard that caps shot length (any length renders, as segments, without one)."""
    def mutate(tl, track):
        tl.metadata["milimo"] = {**dict(tl.metadata["milimo"]), "max_shot_frames": cap}
        _duration(index, frames)(tl, track)
    return mutate


def _gap_before(index):
    def mutate(tl, track):
        track.insert(index, otio.schema.Gap(source_range=TR(duration=RT(5, 24))))
    return mutate


BROKEN = [
    ("missing prompt", _set(1, "prompt", None), "shot 2 'Lighthouse push in': prompt: this shot needs a prompt"),
    ("width not /64", _set_default("width", 250),
     "timeline: defaults.width: 250 should be a multiple of 64. Fix: use a multiple of 64 from 64 to 4096, e.g. 256"),
    ("override height", _set(2, "overrides", {"height": 300}),
     "shot 3 'Lamp close up': overrides.height: 300 should be a multiple of 64. Fix: use a multiple of 64 from 64 to 4096, e.g. 320"),
    ("width beyond the model", _set_default("width", 65536), "defaults.width: 65536 should be less than or equal to 4096"),
    ("steps negative", _set_default("steps", -5), "timeline: defaults.steps: -5 should be greater than or equal to 1"),
    ("steps as text", _set(1, "overrides", {"steps": "40"}), "overrides.steps: '40' should be a valid integer"),
    ("guidance as bool", _set_default("guidance", True), "defaults.guidance: True should be a valid number"),
    ("overlap too large", _set_default("handoff_overlap", 99), "defaults.handoff_overlap: 99 should be less than or equal to 8"),
    ("default seed float", _set_default("seed", 1.7), "defaults.seed: 1.7 should be a valid integer"),
    ("clip seed float", _set(2, "seed", 3.0), "shot 3 'Lamp close up': seed: 3.0 should be a valid integer"),
    ("unsafe shot id", _set(2, "shot_id", "../../../escaped"), "shot 3 'Lamp close up': shot_id: '../../../escaped' is not a safe name"),
    ("absolute shot id", _set(2, "shot_id", "/tmp/x"), "shot_id: '/tmp/x' is not a safe name"),
    ("lora not safetensors", _set(3, "loras", [{"path": "assets/first_frame.png"}]),
     "shot 4 'Harbour': loras[0].path: 'assets/first_frame.png' is not a safetensors file"),
    ("image not an image", _set(0, "images", [{"path": "assets/loras/tiny-style-lora.safetensors", "frame": 0}]),
     "images[0].path: 'assets/loras/tiny-style-lora.safetensors' is not a readable image"),
    ("clip rate zero", _duration(1, 10, rate=0), "shot 2 'Lighthouse push in': rate: the clip's rate 0.0 is not positive"),
    ("zero frames", _duration(0, 0), "shot 1 'Lighthouse wide': duration: the clip is zero frames long"),
    ("too long", _capped(3, 400, 257), "duration: 400 frames is beyond the maximum shot length 257"),
    ("typo key", _set(0, "promt", "x"), "promt: unknown key. Fix: did you mean 'prompt'?"),
    ("typo default", _set_default("negativ_prompt", "x"), "timeline: defaults.negativ_prompt: unknown key. Fix: did you mean 'negative_prompt'?"),
    ("missing lora", _set(3, "loras", [{"path": "assets/loras/nope.safetensors", "weight": 1}]),
     "shot 4 'Harbour': loras[0].path: 'assets/loras/nope.safetensors' does not exist under the asset roots"),
    ("lora is a folder", _set(3, "loras", [{"path": "assets/loras"}]), "loras[0].path: 'assets/loras' is not a file"),
    ("dotdot escape", _set(3, "loras", [{"path": "../../etc/passwd"}]), "loras[0].path: '../../etc/passwd' resolves outside the asset roots"),
    ("absolute outside", _set(0, "images", [{"path": "/etc/hostname", "frame": 0}]), "images[0].path: '/etc/hostname' resolves outside the asset roots"),
    ("image frame out of shot", _set(0, "images", [{"path": "assets/first_frame.png", "frame": 40}]),
     "images[0].frame: 40 is not a frame of this 25-frame shot. Fix: use a pixel frame in 0..24"),
    ("handoff on first", _set(0, "handoff", "previous"), "shot 1 'Lighthouse wide': handoff: 'previous' on the first shot of the track"),
    ("handoff across gap", _gap_before(1), "shot 2 'Lighthouse push in': handoff: 'previous' across a gap"),
    ("bad handoff mode", _set(4, "handoff", "next"), "handoff: 'next' is not one of the choices. Fix: use one of ['previous', 'none']"),
    ("duplicate id", _set(4, "shot_id", "harbour"), "shot 5 'Harbour pan': shot_id: 'harbour' is also the id of shot 4 'Harbour'"),
    ("seed out of range", _set(2, "seed", -5), "shot 3 'Lamp close up': seed: -5 should be greater than or equal to 0"),
    ("ic lora half", _set(2, "reference_video", "assets/first_frame.png"), "ic_lora: IC-LoRA shots need both"),
]


@pytest.mark.parametrize("mutate,message", [(m, msg) for _, m, msg in BROKEN], ids=[n for n, _, _ in BROKEN])
def test_broken_storyboard_gives_its_specific_message(tmp_path, mutate, message):
    report = sb.validate(_board(tmp_path, mutate))
    texts = [str(p) for p in report.problems]
    assert any(message in t for t in texts), texts


def test_every_problem_is_collected_and_raised_together(tmp_path):
    def many(tl, track):
        _set(0, "promt", "x")(tl, track)
        _set(2, "seed", -1)(tl, track)
        _set_default("width", 100)(tl, track)
    board = _board(tmp_path, many)
    with pytest.raises(sb.StoryboardInvalid) as err:
        sb.resolve_specs(board, "m")
    assert len(err.value.problems) >= 3
    assert "promt" in str(err.value) and "seed" in str(err.value) and "width" in str(err.value)


def test_asset_roots_are_configurable(tmp_path):
    board = sb.load(EXAMPLES / "lighthouse.otio")
    report = sb.validate(board, ValidationConfig(asset_roots=(tmp_path,)))
    assert {p.field for p in report.problems} == {"images[0].path", "loras[0].path"}


def test_fcp_xml_cut_imports(tmp_path):
    cut = sb.load(EXAMPLES / "editor_cut.edl").timeline
    otio.adapters.write_to_file(cut, str(tmp_path / "cut.xml"), adapter_name="fcp_xml")
    board = sb.load(tmp_path / "cut.xml")
    assert [s.frames for s in board.shots] == [24, 20, 36]
    assert sb.validate(board).needs_prompt == ["Harbour establishing", "Boat close up", "Lanterns"]


def test_storyboards_import_without_torch():
    import subprocess
    import sys
    code = "import sys, storyboards; assert 'torch' not in sys.modules, 'storyboards pulled in torch'"
    assert subprocess.run([sys.executable, "-c", code], cwd=EXAMPLES.parents[1]).returncode == 0
