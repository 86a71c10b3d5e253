"""Prompt encoding: Gemma 3 hidden states of every layer, then LTX-2's text connectors.

As ltx-core's Gemma encoder (`ltx_core/text_encoders/gemma`): the prompt stripped, left-padded to the maximum
length, run through the base language model alone (no LM head: its logits over the whole vocabulary for every
position are never used), every layer's hidden states normalised per layer and projected, then the video and
audio connectors. Encoded once per shot; stage 1 uses the [negative, positive] pair, stage 2 the positive half.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch


@dataclass(frozen=True)
class TextEmbeddings:
    video: torch.Tensor  # [B, T, D] connector output for the video stream
    audio: torch.Tensor
    mask: torch.Tensor  # [B, T]
    guided: bool  # batch is [negative, positive] when True

    def positive(self) -> TextEmbeddings:
        if not self.guided:
            return self
        return TextEmbeddings(self.video.chunk(2)[1], self.audio.chunk(2)[1], self.mask.chunk(2)[1], False)


def prompt_length(tokenizer, text: str) -> int:
    """The tokens `text` takes in the encoder's window, special tokens included, as `encode_prompt` counts them: past
    `max_sequence_length`, the rest of the text is cut off."""
    return len(tokenizer(text.strip(), add_special_tokens=True, verbose=False).input_ids)


@torch.no_grad()
def encode_prompt(tokenizer, text_encoder, connectors, prompt: str, negative_prompt: str | None, *,
                  max_sequence_length: int, device: torch.device, guided: bool) -> TextEmbeddings:
    """`negative_prompt` is encoded only when `guided` (classifier-free guidance needs it)."""
    prompts = [negative_prompt or "", prompt] if guided else [prompt]
    tokenizer.padding_side = "left"
    if tokenizer.pad_token is None:
        tokenizer.pad_token = tokenizer.eos_token
    tokens = tokenizer([p.strip() for p in prompts], padding="max_length", max_length=max_sequence_length,
                       truncation=True, add_special_tokens=True, return_tensors="pt")
    ids = tokens.input_ids.to(device)
    mask = tokens.attention_mask.to(device)
    # Encode one prompt at a time, as the reference pipeline does, so results do not depend on batching.
    language_model = getattr(text_encoder, "model", text_encoder)  # Gemma3ForConditionalGeneration's base model
    hidden = []
    for row in range(ids.shape[0]):
        out = language_model(input_ids=ids[row:row + 1], attention_mask=mask[row:row + 1], output_hidden_states=True)
        hidden.append(torch.stack(out.hidden_states, dim=-1).flatten(2, 3))
    # The connectors' dtype, not the encoder's: stored as fp8, the encoder computes at the render dtype.
    embeds = torch.cat(hidden, dim=0).to(dtype=connectors.dtype)
    video, audio, conn_mask = connectors(embeds, mask, padding_side="left")
    return TextEmbeddings(video, audio, conn_mask, guided)
