"""Prompt text to CLIP conditioning, the way AUTOMATIC1111 1.10.1 does it for SD1.x models.

The webui's FrozenCLIPEmbedderWithCustomWords turns a prompt into 75-token chunks (comma-aware word wrap, ``BREAK``
starts a chunk), encodes each chunk framed by start and end tokens, scales every token's vector by its attention
weight and restores the overall mean ("Original" emphasis), then joins the chunks: [1, 77 * chunks, width].

Bit-for-bit agreement needs the same batching: the webui encodes all texts of one prompt's editing schedule
together, chunk position by chunk position (texts with fewer chunks get an empty chunk there), and the mean that
"Original" emphasis restores is taken over that whole batch. ``encode_texts`` does the same.

Textual-inversion embeddings are not supported: their names are tokenized as ordinary words.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import torch

from distributed.worker.prompts import BREAK, BREAK_WEIGHT, parse_attention, prompt_schedule, split_and

if TYPE_CHECKING:
    from transformers import CLIPTextModel, CLIPTokenizer

__all__ = [
    "CHUNK_LENGTH",
    "EMPHASIS_MODES",
    "PromptChunk",
    "encode_multicond",
    "encode_prompt",
    "encode_schedule",
    "encode_texts",
    "tokenize_prompt",
]

CHUNK_LENGTH = 75
# The webui's "emphasis" option. "None" reads brackets as literal text; "Ignore" parses them but drops the weights;
# "No norm" scales without restoring the mean. An unknown name falls back to "Original", as in the webui.
EMPHASIS_MODES = ("None", "Ignore", "Original", "No norm")
COMMA_PADDING_BACKTRACK = 20  # the webui's comma_padding_backtrack default ("Prompt word wrap length limit")

Schedule = list[tuple[int, torch.Tensor]]


@dataclass
class PromptChunk:
    """One encoder input: start token, 75 prompt or padding tokens, end token; one multiplier per token."""

    tokens: list[int] = field(default_factory=list)
    multipliers: list[float] = field(default_factory=list)


@dataclass(frozen=True)
class _SpecialTokens:
    start: int
    end: int
    comma: int | None

    @classmethod
    def of(cls, tokenizer: CLIPTokenizer) -> _SpecialTokens:
        return cls(tokenizer.bos_token_id, tokenizer.eos_token_id, tokenizer.get_vocab().get(",</w>"))

    def empty_chunk(self) -> PromptChunk:
        return PromptChunk([self.start] + [self.end] * (CHUNK_LENGTH + 1), [1.0] * (CHUNK_LENGTH + 2))


class _Chunker:
    """Fills 75-token chunks; SD1 pads with the end token (the webui's id_pad equals id_end for SD1)."""

    def __init__(self, special: _SpecialTokens, comma_backtrack: int) -> None:
        self.special = special
        self.comma_backtrack = comma_backtrack
        self.chunks: list[PromptChunk] = []
        self.current = PromptChunk()
        self.last_comma = -1

    def close(self) -> None:
        chunk = self.current
        padding = CHUNK_LENGTH - len(chunk.tokens)
        tokens = [self.special.start, *chunk.tokens] + [self.special.end] * (max(padding, 0) + 1)
        multipliers = [1.0, *chunk.multipliers] + [1.0] * (max(padding, 0) + 1)
        self.chunks.append(PromptChunk(tokens, multipliers))
        self.current = PromptChunk()
        self.last_comma = -1

    def add(self, token: int, weight: float) -> None:
        chunk = self.current
        if token == self.special.comma:
            self.last_comma = len(chunk.tokens)
        elif (
            self.comma_backtrack != 0
            and len(chunk.tokens) == CHUNK_LENGTH
            and self.last_comma != -1
            and len(chunk.tokens) - self.last_comma <= self.comma_backtrack
        ):
            # a full chunk with a comma near its end: what follows the comma moves on, so words stay whole
            cut = self.last_comma + 1
            moved = PromptChunk(chunk.tokens[cut:], chunk.multipliers[cut:])
            del chunk.tokens[cut:], chunk.multipliers[cut:]
            self.close()
            self.current = moved
        if len(self.current.tokens) == CHUNK_LENGTH:
            self.close()
        self.current.tokens.append(token)
        self.current.multipliers.append(weight)

    def finish(self) -> list[PromptChunk]:
        if self.current.tokens or not self.chunks:
            self.close()
        return self.chunks


def tokenize_prompt(
    tokenizer: CLIPTokenizer,
    text: str,
    emphasis: str = "Original",
    comma_backtrack: int = COMMA_PADDING_BACKTRACK,
) -> list[PromptChunk]:
    """The chunks (77 tokens each, at least one) the webui's tokenize_line makes of one prompt."""
    fragments = [(text, 1.0)] if emphasis == "None" else parse_attention(text)
    token_lists = tokenizer([part for part, _ in fragments], truncation=False, add_special_tokens=False)["input_ids"]
    chunker = _Chunker(_SpecialTokens.of(tokenizer), comma_backtrack)
    for tokens, (part, weight) in zip(token_lists, fragments, strict=True):
        if part == BREAK and weight == BREAK_WEIGHT:
            chunker.close()
            continue
        for token in tokens:
            chunker.add(int(token), weight)
    return chunker.finish()


def _hidden_states(text_encoder: CLIPTextModel, tokens: torch.Tensor, clip_skip: int) -> torch.Tensor:
    outputs = text_encoder(input_ids=tokens, output_hidden_states=clip_skip > 1)
    if clip_skip <= 1:
        return outputs.last_hidden_state
    # transformers 5 exposes the text transformer's modules on CLIPTextModel itself, 4.x under .text_model
    final_layer_norm: Any = getattr(text_encoder, "text_model", text_encoder).final_layer_norm
    return final_layer_norm(outputs.hidden_states[-clip_skip])


def _apply_emphasis(z: torch.Tensor, multipliers: torch.Tensor, emphasis: str) -> torch.Tensor:
    if emphasis in ("None", "Ignore"):
        return z
    scaled = z * multipliers.reshape((*multipliers.shape, 1)).expand(z.shape)
    if emphasis == "No norm":
        return scaled
    # "Original": the mean over the whole batch is put back (the webui's choice; it avoids artifacts)
    return scaled * (z.mean() / scaled.mean())


def encode_texts(
    tokenizer: CLIPTokenizer,
    text_encoder: CLIPTextModel,
    texts: list[str],
    clip_skip: int = 1,
    emphasis: str = "Original",
    comma_backtrack: int = COMMA_PADDING_BACKTRACK,
) -> torch.Tensor:
    """Encode texts as one webui batch: [len(texts), 77 * max chunks, width]."""
    if clip_skip < 1:
        raise ValueError(f"clip_skip must be at least 1, not {clip_skip}")
    if emphasis not in EMPHASIS_MODES:
        emphasis = "Original"
    cache: dict[str, list[PromptChunk]] = {}
    for text in texts:
        if text not in cache:
            cache[text] = tokenize_prompt(tokenizer, text, emphasis, comma_backtrack)
    per_text = [cache[text] for text in texts]
    special = _SpecialTokens.of(tokenizer)
    device = getattr(text_encoder, "device", None) or next(text_encoder.parameters()).device
    encoded = []
    with torch.no_grad():
        # one chunk position at a time for the whole batch, as the webui does
        for index in range(max(len(chunks) for chunks in per_text)):
            batch = [chunks[index] if index < len(chunks) else special.empty_chunk() for chunks in per_text]
            tokens = torch.asarray([chunk.tokens for chunk in batch]).to(device)
            multipliers = torch.asarray([chunk.multipliers for chunk in batch]).to(device)
            z = _hidden_states(text_encoder, tokens, clip_skip)
            encoded.append(_apply_emphasis(z, multipliers, emphasis))
    return torch.hstack(encoded)


def encode_prompt(
    tokenizer: CLIPTokenizer,
    text_encoder: CLIPTextModel,
    text: str,
    clip_skip: int = 1,
    emphasis: str = "Original",
) -> torch.Tensor:
    """One prompt text (no editing, no AND) to its conditioning: [1, 77 * chunks, width]."""
    return encode_texts(tokenizer, text_encoder, [text], clip_skip, emphasis)


def encode_schedule(
    tokenizer: CLIPTokenizer,
    text_encoder: CLIPTextModel,
    prompt: str,
    steps: int,
    clip_skip: int = 1,
    emphasis: str = "Original",
    hires_steps: int | None = None,
    *,
    use_old_scheduling: bool = False,
) -> Schedule:
    """(last step, [1, 77k, width]) for each text of the prompt's editing schedule, encoded as the webui batches them.

    This is what the webui does for a negative prompt, and for each AND part of a positive one.
    """
    schedule = prompt_schedule(prompt, steps, hires_steps, use_old_scheduling=use_old_scheduling)
    z = encode_texts(tokenizer, text_encoder, [text for _, text in schedule], clip_skip, emphasis)
    return [(end, z[index : index + 1]) for index, (end, _) in enumerate(schedule)]


def encode_multicond(
    tokenizer: CLIPTokenizer,
    text_encoder: CLIPTextModel,
    prompt: str,
    steps: int,
    clip_skip: int = 1,
    emphasis: str = "Original",
    hires_steps: int | None = None,
    *,
    use_old_scheduling: bool = False,
) -> list[tuple[float, Schedule]]:
    """A positive prompt: each AND part's weight and schedule (get_multicond_learned_conditioning for one prompt)."""
    schedules: dict[str, Schedule] = {}
    parts = []
    for text, weight in split_and(prompt):
        if text not in schedules:
            schedules[text] = encode_schedule(
                tokenizer,
                text_encoder,
                text,
                steps,
                clip_skip,
                emphasis,
                hires_steps,
                use_old_scheduling=use_old_scheduling,
            )
        parts.append((weight, schedules[text]))
    return parts
