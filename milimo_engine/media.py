"""Frames and audio to H.264/AAC mp4 with ffmpeg-python, driving imageio-ffmpeg's ffmpeg binary.

A fresh machine needs nothing from the OS. Files are written through `atomic_path`,
so a half-written mp4 never looks finished.
"""

from __future__ import annotations

import os
import re
import subprocess
from dataclasses import asdict, dataclass
from fractions import Fraction
from pathlib import Path

import numpy as np

from .atomic import atomic_path, temp_path
from .errors import RenderCancelled


def ffmpeg_exe() -> str:
    import imageio_ffmpeg

    return imageio_ffmpeg.get_ffmpeg_exe()


def rational_fps(fps: float) -> Fraction:
    """24 -> 24/1, 23.976 -> 24000/1001, 29.97 -> 30000/1001: what editors and ffmpeg expect."""
    for base in (24, 30, 48, 60, 120):
        ntsc = Fraction(base * 1000, 1001)
        if abs(float(ntsc) - fps) < 0.005:  # "23.98" as ffmpeg prints it means 24000/1001
            return ntsc
    return Fraction(fps).limit_denominator(1001)


AUDIO_OUT_RATE = 48_000  # what editors expect of picture audio; the model's own rate is resampled to it
# Measured (the shipped ffmpeg, 2 cores, 25 frames): prores_aw writes the same ProRes 422 HQ ('apch') as prores_ks
# 4x faster on 1536x1024 pictures (13x on noise), at a similar size; x264's veryfast preset is 3x faster than medium
# at CRF 18 with files within a few per cent. Every take writes both: most of a take's time after the model.
PRORES_ENCODER = "prores_aw"
X264_PRESET = "veryfast"


def write_mp4(path: str | os.PathLike, frames: np.ndarray, fps: float, audio: np.ndarray | None = None,
              sample_rate: int | None = None, crf: int = 18, *, timecode: str | None = None,
              tags: dict[str, str] | None = None) -> Path:
    """Write uint8 frames [F, H, W, 3] (+ float audio [channels, samples], AAC at 48 kHz) to `path` atomically:
    the preview everything plays. `timecode` (HH:MM:SS:FF, `;` for drop-frame) becomes the file's start timecode,
    and `tags` (reel_name, title, comment...) its metadata."""
    return _encode(path, frames, fps, audio, sample_rate, "mp4",
                   dict(vcodec="libx264", preset=X264_PRESET, pix_fmt="yuv420p", crf=crf,
                        movflags="+faststart+use_metadata_tags"),
                   dict(acodec="aac", audio_bitrate="192k"), timecode=timecode, tags=tags)


def write_mov(path: str | os.PathLike, frames: np.ndarray, fps: float, audio: np.ndarray | None = None,
              sample_rate: int | None = None, *, timecode: str, reel: str, tags: dict[str, str] | None = None) -> Path:
    """The take an editor conforms: QuickTime, ProRes 422 HQ and 24-bit PCM at 48 kHz, with a timecode track
    (tmcd) that starts at `timecode` and names `reel` — what Resolve's reel + timecode conform and Avid read, and
    what Premiere relinks by file name beside it."""
    return _encode(path, frames, fps, audio, sample_rate, "mov",
                   {"vcodec": PRORES_ENCODER, "profile:v": 3, "pix_fmt": "yuv422p10le", "vendor": "apl0",
                    "metadata:s:v:0": f"reel_name={reel}"},
                   dict(acodec="pcm_s24le"), timecode=timecode, tags={**(tags or {}), "reel_name": reel})


