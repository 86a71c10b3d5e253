"""Turnover: each shot's chosen take delivered in a studio's format and names (`milimo deliver`).

A delivery is made from the take's master (its ProRes 422 HQ QuickTime, else its mp4), never by rendering again, so
a profile can be added or changed after the renders. Movies keep the take's start timecode (tmcd) and reel; image
sequences are numbered from the profile's first frame (1001 by default: head handle included), with a
`sha256sum -c` list beside them and, unless the profile says not, a ProRes reference of the same frames. Every file
is written under a temporary name and renamed, then recorded in the store (size, mtime, sha256); a second delivery
keeps what is still intact.
"""

from __future__ import annotations

import functools
import os
import shutil
import subprocess
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from milimo_engine.atomic import atomic_path, atomic_write
from milimo_engine.hashing import file_sha256
from milimo_engine.media import PRORES_ENCODER, X264_PRESET, ffmpeg_exe, probe
from storyboards.errors import ConfigError, MilimoError
from storyboards.load import Storyboard
from storyboards.paths import OutputLayout
from storyboards.store import DeliveredFile, ShotStatus, Store
from storyboards.store.deliveries import delivery_problem

from .config import DeliveryProfile, MilimoConfig
from .naming import render_name

PCM = ("-c:a", "pcm_s24le", "-ar", "48000")


@dataclass(frozen=True)
class Encoding:
    """How ffmpeg writes one delivery format: its encoder, the arguments for picture and sound, the file suffix."""

    encoder: str
    video: tuple[str, ...]
    audio: tuple[str, ...]  # () for image sequences: no sound
    suffix: str
    min_size: tuple[int, int] = (0, 0)  # the smallest picture the encoder takes (width, height)


ENCODINGS: dict[str, Encoding] = {
    "prores_hq": Encoding(PRORES_ENCODER, ("-profile:v", "3", "-pix_fmt", "yuv422p10le", "-vendor", "apl0"), PCM,
                          ".mov"),
    "dnxhr_hq": Encoding("dnxhd", ("-profile:v", "dnxhr_hq", "-pix_fmt", "yuv422p"), PCM, ".mov", (256, 120)),
    "h264": Encoding("libx264", ("-preset", X264_PRESET, "-crf", "18", "-pix_fmt", "yuv420p",
                                 "-movflags", "+faststart+use_metadata_tags"), ("-c:a", "aac", "-b:a", "192k",
                                                                                "-ar", "48000"), ".mp4"),
    "png": Encoding("png", ("-pix_fmt", "rgb48be"), (), ".png"),  # 16 bits a channel: the master's 10 kept
    "exr": Encoding("exr", ("-pix_fmt", "gbrpf32le", "-format", "half", "-compression", "zip1"), (), ".exr"),
}


class DeliveryProblems(MilimoError):
    """Profiles this machine cannot deliver, or names that would collide: one line each, the fix named."""

    def __init__(self, problems: list[str]):
        self.problems = problems
        super().__init__("; ".join(problems))

    def lines(self) -> list[str]:
        return self.problems


@functools.lru_cache(maxsize=1)
def available_encoders() -> frozenset[str]:
    """The encoders the ffmpeg milimo drives was built with (`ffmpeg -encoders`)."""
    listed = subprocess.run([ffmpeg_exe(), "-hide_banner", "-encoders"], capture_output=True, text=True, check=False)
    names = set()
    for line in listed.stdout.splitlines():
        flags, _, rest = line.strip().partition(" ")
        if len(flags) == 6 and rest and flags[0] in "VAS":
            names.add(rest.split()[0])
    return frozenset(names)


def profile_problems(config: MilimoConfig, only: str | None = None) -> list[str]:
    """Every configured profile (or profile `only`) whose encoder the shipped ffmpeg lacks (what `milimo validate`
    says)."""
    where = config.source or "milimo.toml"
    problems = []
    for name, profile in config.deliveries().items():
        if only is not None and name != only:
            continue
        needed = [ENCODINGS[profile.format].encoder]
        if profile.sequence and profile.reference:
            needed.append(ENCODINGS["prores_hq"].encoder)
        for encoder in needed:
            if encoder not in available_encoders():
                problems.append(f"{where}: delivery.{name}.format: {profile.format} needs ffmpeg's {encoder} encoder, "
                                f"which {ffmpeg_exe()} does not have. Fix: choose another format "
                                f"({', '.join(f for f, e in ENCODINGS.items() if e.encoder in available_encoders())})")
    return problems


