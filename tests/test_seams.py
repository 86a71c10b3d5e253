"""Seam QA metrics on synthetic clips where the answer is known (the random tiny model makes every cut
look alike, so sensitivity is tested here)."""

import numpy as np
import pytest
from PIL import Image

from storyboards.seams import SeamThresholds, seam_metrics

pytestmark = pytest.mark.fast  # the pure layer: `make test-fast`


SR = 48_000
T = SeamThresholds()


def _world() -> np.ndarray:
    rng = np.random.default_rng(0)
    small = (rng.random((8, 75, 3)) * 255).astype(np.uint8)
    return np.asarray(Image.fromarray(small).resize((1200, 128), Image.BICUBIC))


def _pan(world: np.ndarray, start: int, n: int, width: int = 96) -> np.ndarray:
    return np.stack([world[:, start + 3 * i: start + 3 * i + width] for i in range(n)])


@pytest.fixture(scope="module")
def pan():
    return _pan(_world(), 0, 16)


def test_a_smooth_pan_cut_in_the_middle_is_not_a_seam(pan):
    m = seam_metrics(pan[:8], pan[8:])
    assert m.pixel_ratio == pytest.approx(1.0, abs=0.2) and m.histogram < 0.02 and m.luma_jump < 1
    assert m.verdict("handoff", T) == (m.score(T), False)


def test_a_jump_to_another_picture_is_flagged(pan):
    other = _pan(_world(), 700, 8)
    m = seam_metrics(pan[:8], other)
    assert m.pixel_ratio > T.pixel_ratio
    assert m.verdict("handoff", T)[1] and "pixel_ratio" in m.over(T)
    assert not m.verdict("hard", T)[1]  # a hard cut is meant to be seen


def test_a_colour_shift_is_flagged_on_the_histogram(pan):
    shifted = pan[8:].astype(int)
    shifted[..., 0] += 70
    shifted[..., 2] -= 50
    m = seam_metrics(pan[:8], np.clip(shifted, 0, 255).astype(np.uint8))
    assert "histogram" in m.over(T) and m.verdict("segment", T)[1]


def test_a_brightness_flash_is_flagged_as_luma_flicker(pan):
    flashed = pan[8:].astype(int)
    flashed[0] += 60
    m = seam_metrics(pan[:8], np.clip(flashed, 0, 255).astype(np.uint8))
    assert m.luma_jump > 5 * T.luma_jump and "luma_jump" in m.over(T)


def test_a_tone_that_continues_is_clean_and_a_phase_jump_is_not(pan):
    n = np.arange(12_000)
    tone = np.sin(2 * np.pi * 440 * n / SR).astype(np.float32)
    clean = seam_metrics(pan[:8], pan[8:], tone[:6000], tone[6000:], SR)
    assert clean.audio_jump < 1.5 and clean.spectral_flux < T.spectral_flux and not clean.over(T)
    jumped = np.sin(2 * np.pi * 440 * n[6000:] / SR + np.pi / 2).astype(np.float32)
    click = seam_metrics(pan[:8], pan[8:], tone[:6000], jumped, SR)
    assert click.audio_jump > T.audio_jump and click.spectral_flux > T.spectral_flux
    assert set(click.over(T)) == {"audio_jump", "spectral_flux"}
