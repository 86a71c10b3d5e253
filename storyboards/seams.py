"""Seam QA: how visible a join is, measured on the decoded frames and audio on either side of it.

A handoff cut (shot B continues from A) and a segment boundary inside a long shot should play as one
shot; these numbers say whether they do. Each visual metric is relative to the motion inside the two
shots, so a fast pan is not flagged for moving fast:

- `pixel_ratio`: mean absolute pixel change across the join / the median frame-to-frame change inside;
- `histogram`: colour histogram distance across the join (0 same, 1 disjoint) beyond the median inside;
- `luma_jump`: mean-luma jump across the join beyond the median inside, in 8-bit levels (flicker, flashes);
- `audio_jump`: the sample step at the join / the 99th-percentile step near it (a click, a phase jump);
- `spectral_flux`: spectral change across the join / the median change between windows near it.

Pure numpy: the caller decodes (tasks.seams). Hard cuts are measured too, never flagged.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass

import numpy as np
from pydantic import BaseModel, ConfigDict, PositiveFloat

FRAMES_EACH_SIDE = 8
AUDIO_SECONDS_EACH_SIDE = 0.25


class SeamThresholds(BaseModel):
    """Above any of these a handoff or segment seam is flagged (`[qa]` in milimo.toml)."""

    model_config = ConfigDict(extra="forbid", frozen=True)
    pixel_ratio: PositiveFloat = 3.0
    histogram: PositiveFloat = 0.2
    luma_jump: PositiveFloat = 8.0
    audio_jump: PositiveFloat = 4.0
    spectral_flux: PositiveFloat = 4.0


@dataclass(frozen=True)
class SeamMetrics:
    pixel_ratio: float
    histogram: float
    luma_jump: float
    audio_jump: float | None = None  # None: one side has no audio
    spectral_flux: float | None = None

    def as_dict(self) -> dict[str, float | None]:
        return {k: (None if v is None else round(float(v), 4)) for k, v in asdict(self).items()}

    def over(self, thresholds: SeamThresholds) -> dict[str, float]:
        """Each metric over its threshold, as value / threshold."""
        out = {}
        for name, value in asdict(self).items():
            limit = getattr(thresholds, name)
            if value is not None and value > limit:
                out[name] = round(float(value) / limit, 3)
        return out

    def score(self, thresholds: SeamThresholds) -> float:
        """The worst metric as a fraction of its threshold: above 1 is a visible seam."""
        return round(max(float(v) / getattr(thresholds, k) for k, v in asdict(self).items() if v is not None), 4)

    def verdict(self, kind: str, thresholds: SeamThresholds) -> tuple[float, bool]:
        """(score, flagged): hard cuts are meant to be seen, so they are never flagged."""
        score = self.score(thresholds)
        return score, kind != "hard" and score > 1.0


def _luma(frames: np.ndarray) -> np.ndarray:
    f = frames.astype(np.float32)
    return 0.2126 * f[..., 0] + 0.7152 * f[..., 1] + 0.0722 * f[..., 2]


def _histogram(frame: np.ndarray, bins: int = 32) -> np.ndarray:
    return np.stack([np.histogram(frame[..., c], bins=bins, range=(0, 256))[0] for c in range(3)]).astype(
        np.float64) / (frame.shape[0] * frame.shape[1])


def _hist_distance(a: np.ndarray, b: np.ndarray) -> float:
    return float(0.5 * np.abs(_histogram(a) - _histogram(b)).sum(axis=1).mean())


def video_metrics(before: np.ndarray, after: np.ndarray) -> tuple[float, float, float]:
    """(pixel_ratio, histogram, luma_jump) for frames [F, H, W, 3] uint8 before and after the join."""
    if len(before) < 1 or len(after) < 1:
        raise ValueError("a seam needs at least one frame on each side")
    frames = np.concatenate([before, after]).astype(np.float32)
    cut = len(before) - 1  # the pair (cut, cut + 1) straddles the join
    steps = np.abs(np.diff(frames, axis=0)).mean(axis=(1, 2, 3))
    inside = np.delete(steps, cut)
    typical = max(float(np.median(inside)) if inside.size else 0.0, 0.5)  # 0.5 level: a still shot is not 0
    pixel_ratio = float(steps[cut]) / typical
    hists = [_hist_distance(frames[i].astype(np.uint8), frames[i + 1].astype(np.uint8))
             for i in range(len(frames) - 1)]
    hist_inside = np.delete(np.asarray(hists), cut)
    histogram = max(0.0, hists[cut] - (float(np.median(hist_inside)) if hist_inside.size else 0.0))
    luma = _luma(frames).mean(axis=(1, 2))
    jumps = np.abs(np.diff(luma))
    luma_inside = np.delete(jumps, cut)
    luma_jump = max(0.0, float(jumps[cut]) - (float(np.median(luma_inside)) if luma_inside.size else 0.0))
    return pixel_ratio, histogram, luma_jump


def audio_metrics(before: np.ndarray, after: np.ndarray, sample_rate: int) -> tuple[float, float]:
    """(audio_jump, spectral_flux) for mono float audio before and after the join."""
    wave = np.concatenate([before, after]).astype(np.float64)
    join = len(before)
    steps = np.abs(np.diff(wave))
    near = np.delete(steps, join - 1)
    typical = max(float(np.percentile(near, 99)) if near.size else 0.0, 1e-4)
    audio_jump = float(steps[join - 1]) / typical
    window = max(64, int(2 ** round(np.log2(sample_rate / 100))))  # ~10 ms
    hop = window // 2
    starts = list(range(0, len(wave) - window + 1, hop))
    if len(starts) < 4:
        return audio_jump, 0.0
    taper = np.hanning(window)
    spectra = np.stack([np.abs(np.fft.rfft(wave[s:s + window] * taper)) for s in starts])
    flux = np.sqrt((np.diff(spectra, axis=0) ** 2).sum(axis=1))  # flux[i]: spectra i -> i + 1
    across = [i for i, s in enumerate(starts[:-1]) if s < join <= starts[i + 1] + window]
    inside = np.delete(flux, across)
    typical_flux = max(float(np.median(inside)) if inside.size else 0.0, 1e-6)
    return audio_jump, float(max(flux[i] for i in across)) / typical_flux


def seam_metrics(before: np.ndarray, after: np.ndarray, audio_before: np.ndarray | None = None,
                 audio_after: np.ndarray | None = None, sample_rate: int | None = None) -> SeamMetrics:
    pixel_ratio, histogram, luma_jump = video_metrics(before, after)
    if audio_before is None or audio_after is None or not sample_rate or not len(audio_before) or not len(audio_after):
        return SeamMetrics(pixel_ratio, histogram, luma_jump)
    audio_jump, flux = audio_metrics(audio_before, audio_after, sample_rate)
    return SeamMetrics(pixel_ratio, histogram, luma_jump, audio_jump, flux)


def seam_verdict(seam, thresholds: SeamThresholds) -> tuple[float, bool]:
    """(score, flagged) of a stored seam (`store.SeamView`) under `thresholds`: stored metrics are judged on
    today's thresholds, so a changed [qa] applies without measuring again. Hard cuts are never flagged."""
    metrics = SeamMetrics(**{k: seam.metrics.get(k) for k in SeamMetrics.__dataclass_fields__})
    return metrics.verdict(seam.kind, thresholds)
