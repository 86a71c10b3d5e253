"""Batched guidance: one transformer forward per guided step, equal to the pass-by-pass loop.

Official: `ltx_core/components/guiders.py` (MultiModalGuider.calculate) combines cond, uncond (negative
prompt), STG-perturbed and modality-isolated predictions; diffusers' LTX2Pipeline runs those as three
forwards. We stack them as rows of one batch. Tolerance: 1e-5 absolute/relative on float32 latents (batched
matrix products may round differently in the last bits); the parity test holds diffusers to the same."""

import pytest
import torch

from milimo_engine import Guidance
from milimo_engine.request import ModalityGuidance


@pytest.mark.parametrize("guidance", [Guidance(stg_blocks=(1,)), Guidance.cfg_only(3.0, 7.0),
                                      Guidance(video=ModalityGuidance(cfg=1.0), audio=ModalityGuidance(cfg=1.0),
                                               stg_blocks=(0,))],
                         ids=["cfg+stg+isolation", "cfg-only", "stg+isolation-without-cfg"])
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
    from milimo_engine.denoise import _cross_modal_attentions, isolated_rows

    transformer = ledger.transformer()
    module = _cross_modal_attentions(transformer)[0]
    seen = []
    handle = module.register_forward_hook(lambda m, a, out: seen.append(out.clone()))
    x = torch.randn(3, 5, module.to_q.in_features)
    kv = torch.randn(3, 4, module.to_k.in_features)
    try:
        with isolated_rows(transformer, torch.tensor([1.0, 0.0, 1.0])):
            masked = module(x, encoder_hidden_states=kv)
        plain = module(x, encoder_hidden_states=kv)
    finally:
        handle.remove()
    assert torch.equal(masked[0], plain[0]) and torch.equal(masked[2], plain[2])
    assert torch.count_nonzero(masked[1]) == 0


def test_each_stream_is_guided_with_its_own_parameters():
    """Official: `ltx_core/components/guiders.py` MultiModalGuider.calculate, per stream:
    cond + (cfg - 1)(cond - uncond) + stg (cond - perturbed) + (modality - 1)(cond - isolated), then rescale."""
    from milimo_engine.components.guiders import MultiModalGuider, Predictions

    video = ModalityGuidance(cfg=2.0, stg=0.5, modality=3.0, rescale=0.0)
    audio = ModalityGuidance(cfg=7.0, stg=0.0, modality=1.0, rescale=0.0)
    guider = MultiModalGuider(Guidance(video=video, audio=audio), stg_blocks=(0,))
    assert guider.wants_uncond and guider.wants_perturbed and guider.wants_isolated
    c, u, p, i = (torch.full((1, 2, 1), v) for v in (1.0, 0.5, 0.75, 0.25))
    v_out, a_out = guider.combine(Predictions((c, c), (u, u), (p, p), (i, i)))
    torch.testing.assert_close(v_out, torch.full((1, 2, 1), 1.0 + 1.0 * 0.5 + 0.5 * 0.25 + 2.0 * 0.75))
    torch.testing.assert_close(a_out, torch.full((1, 2, 1), 1.0 + 6.0 * 0.5))
    neutral = MultiModalGuider(Guidance(video=ModalityGuidance(1.0, 0.0, 1.0, 0.0),
                                        audio=ModalityGuidance(1.0, 0.0, 1.0, 0.0)), stg_blocks=(0,))
    assert not (neutral.wants_uncond or neutral.wants_perturbed or neutral.wants_isolated)
