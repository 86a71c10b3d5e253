"""LoRA files: reading both key formats, checking they fit this transformer, hashing.

Official LTX-2 LoRAs (the distilled LoRA among them) use the original checkpoint's keys
(`diffusion_model.transformer_blocks.N...`); diffusers-trained ones use `transformer.`.
Both become diffusers keys here and are applied through peft adapters, which keep the base
weights untouched so stages can switch adapter sets freely.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

import torch
from safetensors import SafetensorError
from safetensors.torch import load_file

from .errors import LoraFileError, UnknownLoraKeysError
from .hashing import file_sha256

_LORA_SUFFIXES = (".lora_A.weight", ".lora_B.weight", ".lora_down.weight", ".lora_up.weight", ".alpha",
                  ".lora_A.bias", ".lora_B.bias")

@dataclass(frozen=True)
class LoraWeights:
    path: Path
    sha256: str
    state_dict: dict[str, torch.Tensor]  # diffusers keys without the "transformer." prefix
    source_format: str  # "ltx" or "diffusers"
    ignored: tuple[str, ...] = ()  # keys for no transformer weight (e.g. the text projection's), not applied


def _to_diffusers_keys(state: dict[str, torch.Tensor], path: Path) -> tuple[dict[str, torch.Tensor], str]:
    from diffusers.loaders.lora_conversion_utils import _convert_non_diffusers_ltx2_lora_to_diffusers

    if any(k.startswith("diffusion_model.") for k in state):
        converted = _convert_non_diffusers_ltx2_lora_to_diffusers(state)
        fmt = "ltx"
    elif any(k.startswith("transformer.") for k in state):
        converted, fmt = state, "diffusers"
    else:
        sample = next(iter(state), "<empty>")
        raise UnknownLoraKeysError(
            "loras.path", str(path),
            f"keys start neither with 'diffusion_model.' (official LTX-2) nor 'transformer.' (diffusers); "
            f"first key is {sample!r}. This is not an LTX-2 transformer LoRA")
    out = {k.removeprefix("transformer."): v for k, v in converted.items() if k.startswith("transformer.")}
    return out, fmt


def _outside_transformer(state: dict[str, torch.Tensor]) -> list[str]:
    """Keys that target no transformer weight: ltx-core applies LoRAs to the transformer alone (its text
    projection, `text_embedding_projection.*`, is built without them), so these are ignored, as there."""
    return sorted(k for k in state if not k.startswith(("diffusion_model.", "transformer.")))


def read_lora(path: str | os.PathLike) -> LoraWeights:
    p = Path(path)
    if not p.is_file():
        raise LoraFileError("loras.path", str(p), "no such file; check the path and the asset roots")
    try:
        state = load_file(str(p))
    except (SafetensorError, OSError, ValueError) as exc:
        raise LoraFileError("loras.path", str(p), f"is not a readable safetensors file ({exc})") from exc
    if not state:
        raise LoraFileError("loras.path", str(p), "holds no tensors")
    converted, fmt = _to_diffusers_keys(state, p)
    return LoraWeights(p, file_sha256(p), converted, fmt, tuple(_outside_transformer(state)))


def check_lora_fits(lora: LoraWeights, transformer: torch.nn.Module) -> LoraWeights:
    """The LoRA with the keys this transformer has; refuse one that fits none of it (a LoRA for another model:
    peft would load it and do nothing, the worst kind of failure in a render farm) or whose shapes disagree.

    Keys for modules this transformer lacks, beside ones it has, are ignored, as ltx-core's fusion ignores keys
    for weights the model does not have; they are returned in `ignored` so the take records them.
    """
    modules = dict(transformer.named_modules())
    unknown: list[str] = []
    mismatched: list[str] = []
    for key, tensor in lora.state_dict.items():
        target = _target(key)
        module = modules.get(target)
        if module is None:
            # peft may already have wrapped the layer: its base layer lives under `.base_layer`.
            unknown.append(target)
            continue
        base = getattr(module, "base_layer", module)
        fan_in, fan_out = getattr(base, "in_features", None), getattr(base, "out_features", None)
        if key.endswith((".lora_A.weight", ".lora_down.weight")) and fan_in not in (None, tensor.shape[-1]):
            mismatched.append(f"{target} (in {tensor.shape[-1]} vs {fan_in})")
        if key.endswith((".lora_B.weight", ".lora_up.weight")) and fan_out not in (None, tensor.shape[0]):
            mismatched.append(f"{target} (out {tensor.shape[0]} vs {fan_out})")
    uniq = sorted(set(unknown))
    if uniq and len(uniq) == len({_target(k) for k in lora.state_dict}):
        raise UnknownLoraKeysError(
            "loras.path", str(lora.path),
            f"targets {len(uniq)} module(s) this transformer does not have, e.g. {uniq[:3]}, and none it has; "
            "it is a LoRA for another model (or another LTX version)")
    if mismatched:
        raise UnknownLoraKeysError(
            "loras.path", str(lora.path),
            f"has {len(mismatched)} layer(s) whose shapes do not fit this transformer, e.g. {mismatched[:3]}; "
            "it was trained for a different model size")
    if not uniq:
        return lora
    keep = {k: v for k, v in lora.state_dict.items() if _target(k) not in set(uniq)}
    return LoraWeights(lora.path, lora.sha256, keep, lora.source_format,
                       lora.ignored + tuple(k for k in sorted(lora.state_dict) if k not in keep))


def _target(key: str) -> str:
    for suffix in _LORA_SUFFIXES:
        if key.endswith(suffix):
            return key[: -len(suffix)]
    return key


def adapter_name(sha256: str) -> str:
    """Adapters are named by content, so the same file under two paths loads once."""
    return f"lora_{sha256[:16]}"
