"""Batched guidance: one transformer forward per guided step, equal to the pass-by-pass loop.

Official: `ltx_core/components/guiders.py` (MultiModalGuider.calculate) combines cond, uncond (negative
prompt), STG-perturbed and modality-isolated predictions; diffusers' LTX2Pipeline runs those as three
forwards. We stack them as rows of one batch. Tolerance: 1e-5 absolute/relative on float32 latents (batched
matrix products may round differently in the last bits); the parity test holds diffusers to the same."""

import pytest
import torch

from milimo_engine import Guidance
from milimo_engine.request import ModalityGuidance

pytestmark = pytest.mark.fast  # the pure layer: `make test-fast`



@pytest.mark.parametrize("guidance", [Guidance(), Guidance.cfg_only(3.0, 7.0),
                                      Guidance(video=ModalityGuidance(cfg=1.0, stg_blocks=(1,)),
                                               audio=ModalityGuidance(cfg=1.0, stg_blocks=(0,)))],
                         ids=["cfg+stg+isolation", "cfg-only", "stg-own-blocks+isolation-without-cfg"])
def test_batched_guidance_equals_pass_by_pass(pipeline, ledger, request_256, guidance, monkeypatch):
    import milimo_engine.denoise as dn

    request = request_256.replace(steps=5, guidance=guidance)
    calls = []
    hook = ledger.transformer().register_forward_pre_hook(
        lambda mod, args, kwargs: calls.append(kwargs["hidden_states"].shape[0]), with_kwargs=True)
    try:
        batched = pipeline(request, output_type="latent")
        one_forward_per_step = list(calls[:request.steps])
        calls.clear()
        real = dn.denoise
        monkeypatch.setattr("milimo_engine.pipeline.denoise", lambda *a, **k: real(*a, **{**k, "batched": False}))
        separate = pipeline(request, output_type="latent")
    finally:
        hook.remove()
    passes = len(dn.guidance_passes(pipeline.guider_for(request)))
    assert one_forward_per_step == [passes] * request.steps  # one forward per stage-1 step, every pass a row
    assert len(calls) > request.steps + 3 or passes <= 2  # pass by pass needs more forwards than steps
    torch.testing.assert_close(batched.latent, separate.latent, atol=1e-5, rtol=1e-5)
    torch.testing.assert_close(batched.audio_latent, separate.audio_latent, atol=1e-5, rtol=1e-5)


def test_isolation_rows_leave_other_rows_alone(ledger):
    """The per-row isolation mask touches only the audio<->video cross-attention of the rows it marks."""
    from milimo_engine.components.perturbations import RowPerturbation, cross_modal_attentions, perturbing

    transformer = ledger.transformer()
    module = cross_modal_attentions(transformer)[0]
    x = torch.randn(3, 5, module.to_q.in_features)
    kv = torch.randn(3, 4, module.to_k.in_features)
    with perturbing(transformer, RowPerturbation(isolation_rows=torch.tensor([1.0, 0.0, 1.0]))):
        masked = module(x, encoder_hidden_states=kv)
    plain = module(x, encoder_hidden_states=kv)
    assert torch.equal(masked[0], plain[0]) and torch.equal(masked[2], plain[2])
    assert torch.count_nonzero(masked[1]) == 0


def test_stg_row_passes_the_value_projection_through(ledger):
    """Official: `ltx_core/model/transformer/attention.py` Attention.forward: with a perturbation mask,
    out = attn * mask + v * (1 - mask), then gating and `to_out`; a perturbed row's self-attention is
    `to_out(to_v(x))`, the other rows attend as usual. Hand-built here from the module's own projections."""
    from milimo_engine.components.perturbations import RowPerturbation, perturbing, self_attentions

    transformer = ledger.transformer()
    stream, block, module = self_attentions(transformer)[0]
    x = torch.randn(2, 6, module.to_q.in_features)
    with torch.no_grad():
        plain = module(x)
        with perturbing(transformer, RowPerturbation(video_blocks=frozenset({block}), audio_blocks=frozenset({block}),
                                                     stg_rows=torch.tensor([1.0, 0.0]))):
            mixed = module(x)
        expected = module.to_out[1](module.to_out[0](module.to_v(x[1:])))
    assert stream == "video"
    torch.testing.assert_close(mixed[0], plain[0], atol=0, rtol=0)
    torch.testing.assert_close(mixed[1:], expected, atol=1e-6, rtol=1e-6)
    assert (mixed[1] - plain[1]).abs().max() > 1e-3  # attending and passing through are not the same


