"""Tiny LTX-2 / LTX-2.3 checkpoints in Lightricks' own file format, built by ltx-core's own configurators.

Runs in the reference environment (`.venv-ref`, `make reference`), never in milimo's: it imports ltx-core.
Every model is built from a config dict by ltx-core's configurator, given random weights from a fixed seed, and
written as the official files are downloaded:

- `ltx-2-tiny-dev.safetensors` (2.0, 19B-shaped: caption projection in the transformer) or
  `ltx-2.3-tiny-dev.safetensors` (2.3, 22B-shaped: the projection with the text encoder, cross-attention AdaLN,
  gated attention, the BWE vocoder): one file, the official key prefixes (`model.diffusion_model.`, `vae.`,
  `audio_vae.`, `vocoder.`, `text_embedding_projection.`) and the `config` metadata ltx-core reads;
- the spatial and temporal x2 upscalers, each with its `config` metadata;
- a distilled LoRA, a style LoRA and an IC-LoRA (with `reference_downscale_factor` metadata), official keys;
- `gemma/`: a tiny Gemma 3 folder (config, weights, a SentencePiece tokenizer, the image processor config).

    .venv-ref/bin/python tests/oracle/build_official.py --version 2.0 --out DIR [--seed 0]
"""

from __future__ import annotations

import argparse
import json
import math
import os
import shutil
import tempfile
from pathlib import Path

import torch
from safetensors.torch import save_file

GEMMA_HIDDEN = 32
GEMMA_LAYERS = 2
CORPUS = [
    "a lighthouse on a cliff at dusk, waves crashing below, cinematic wide shot",
    "close up of a woman smiling in warm evening light, shallow depth of field",
    "a red car drives through a rainy neon city street at night",
    "the camera pans across a misty forest as birds fly over the trees",
    "blurry, out of focus, overexposed, underexposed, low contrast, washed out colors, excessive noise",
    "a robot dancing in an empty warehouse, dust in the light beams, a harbour at dawn, boats",
]

VERSIONS = {
    "2.0": {"model_version": "2.0.0", "stem": "ltx-2-tiny"},
    "2.3": {"model_version": "2.3.0", "stem": "ltx-2.3-tiny"},
}


def transformer_config(version: str) -> dict:
    v2 = version == "2.3"
    config = {
        "dropout": 0.0, "attention_bias": True, "num_vector_embeds": None, "activation_fn": "gelu-approximate",
        "num_embeds_ada_norm": 1000, "use_linear_projection": False, "only_cross_attention": False,
        "cross_attention_norm": True, "double_self_attention": False, "upcast_attention": False,
        "standardization_norm": "rms_norm", "norm_elementwise_affine": False, "qk_norm": "rms_norm",
        "positional_embedding_type": "rope", "use_audio_video_cross_attention": True, "share_ff": False,
        "av_cross_ada_norm": True, "use_middle_indices_grid": True,
        "num_attention_heads": 2, "attention_head_dim": 16, "in_channels": 128, "out_channels": 128,
        "num_layers": 2, "cross_attention_dim": 32, "norm_eps": 1e-6, "attention_type": "default",
        "positional_embedding_theta": 10000.0, "positional_embedding_max_pos": [20, 2048, 2048],
        "timestep_scale_multiplier": 1000, "audio_num_attention_heads": 2, "audio_attention_head_dim": 8,
        "audio_in_channels": 128, "audio_out_channels": 128, "audio_cross_attention_dim": 16,
        "audio_positional_embedding_max_pos": [20], "av_ca_timestep_scale_multiplier": 1000 if v2 else 1,
        "rope_type": "split", "frequencies_precision": "float64", "caption_channels": GEMMA_HIDDEN,
        "connector_num_attention_heads": 2, "connector_attention_head_dim": 16, "connector_num_layers": 1,
        "connector_positional_embedding_max_pos": [4096],
        "audio_connector_num_attention_heads": 2, "audio_connector_attention_head_dim": 16 if not v2 else 8,
        "audio_connector_num_layers": 1,
    }
    if v2:
        config.update({"caption_proj_before_connector": True, "caption_projection_first_linear": False,
                       "caption_proj_input_norm": False, "caption_projection_second_linear": False,
                       "cross_attention_adaln": True, "apply_gated_attention": True,
                       "connector_apply_gated_attention": True})
    return config


