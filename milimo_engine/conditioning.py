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


def to_srgb(img):
    """A still with an embedded ICC profile (Display P3 from a phone, Adobe RGB from a camera) converted to sRGB,
    the space the model was trained on; without one it is taken as sRGB already."""
    profile = img.info.get("icc_profile")
    if not profile:
        return img
    import io

    from PIL import ImageCms

    try:
        source = ImageCms.ImageCmsProfile(io.BytesIO(profile))
        mode = "RGBA" if img.mode in ("RGBA", "LA", "PA") else "RGB"
        converted = ImageCms.profileToProfile(img.convert(mode), source, ImageCms.createProfile("sRGB"),
                                              outputMode=mode)
    except (ImageCms.PyCMSError, OSError, ValueError):
        return img  # an unreadable profile: the pixels as they are
    converted.info.pop("icc_profile", None)
    return converted


def load_rgb(source: ImageSource, field: str = "image") -> np.ndarray:
    """Any image a person hands us, as uint8 RGB [H, W, 3]: EXIF orientation applied, an ICC profile converted to
    sRGB, greyscale expanded, transparency composited over black (what an editor's viewer shows for 'no
    picture')."""
    from PIL import Image, ImageOps, UnidentifiedImageError

    if isinstance(source, np.ndarray):
        arr = source
        if arr.dtype != np.uint8:
            if (
                np.issubdtype(arr.dtype, np.floating)
                and arr.size
                and 0.0 <= float(arr.min())
                and float(arr.max()) <= 1.0
            ):
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
    img = to_srgb(img)
    if img.mode in ("RGBA", "LA", "PA") or (img.mode == "P" and "transparency" in img.info):
        rgba = img.convert("RGBA")
        background = Image.new("RGBA", rgba.size, (0, 0, 0, 255))
        img = Image.alpha_composite(background, rgba)
    return np.asarray(img.convert("RGB"), dtype=np.uint8)


@dataclass
class TokenConditioning:
    """Clean values and the denoise mask over one modality's packed tokens ([B, S, D] / [B, S]).

    As ltx-core's `LatentState`, `clean` is the state before noise is added: the stage's initial latent (zeros in
    stage 1, the upsampled stage-1 result in stage 2) with conditions written in. `place` replaces generated tokens
    (`latent_cond.py`), `with_appended` adds keyframe tokens after them (`keyframe_cond.py` concatenates the image
    tokens to both the latent and the clean latent)."""

    clean: torch.Tensor
    mask: torch.Tensor

    @classmethod
    def free(cls, initial: torch.Tensor) -> TokenConditioning:
        """Nothing conditioned yet: every token free (mask 1), starting from `initial`."""
        return cls(initial.clone(), torch.ones(initial.shape[:2], dtype=initial.dtype, device=initial.device))

    def place(self, start: int, tokens: torch.Tensor, strength: float) -> None:
        """Write `tokens` ([B, n, D]) at token `start` with denoise mask `1 - strength`."""
        end = start + tokens.shape[1]
        if end > self.clean.shape[1]:
            raise ValueError(f"condition tokens {start}..{end} run past the latent's {self.clean.shape[1]} tokens")
        self.clean[:, start:end] = tokens.to(self.clean)
        self.mask[:, start:end] = 1.0 - float(strength)

    def with_appended(self, tokens: torch.Tensor, strength: torch.Tensor) -> TokenConditioning:
        """These tokens appended ([B, n, D], strength [B, n]), their latent the tokens themselves (keyframes)."""
        return TokenConditioning(
            torch.cat([self.clean, tokens.to(self.clean)], dim=1),
            torch.cat([self.mask, 1.0 - strength.to(self.mask)], dim=1),
        )

    @property
    def active(self) -> bool:
        return bool((self.mask < 1).any())

    def start(self, noise: torch.Tensor, sigma: float) -> torch.Tensor:
        """The first state, as ltx-core's `GaussianNoiser`: `lerp(clean, noise, sigma * mask)`. A free token gets
        exactly what an unconditioned render would; a strength-1 token (mask 0) starts, and stays, clean."""
        level = (self.mask * sigma).unsqueeze(-1)
        return noise * level + self.clean * (1 - level)

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
    coords: torch.Tensor  # [B, 3, N, 2]: each image at [frame, frame + 8) / fps in time (one latent frame's span)

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


