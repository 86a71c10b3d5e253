"""The noise every stage starts from: drawn on the generator's device (the rectified-flow mix of clean and noise
is `conditioning.TokenConditioning.start`)."""

from __future__ import annotations

import torch


def gaussian_noise(shape: tuple[int, ...], generator: torch.Generator, device: torch.device | str,
                   dtype: torch.dtype = torch.float32) -> torch.Tensor:
    """Noise drawn on the generator's device, then moved: the same seed gives the same noise
    whether the render runs on CPU or GPU-with-a-CPU-generator."""
    gen_device = generator.device if generator is not None else torch.device("cpu")
    return torch.randn(shape, generator=generator, device=gen_device, dtype=dtype).to(device)
