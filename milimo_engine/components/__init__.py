"""Small, swappable pieces of the denoising process: schedules, guiders, noisers, latent layout.

Each sits behind a `typing.Protocol` so a pipeline can take another without change, and none
imports pipeline code.
"""
