"""A complete, tiny, randomly initialised LTX-2 bundle for tests and the demo.

No weights can be downloaded here, so the project writes its own model folder: every
LTX-2 component from diffusers' and transformers' own classes, at toy widths but with
LTX-2's real compression ratios (32x spatial, 8x temporal, 128 latent channels), saved in
the diffusers layout that real weights use. It loads through the same `ModelLedger` path.
Its output is noise: the weights are random.
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import tempfile
from collections.abc import Iterator
from pathlib import Path

import torch
from safetensors.torch import save_file

from .manifest import ModelManifest, ScheduleDefaults

TINY_MODEL_ID = "milimo/ltx2-tiny-random-v4"  # v2: + tiny IC-LoRA; v3: perturbed_attn (diffusers runs STG too);
# v4: the manifest names its version, negative prompt and distilled-LoRA strength, cross-modal AdaLN as ltx-core
TINY_STG_BLOCKS = (1,)

_CORPUS = [
    "a lighthouse on a cliff at dusk, waves crashing below, cinematic wide shot",
    "close up of a woman smiling in warm evening light, shallow depth of field",
    "a red car drives through a rainy neon city street at night",
    "the camera pans across a misty forest as birds fly over the trees",
    "worst quality, inconsistent motion, blurry, jittery, distorted",
    "a robot dancing in an empty warehouse, dust in the light beams",
]
SPECIAL_TOKENS = ["<pad>", "<eos>", "<bos>", "<unk>", "<start_of_image>", "<end_of_image>", "<image_soft_token>"]


def _build_tokenizer(path: Path) -> None:
    """A byte-level BPE tokenizer trained on a fixed corpus: local, deterministic, Gemma-shaped."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
    from transformers import GemmaTokenizerFast

    tok = Tokenizer(models.BPE(unk_token="<unk>"))
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=512, special_tokens=SPECIAL_TOKENS, initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        show_progress=False,
    )
    tok.train_from_iterator(_CORPUS, trainer=trainer)
    fast = GemmaTokenizerFast(
        tokenizer_object=tok, bos_token="<bos>", eos_token="<eos>", pad_token="<pad>", unk_token="<unk>",
        padding_side="left", model_max_length=1024,
    )
    fast.save_pretrained(path)


# Widths of the random bundles. "tiny" is for tests and the demo; "bench" is a larger random
# config for benchmarks, where the transformer (not Python overhead) should dominate.
PROFILES = {
    "tiny": dict(text_hidden=32, text_layers=2, heads=2, head_dim=16, audio_heads=2, audio_head_dim=8, layers=2,
                 connector_heads=2, connector_dim=16),
    "bench": dict(text_hidden=128, text_layers=4, heads=8, head_dim=64, audio_heads=4, audio_head_dim=32, layers=8,
                  connector_heads=4, connector_dim=32),
}


def _tiny_components(seed: int, vocab_size: int, special_ids: dict[str, int], profile: str = "tiny") -> dict:
    """Every component at random, each from its own seed (the order is the bundle's identity: keep it)."""
    dims = PROFILES[profile]
    gen = torch.Generator().manual_seed(seed)

    def seeded(offset: int) -> None:
        torch.manual_seed(seed * 1000 + offset)

    seeded(1)
    text_encoder = _text_encoder(dims, vocab_size, special_ids)
    seeded(2)
    connectors = _connectors(dims)
    seeded(3)
    transformer = _transformer(dims)
    seeded(4)
    vae = _video_vae(gen)
    seeded(5)
    audio_vae = _audio_vae(gen)
    seeded(6)
    vocoder = _vocoder()
    seeded(7)
    spatial = _upsampler(spatial=True)
    seeded(8)
    temporal = _upsampler(spatial=False)
    return dict(text_encoder=text_encoder, connectors=connectors, transformer=transformer, vae=vae,
                audio_vae=audio_vae, vocoder=vocoder, scheduler=_scheduler(), spatial_upsampler=spatial,
                temporal_upsampler=temporal)