def chosen_profile(config: MilimoConfig, name: str) -> DeliveryProfile:
    profiles = config.deliveries()
    if name not in profiles:
        raise ConfigError(f"no delivery profile {name!r}", f"use one of {', '.join(sorted(profiles))}, or add "
                          f"[delivery.{name}] to milimo.toml")
    if problems := profile_problems(config, only=name):
        raise DeliveryProblems(problems)
    return profiles[name]


@dataclass(frozen=True)
class DeliveryItem:
    """One take to deliver: its shot, its master, its name in this delivery, and what its movie carries."""

    shot_id: str
    take_id: int
    take_number: int
    name: str
    source: Path
    timecode: str | None
    reel: str | None
    frames: int


def plan_delivery(board: Storyboard, rows: list[ShotStatus], profile_name: str, profile: DeliveryProfile,
                  only: set[str] | None = None) -> tuple[list[DeliveryItem], list[str]]:
    """(the takes to deliver, the shots without a good take). Two takes given one name is refused before anything
    is written."""
    items, without = [], []
    for row in rows:
        if only and row.shot_id not in only:
            continue
        source = row.outputs.mov or row.outputs.mp4
        if row.status != "succeeded" or row.take_id is None or row.take_number is None or not source:
            without.append(row.shot_id)
            continue
        name = render_name(profile.naming, {"storyboard": board.name, "shot": row.shot_id, "take": row.take_number,
                                            "quality": row.quality or "final", "profile": profile_name,
                                            "reel": row.outputs.reel or ""})
        items.append(DeliveryItem(row.shot_id, row.take_id, row.take_number, name, Path(source),
                                  row.outputs.timecode, row.outputs.reel, int(row.outputs.frames or 0)))
    named: dict[str, str] = {}
    problems = []
    for item in items:
        if item.name.lower() in named:  # one name on a case-insensitive disk is one file
            problems.append(f"delivery {profile_name}: naming {profile.naming!r} names {named[item.name.lower()]} and "
                            f"{item.shot_id} both {item.name!r}. Fix: put {{shot}} (and {{take}}) in the template")
        named[item.name.lower()] = item.shot_id
    if problems:
        raise DeliveryProblems(problems)
    return items, without


@dataclass(frozen=True)
class DeliveryReport:
    folder: Path
    delivered: list[tuple[DeliveryItem, list[DeliveredFile]]]
    kept: list[tuple[DeliveryItem, list[DeliveredFile]]]
    without: list[str]


def deliver(layout: OutputLayout, store: Store, board: Storyboard, rows: list[ShotStatus], profile_name: str,
            profile: DeliveryProfile, only: set[str] | None = None,
            say: Callable[[str], None] = lambda _line: None) -> DeliveryReport:
    """Every chosen take of `board` delivered in `profile` under the storyboard's delivery folder; a take whose files
    are still as recorded is kept."""
    items, without = plan_delivery(board, rows, profile_name, profile, only)
    folder = layout.delivery_dir(board.name, profile_name)
    recorded = store.deliveries([i.take_id for i in items], profile_name)
    delivered, kept = [], []
    for n, item in enumerate(items, 1):
        before = recorded.get(item.take_id, [])
        expected = _targets(folder, item.name, profile)
        if before and {f.path for f in before} == set(expected.values()) and not any(map(_problem, before)):
            kept.append((item, before))
            say(f"  [{n}/{len(items)}] {item.shot_id} take {item.take_number}: {item.name} kept (as delivered)")
            continue
        files = _deliver_one(item, profile, expected)
        store.record_delivery(item.take_id, profile_name, files)
        delivered.append((item, files))
        size = sum(f.bytes for f in files) + sum(_sequence_bytes(f) for f in files if f.kind == "sequence")
        say(f"  [{n}/{len(items)}] {item.shot_id} take {item.take_number}: {item.name} delivered "
            f"({', '.join(f.kind for f in files)}, {size / 1e6:.1f} MB)")
    return DeliveryReport(folder, delivered, kept, without)


def _targets(folder: Path, name: str, profile: DeliveryProfile) -> dict[str, Path]:
    encoding = ENCODINGS[profile.format]
    if not profile.sequence:
        return {"movie": folder / f"{name}{encoding.suffix}"}
    targets = {"sequence": folder / name / f"{name}.sha256"}
    if profile.reference:
        targets["reference"] = folder / f"{name}{ENCODINGS['prores_hq'].suffix}"
    return targets


