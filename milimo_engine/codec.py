"""Pixels and samples in and out of the model's latent spaces: the video VAE both ways, the audio VAE and vocoder.

Each conversion follows the official one (`ltx_pipelines/utils/media_io.py`, `ltx_core/model/video_vae`,
`ltx_core/model/audio_vae`): images are resized with bilinear interpolation to cover the stage's size and
centre-cropped; decoded frames are mapped to uint8 by truncation; the LTX-2.3 bandwidth-extension vocoder always
runs in float32 (its mel front end loses 40-90 % of the spectrum in bfloat16, as the official loader notes).
"""

from __future__ import annotations

import math

import numpy as np
import torch

from . import frames as fr

TILED_DECODE_ABOVE_PIXELS = 768 * 768
# ltx-core's default VAE tiling: 768-pixel tiles overlapping by 64, 80-frame tiles overlapping by 24.
VAE_TILE, VAE_TILE_OVERLAP, VAE_TILE_FRAMES, VAE_TILE_FRAMES_OVERLAP = 768, 64, 80, 24


def vae_tiling(height: int, width: int, frames: int) -> dict | None:
    """How to tile the decode of a `frames`-frame `width`x`height` video, as ltx-core's default `TilingConfig`
    does; None when it decodes in one piece. Tiles follow the frame's shape: a side shorter than a tile is one
    tile of its own length, not a square cut from a wider frame."""
    if height * width <= TILED_DECODE_ABOVE_PIXELS and frames <= VAE_TILE_FRAMES:
        return None
    tile_h, tile_w = min(VAE_TILE, height), min(VAE_TILE, width)
    return {"tile_sample_min_height": tile_h, "tile_sample_min_width": tile_w,
            "tile_sample_stride_height": tile_h - VAE_TILE_OVERLAP if tile_h < height else tile_h,
            "tile_sample_stride_width": tile_w - VAE_TILE_OVERLAP if tile_w < width else tile_w,
            "tile_sample_min_num_frames": VAE_TILE_FRAMES,
            "tile_sample_stride_num_frames": VAE_TILE_FRAMES - VAE_TILE_FRAMES_OVERLAP}


def cover_resize(image: np.ndarray, width: int, height: int) -> np.ndarray:
    """uint8 [H, W, 3] scaled to cover `width` x `height` (bilinear, the scale's size rounded up), then centre-cropped,
    as `resize_and_center_crop`; returned as float32 0..255 (the official path never rounds back to uint8)."""
    tensor = torch.from_numpy(np.array(image, dtype=np.float32)).permute(2, 0, 1)[None]
    src_h, src_w = tensor.shape[-2:]
    scale = max(height / src_h, width / src_w)
    new_h, new_w = math.ceil(src_h * scale), math.ceil(src_w * scale)
    tensor = torch.nn.functional.interpolate(tensor, size=(new_h, new_w), mode="bilinear", align_corners=False)
    top, left = (new_h - height) // 2, (new_w - width) // 2
    return tensor[0, :, top:top + height, left:left + width].permute(1, 2, 0).numpy()


def to_uint8(video: torch.Tensor) -> torch.Tensor:
    """Decoded [-1, 1] frames as uint8, truncated as `decode_video` does."""
    return (((video.float() + 1.0) / 2.0).clamp(0.0, 1.0) * 255.0).to(torch.uint8)


class Codec:
    """The ledger's VAEs and vocoder as the pipeline uses them."""

    def __init__(self, ledger):
        self.ledger = ledger

    @property
    def spatial_ratio(self) -> int:
        return self.ledger.video_decoder().spatial_compression_ratio

    def encode_pixels(self, pixels: np.ndarray) -> torch.Tensor:
        """[F, H, W, 3] (F = 8k+1) in 0..255, uint8 or float -> raw VAE latent [1, C, k+1, H/32, W/32] (the mode)."""
        vae = self.ledger.video_encoder()
        x = torch.from_numpy(np.require(pixels, requirements=["C", "W"])).to(self.ledger.device)  # read-only: copied
        x = (x.permute(3, 0, 1, 2).unsqueeze(0).float() / 127.5 - 1.0).to(vae.dtype)
        return vae.encode(x, return_dict=False)[0].mode().float()

    def decode_video(self, raw: torch.Tensor) -> np.ndarray:
        vae = self.ledger.video_decoder()
        h, w = raw.shape[3] * vae.spatial_compression_ratio, raw.shape[4] * vae.spatial_compression_ratio
        tiling = vae_tiling(h, w, fr.pixel_frames(raw.shape[2]))
        if tiling is not None:
            vae.enable_tiling(**tiling)
            vae.use_framewise_decoding = fr.pixel_frames(raw.shape[2]) > VAE_TILE_FRAMES
        else:
            vae.disable_tiling()
            vae.use_framewise_decoding = False
        timestep = None
        if vae.config.timestep_conditioning:
            timestep = torch.zeros(raw.shape[0], device=raw.device, dtype=vae.dtype)
        video = vae.decode(raw.to(self.ledger.device, vae.dtype), timestep, return_dict=False)[0]
        return to_uint8(video)[0].permute(1, 2, 3, 0).cpu().numpy()

    def decode_audio(self, audio_latent: torch.Tensor) -> np.ndarray:
        audio_vae = self.ledger.audio_decoder()
        mel = audio_vae.decode(audio_latent.to(self.ledger.device, audio_vae.dtype), return_dict=False)[0]
        vocoder = self.ledger.vocoder()
        if type(vocoder).__name__ == "LTX2VocoderWithBWE" and vocoder.dtype != torch.float32:
            vocoder = vocoder.float()  # the bandwidth extension in bf16 loses much of the spectrum
        wave = vocoder(mel.to(vocoder.dtype))
        return wave[0].float().cpu().numpy()

    def audio_latent_rate(self) -> float:
        """Latent audio frames per second."""
        vae = self.ledger.audio_decoder()
        return vae.config.sample_rate / vae.config.mel_hop_length / vae.temporal_compression_ratio

    def audio_mel_bins(self) -> int:
        vae = self.ledger.audio_decoder()
        return vae.config.mel_bins // vae.mel_compression_ratio

    def audio_latent_frames(self, pixel_frames: int, fps: float) -> int:
        """The rendered video's duration in latent audio frames, rounded, as ltx-core's
        `AudioLatentShape.from_video_pixel_shape` (25 a second on LTX-2)."""
        return round(pixel_frames / fps * self.audio_latent_rate())


def fit_audio(wave: np.ndarray, samples: int) -> np.ndarray:
    """Trim to exactly `samples`, or fill a short tail: the causal audio decoder returns about 30 ms less than
    the latent's duration (official pipelines leave the take's audio that much shorter than its video). The gap
    is filled with the tail mirrored, which keeps the waveform continuous where a held sample would not."""
    if wave.shape[-1] >= samples:
        return np.ascontiguousarray(wave[..., :samples])
    missing = samples - wave.shape[-1]
    pad = [(0, 0)] * (wave.ndim - 1) + [(0, missing)]
    return np.pad(wave, pad, mode="reflect" if missing < wave.shape[-1] else "edge")