def _text_encoder(dims: dict[str, int], vocab_size: int, special_ids: dict[str, int]):
    """Gemma 3 at the profile's width and depth, with its special tokens."""
    from transformers import Gemma3Config, Gemma3ForConditionalGeneration

    text_hidden, text_layers = dims["text_hidden"], dims["text_layers"]
    text_config = Gemma3Config(
        text_config=dict(
            vocab_size=vocab_size,
            hidden_size=text_hidden,
            intermediate_size=2 * text_hidden,
            num_hidden_layers=text_layers,
            num_attention_heads=2,
            num_key_value_heads=1,
            head_dim=text_hidden // 2,
            max_position_embeddings=2048,
            sliding_window=256,
            pad_token_id=special_ids["<pad>"],
            bos_token_id=special_ids["<bos>"],
            eos_token_id=special_ids["<eos>"],
        ),
        vision_config=dict(
            hidden_size=16,
            intermediate_size=32,
            num_hidden_layers=1,
            num_attention_heads=2,
            image_size=28,
            patch_size=14,
        ),
        mm_tokens_per_image=4,
        boi_token_index=special_ids["<start_of_image>"],
        eoi_token_index=special_ids["<end_of_image>"],
        image_token_index=special_ids["<image_soft_token>"],
    )
    return Gemma3ForConditionalGeneration(text_config).eval()


def _connectors(dims: dict[str, int]):
    """The text connectors from Gemma's hidden states to each stream."""
    from diffusers.pipelines.ltx2 import LTX2TextConnectors

    text_hidden, text_layers = dims["text_hidden"], dims["text_layers"]
    connectors = LTX2TextConnectors(
        caption_channels=text_hidden,
        text_proj_in_factor=text_layers + 1,
        video_connector_num_attention_heads=dims["connector_heads"],
        video_connector_attention_head_dim=dims["connector_dim"],
        video_connector_num_layers=1,
        video_connector_num_learnable_registers=8,
        audio_connector_num_attention_heads=dims["connector_heads"],
        audio_connector_attention_head_dim=dims["connector_dim"],
        audio_connector_num_layers=1,
        audio_connector_num_learnable_registers=8,
        connector_rope_base_seq_len=1024,
        rope_theta=10000.0,
        rope_double_precision=False,
        causal_temporal_positioning=False,
        rope_type="split",
    )
    return connectors


def _transformer(dims: dict[str, int]):
    """The audio-visual transformer."""
    from diffusers import LTX2VideoTransformer3DModel

    text_hidden = dims["text_hidden"]
    transformer = LTX2VideoTransformer3DModel(
        in_channels=128,
        out_channels=128,
        patch_size=1,
        patch_size_t=1,
        num_attention_heads=dims["heads"],
        attention_head_dim=dims["head_dim"],
        cross_attention_dim=dims["heads"] * dims["head_dim"],
        audio_in_channels=32,
        audio_out_channels=32,
        audio_num_attention_heads=dims["audio_heads"],
        audio_attention_head_dim=dims["audio_head_dim"],
        audio_cross_attention_dim=dims["audio_heads"] * dims["audio_head_dim"],
        num_layers=dims["layers"],
        caption_channels=text_hidden,
        rope_double_precision=False,
        rope_type="split",
        # diffusers perturbs (STG) only with this set; ours perturbs either way (components/perturbations.py).
        # Set, so that diffusers' pipeline runs the same STG in the parity test and the benchmark.
        perturbed_attn=True,
    )
    return transformer


def _video_vae(gen: torch.Generator):
    """The video VAE, with non-trivial latent statistics."""
    from diffusers import AutoencoderKLLTX2Video

    vae = AutoencoderKLLTX2Video(
        latent_channels=128,
        block_out_channels=(8, 8, 16, 16),
        layers_per_block=(1, 1, 1, 1, 1),
        decoder_block_out_channels=(8, 16, 32),
        decoder_layers_per_block=(1, 1, 1, 1),
        spatio_temporal_scaling=(True, True, True, True),
        decoder_spatio_temporal_scaling=(True, True, True),
        decoder_inject_noise=(False, False, False, False),
        upsample_residual=(True, True, True),
        upsample_factor=(2, 2, 2),
        patch_size=4,
        # LTX-2's real ratios; diffusers' default formula assumes every block scales both axes.
        spatial_compression_ratio=32,
        temporal_compression_ratio=8,
    )
    # Non-trivial latent statistics, so that a wrong (de)normalisation shows in tests.
    vae.latents_mean.copy_(torch.randn(128, generator=gen) * 0.1)
    vae.latents_std.copy_(1.0 + torch.rand(128, generator=gen) * 0.5)
    return vae


def _audio_vae(gen: torch.Generator):
    """The audio VAE, with non-trivial latent statistics."""
    from diffusers import AutoencoderKLLTX2Audio

    # base_channels sizes the latent statistics: latent_channels (8) x latent mel bins (16 / 4).
    audio_vae = AutoencoderKLLTX2Audio(
        base_channels=32,
        output_channels=2,
        ch_mult=(1, 1, 1),
        num_res_blocks=1,
        attn_resolutions=None,
        in_channels=2,
        resolution=256,
        latent_channels=8,
        norm_type="pixel",
        causality_axis="height",
        dropout=0.0,
        mid_block_add_attention=False,
        sample_rate=16000,
        mel_hop_length=160,
        is_causal=True,
        mel_bins=16,
    )
    audio_vae.latents_mean.copy_(torch.randn(audio_vae.latents_mean.shape, generator=gen) * 0.1)
    audio_vae.latents_std.copy_(1.0 + torch.rand(audio_vae.latents_std.shape, generator=gen) * 0.5)
    return audio_vae