def _problem(f: DeliveredFile) -> str | None:
    found = delivery_problem(f)
    if found or f.kind != "sequence":
        return found
    for line in f.path.read_text(encoding="utf-8").splitlines():  # each frame the list names is still there
        frame = f.path.parent / line.split("  ", 1)[-1]
        if not frame.is_file():
            return f"frame {frame.name} missing"
    return None


def _sequence_bytes(f: DeliveredFile) -> int:
    return sum(p.stat().st_size for p in f.path.parent.iterdir() if p.is_file() and p != f.path)


def _deliver_one(item: DeliveryItem, profile: DeliveryProfile, targets: dict[str, Path]) -> list[DeliveredFile]:
    encoding = ENCODINGS[profile.format]
    facts = probe(item.source)
    low_w, low_h = encoding.min_size
    if facts.width < low_w or facts.height < low_h:
        raise ConfigError(f"shot {item.shot_id} take {item.take_number} is {facts.width}x{facts.height}; "
                          f"{profile.format} needs at least {low_w}x{low_h}",
                          "deliver it as prores_hq, or render it larger")
    files = []
    for kind, target in targets.items():
        target.parent.mkdir(parents=True, exist_ok=True)
        if kind == "sequence":
            files.append(_write_sequence(item, profile, encoding, target))
        else:
            movie = encoding if kind == "movie" else ENCODINGS["prores_hq"]
            with atomic_path(target) as tmp:
                _ffmpeg(["-i", str(item.source), "-map", "0:v:0", "-map", "0:a:0?", "-c:v", movie.encoder,
                         *movie.video, *(movie.audio or ("-an",)), *_identity(item),
                         "-f", "mp4" if movie.suffix == ".mp4" else "mov", str(tmp)], item)
            files.append(_recorded(kind, target, item.frames))
    return files


def _identity(item: DeliveryItem) -> list[str]:
    """The take's start timecode and reel, where an NLE reads them (tmcd, the stream's and the file's reel_name)."""
    args = ["-timecode", item.timecode] if item.timecode else []
    if item.reel:
        args += ["-metadata", f"reel_name={item.reel}", "-metadata:s:v:0", f"reel_name={item.reel}"]
    return args


def _write_sequence(item: DeliveryItem, profile: DeliveryProfile, encoding: Encoding, listing: Path) -> DeliveredFile:
    """The frames into a folder of their own under a temporary name, their sha256 list beside them, then the folder
    renamed into place (an earlier one of that name moved aside first and removed after)."""
    folder = listing.parent
    digits = max(4, len(str(profile.first_frame + max(item.frames, 1) - 1)))
    partial = folder.with_name(f".{folder.name}.partial.{os.getpid()}")
    shutil.rmtree(partial, ignore_errors=True)
    partial.mkdir(parents=True)
    try:
        _ffmpeg(["-i", str(item.source), "-map", "0:v:0", "-c:v", encoding.encoder, *encoding.video,
                 "-start_number", str(profile.first_frame), str(partial / f"{item.name}.%0{digits}d{encoding.suffix}")],
                item)
        frames = sorted(p for p in partial.iterdir() if p.suffix == encoding.suffix)
        atomic_write(partial / listing.name, "".join(f"{file_sha256(p)}  {p.name}\n" for p in frames))
        old = folder.with_name(f".{folder.name}.old.{os.getpid()}")
        if folder.exists():
            folder.rename(old)
        partial.rename(folder)
        shutil.rmtree(old, ignore_errors=True)
    finally:
        shutil.rmtree(partial, ignore_errors=True)
    return _recorded("sequence", listing, len(frames), profile.first_frame)


def _recorded(kind: str, path: Path, frames: int, first_frame: int | None = None) -> DeliveredFile:
    st = path.stat()
    return DeliveredFile(kind, path, st.st_size, st.st_mtime_ns, file_sha256(path), frames, first_frame)


def _ffmpeg(args: list[str], item: DeliveryItem) -> None:
    proc = subprocess.run([ffmpeg_exe(), "-v", "error", "-nostdin", "-y", *args], capture_output=True, text=True,
                          check=False)
    if proc.returncode != 0:
        raise RuntimeError(f"ffmpeg could not deliver {item.shot_id} take {item.take_number}: {proc.stderr[-1500:]}")