def vae_config() -> dict:
    res = {"num_layers": 1}
    return {
        "dims": 3, "in_channels": 3, "out_channels": 3, "latent_channels": 128, "patch_size": 4,
        "norm_layer": "pixel_norm", "latent_log_var": "uniform", "causal_decoder": False,
        "timestep_conditioning": False, "decoder_base_channels": 16,
        "encoder_blocks": [["res_x", res], ["compress_space_res", {"multiplier": 1}], ["res_x", res],
                           ["compress_time_res", {"multiplier": 1}], ["res_x", res],
                           ["compress_all_res", {"multiplier": 1}], ["res_x", res],
                           ["compress_all_res", {"multiplier": 1}], ["res_x", res]],
        "decoder_blocks": [["res_x", {"num_layers": 1, "inject_noise": False}],
                           ["compress_all", {"residual": True, "multiplier": 2}],
                           ["res_x", {"num_layers": 1, "inject_noise": False}],
                           ["compress_all", {"residual": True, "multiplier": 2}],
                           ["res_x", {"num_layers": 1, "inject_noise": False}],
                           ["compress_all", {"residual": True, "multiplier": 2}],
                           ["res_x", {"num_layers": 1, "inject_noise": False}]],
    }


def audio_vae_config() -> dict:
    return {
        "model": {"params": {"sampling_rate": 16000, "ddconfig": {
            "ch": 128, "out_ch": 2, "ch_mult": [1, 1, 1], "num_res_blocks": 1, "attn_resolutions": [],
            "resolution": 256, "z_channels": 8, "norm_type": "pixel", "causality_axis": "height", "dropout": 0.0,
            "mid_block_add_attention": False, "double_z": True, "in_channels": 2, "mel_bins": 64,
            "attn_type": "vanilla", "resamp_with_conv": True}}},
        "preprocessing": {"stft": {"hop_length": 160, "filter_length": 1024, "causal": True},
                          "mel": {"n_mel_channels": 64}},
    }


def vocoder_config(version: str) -> dict:
    if version != "2.3":
        return {"resblock_kernel_sizes": [3], "upsample_rates": [6, 5, 2, 2, 2],
                "upsample_kernel_sizes": [12, 11, 4, 4, 4], "resblock_dilation_sizes": [[1, 3, 5]],
                "upsample_initial_channel": 64, "resblock": "1", "stereo": True, "output_sampling_rate": 24000,
                "activation": "snake", "use_tanh_at_final": True, "use_bias_at_final": True}
    vocoder = {"resblock_kernel_sizes": [3], "upsample_rates": [5, 4, 2, 2, 2],
               "upsample_kernel_sizes": [10, 8, 4, 4, 4], "resblock_dilation_sizes": [[1, 3, 5]],
               "upsample_initial_channel": 64, "resblock": "AMP1", "stereo": True, "activation": "snakebeta",
               "use_tanh_at_final": False, "use_bias_at_final": False}
    bwe = {**vocoder, "upsample_rates": [6, 5, 2, 2, 2], "upsample_kernel_sizes": [12, 11, 4, 4, 4],
           "input_sampling_rate": 16000, "output_sampling_rate": 48000, "n_fft": 512, "hop_length": 80,
           "num_mels": 64}
    return {"vocoder": vocoder, "bwe": bwe}


def upsampler_config(spatial: bool) -> dict:
    return {"in_channels": 128, "mid_channels": 32, "num_blocks_per_stage": 1, "dims": 3,
            "spatial_upsample": spatial, "temporal_upsample": not spatial, "spatial_scale": 2.0,
            "rational_resampler": False}


