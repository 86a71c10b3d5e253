"""Each component of an official checkpoint in diffusers' layout: its config and its weights under diffusers' names.

The official file is one safetensors with prefixes per component (`model.diffusion_model.` for the transformer and
the text connectors, `vae.`, `audio_vae.`, `vocoder.`, `text_embedding_projection.`) and one `config` JSON with a
section per component, read by ltx-core's configurators. The weights need renaming only; the configs are mapped
field by field here. The transformer, video VAE and audio VAE renames are diffusers' own single-file converters;
the connectors, the vocoder (with and without the 2.3 bandwidth extension) and the upsamplers have none in diffusers,
so they are written here. Every conversion is loaded strictly into the diffusers class (a key too many or too few
is an error naming it) and proven by parity with ltx-core on the same weights (`tests/test_official_parity.py`).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from ..errors import ModelImportError


@dataclass(frozen=True)
class TensorRef:
    """One tensor of a safetensors file, not loaded: the conversions rename keys, they never touch values, so a
    40 GB checkpoint is converted one tensor at a time (`importer.write_component`)."""

    file: Path
    key: str
    shape: tuple[int, ...]
    dtype: str


State = dict[str, TensorRef]

TRANSFORMER_PREFIX = "model.diffusion_model."
CONNECTOR_PREFIXES = ("video_embeddings_connector.", "audio_embeddings_connector.")


@dataclass(frozen=True)
class Component:
    """One diffusers component made from official weights: where it goes in the folder, its class, config, weights."""

    folder: str  # "transformer", "vae", ...
    class_name: str
    config: dict[str, Any]
    state: State


def _section(config: dict, name: str, source: Any) -> dict:
    section = config.get(name)
    if not isinstance(section, dict):
        raise ModelImportError(source, f"its `config` metadata has no `{name}` section",
                               "this is not an LTX-2 model checkpoint; give the dev checkpoint as downloaded")
    return section


def _take(state: State, prefix: str) -> State:
    return {k[len(prefix):]: v for k, v in state.items() if k.startswith(prefix)}


def _rename(state: State, pairs: list[tuple[str, str]]) -> State:
    out = {}
    for key, value in state.items():
        for old, new in pairs:
            key = key.replace(old, new)
        out[key] = value
    return out


# ------------------------------------------------------------------ transformer
def is_22b(config: dict) -> bool:
    """LTX-2.3 (22B-shaped): the text projection moved into the text encoder, a cross-attention AdaLN."""
    return bool(config.get("transformer", {}).get("caption_proj_before_connector", False))


def transformer_component(config: dict, state: State, source: Any) -> Component:
    from diffusers.loaders.single_file_utils import convert_ltx2_transformer_to_diffusers

    t = _section(config, "transformer", source)
    audio = config.get("audio_vae", {})
    stft = audio.get("preprocessing", {}).get("stft", {})
    max_pos = t.get("positional_embedding_max_pos", [20, 2048, 2048])
    v2 = is_22b(config)
    diffusers_config = {
        "in_channels": t.get("in_channels", 128), "out_channels": t.get("out_channels", 128),
        "patch_size": 1, "patch_size_t": 1,
        "num_attention_heads": t.get("num_attention_heads", 32), "attention_head_dim": t.get("attention_head_dim", 128),
        "cross_attention_dim": t.get("cross_attention_dim", 4096), "vae_scale_factors": [8, 32, 32],
        "pos_embed_max_pos": max_pos[0], "base_height": max_pos[1], "base_width": max_pos[2],
        "gated_attn": bool(t.get("apply_gated_attention", False)),
        "cross_attn_mod": bool(t.get("cross_attention_adaln", False)),
        "audio_in_channels": t.get("audio_in_channels", 128), "audio_out_channels": t.get("audio_out_channels", 128),
        "audio_patch_size": 1, "audio_patch_size_t": 1,
        "audio_num_attention_heads": t.get("audio_num_attention_heads", 32),
        "audio_attention_head_dim": t.get("audio_attention_head_dim", 64),
        "audio_cross_attention_dim": t.get("audio_cross_attention_dim", 2048), "audio_scale_factor": 4,
        "audio_pos_embed_max_pos": t.get("audio_positional_embedding_max_pos", [20])[0],
        "audio_sampling_rate": audio.get("model", {}).get("params", {}).get("sampling_rate", 16000),
        "audio_hop_length": stft.get("hop_length", 160),
        "audio_gated_attn": bool(t.get("apply_gated_attention", False)),
        "audio_cross_attn_mod": bool(t.get("cross_attention_adaln", False)),
        "num_layers": t.get("num_layers", 48), "activation_fn": t.get("activation_fn", "gelu-approximate"),
        "qk_norm": "rms_norm_across_heads", "norm_elementwise_affine": bool(t.get("norm_elementwise_affine", False)),
        "norm_eps": t.get("norm_eps", 1e-6), "caption_channels": t.get("caption_channels", 3840),
        "attention_bias": bool(t.get("attention_bias", True)), "attention_out_bias": True,
        "rope_theta": t.get("positional_embedding_theta", 10000.0),
        "rope_double_precision": t.get("frequencies_precision", False) == "float64", "causal_offset": 1,
        "timestep_scale_multiplier": t.get("timestep_scale_multiplier", 1000),
        "cross_attn_timestep_scale_multiplier": t.get("av_ca_timestep_scale_multiplier", 1),
        "rope_type": t.get("rope_type", "interleaved"), "use_prompt_embeddings": not v2,
        # Our STG perturbs through hooks either way (components/perturbations.py); set, diffusers' own STG works too.
        "perturbed_attn": True,
    }
    own = {k: v for k, v in _take(state, TRANSFORMER_PREFIX).items() if not k.startswith(CONNECTOR_PREFIXES)}
    if not own:
        raise ModelImportError(source, f"holds no transformer weights (no `{TRANSFORMER_PREFIX}` keys)",
                               "give the LTX-2 model checkpoint as downloaded")
    # diffusers' converter strips the prefix itself; give it the keys as the file has them.
    converted = convert_ltx2_transformer_to_diffusers({TRANSFORMER_PREFIX + k: v for k, v in own.items()})
    converted = _rename(converted, [("prompt_adaln_single.", "prompt_adaln.")])
    return Component("transformer", "LTX2VideoTransformer3DModel", diffusers_config, converted)


# ------------------------------------------------------------------ video VAE
_DOWNSAMPLE_TYPES = {"compress_space_res": "spatial", "compress_time_res": "temporal",
                     "compress_all_res": "spatiotemporal"}


def _block_params(params: Any) -> dict:
    return {"num_layers": params} if isinstance(params, int) else dict(params)


def vae_component(config: dict, state: State, source: Any) -> Component:
    from diffusers.loaders.single_file_utils import convert_ltx2_vae_to_diffusers

    v = _section(config, "vae", source)
    latent = v.get("latent_channels", 128)
    encoder = [(name, _block_params(p)) for name, p in v.get("encoder_blocks", [])]
    decoder = [(name, _block_params(p)) for name, p in v.get("decoder_blocks", [])]
    layers, downsample, channels, ch = [], [], [], latent
    for name, params in encoder:
        if name == "res_x":
            layers.append(params["num_layers"])
        elif name in _DOWNSAMPLE_TYPES:
            ch *= params.get("multiplier", 2)
            downsample.append(_DOWNSAMPLE_TYPES[name])
            channels.append(ch)
        else:
            raise ModelImportError(source, f"vae.encoder_blocks has a {name!r} block, which diffusers' LTX-2 VAE "
                                   "does not have", "this VAE layout is not supported; use the official LTX-2 VAE")
    if len(layers) != len(channels) + 1:
        raise ModelImportError(source, "vae.encoder_blocks do not alternate resnet stages and downsamplers",
                               "this VAE layout is not supported; use the official LTX-2 VAE")
    base = v.get("decoder_base_channels", 128)
    # ltx-core builds the decoder from the reversed list: conv_in at base*8, each upsampler dividing by its multiplier.
    dec_layers, residual, factors, inject = [], [], [], []
    for name, params in decoder:
        if name == "res_x":
            dec_layers.append(params["num_layers"])
            inject.append(bool(params.get("inject_noise", False)))
        elif name == "compress_all":
            residual.append(bool(params.get("residual", False)))
            factors.append(params.get("multiplier", 1))
        else:
            raise ModelImportError(source, f"vae.decoder_blocks has a {name!r} block, which diffusers' LTX-2 VAE "
                                   "does not have", "this VAE layout is not supported; use the official LTX-2 VAE")
    dec_channels, ch = [], base * 8
    for factor in reversed(factors):
        dec_channels.append(ch)
        ch //= factor
    diffusers_config = {
        "in_channels": v.get("in_channels", 3), "out_channels": v.get("out_channels", 3), "latent_channels": latent,
        "block_out_channels": channels, "down_block_types": ["LTX2VideoDownBlock3D"] * len(channels),
        "decoder_block_out_channels": list(reversed(dec_channels)), "layers_per_block": layers,
        "decoder_layers_per_block": list(reversed(dec_layers)),
        "spatio_temporal_scaling": [True] * len(channels), "decoder_spatio_temporal_scaling": [True] * len(factors),
        "decoder_inject_noise": list(reversed(inject)), "downsample_type": downsample,
        "upsample_residual": list(reversed(residual)), "upsample_factor": list(reversed(factors)),
        "timestep_conditioning": bool(v.get("timestep_conditioning", True)), "patch_size": v.get("patch_size", 4),
        "patch_size_t": 1, "resnet_norm_eps": 1e-6, "encoder_causal": True,
        "decoder_causal": bool(v.get("causal_decoder", False)),
        # ltx-core reads one key for both halves, with a different default for each.
        "encoder_spatial_padding_mode": v.get("spatial_padding_mode", "zeros"),
        "decoder_spatial_padding_mode": v.get("spatial_padding_mode", "reflect"),
        "spatial_compression_ratio": 32, "temporal_compression_ratio": 8,
    }
    own = _take(state, "vae.")
    if not own:
        raise ModelImportError(source, "holds no video VAE weights (no `vae.` keys)",
                               "give the LTX-2 model checkpoint as downloaded")
    converted = convert_ltx2_vae_to_diffusers(own)
    return Component("vae", "AutoencoderKLLTX2Video", diffusers_config, converted)


# ------------------------------------------------------------------ audio VAE
def audio_vae_component(config: dict, state: State, source: Any) -> Component:
    from diffusers.loaders.single_file_utils import convert_ltx2_audio_vae_to_diffusers

    a = _section(config, "audio_vae", source)
    params = a.get("model", {}).get("params", {})
    dd = params.get("ddconfig", {})
    stft = a.get("preprocessing", {}).get("stft", {})
    mel = a.get("preprocessing", {}).get("mel", {})
    attn = dd.get("attn_resolutions")
    diffusers_config = {
        "base_channels": dd.get("ch", 128), "output_channels": dd.get("out_ch", 2),
        "ch_mult": list(dd.get("ch_mult", (1, 2, 4))), "num_res_blocks": dd.get("num_res_blocks", 2),
        "attn_resolutions": list(attn) if attn else None, "in_channels": dd.get("in_channels", 2),
        "resolution": dd.get("resolution", 256), "latent_channels": dd.get("z_channels", 8),
        "norm_type": dd.get("norm_type", "pixel"), "causality_axis": dd.get("causality_axis", "height"),
        "dropout": dd.get("dropout", 0.0), "mid_block_add_attention": bool(dd.get("mid_block_add_attention", True)),
        "sample_rate": params.get("sampling_rate", 16000), "mel_hop_length": stft.get("hop_length", 160),
        "is_causal": bool(stft.get("causal", True)),
        "mel_bins": dd.get("mel_bins") or mel.get("n_mel_channels") or 64, "double_z": bool(dd.get("double_z", True)),
    }
    own = _take(state, "audio_vae.")
    if not own:
        raise ModelImportError(source, "holds no audio VAE weights (no `audio_vae.` keys)",
                               "give the LTX-2 model checkpoint as downloaded")
    converted = convert_ltx2_audio_vae_to_diffusers(own)
    return Component("audio_vae", "AutoencoderKLLTX2Audio", diffusers_config, converted)


# ------------------------------------------------------------------ vocoder
_VOCODER_RENAMES = [("ups.", "upsamplers."), ("resblocks.", "resnets."), ("conv_pre.", "conv_in."),
                    ("conv_post.", "conv_out."), ("act_post.", "act_out."), (".downsample.lowpass.", ".downsample.")]


def _vocoder_config(cfg: dict, prefix: str = "", final_activation: bool = True) -> dict:
    """ltx-core's `Vocoder`: tanh at the end (`use_tanh_at_final`), else a clamp to [-1, 1]; the BWE generator
    (`apply_final_activation=False`) has neither."""
    amp = cfg.get("resblock", "1") == "AMP1"
    final = ("tanh" if cfg.get("use_tanh_at_final", True) else "clamp") if final_activation else None
    return {
        f"{prefix}in_channels": 128,
        f"{prefix}hidden_channels": cfg.get("upsample_initial_channel", 1024),
        f"{prefix}out_channels": 2,
        f"{prefix}upsample_kernel_sizes": cfg.get("upsample_kernel_sizes", [16, 15, 8, 4, 4]),
        f"{prefix}upsample_factors": cfg.get("upsample_rates", [6, 5, 2, 2, 2]),
        f"{prefix}resnet_kernel_sizes": cfg.get("resblock_kernel_sizes", [3, 7, 11]),
        f"{prefix}resnet_dilations": cfg.get("resblock_dilation_sizes", [[1, 3, 5]] * 3),
        f"{prefix}act_fn": cfg.get("activation", "snake") if amp else "leaky_relu",
        f"{prefix}leaky_relu_negative_slope": 0.1,
        f"{prefix}antialias": amp,
        f"{prefix}final_act_fn": final,
        f"{prefix}final_bias": bool(cfg.get("use_bias_at_final", True)),
    }


def vocoder_component(config: dict, state: State, source: Any) -> Component:
    cfg = _section(config, "vocoder", source)
    own = _take(state, "vocoder.")
    if not own:
        raise ModelImportError(
            source, "holds no vocoder weights (no `vocoder.` keys)", "give the LTX-2 model checkpoint as downloaded"
        )
    if "bwe" not in cfg:
        diffusers_config = _vocoder_config(cfg) | {"output_sampling_rate": cfg.get("output_sampling_rate", 24000)}
        return Component("vocoder", "LTX2Vocoder", diffusers_config, _rename(own, _VOCODER_RENAMES))
    voc, bwe = cfg.get("vocoder", {}), cfg["bwe"]
    diffusers_config = {
        **_vocoder_config(voc),
        **_vocoder_config(bwe, "bwe_", final_activation=False),
        "filter_length": bwe["n_fft"],
        "hop_length": bwe["hop_length"],
        "window_length": bwe["n_fft"],
        "num_mel_channels": bwe["num_mels"],
        "input_sampling_rate": bwe["input_sampling_rate"],
        "output_sampling_rate": bwe["output_sampling_rate"],
    }
    converted = {}
    for key, value in own.items():
        head, _, rest = key.partition(".")
        if head in ("vocoder", "bwe_generator"):
            converted[head + "." + _rename({rest: value}, _VOCODER_RENAMES).popitem()[0]] = value
        else:
            converted[key] = value
    return Component("vocoder", "LTX2VocoderWithBWE", diffusers_config, converted)


# ------------------------------------------------------------------ text connectors (and the 2.3 projection)
def connectors_component(config: dict, state: State, gemma_hidden: int, gemma_layers: int, source: Any) -> Component:
    t = _section(config, "transformer", source)
    v2 = is_22b(config)
    video_heads = t.get("connector_num_attention_heads", 30)
    video_dim = t.get("connector_attention_head_dim", 128)
    diffusers_config = {
        "caption_channels": gemma_hidden,
        "text_proj_in_factor": gemma_layers + 1,
        "video_connector_num_attention_heads": video_heads,
        "video_connector_attention_head_dim": video_dim,
        "video_connector_num_layers": t.get("connector_num_layers", 2),
        "video_connector_num_learnable_registers": 128,
        "video_gated_attn": bool(t.get("connector_apply_gated_attention", False)),
        "audio_connector_num_attention_heads": t.get("audio_connector_num_attention_heads", video_heads),
        "audio_connector_attention_head_dim": t.get("audio_connector_attention_head_dim", video_dim),
        "audio_connector_num_layers": t.get("audio_connector_num_layers", t.get("connector_num_layers", 2)),
        "audio_connector_num_learnable_registers": 128,
        "audio_gated_attn": bool(t.get("connector_apply_gated_attention", False)),
        "connector_rope_base_seq_len": t.get("connector_positional_embedding_max_pos", [1])[0],
        "rope_theta": 10000.0,
        "rope_double_precision": t.get("frequencies_precision", False) == "float64",
        "causal_temporal_positioning": False,
        "rope_type": t.get("rope_type", "interleaved"),
        "per_modality_projections": v2,
        "video_hidden_dim": t.get("num_attention_heads", 32) * t.get("attention_head_dim", 128),
        "audio_hidden_dim": t.get("audio_num_attention_heads", 32) * t.get("audio_attention_head_dim", 64),
        "proj_bias": v2,
    }
    converted: State = {}
    projection = _take(state, "text_embedding_projection.")
    if not projection:
        raise ModelImportError(
            source,
            "holds no text projection (no `text_embedding_projection.` keys)",
            "give the LTX-2 model checkpoint as downloaded",
        )
    for key, value in projection.items():
        converted[
            _rename(
                {key: value},
                [
                    ("video_aggregate_embed.", "video_text_proj_in."),
                    ("audio_aggregate_embed.", "audio_text_proj_in."),
                    ("aggregate_embed.", "text_proj_in."),
                ],
            ).popitem()[0]
        ] = value
    pairs = [
        ("video_embeddings_connector.", "video_connector."),
        ("audio_embeddings_connector.", "audio_connector."),
        ("transformer_1d_blocks.", "transformer_blocks."),
        (".q_norm.", ".norm_q."),
        (".k_norm.", ".norm_k."),
    ]
    connectors = {k: v for k, v in _take(state, TRANSFORMER_PREFIX).items() if k.startswith(CONNECTOR_PREFIXES)}
    converted.update(_rename(connectors, pairs))
    return Component("connectors", "LTX2TextConnectors", diffusers_config, converted)


# ------------------------------------------------------------------ latent upsamplers
def upsampler_component(folder: str, config: dict, state: State, source: Any) -> Component:
    diffusers_config = {
        "in_channels": config.get("in_channels", 128),
        "mid_channels": config.get("mid_channels", 512),
        "num_blocks_per_stage": config.get("num_blocks_per_stage", 4),
        "dims": config.get("dims", 3),
        "spatial_upsample": bool(config.get("spatial_upsample", True)),
        "temporal_upsample": bool(config.get("temporal_upsample", False)),
        "rational_spatial_scale": float(config.get("spatial_scale", 2.0)),
        "use_rational_resampler": bool(config.get("rational_resampler", False)),
    }
    if not state:
        raise ModelImportError(source, "holds no upsampler weights", "download the upscaler file again")
    return Component(folder, "LTX2LatentUpsamplerModel", diffusers_config, dict(state))


def check_loads(component: Component, build: Callable[[dict], torch.nn.Module], source: Any) -> None:
    """The converted weights fill the diffusers class exactly: no key missing, none left over, every shape right."""
    with torch.device("meta"):
        module = build(component.config)
    expected = module.state_dict()
    missing = sorted(set(expected) - set(component.state))
    extra = sorted(set(component.state) - set(expected))
    wrong = sorted(
        k for k in set(expected) & set(component.state) if tuple(expected[k].shape) != tuple(component.state[k].shape)
    )
    del module
    if missing or extra or wrong:
        parts = []
        if missing:
            parts.append(f"{len(missing)} weight(s) missing, e.g. {missing[:3]}")
        if extra:
            parts.append(f"{len(extra)} unexpected, e.g. {extra[:3]}")
        if wrong:
            parts.append(f"{len(wrong)} of another shape, e.g. {wrong[:3]}")
        raise ModelImportError(
            source,
            f"its {component.folder} does not match diffusers' {component.class_name}: " + "; ".join(parts),
            "this checkpoint is of a layout milimo does not convert yet",
        )
