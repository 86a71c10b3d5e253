"""How clean latents become noisy ones on the rectified-flow path: x_s = s*noise + (1-s)*x."""

from __future__ import annotations

from typing import Protocol

import torch


class Noiser(Protocol):
    def __call__(self, clean: torch.Tensor, sigma: float, generator: torch.Generator) -> torch.Tensor: ...


def gaussian_noise(shape: tuple[int, ...], generator: torch.Generator, device: torch.device | str,
                   dtype: torch.dtype = torch.float32) -> torch.Tensor:
    """Noise drawn on the generator's device, then moved: the same seed gives the same noise
    whether the render runs on CPU or GPU-with-a-CPU-generator."""
    gen_device = generator.device if generator is not None else torch.device("cpu")
    return torch.randn(shape, generator=generator, device=gen_device, dtype=dtype).to(device)


class FlowNoiser:
    """Re-noises a clean latent to `sigma` (stage 2 starts from the upsampled stage-1 result).

    With a `conditioning` (anything with `active` and `start(noise, sigma, base)`), conditioned
    tokens start from their clean values at `sigma * mask`; the noise drawn is the same either
    way, so conditioning never shifts the random stream.
    """

    def __call__(self, clean: torch.Tensor, sigma: float, generator: torch.Generator,
                 conditioning=None, noise: torch.Tensor | None = None) -> torch.Tensor:
        """`noise`: already drawn (when the caller orders several draws); else drawn here."""
        if noise is None:
            noise = gaussian_noise(tuple(clean.shape), generator, clean.device, clean.dtype)
        if conditioning is not None and conditioning.active:
            return conditioning.start(noise, sigma, base=clean)
        return sigma * noise + (1 - sigma) * clean
