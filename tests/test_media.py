import numpy as np
import pytest

from milimo_engine.media import probe, rational_fps, read_frames, write_mp4

pytestmark = pytest.mark.fast  # the pure layer: `make test-fast`


def test_render_to_mp4_has_frames_fps_and_audio(pipeline, request_256, tmp_path):
    result = pipeline(request_256.replace(num_frames=30))
    path = result.save_mp4(tmp_path / "shot.mp4")
    info = probe(path)
    assert (info.frames, float(info.fps), info.width, info.height) == (30, 24.0, 256, 256)
    assert info.has_audio and info.audio_sample_rate == 48_000  # resampled from the model's rate for editors
    assert not list(tmp_path.glob(".*partial*"))


def test_ntsc_rates_are_rational_and_frames_exact(tmp_path):
    assert rational_fps(23.976) == rational_fps(24000 / 1001)
    assert rational_fps(23.976).denominator == 1001
    frames = np.zeros((10, 64, 64, 3), np.uint8)
    frames[:, :, :32] = 255
    info = probe(write_mp4(tmp_path / "ntsc.mp4", frames, 24000 / 1001))
    assert info.frames == 10 and info.fps == rational_fps(23.976)
    decoded = read_frames(tmp_path / "ntsc.mp4")
    assert decoded.shape == (10, 64, 64, 3) and decoded[:, :, :24].mean() > 200 and decoded[:, :, 40:].mean() < 50


def test_failed_write_leaves_no_file(tmp_path):
    bad = np.zeros((3, 63, 63, 3), np.uint8)  # odd size: libx264 with yuv420p refuses it
    target = tmp_path / "bad.mp4"
    try:
        write_mp4(target, bad, 24)
    except RuntimeError:
        pass
    assert not target.exists()
    assert not list(tmp_path.iterdir())