@pytest.mark.parametrize("video_stg, audio_stg, expected", [
    (1.0, 0.0, {("video", 1)}),
    (0.0, 1.0, {("audio", 0)}),
    (1.0, 1.0, {("video", 1), ("audio", 0)}),
], ids=["video-only", "audio-only", "both"])
def test_each_stream_perturbs_its_own_stg_blocks(pipeline, ledger, request_256, video_stg, audio_stg, expected):
    """Official: ltx-pipelines' guided denoising (`multi_modal_guider_denoising_func`) builds the perturbed pass
    from `Perturbation(SKIP_VIDEO_SELF_ATTN, blocks=video_guider.params.stg_blocks)` when video STG is on and
    `Perturbation(SKIP_AUDIO_SELF_ATTN, blocks=audio_guider.params.stg_blocks)` when audio STG is on: each stream
    its own blocks, a stream whose STG is off untouched. Video blocks (1,), audio blocks (0,) here."""
    from milimo_engine.components.perturbations import install_hooks, self_attentions

    guidance = Guidance(video=ModalityGuidance(cfg=1.0, stg=video_stg, modality=1.0, rescale=0.0, stg_blocks=(1,)),
                        audio=ModalityGuidance(cfg=1.0, stg=audio_stg, modality=1.0, rescale=0.0, stg_blocks=(0,)))
    request = request_256.replace(steps=1, guidance=guidance)
    transformer = ledger.transformer()
    pipeline.guider_for(request)  # validates the blocks
    seen: set[tuple[str, int]] = set()
    handles = []
    install_hooks(transformer)  # ours first, so the recorder below sees what they hand the attention
    for stream, block, module in self_attentions(transformer):
        def record(mod, args, kwargs, key=(stream, block)):
            mask = kwargs.get("perturbation_mask")
            if mask is not None and not bool(mask.all()):
                seen.add(key)
        handles.append(module.register_forward_pre_hook(record, with_kwargs=True))
    try:
        pipeline(request, output_type="latent")
    finally:
        for h in handles:
            h.remove()
    assert seen == expected


def test_stg_changes_the_render(tiny_model_dir, request_256):
    """STG must do something on any checkpoint: diffusers perturbs only when the transformer's config sets
    `perturbed_attn` (LTX-2.0 configs may not), ltx-core always. A transformer without the flag must still
    render differently with STG on than off (before, STG silently did nothing there)."""
    from diffusers.models.transformers.transformer_ltx2 import LTX2AudioVideoAttnProcessor

    from milimo_engine import ModelLedger, TwoStagePipeline
    from milimo_engine.components.perturbations import self_attentions

    ledger = ModelLedger.open(tiny_model_dir)
    transformer = ledger.transformer()
    for block in transformer.transformer_blocks:  # as a checkpoint whose config leaves `perturbed_attn` out
        block.perturbed_attn = False
    for _, _, module in self_attentions(transformer):
        module.set_processor(LTX2AudioVideoAttnProcessor())
    pipeline = TwoStagePipeline(ledger, progress=False)
    off = ModalityGuidance(cfg=1.0, stg=0.0, modality=1.0, rescale=0.0)
    on = ModalityGuidance(cfg=1.0, stg=2.0, modality=1.0, rescale=0.0)
    base = request_256.replace(steps=3)
    without = pipeline(base.replace(guidance=Guidance(video=off, audio=off)), output_type="latent")
    with_stg = pipeline(base.replace(guidance=Guidance(video=on, audio=on)), output_type="latent")
    assert (with_stg.stage1_latent - without.stage1_latent).abs().max() > 1e-2
    assert (with_stg.audio_latent - without.audio_latent).abs().max() > 1e-2


def test_each_stream_is_guided_with_its_own_parameters():
    """Official: `ltx_core/components/guiders.py` MultiModalGuider.calculate, per stream:
    cond + (cfg - 1)(cond - uncond) + stg (cond - perturbed) + (modality - 1)(cond - isolated), then rescale."""
    from milimo_engine.components.guiders import MultiModalGuider, Predictions

    video = ModalityGuidance(cfg=2.0, stg=0.5, modality=3.0, rescale=0.0)
    audio = ModalityGuidance(cfg=7.0, stg=0.0, modality=1.0, rescale=0.0)
    guider = MultiModalGuider(Guidance(video=video, audio=audio), (0,), (1,))
    assert guider.wants_uncond and guider.wants_perturbed and guider.wants_isolated
    assert guider.perturbed_blocks == ((0,), ())  # audio STG is off: its self-attention is never skipped
    c, u, p, i = (torch.full((1, 2, 1), v) for v in (1.0, 0.5, 0.75, 0.25))
    v_out, a_out = guider.combine(Predictions((c, c), (u, u), (p, p), (i, i)))
    torch.testing.assert_close(v_out, torch.full((1, 2, 1), 1.0 + 1.0 * 0.5 + 0.5 * 0.25 + 2.0 * 0.75))
    torch.testing.assert_close(a_out, torch.full((1, 2, 1), 1.0 + 6.0 * 0.5))
    neutral = MultiModalGuider(Guidance(video=ModalityGuidance(1.0, 0.0, 1.0, 0.0),
                                        audio=ModalityGuidance(1.0, 0.0, 1.0, 0.0)), (0,), (0,))
    assert not (neutral.wants_uncond or neutral.wants_perturbed or neutral.wants_isolated)