class ConditionBuilder:
    """A stage's starting state: the initial latents with every condition written in, as ltx-pipelines applies
    its conditioning items (`state_with_conditionings`), in request order.

    - an image at rendered frame 0 replaces latent frame 0 (`VideoConditionByLatentIndex`), unless `keyframes_only`
      (`KeyframeInterpolationPipeline`, which appends every image, the first included);
    - any other image is appended as keyframe tokens (`VideoConditionByKeyframeIndex`) spanning
      [frame, frame + 8) / fps in time, [0, 1) / fps at frame 0;
    - an incoming handoff (milimo's own) replaces the first latent frames of video and audio;
    - the IC-LoRA reference rides along after them (`VideoConditionByReferenceLatent`), built by the caller.
    """

    def __init__(self, ledger, codec):
        self.ledger, self.codec = ledger, codec

    def build(
        self,
        images,
        handoff,
        grid,
        half: bool,
        initial_video: torch.Tensor,
        initial_audio: torch.Tensor,
        appended: AppendedTokens | None = None,
        keyframes_only: bool = False,
    ) -> StageConditioning:
        from .components.latents import AudioNorm, VideoNorm, pack_audio, pack_video
        from .errors import HandoffMismatchError

        led = self.ledger
        norm = VideoNorm.of(led.video_decoder())
        video = TokenConditioning.free(initial_video)
        audio = TokenConditioning.free(initial_audio)
        ratio = self.codec.spatial_ratio
        width, height = grid.width * ratio, grid.height * ratio
        keyframes = []
        for image, rendered in images:
            tokens = pack_video(norm.normalize(self.encode_image(image, width, height)))
            if rendered == 0 and not keyframes_only:
                video.place(0, tokens, image.strength)
            else:
                keyframes.append((tokens, image.strength, rendered))
        if handoff is not None:
            raw = handoff.video_half if half else handoff.video
            if tuple(raw.shape[3:]) != (grid.height, grid.width):
                raise HandoffMismatchError(
                    "latent size", tuple(raw.shape[3:]), (grid.height, grid.width), handoff.source
                )
            video.place(0, pack_video(norm.normalize(raw.to(led.device, torch.float32))), 1.0)
            mel = self.codec.audio_mel_bins()
            if handoff.audio.shape[-1] != mel:
                raise HandoffMismatchError("audio mel bins", handoff.audio.shape[-1], mel, handoff.source)
            tokens = AudioNorm.of(led.audio_decoder()).normalize(
                pack_audio(handoff.audio.to(led.device, torch.float32))
            )
            audio.place(0, tokens[:, : grid.audio_frames], 1.0)
        extra = self.keyframe_tokens(keyframes, grid) if keyframes else None
        if extra is not None:
            video = video.with_appended(extra.tokens, extra.strength)
        return StageConditioning(video, audio, appended, extra)

    def encode_image(self, image: ImageCondition, width: int, height: int) -> torch.Tensor:
        """The condition as the model was trained to see it: H.264-compressed at its own size (cropped to even
        sides), cover-resized and centre-cropped to the stage's size, VAE-encoded (`load_image_conditioning`)."""
        from .codec import cover_resize
        from .media import h264_roundtrip

        crf = self.ledger.manifest.image_crf if image.crf is None else int(image.crf)
        pixels = h264_roundtrip(load_rgb(image.image, "images.image"), crf)
        return self.codec.encode_pixels(cover_resize(pixels, width, height)[None])

    def keyframe_tokens(self, keyframes: list[tuple[torch.Tensor, float, int]], grid) -> KeyframeTokens:
        """Each image's tokens with RoPE coordinates as `get_pixel_coords` gives a one-latent-frame keyframe:
        [frame, frame + 8) / fps in time (the causal first-frame fix applies only at frame 0)."""
        device = self.ledger.device
        rope = self.ledger.transformer().rope
        tokens, strength, coords = [], [], []
        for t, s, rendered in keyframes:
            c = rope.prepare_video_coords(1, 1, grid.height, grid.width, device, fps=grid.fps)
            if rendered != 0:
                span = torch.tensor([rendered, rendered + 8], dtype=c.dtype, device=c.device) / grid.fps
                c[:, 0] = span
            tokens.append(t)
            strength.append(torch.full(t.shape[:2], float(s), device=t.device, dtype=t.dtype))
            coords.append(c)
        return KeyframeTokens(torch.cat(tokens, dim=1), torch.cat(strength, dim=1), torch.cat(coords, dim=2))