def _randomise(module: torch.nn.Module, generator: torch.Generator) -> None:
    """Every parameter and float buffer random (scaled like a trained layer), from one generator, in name order:
    the same seed gives the same file on any machine."""
    with torch.no_grad():
        for name, tensor in sorted(list(module.named_parameters()) + list(module.named_buffers())):
            if not tensor.is_floating_point():
                continue
            if "per_channel_statistics" in name or "latents_" in name:
                values = (1.0 + torch.rand(tensor.shape, generator=generator) * 0.5) if "std" in name else \
                    torch.randn(tensor.shape, generator=generator) * 0.1
            elif name.endswith(("mel_basis", "forward_basis", "inverse_basis", "filter")) or "resampler" in name:
                continue  # fixed signal-processing buffers, set below
            elif tensor.ndim >= 2:
                fan_in = math.prod(tensor.shape[1:])
                values = torch.randn(tensor.shape, generator=generator) / math.sqrt(max(fan_in, 1))
            elif name.endswith(("weight", "scale", "alpha", "beta")) and "norm" in name:
                values = 1.0 + torch.randn(tensor.shape, generator=generator) * 0.05
            else:
                values = torch.randn(tensor.shape, generator=generator) * 0.05
            tensor.copy_(values.to(tensor.dtype))


def _signal_buffers(vocoder: torch.nn.Module) -> None:
    """The BWE's STFT and mel bases as a trained model has them: a Hann-windowed DFT and a mel filterbank."""
    mel_stft = getattr(vocoder, "mel_stft", None)
    if mel_stft is None:
        return
    import torchaudio

    n_fft = mel_stft.stft_fn.forward_basis.shape[-1]
    n_freqs = n_fft // 2 + 1
    window = torch.hann_window(n_fft, periodic=True)
    k = torch.arange(n_freqs)[:, None].float()
    n = torch.arange(n_fft)[None, :].float()
    angle = 2 * math.pi * k * n / n_fft
    basis = torch.cat([torch.cos(angle), -torch.sin(angle)]) * window
    mel_stft.stft_fn.forward_basis.copy_(basis[:, None, :])
    mel_stft.stft_fn.inverse_basis.copy_(basis[:, None, :])  # unused by the forward pass
    fbank = torchaudio.functional.melscale_fbanks(n_freqs, 0.0, 8000.0, mel_stft.mel_basis.shape[0], 16000)
    mel_stft.mel_basis.copy_(fbank.T)


