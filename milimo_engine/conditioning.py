"""Conditioning, as official LTX-2 does it.

A condition (an image, the tail of the previous shot, a reference video) is encoded by the video
VAE. At rendered frame 0 (and for a handoff's frames) it replaces the latent in place of noise
(ltx-core's `latent_cond.py`); an image at any other frame is appended as extra *keyframe tokens*
positioned at that frame's time (`keyframe_cond.py`, `VideoConditionByKeyframeIndex`), denoised
along with the shot and dropped before decoding. A per-token *denoise mask* says how free each
token is: 1 = generated from noise, 0 = a hard constraint, never denoised (its timestep is 0 and
its prediction is replaced by the clean value at every step), in between = a soft pull towards
the condition (`mask = 1 - strength`).
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch

from .errors import InvalidConditionError

ImageSource = Any  # str | os.PathLike | np.ndarray | PIL.Image.Image


@dataclass(frozen=True, eq=False)
class ImageCondition:
    """Pin pixel frame `frame` of the shot to `image`.

    `frame` counts the frames the shot delivers, from 0, and may be any of them: the first
    rendered frame replaces the latent, any other becomes keyframe tokens at that frame's time.
    `crf` re-compresses the image as one H.264 frame first (None: the model's training CRF,
    33 for LTX-2; 0: off).
    """

    image: ImageSource
    frame: int = 0
    strength: float = 1.0
    crf: int | None = None


def load_rgb(source: ImageSource, field: str = "image") -> np.ndarray:
    """Any image a person hands us, as uint8 RGB [H, W, 3]: EXIF orientation applied, greyscale
    expanded, transparency composited over black (what an editor's viewer shows for 'no picture')."""
    from PIL import Image, ImageOps, UnidentifiedImageError

    if isinstance(source, np.ndarray):
        arr = source
        if arr.dtype != np.uint8:
            if np.issubdtype(arr.dtype, np.floating) and arr.size and 0.0 <= float(arr.min()) and float(arr.max()) <= 1.0:
                arr = (arr * 255.0).round().astype(np.uint8)
            else:
                raise InvalidConditionError(field, f"array {arr.dtype}", "must be uint8 0..255 or float 0..1")
        if arr.ndim == 2:
            arr = np.repeat(arr[..., None], 3, axis=-1)
        if arr.ndim != 3 or arr.shape[-1] not in (1, 3, 4):
            raise InvalidConditionError(field, f"array {arr.shape}", "must be [H, W], [H, W, 3] or [H, W, 4]")
        img = Image.fromarray(arr if arr.shape[-1] != 1 else arr[..., 0])
    elif isinstance(source, Image.Image):
        img = source
    else:
        path = Path(source)
        if not path.is_file():
            raise InvalidConditionError(field, str(path), "no such image file")
        try:
            img = Image.open(path)
            img.load()
        except (UnidentifiedImageError, OSError) as exc:
            raise InvalidConditionError(field, str(path), f"cannot be read as an image ({exc})") from exc
    img = ImageOps.exif_transpose(img)
    if img.mode in ("RGBA", "LA", "PA") or (img.mode == "P" and "transparency" in img.info):
        rgba = img.convert("RGBA")
        background = Image.new("RGBA", rgba.size, (0, 0, 0, 255))
        img = Image.alpha_composite(background, rgba)
    return np.asarray(img.convert("RGB"), dtype=np.uint8)


def fit_image(image: np.ndarray, width: int, height: int) -> np.ndarray:
    """Resize to cover `width` x `height`, then centre-crop: no stretching, no letterbox bars."""
    from PIL import Image, ImageOps

    if image.shape[0] == height and image.shape[1] == width:
        return image
    fitted = ImageOps.fit(Image.fromarray(image), (width, height), method=Image.Resampling.LANCZOS)
    return np.asarray(fitted, dtype=np.uint8)


@dataclass
class TokenConditioning:
    """Clean values and the denoise mask over one modality's packed tokens ([B, S, D] / [B, S]).

    As ltx-core's `LatentState`, a conditioned token has a clean value and a starting value: `place` writes both
    (the latent is replaced, `latent_cond.py`); appended keyframe tokens start from a zero placeholder
    (`keyframe_cond.py`), which `replaced` False marks."""

    clean: torch.Tensor
    mask: torch.Tensor
    replaced: torch.Tensor | None = None  # [B, S] bool: the starting value is the clean one; None: all

    @classmethod
    def free(cls, tokens: torch.Tensor) -> "TokenConditioning":
        return cls(torch.zeros_like(tokens), torch.ones(tokens.shape[:2], dtype=tokens.dtype, device=tokens.device))

    def place(self, start: int, tokens: torch.Tensor, strength: float) -> None:
        """Write `tokens` ([B, n, D]) at token `start` with denoise mask `1 - strength`."""
        end = start + tokens.shape[1]
        if end > self.clean.shape[1]:
            raise ValueError(f"condition tokens {start}..{end} run past the latent's {self.clean.shape[1]} tokens")
        self.clean[:, start:end] = tokens.to(self.clean)
        self.mask[:, start:end] = 1.0 - float(strength)

    def with_placeholders(self, tokens: torch.Tensor, strength: torch.Tensor) -> "TokenConditioning":
        """These tokens appended ([B, n, D], strength [B, n]) with a zero starting value (keyframe tokens)."""
        replaced = self.replaced if self.replaced is not None else torch.ones_like(self.mask, dtype=torch.bool)
        return TokenConditioning(torch.cat([self.clean, tokens.to(self.clean)], dim=1),
                                 torch.cat([self.mask, 1.0 - strength.to(self.mask)], dim=1),
                                 torch.cat([replaced, torch.zeros(strength.shape, dtype=torch.bool,
                                                                  device=replaced.device)], dim=1))

    @property
    def active(self) -> bool:
        return bool((self.mask < 1).any())

    def start(self, noise: torch.Tensor, sigma: float, base: torch.Tensor | None = None) -> torch.Tensor:
        """The first state, as ltx-core's `GaussianNoiser`: noise at `sigma * mask` over the starting value, which
        is the clean value where the latent was replaced, zero for keyframe placeholders, `base` where free.

        Free tokens get exactly what an unconditioned render would; replaced hard ones are exactly clean.
        """
        origin = self.clean if base is None else torch.where(self.mask.unsqueeze(-1) < 1, self.clean, base)
        if self.replaced is not None:
            origin = torch.where(self.replaced.unsqueeze(-1), origin, torch.zeros_like(origin))
        level = (self.mask * sigma).unsqueeze(-1)
        return noise * level + origin * (1 - level)

    def blend(self, x0: torch.Tensor) -> torch.Tensor:
        m = self.mask.unsqueeze(-1)
        return x0 * m + self.clean * (1 - m)

    def timesteps(self, t: torch.Tensor) -> torch.Tensor:
        """Per-token timesteps: a hard-constrained token is told it is already clean."""
        return t * self.mask


@dataclass(frozen=True)
class AppendedTokens:
    """Extra clean tokens after the generated ones (IC-LoRA reference video): seen, never generated."""

    tokens: torch.Tensor  # [B, N, D], normalised
    coords: torch.Tensor  # [B, 3, N, 2], the transformer's RoPE coordinates


@dataclass(frozen=True)
class KeyframeTokens:
    """Images at frames other than the first, as tokens appended after the generated ones. They are
    part of the video state (their clean values and mask extend the video's `TokenConditioning`),
    and the stage drops them before anything is decoded."""

    tokens: torch.Tensor  # [B, N, D], normalised
    strength: torch.Tensor  # [B, N]
    coords: torch.Tensor  # [B, 3, N, 2]: each image at [frame, frame + 1) / fps in time

    @property
    def count(self) -> int:
        return self.tokens.shape[1]


@dataclass(frozen=True)
class StageConditioning:
    """Everything one stage's denoising loop must honour besides the prompt."""

    video: TokenConditioning | None = None
    audio: TokenConditioning | None = None
    appended: AppendedTokens | None = None
    keyframes: KeyframeTokens | None = None

    @property
    def video_active(self) -> bool:
        return self.video is not None and self.video.active

    @property
    def audio_active(self) -> bool:
        return self.audio is not None and self.audio.active

    @property
    def any(self) -> bool:
        return self.video_active or self.audio_active or self.appended is not None