def _vocoder():
    """The vocoder, at 16 kHz."""
    from diffusers.pipelines.ltx2.vocoder import LTX2Vocoder

    # 100 mel frames/s x (5*4*4*2 = 160) = 16 kHz: audio stays in sync with video to the sample.
    vocoder = LTX2Vocoder(
        in_channels=2 * 16,
        hidden_channels=32,
        out_channels=2,
        upsample_kernel_sizes=[10, 8, 8, 4],
        upsample_factors=[5, 4, 4, 2],
        resnet_kernel_sizes=[3],
        resnet_dilations=[[1, 3]],
        output_sampling_rate=16000,
    )
    return vocoder


def _upsampler(spatial: bool):
    """The spatial (x2 size) or temporal (x2 frames) latent upsampler."""
    from diffusers.pipelines.ltx2 import LTX2LatentUpsamplerModel

    return LTX2LatentUpsamplerModel(in_channels=128, mid_channels=32, num_blocks_per_stage=1, dims=3,
                                    spatial_upsample=spatial, temporal_upsample=not spatial,
                                    **({"use_rational_resampler": False} if spatial else {}))


def _scheduler():
    """diffusers' scheduler with LTX-2's shift (the bundle ships one; the engine computes its own)."""
    from diffusers import FlowMatchEulerDiscreteScheduler

    s = ScheduleDefaults()
    scheduler = FlowMatchEulerDiscreteScheduler(
        use_dynamic_shifting=True,
        base_shift=s.base_shift,
        max_shift=s.max_shift,
        base_image_seq_len=s.base_seq_len,
        max_image_seq_len=s.max_seq_len,
        shift_terminal=s.shift_terminal,
        time_shift_type="exponential",
    )
    return scheduler


def _lora_targets(transformer: torch.nn.Module) -> list[tuple[str, torch.nn.Linear]]:
    wanted = (
        "attn1.to_q",
        "attn1.to_k",
        "attn1.to_v",
        "attn1.to_out.0",
        "attn2.to_q",
        "attn2.to_k",
        "attn2.to_v",
        "attn2.to_out.0",
        "ff.net.0.proj",
        "ff.net.2",
    )
    return [
        (name, module)
        for name, module in transformer.named_modules()
        if isinstance(module, torch.nn.Linear)
        and name.startswith("transformer_blocks.")
        and name.split(".", 2)[2] in wanted
    ]


def random_lora_state_dict(
    transformer: torch.nn.Module, *, rank: int, seed: int, scale: float, key_format: str,
    device: str | torch.device = "cpu", dtype: torch.dtype = torch.float32,
) -> dict[str, torch.Tensor]:
    """A random LoRA over the transformer's attention and feed-forward projections.

    `key_format="ltx"` writes the official LTX-2 keys (`diffusion_model.` prefix, as the
    distilled LoRA ships); `"diffusers"` writes diffusers' `transformer.` keys.
    """
    gen = torch.Generator(device).manual_seed(seed)
    prefix = {"ltx": "diffusion_model", "diffusers": "transformer"}[key_format]
    state: dict[str, torch.Tensor] = {}
    for name, module in _lora_targets(transformer):
        a = torch.randn(rank, module.in_features, generator=gen, device=device) * scale
        b = torch.randn(module.out_features, rank, generator=gen, device=device) * scale
        state[f"{prefix}.{name}.lora_A.weight"] = a.to(dtype).contiguous()
        state[f"{prefix}.{name}.lora_B.weight"] = b.to(dtype).contiguous()
    return state


def _write_loras(transformer: torch.nn.Module, loras: Path, seed: int) -> None:
    """The distilled LoRA (official keys), a style LoRA and an in-context LoRA (diffusers' keys), all random."""
    loras.mkdir()
    save_file(
        random_lora_state_dict(transformer, rank=4, seed=seed + 101, scale=0.3, key_format="ltx"),
        loras / "ltx-2-distilled-lora.safetensors",
        metadata={"format": "pt"},
    )  # one key: bytes stay deterministic
    save_file(
        random_lora_state_dict(transformer, rank=2, seed=seed + 202, scale=0.3, key_format="diffusers"),
        loras / "tiny-style-lora.safetensors",
        metadata={"format": "pt"},
    )
    # An in-context LoRA for ICLoraPipeline (random, like everything here; real ones are trained
    # with reference tokens appended, which is all the pipeline relies on).
    save_file(
        random_lora_state_dict(transformer, rank=2, seed=seed + 303, scale=0.3, key_format="diffusers"),
        loras / "tiny-ic-lora.safetensors",
        metadata={"format": "pt"},
    )