def bf16(state: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """The official files store weights in bfloat16 (and ltx-core fuses LoRAs only into bfloat16 weights)."""
    return {k: (v.to(torch.bfloat16) if v.is_floating_point() else v).contiguous() for k, v in state.items()}


def _materialise(module: torch.nn.Module) -> torch.nn.Module:
    return module.to_empty(device="cpu") if any(p.is_meta for p in module.parameters()) else module


def _full_config(version: str) -> dict:
    return {"transformer": transformer_config(version), "vae": vae_config(), "audio_vae": audio_vae_config(),
            "vocoder": vocoder_config(version)}


def build_checkpoint(version: str, seed: int) -> tuple[dict[str, torch.Tensor], dict]:
    """Every component of the model file, built by ltx-core and keyed as the official checkpoint is."""
    from ltx_core.model.audio_vae import AudioDecoderConfigurator, AudioEncoderConfigurator, VocoderConfigurator
    from ltx_core.model.transformer import LTXModelConfigurator
    from ltx_core.model.video_vae import VideoDecoderConfigurator, VideoEncoderConfigurator
    from ltx_core.text_encoders.gemma import EmbeddingsProcessorConfigurator

    config = _full_config(version)
    generator = torch.Generator().manual_seed(seed)
    state: dict[str, torch.Tensor] = {}

    def add(prefix: str, module: torch.nn.Module) -> None:
        module = _materialise(module)
        _randomise(module, generator)
        _signal_buffers(module)
        for key, value in module.state_dict().items():
            state.setdefault(prefix + key, value.detach().clone().contiguous())

    with _text_config_patched():
        add("model.diffusion_model.", LTXModelConfigurator.from_config(config))
        processor = _materialise(EmbeddingsProcessorConfigurator.from_config(config))
        _randomise(processor, generator)
    for key, value in processor.state_dict().items():
        if key.startswith("feature_extractor."):
            state["text_embedding_projection." + key.removeprefix("feature_extractor.")] = value.clone()
        elif key.startswith("video_connector."):
            name = "model.diffusion_model.video_embeddings_connector." + key.removeprefix("video_connector.")
            state[name] = value.clone()
        elif key.startswith("audio_connector."):
            state["model.diffusion_model.audio_embeddings_connector." + key.removeprefix("audio_connector.")] = (
                value.clone()
            )
    # Encoder and decoder share the per-channel statistics, as the official file stores them once.
    add("vae.encoder.", VideoEncoderConfigurator.from_config(config))
    decoder = _materialise(VideoDecoderConfigurator.from_config(config))
    _randomise(decoder, generator)
    for key, value in decoder.state_dict().items():
        if key.startswith("per_channel_statistics."):
            continue
        state["vae.decoder." + key] = value.clone().contiguous()
    for key in [k for k in state if k.startswith("vae.encoder.per_channel_statistics.")]:
        state["vae.per_channel_statistics." + key.rsplit(".", 1)[1]] = state.pop(key)
    add("audio_vae.encoder.", AudioEncoderConfigurator.from_config(config))
    audio_decoder = _materialise(AudioDecoderConfigurator.from_config(config))
    _randomise(audio_decoder, generator)
    for key, value in audio_decoder.state_dict().items():
        if not key.startswith("per_channel_statistics."):
            state["audio_vae.decoder." + key] = value.clone().contiguous()
    for key in [k for k in state if k.startswith("audio_vae.encoder.per_channel_statistics.")]:
        state["audio_vae.per_channel_statistics." + key.rsplit(".", 1)[1]] = state.pop(key)
    add("vocoder.", VocoderConfigurator.from_config(config))
    return state, config


def _gemma_config() -> dict:
    return {
        "architectures": ["Gemma3ForConditionalGeneration"],
        "model_type": "gemma3",
        "boi_token_index": 4,
        "eoi_token_index": 5,
        "image_token_index": 6,
        "eos_token_id": [1],
        "mm_tokens_per_image": 4,
        "initializer_range": 0.02,
        "torch_dtype": "bfloat16",
        "text_config": {
            "model_type": "gemma3_text",
            "hidden_size": GEMMA_HIDDEN,
            "intermediate_size": 2 * GEMMA_HIDDEN,
            "num_hidden_layers": GEMMA_LAYERS,
            "num_attention_heads": 2,
            "num_key_value_heads": 1,
            "head_dim": 16,
            "query_pre_attn_scalar": 16,
            "max_position_embeddings": 2048,
            "sliding_window": 256,
            "sliding_window_pattern": 2,
            "rope_theta": 1000000.0,
            "rope_local_base_freq": 10000.0,
            "rope_scaling": {"factor": 8.0, "rope_type": "linear"},
            "rms_norm_eps": 1e-6,
            "hidden_activation": "gelu_pytorch_tanh",
            "attention_bias": False,
            "attention_dropout": 0.0,
            "final_logit_softcapping": None,
            "attn_logit_softcapping": None,
            "vocab_size": 0,
            "pad_token_id": 0,
            "eos_token_id": 1,
            "bos_token_id": 2,
        },
        "vision_config": {
            "model_type": "siglip_vision_model",
            "hidden_size": 16,
            "intermediate_size": 32,
            "num_hidden_layers": 1,
            "num_attention_heads": 2,
            "image_size": 28,
            "patch_size": 14,
            "num_channels": 3,
            "layer_norm_eps": 1e-6,
            "hidden_act": "gelu_pytorch_tanh",
            "vision_use_head": False,
        },
    }


class _text_config_patched:
    """ltx-core sizes its text encoder and feature extractor from a constant (Gemma 3 12B). The tiny model is
    built and run with that constant set to the tiny Gemma's config, the one change the harness makes to it."""

    def __init__(self, gemma: dict | None = None):
        self.gemma = gemma or _gemma_config()

    def __enter__(self):
        from ltx_core.text_encoders.gemma import config as cfg

        self.saved = cfg.GEMMA3_CONFIG_FOR_LTX
        text = cfg.Gemma3TextConfig(
            **{
                k: v
                for k, v in self.gemma["text_config"].items()
                if k in cfg.Gemma3TextConfig.__dataclass_fields__ and k != "rope_scaling"
            }
        )
        text.rope_scaling = cfg.Gemma3RopeScaling(**self.gemma["text_config"]["rope_scaling"])
        vision = cfg.Gemma3VisionConfig(
            **{k: v for k, v in self.gemma["vision_config"].items() if k in cfg.Gemma3VisionConfig.__dataclass_fields__}
        )
        data = cfg.Gemma3ConfigData(
            text_config=text,
            vision_config=vision,
            boi_token_index=self.gemma["boi_token_index"],
            eoi_token_index=self.gemma["eoi_token_index"],
            image_token_index=self.gemma["image_token_index"],
            eos_token_id=self.gemma["eos_token_id"],
            mm_tokens_per_image=self.gemma["mm_tokens_per_image"],
            torch_dtype="float32",
        )
        patched = [cfg]
        import ltx_core.text_encoders.gemma.encoders.encoder_configurator as enc

        patched.append(enc)
        self.modules = patched
        for module in patched:
            module.GEMMA3_CONFIG_FOR_LTX = data
        return data

    def __exit__(self, *exc):
        for module in self.modules:
            module.GEMMA3_CONFIG_FOR_LTX = self.saved


def build_gemma(folder: Path, seed: int) -> None:
    """A tiny Gemma 3 (language model + SigLIP tower) with a SentencePiece tokenizer trained on a fixed corpus."""
    import sentencepiece as spm
    from transformers import Gemma3Config, Gemma3ForConditionalGeneration, GemmaTokenizerFast

    folder.mkdir(parents=True)
    corpus = folder / "corpus.txt"
    corpus.write_text("\n".join(CORPUS * 4) + "\n")
    staging = folder.parent / f".{folder.name}-spm"
    staging.mkdir()
    spm.SentencePieceTrainer.train(
        input=str(corpus),
        model_prefix=str(staging / "spm"),
        vocab_size=320,
        model_type="bpe",
        pad_id=0,
        eos_id=1,
        bos_id=2,
        unk_id=3,
        pad_piece="<pad>",
        eos_piece="<eos>",
        bos_piece="<bos>",
        unk_piece="<unk>",
        user_defined_symbols=["<start_of_image>", "<end_of_image>", "<image_soft_token>"],
        character_coverage=1.0,
        byte_fallback=True,
        num_threads=1,
        minloglevel=2,
        shuffle_input_sentence=False,
    )
    corpus.unlink()
    # Gemma's tokenizer as its folder ships: the SentencePiece model and the fast tokenizer converted from it.
    fast = GemmaTokenizerFast(
        vocab_file=str(staging / "spm.model"),
        pad_token="<pad>",
        eos_token="<eos>",
        bos_token="<bos>",
        unk_token="<unk>",
        add_bos_token=True,
        add_eos_token=False,
        extra_special_tokens={
            "boi_token": "<start_of_image>",
            "eoi_token": "<end_of_image>",
            "image_token": "<image_soft_token>",
        },
    )
    fast.save_pretrained(folder)
    shutil.copyfile(staging / "spm.model", folder / "tokenizer.model")
    shutil.rmtree(staging)
    config = _gemma_config()
    config["text_config"]["vocab_size"] = len(fast)
    torch.manual_seed(seed)
    model = Gemma3ForConditionalGeneration(Gemma3Config(**config)).eval()
    _randomise(model, torch.Generator().manual_seed(seed + 11))
    model.to(torch.bfloat16).save_pretrained(folder, safe_serialization=True)
    (folder / "preprocessor_config.json").write_text(
        json.dumps(
            {
                "do_convert_rgb": None,
                "do_normalize": True,
                "do_pan_and_scan": None,
                "do_rescale": True,
                "do_resize": True,
                "image_mean": [0.5, 0.5, 0.5],
                "image_processor_type": "Gemma3ImageProcessor",
                "image_seq_length": 4,
                "image_std": [0.5, 0.5, 0.5],
                "processor_class": "Gemma3Processor",
                "resample": 2,
                "rescale_factor": 0.00392156862745098,
                "size": {"height": 28, "width": 28},
            },
            indent=2,
        )
    )


def lora_state(transformer_keys: list[str], rank: int, seed: int, scale: float) -> dict[str, torch.Tensor]:
    """A random LoRA over every attention and feed-forward projection, in the official key format."""
    generator = torch.Generator().manual_seed(seed)
    state = {}
    for key, shape in transformer_keys:
        out_features, in_features = shape
        prefix = "diffusion_model." + key.removeprefix("model.diffusion_model.").removesuffix(".weight")
        state[f"{prefix}.lora_A.weight"] = (torch.randn(rank, in_features, generator=generator) * scale).contiguous()
        state[f"{prefix}.lora_B.weight"] = (torch.randn(out_features, rank, generator=generator) * scale).contiguous()
    return state


_LORA_TARGETS = (
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
    "audio_attn1.to_q",
    "audio_attn1.to_v",
)


def build(version: str, out: Path, seed: int = 0) -> Path:
    """Write every official file of the tiny `version` model into `out` (atomically: a staging folder renamed)."""
    spec = VERSIONS[version]
    out.parent.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(prefix=f".{out.name}.", dir=out.parent))
    try:
        state, config = build_checkpoint(version, seed)
        metadata = {"config": json.dumps(config), "model_version": spec["model_version"]}
        save_file(bf16(state), staging / f"{spec['stem']}-dev.safetensors", metadata=metadata)

        from ltx_core.model.upsampler import LatentUpsamplerConfigurator

        for name, spatial, offset in (("spatial-upscaler-x2", True, 1), ("temporal-upscaler-x2", False, 2)):
            cfg = upsampler_config(spatial)
            upsampler = LatentUpsamplerConfigurator.from_config(cfg)
            _randomise(upsampler, torch.Generator().manual_seed(seed + 100 + offset))
            save_file(
                bf16(upsampler.state_dict()),
                staging / f"{spec['stem']}-{name}.safetensors",
                metadata={"config": json.dumps(cfg)},
            )

        targets = [
            (key, tuple(value.shape))
            for key, value in sorted(state.items())
            if key.startswith("model.diffusion_model.transformer_blocks.")
            and key.endswith(".weight")
            and value.ndim == 2
            and any(f".{t}.weight" in key for t in _LORA_TARGETS)
        ]
        save_file(
            bf16(lora_state(targets, 4, seed + 201, 0.2)), staging / f"{spec['stem']}-distilled-lora-384.safetensors"
        )
        save_file(bf16(lora_state(targets, 2, seed + 202, 0.2)), staging / f"{spec['stem']}-style-lora.safetensors")
        save_file(
            bf16(lora_state([t for t in targets if ".attn1." in t[0] or ".attn2." in t[0]], 2, seed + 203, 0.2)),
            staging / f"{spec['stem']}-ic-lora-pose.safetensors",
            metadata={"reference_downscale_factor": "2"},
        )
        build_gemma(staging / "gemma", seed)
        (staging / "BUILD.json").write_text(
            json.dumps(
                {"version": version, "seed": seed, "builder": "ltx-core", "ltx_core": _version("ltx-core")}, indent=2
            )
            + "\n"
        )
        if out.exists():
            shutil.rmtree(out)
        os.replace(staging, out)
    except BaseException:
        shutil.rmtree(staging, ignore_errors=True)
        raise
    return out


def _version(dist: str) -> str:
    from importlib.metadata import version

    return version(dist)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--version", choices=sorted(VERSIONS), required=True)
    parser.add_argument("--out", required=True)
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()
    print(build(args.version, Path(args.out), args.seed))


if __name__ == "__main__":
    main()