def _encode(path: str | os.PathLike, frames: np.ndarray, fps: float, audio: np.ndarray | None,
            sample_rate: int | None, container: str, video_args: dict, audio_args: dict, *,
            timecode: str | None, tags: dict[str, str] | None) -> Path:
    """One ffmpeg run: raw frames on stdin, audio from a temporary float file, written atomically to `path`."""
    import ffmpeg

    target = Path(path)
    target.parent.mkdir(parents=True, exist_ok=True)
    if frames.dtype != np.uint8 or frames.ndim != 4 or frames.shape[-1] != 3:
        raise ValueError(f"frames must be uint8 [F, H, W, 3], got {frames.dtype} {frames.shape}")
    n, h, w, _ = frames.shape
    rate = rational_fps(fps)
    audio_file = None
    try:
        with atomic_path(target) as tmp:
            video_in = ffmpeg.input("pipe:", format="rawvideo", pix_fmt="rgb24", s=f"{w}x{h}",
                                    framerate=f"{rate.numerator}/{rate.denominator}")
            streams = [video_in.video]
            out_args = dict(video_args, r=f"{rate.numerator}/{rate.denominator}", **{"frames:v": n})
            if timecode:
                out_args["timecode"] = timecode
            for i, (key, value) in enumerate(sorted((tags or {}).items())):
                out_args[f"metadata:g:{i}"] = f"{key}={value}"
            if audio is not None and audio.size:
                if sample_rate is None:
                    raise ValueError("sample_rate is required with audio")
                pcm = np.ascontiguousarray(np.clip(audio, -1.0, 1.0).T.astype("<f4"))
                audio_file = temp_path(target, ".f32le")
                audio_file.write_bytes(pcm.tobytes())
                audio_in = ffmpeg.input(str(audio_file), format="f32le", ac=audio.shape[0], ar=sample_rate)
                streams.append(audio_in.audio)
                out_args.update(audio_args, ar=AUDIO_OUT_RATE)
            proc = (ffmpeg.output(*streams, str(tmp), format=container, **out_args)
                    .overwrite_output()
                    .run_async(cmd=ffmpeg_exe(), pipe_stdin=True, pipe_stderr=True, quiet=False))
            _, err = proc.communicate(input=np.ascontiguousarray(frames).tobytes())
            if proc.returncode != 0:
                said = err.decode(errors="replace")
                signalled = re.search(r"received signal (\d+)", said)
                if proc.returncode < 0 or signalled:  # stopped with the rest of the process group (Ctrl-C, SIGTERM)
                    number = -proc.returncode if signalled is None else int(signalled.group(1))
                    raise RenderCancelled("writing", 0, f"ffmpeg writing {Path(target).name} was stopped by "
                                          f"signal {number}")
                raise RuntimeError(f"ffmpeg failed writing {target}: {said[-2000:]}")
    finally:
        if audio_file is not None:
            audio_file.unlink(missing_ok=True)
    return target


@dataclass(frozen=True)
class StreamFacts:
    """What a file's header says: enough to join it to others, without decoding it."""

    fps: Fraction
    width: int
    height: int
    has_audio: bool
    audio_sample_rate: int | None


@dataclass(frozen=True)
class MediaInfo(StreamFacts):
    frames: int = 0


def _rate(stream) -> Fraction:
    """A video stream's frame rate as the container states it (r_frame_rate, else the average), exact: 24000/1001,
    not 23.976 read back from text. A rate only a long fraction states (a variable-rate file's average) is taken as
    the nearest rate editors use."""
    rate = stream.base_rate or stream.average_rate or stream.guessed_rate
    if not rate:
        return Fraction(0)
    exact = Fraction(rate.numerator, rate.denominator)
    return exact if exact.denominator <= 1001 else rational_fps(float(exact))


def _opened(path: str | os.PathLike):
    import av

    try:
        return av.open(str(path))
    except (av.FFmpegError, OSError) as exc:
        raise RuntimeError(f"ffmpeg could not read {path}: {exc}") from None


def _stream_facts(container) -> StreamFacts:
    video = next(iter(container.streams.video), None)
    audio = next(iter(container.streams.audio), None)
    return StreamFacts(_rate(video) if video is not None else Fraction(0),
                       video.codec_context.width if video is not None else 0,
                       video.codec_context.height if video is not None else 0,
                       audio is not None, audio.codec_context.sample_rate if audio is not None else None)


def stream_facts(path: str | os.PathLike) -> StreamFacts:
    """The header's stream facts (size, rate, audio), read with PyAV in one short open: a preview of thousands of
    takes does not decode each of them to learn its size."""
    with _opened(path) as container:
        return _stream_facts(container)


