"""Sigma schedules for LTX-2's rectified-flow sampler."""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Protocol

import numpy as np
import torch


class SigmaSchedule(Protocol):
    def sigmas(self, steps: int | None = None, num_tokens: int | None = None) -> torch.Tensor:
        """Descending sigmas for `steps` denoising steps, ending with 0 (length steps + 1). A fixed schedule
        ignores both; a shifted one needs them."""


@dataclass(frozen=True)
class TokenShiftedSchedule:
    """LTX-2's stage-1 schedule: a linear ramp shifted by how many video tokens there are.

    Larger videos need more time at high noise; the shift `mu` grows linearly with the token
    count (0.95 at 1024 tokens, 2.05 at 4096), applied as an exponential time shift, then
    stretched so the last non-zero sigma is `terminal`. Computed in float32 exactly as the
    reference sampler does, so our latents match it bit for bit in the schedule.
    """

    base_shift: float = 0.95
    max_shift: float = 2.05
    base_seq_len: int = 1024
    max_seq_len: int = 4096
    terminal: float | None = 0.1

    def mu(self, num_tokens: int) -> float:
        m = (self.max_shift - self.base_shift) / (self.max_seq_len - self.base_seq_len)
        return num_tokens * m + (self.base_shift - m * self.base_seq_len)

    def sigmas(self, steps: int | None = None, num_tokens: int | None = None) -> torch.Tensor:
        if steps is None or num_tokens is None:
            raise TypeError("a token-shifted schedule needs the step count and the token count")
        ramp = np.linspace(1.0, 1.0 / steps, steps).astype(np.float32)
        mu = self.mu(num_tokens)
        shifted = math.exp(mu) / (math.exp(mu) + (1 / ramp - 1) ** 1.0)
        if self.terminal and shifted[-1] < 1:  # one step is sigma 1 alone: nothing to stretch (0/0 otherwise)
            one_minus = 1 - shifted
            shifted = 1 - one_minus / (one_minus[-1] / (1 - self.terminal))
        out = torch.from_numpy(np.asarray(shifted)).to(torch.float32)
        return torch.cat([out, torch.zeros(1)])


@dataclass(frozen=True)
class FixedSchedule:
    """A given list of sigmas (the distilled stage-2 schedule), whatever the token count."""

    values: tuple[float, ...]

    def sigmas(self, steps: int | None = None, num_tokens: int | None = None) -> torch.Tensor:
        out = torch.tensor(self.values, dtype=torch.float32)
        if float(out[-1]) != 0.0:
            out = torch.cat([out, torch.zeros(1)])
        return out


def schedule_from(values: Sequence[float] | None, default: SigmaSchedule) -> SigmaSchedule:
    return FixedSchedule(tuple(float(v) for v in values)) if values is not None else default
