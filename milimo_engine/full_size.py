"""The full-size LTX-2 configuration as a folder of config files and no weights.

`milimo model plan` reads a model folder's configs only, so this folder gives the planner's table for the
official sizes on any machine (docs/engine.md is printed from it), and `bench/gpu.py` fills the same configs with
random weights on a GPU. LTX-2's components are diffusers' own defaults (they are the official 19B model); the
text encoder is Gemma 3 12B (google/gemma-3-12b's published configuration).
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path
from typing import Any

from .manifest import ModelManifest

GEMMA_3_12B: dict[str, Any] = {
    "architectures": ["Gemma3ForConditionalGeneration"],
    "model_type": "gemma3",
    "mm_tokens_per_image": 256,
    "text_config": {
        "model_type": "gemma3_text", "hidden_size": 3840, "intermediate_size": 15360, "num_attention_heads": 16,
        "num_hidden_layers": 48, "num_key_value_heads": 8, "head_dim": 256, "vocab_size": 262208,
        "sliding_window": 1024, "query_pre_attn_scalar": 256, "rope_scaling": {"factor": 8.0, "rope_type": "linear"},
    },
    "vision_config": {
        "model_type": "siglip_vision_model", "hidden_size": 1152, "image_size": 896, "intermediate_size": 4304,
        "num_attention_heads": 16, "num_hidden_layers": 27, "patch_size": 14, "vision_use_head": False,
    },
}
# The rank of the official distilled LoRA (ltx-2-19b-distilled-lora-384): the planner counts its adapters.
DISTILLED_LORA_RANK = 384


def _default_config(class_name: str) -> dict[str, Any]:
    import diffusers
    from accelerate import init_empty_weights
    from diffusers.pipelines import ltx2
    from diffusers.pipelines.ltx2 import vocoder

    cls = next(getattr(ns, class_name) for ns in (diffusers, ltx2, vocoder) if hasattr(ns, class_name))
    with init_empty_weights():
        config = dict(cls().config)
    return {"_class_name": class_name, **{k: v for k, v in config.items() if not k.startswith("_")}}


def write_full_size_configs(folder: str | Path, version: str = "2.0", tokenizer_from: Path | None = None) -> Path:
    """A folder of LTX-2's full-size configs (`version` "2.0"; the 2.3 and 2.5 configs are not published in a
    form this machine has, see docs/engine.md). `tokenizer_from`: a model folder whose tokenizer and scheduler it
    takes (the tiny bundle's: the official scheduler config and a tokenizer whose ids Gemma 3's vocabulary holds),
    so a ledger with random weights renders from it."""
    if version != "2.0":
        raise ValueError(f"full-size configs for LTX-{version} are not known here; use a downloaded model folder")
    root = Path(folder)
    classes = {"transformer": "LTX2VideoTransformer3DModel", "vae": "AutoencoderKLLTX2Video",
               "audio_vae": "AutoencoderKLLTX2Audio", "vocoder": "LTX2Vocoder", "connectors": "LTX2TextConnectors",
               "latent_upsampler": "LTX2LatentUpsamplerModel", "temporal_upsampler": "LTX2LatentUpsamplerModel"}
    for name, class_name in classes.items():
        (root / name).mkdir(parents=True, exist_ok=True)
        (root / name / "config.json").write_text(json.dumps(_default_config(class_name), indent=1, default=list))
    (root / "text_encoder").mkdir(parents=True, exist_ok=True)
    (root / "text_encoder" / "config.json").write_text(json.dumps(GEMMA_3_12B, indent=1))
    for part in ("tokenizer", "scheduler", "loras"):
        if tokenizer_from is not None and (tokenizer_from / part).is_dir() and part != "loras":
            shutil.copytree(tokenizer_from / part, root / part, dirs_exist_ok=True)
        (root / part).mkdir(exist_ok=True)
    ModelManifest(model_id="Lightricks/LTX-2 (full-size configs, no weights)").write(root)
    return root