def probe(path: str | os.PathLike) -> MediaInfo:
    """The stream facts and the exact number of video frames: every packet of the first video stream counted (one
    frame each in the QuickTime and mp4 files milimo reads), without decoding a picture."""
    with _opened(path) as container:
        facts = _stream_facts(container)
        video = next(iter(container.streams.video), None)
        if video is None:
            raise RuntimeError(f"ffmpeg could not read {path}: it has no video stream")
        frames = sum(1 for packet in container.demux(video) if packet.size)
    return MediaInfo(**asdict(facts), frames=frames)


def _decode(path: str | os.PathLike, args: list[str], what: str = "") -> bytes:
    """Raw output of `ffmpeg -i path ARGS -` (stdout), or RuntimeError with ffmpeg's own words."""
    proc = subprocess.run([ffmpeg_exe(), "-v", "error", "-i", str(path), *args, "-"], capture_output=True)
    if proc.returncode != 0:
        raise RuntimeError(f"ffmpeg could not read {what}{path}: {proc.stderr.decode(errors='replace')[-1000:]}")
    return proc.stdout


def read_frames(path: str | os.PathLike) -> np.ndarray:
    """Decode an mp4 to uint8 [F, H, W, 3] (for tests and thumbnails)."""
    info = probe(path)
    raw = _decode(path, ["-f", "rawvideo", "-pix_fmt", "rgb24"])
    return np.frombuffer(raw, np.uint8).reshape(-1, info.height, info.width, 3)


def read_frames_at(path: str | os.PathLike, indices: list[int], size: int = 192) -> np.ndarray:
    """The frames at `indices` (sorted, inside the video) as `size`×`size` thumbnails, in one decode. For seam
    QA: both sides of a join are scaled alike, so small and square is enough."""
    if not indices:
        return np.zeros((0, size, size, 3), np.uint8)
    ranges, first = [], indices[0]
    for prev, cur in zip(indices, indices[1:] + [-1], strict=True):  # -1: the end
        if cur != prev + 1:
            ranges.append(f"between(n,{first},{prev})")
            first = cur
    raw = _decode(path, ["-an", "-vf", f"select='{'+'.join(ranges)}',scale={size}:{size}", "-fps_mode", "passthrough",
                         "-f", "rawvideo", "-pix_fmt", "rgb24"])
    return np.frombuffer(raw, np.uint8).reshape(-1, size, size, 3)


def read_audio(path: str | os.PathLike, start_s: float, duration_s: float,
               sample_rate: int = AUDIO_OUT_RATE) -> np.ndarray:
    """Mono float audio from `start_s` for `duration_s` (empty when the file has no audio)."""
    raw = _decode(path, ["-ss", f"{max(0.0, start_s):.6f}", "-t", f"{duration_s:.6f}", "-map", "0:a:0?", "-ac", "1",
                         "-ar", str(sample_rate), "-f", "f32le"], what="the audio of ")
    return np.frombuffer(raw, "<f4").astype(np.float32)


def h264_roundtrip(image: np.ndarray, crf: int) -> np.ndarray:
    """Compress one uint8 RGB frame as H.264 at `crf` and decode it again, as ltx-pipelines' `preprocess` does
    (PyAV's libx264, preset veryfast, yuv420p, in an in-memory mp4): odd sides are cropped to even ones first.

    LTX-2 was trained on video frames, which carry H.264 artefacts; a pristine still at a conditioning frame looks
    out of distribution, so conditions get the same treatment. `crf=0` returns the image untouched.
    """
    import io

    import av

    if crf == 0:
        return image
    if image.dtype != np.uint8 or image.ndim != 3 or image.shape[-1] != 3:
        raise ValueError(f"expected a uint8 [H, W, 3] image, got {image.dtype} {image.shape}")
    even = np.ascontiguousarray(image[:image.shape[0] // 2 * 2, :image.shape[1] // 2 * 2])
    buffer = io.BytesIO()
    with av.open(buffer, "w", format="mp4") as container:
        stream = container.add_stream("libx264", rate=1, options={"crf": str(crf), "preset": X264_PRESET})
        stream.height, stream.width = even.shape[:2]
        frame = av.VideoFrame.from_ndarray(even, format="rgb24").reformat(format="yuv420p")
        container.mux(stream.encode(frame))
        container.mux(stream.encode())
    buffer.seek(0)
    with av.open(buffer, mode="r") as container:
        decoded = next(container.decode(video=0))
        return decoded.to_ndarray(format="rgb24")