@contextlib.contextmanager
def _quiet_saving() -> Iterator[None]:
    from transformers.utils import logging as hf_logging

    shown = hf_logging.is_progress_bar_enabled()
    hf_logging.disable_progress_bar()
    try:
        yield
    finally:
        if shown:
            hf_logging.enable_progress_bar()


def build_tiny_model(path: str | os.PathLike, seed: int = 0, *, overwrite: bool = False, profile: str = "tiny") -> Path:
    """Write the tiny random LTX-2 bundle to `path` (atomically) and return the path.

    The same `seed` gives the same weights, file for file, on any machine with the same
    library versions, so cached bundles can be shared between processes.
    """
    from diffusers import LTX2Pipeline
    from transformers import AutoTokenizer

    target = Path(path)
    if target.exists():
        if not overwrite:
            raise FileExistsError(f"{target} exists; pass overwrite=True to replace it")
        shutil.rmtree(target)
    target.parent.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(prefix=f".{target.name}.", dir=target.parent))
    try:
        _build_tokenizer(staging / "tokenizer")
        tokenizer = AutoTokenizer.from_pretrained(staging / "tokenizer")
        special_ids = {t: tokenizer.convert_tokens_to_ids(t) for t in SPECIAL_TOKENS}
        with torch.no_grad():
            parts = _tiny_components(seed, len(tokenizer), special_ids, profile)
        pipe = LTX2Pipeline(
            scheduler=parts["scheduler"],
            vae=parts["vae"],
            audio_vae=parts["audio_vae"],
            text_encoder=parts["text_encoder"],
            tokenizer=tokenizer,
            connectors=parts["connectors"],
            transformer=parts["transformer"],
            vocoder=parts["vocoder"],
        )
        with _quiet_saving():  # transformers draws a "Writing model shards" bar per component: noise on a demo
            pipe.save_pretrained(staging, safe_serialization=True)
        parts["spatial_upsampler"].save_pretrained(staging / "latent_upsampler", safe_serialization=True)
        parts["temporal_upsampler"].save_pretrained(staging / "temporal_upsampler", safe_serialization=True)

        _write_loras(parts["transformer"], staging / "loras", seed)
        ModelManifest(
            model_id=TINY_MODEL_ID if profile == "tiny" else f"milimo/ltx2-{profile}-random-v4",
            distilled_lora="loras/ltx-2-distilled-lora.safetensors",
            loras={"style": "loras/tiny-style-lora.safetensors", "ic": "loras/tiny-ic-lora.safetensors"},
            stg_blocks=TINY_STG_BLOCKS,
            max_sequence_length=128,
            default_size=(768, 512),  # small: the tiny model renders noise at any size
            random_weights=True,
        ).write(staging)
        (staging / "README.txt").write_text(
            f"{TINY_MODEL_ID}: a tiny LTX-2 bundle with RANDOM weights (seed {seed}), built by milimo.\n"
            "It renders noise. It exists so the pipeline can be tested without real weights.\n"
        )
        (staging / "tiny-build.json").write_text(json.dumps({"seed": seed, "profile": profile}) + "\n")
        os.replace(staging, target)
    except BaseException:
        shutil.rmtree(staging, ignore_errors=True)
        raise
    return target


TINY_DIR_NAME = "ltx2-tiny-random-v4"


def default_tiny_model_dir() -> Path:
    """Where a library user's `ensure_tiny_model()` keeps the bundle (milimo's commands pass their own cache,
    `milimo.settings.Settings.models_dir`)."""
    root = os.environ.get("XDG_CACHE_HOME") or os.path.expanduser("~/.cache")
    return Path(root) / "milimo" / "models" / TINY_DIR_NAME


def ensure_tiny_model(path: str | os.PathLike | None = None, seed: int = 0) -> Path:
    """Build the tiny bundle once into the cache (safe when several processes race)."""
    target = Path(path) if path is not None else default_tiny_model_dir()
    if (target / "milimo-model.json").is_file():
        return target
    try:
        return build_tiny_model(target, seed=seed)
    except (FileExistsError, OSError):
        if (target / "milimo-model.json").is_file():
            return target
        raise
