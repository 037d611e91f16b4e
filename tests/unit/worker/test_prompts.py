"""A1111 prompt syntax and CLIP conditioning; expected values are what webui 1.10.1 returns for the same input."""

from __future__ import annotations

from typing import Any

import pytest
import torch
from transformers import CLIPTextConfig, CLIPTextModel

from distributed.worker.conditioning import (
    encode_multicond,
    encode_prompt,
    encode_schedule,
    encode_texts,
    tokenize_prompt,
)
from distributed.worker.denoiser import ScheduledCond, stack_conds
from distributed.worker.prompts import parse_attention, prompt_schedule, split_and
from distributed.worker.tiny import build_tokenizer

# --- parse_attention -----------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("normal text", [("normal text", 1.0)]),
        ("an (important) word", [("an ", 1.0), ("important", 1.1), (" word", 1.0)]),
        ("(unbalanced", [("unbalanced", 1.1)]),
        (r"\(literal\]", [("(literal]", 1.0)]),
        ("(unnecessary)(parens)", [("unnecessaryparens", 1.1)]),
        (
            "a (((house:1.3)) [on] a (hill:0.5), sun, (((sky))).",
            [
                ("a ", 1.0),
                ("house", 1.5730000000000004),
                (" ", 1.1),
                ("on", 1.0),
                (" a ", 1.1),
                ("hill", 0.55),
                (", sun, ", 1.1),
                ("sky", 1.4641000000000006),
                (".", 1.1),
            ],
        ),
        ("[a]", [("a", 1 / 1.1)]),
        ("[[a]", [("a", 1 / 1.1 / 1.1)]),
        ("a:1.5)", [("a:1.5)", 1.0)]),  # no open bracket: the weight is text (and runs merge)
        ("x (y:0.5 ) :", [("x ", 1.0), ("y", 0.5), (" :", 1.0)]),
        ("\\\\(a)", [("\\", 1.0), ("a", 1.1)]),
        ("a\\b", [("ab", 1.0)]),  # a lone backslash disappears
        ("a BREAK b", [("a", 1.0), ("BREAK", -1.0), ("b", 1.0)]),
        ("BREAK", [("", 1.0), ("BREAK", -1.0), ("", 1.0)]),
        ("aBREAK b", [("aBREAK b", 1.0)]),
        # inside brackets the marker's weight is scaled too, so it is no longer a BREAK
        ("(a BREAK b)", [("a", 1.1), ("BREAK", -1.1), ("b", 1.1)]),
        ("", [("", 1.0)]),
    ],
)
def test_parse_attention_matches_webui(text: str, expected: list[tuple[str, float]]) -> None:
    assert parse_attention(text) == expected


def test_parse_attention_malformed_weight_raises_like_webui() -> None:
    with pytest.raises(ValueError):
        parse_attention("(a:1.2.3)")


# --- prompt_schedule -----------------------------------------------------------------------------------------------

ALTERNATE = [(1, "a"), (2, "(b:1.1)"), (3, "a"), (4, "(b:1.1)"), (5, "a"), (6, "(b:1.1)"), (7, "a"), (8, "(b:1.1)")]


@pytest.mark.parametrize(
    ("prompt", "expected"),
    [
        ("test", [(10, "test")]),
        ("a [b:3]", [(3, "a "), (10, "a b")]),
        ("a [b: 3]", [(3, "a "), (10, "a b")]),
        ("a [[[b]]:2]", [(2, "a "), (10, "a [[b]]")]),
        ("[(a:2):3]", [(3, ""), (10, "(a:2)")]),
        ("a [b : c : 1] d", [(1, "a b  d"), (10, "a  c  d")]),
        ("a[b:[c:d:2]:1]e", [(1, "abe"), (2, "ace"), (10, "ade")]),
        ("a [unbalanced", [(10, "a [unbalanced")]),
        ("a [b:.5] c", [(5, "a  c"), (10, "a b c")]),
        ("((a][:b:c [d:3]", [(3, "((a][:b:c "), (10, "((a][:b:c d")]),
        ("[a|(b:1.1)]", [*ALTERNATE, (9, "a"), (10, "(b:1.1)")]),
        ("[fe|||]male", [(s, "female" if s % 4 == 1 else "male") for s in range(1, 11)]),
        ("[a::4] b", [(4, "a b"), (10, " b")]),
        ("[a:b:20]", [(10, "a")]),  # past the last step: never switches
        ("[a:b:-1]", [(10, "b")]),
        ("a | b", [(10, "a | b")]),  # a bar outside an alternation: the grammar fails, the prompt is kept
        ("[a:3] | b", [(10, "[a:3] | b")]),  # ...even its editing is lost
        ("[a:3] b\\", [(10, "[a:3] b\\")]),  # a trailing backslash escapes nothing: the same
        ("[a\\:b:1]", [(1, ""), (10, "a\\:b")]),
    ],
)
def test_prompt_schedule_matches_webui(prompt: str, expected: list[tuple[int, str]]) -> None:
    assert prompt_schedule(prompt, 10) == expected


def test_schedule_fraction_needs_a_decimal_point_unless_old_scheduling() -> None:
    assert prompt_schedule("[a:b:1.0]", 10) == [(10, "a")]
    assert prompt_schedule("[a:b:1]", 10) == [(1, "a"), (10, "b")]
    assert prompt_schedule("[a:b:0.25]", 20, use_old_scheduling=True) == [(5, "a"), (20, "b")]
    assert prompt_schedule("[a:b:2.0]", 10, use_old_scheduling=True) == [(2, "a"), (10, "b")]


def test_hires_schedule_counts_from_the_end_of_the_first_pass() -> None:
    assert prompt_schedule("a [b:.5] c", 10, 10) == [(10, "a b c")]
    assert prompt_schedule("a [b:1.5] c", 10, 10) == [(5, "a  c"), (10, "a b c")]
    assert prompt_schedule("[x:y:13]", 10, 8) == [(3, "x"), (8, "y")]
    # old timelines ignore the hires pass: 0.5 is half of the first pass's steps
    assert prompt_schedule("[x:y:0.5]", 10, 8, use_old_scheduling=True) == [(5, "x"), (10, "y")]


# --- AND -----------------------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("prompt", "expected"),
    [
        ("a cat", [("a cat", 1.0)]),
        ("a AND b :1.2", [("a", 1.0), (" b", 1.2)]),
        ("a AND  b:-0.5 AND c :2.", [("a", 1.0), ("  b", -0.5), (" c", 2.0)]),
        ("a ANDb AND", [("a ANDb", 1.0), ("", 1.0)]),
        ("dog: .5 ", [("dog", 0.5)]),
        ("ratio 16:9", [("ratio 16", 9.0)]),
    ],
)
def test_split_and_matches_webui(prompt: str, expected: list[tuple[str, float]]) -> None:
    assert split_and(prompt) == expected


# --- tokens and chunks (tiny tokenizer: a letter followed by a space is one token) ---------------------------------


@pytest.fixture(scope="module")
def tokenizer() -> Any:
    return build_tokenizer()


@pytest.fixture(scope="module")
def text_encoder(tokenizer: Any) -> Any:
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(7)
        config = CLIPTextConfig(
            vocab_size=len(tokenizer.get_vocab()),
            hidden_size=32,
            intermediate_size=64,
            num_hidden_layers=2,
            num_attention_heads=2,
            max_position_embeddings=77,
        )
        model = CLIPTextModel(config).eval()
        # real checkpoints have a non-zero final bias; with 0 the mean that "Original" emphasis restores is ~0
        with torch.no_grad():
            getattr(model, "text_model", model).final_layer_norm.bias.copy_(torch.linspace(-0.2, 0.6, 32))
    return model


def ids(tokenizer: Any, text: str) -> list[int]:
    token_ids: list[int] = tokenizer(text, add_special_tokens=False)["input_ids"]
    return token_ids


def test_long_prompt_is_split_into_framed_75_token_chunks(tokenizer: Any) -> None:
    chunks = tokenize_prompt(tokenizer, "a " * 100)
    start, end, a = tokenizer.bos_token_id, tokenizer.eos_token_id, ids(tokenizer, "a")[0]
    assert [chunk.tokens for chunk in chunks] == [[start] + [a] * 75 + [end], [start] + [a] * 25 + [end] * 51]
    assert all(chunk.multipliers == [1.0] * 77 for chunk in chunks)


def test_empty_prompt_is_one_padded_chunk(tokenizer: Any) -> None:
    (chunk,) = tokenize_prompt(tokenizer, "")
    assert chunk.tokens == [tokenizer.bos_token_id] + [tokenizer.eos_token_id] * 76


def test_break_starts_a_new_chunk(tokenizer: Any) -> None:
    end = tokenizer.eos_token_id
    chunks = tokenize_prompt(tokenizer, "a BREAK b")
    assert [chunk.tokens[1:3] for chunk in chunks] == [[ids(tokenizer, "a")[0], end], [ids(tokenizer, "b")[0], end]]
    assert len(tokenize_prompt(tokenizer, "(a BREAK b)")) == 1  # in brackets BREAK is text


def test_comma_near_the_chunk_end_moves_the_rest_to_the_next_chunk(tokenizer: Any) -> None:
    a, b, comma = ids(tokenizer, "a")[0], ids(tokenizer, "b")[0], ids(tokenizer, ",")[0]
    prompt = "a " * 70 + ", " + "b " * 10
    first, second = tokenize_prompt(tokenizer, prompt)
    assert first.tokens[1:76] == [a] * 70 + [comma] + [tokenizer.eos_token_id] * 4
    assert second.tokens[1:11] == [b] * 10
    # with the word wrap off (0), or the comma further back than 20 tokens, the chunk is cut at 75
    assert tokenize_prompt(tokenizer, prompt, comma_backtrack=0)[0].tokens[72:76] == [b] * 4
    assert tokenize_prompt(tokenizer, "a " * 50 + ", " + "b " * 30)[0].tokens[52:76] == [b] * 24


def test_weights_and_emphasis_modes_in_chunks(tokenizer: Any) -> None:
    (chunk,) = tokenize_prompt(tokenizer, "(a:1.5) b")
    assert chunk.tokens[1:3] == ids(tokenizer, "a b") and chunk.multipliers[:4] == [1.0, 1.5, 1.0, 1.0]
    (literal,) = tokenize_prompt(tokenizer, "(a:1.5) b", emphasis="None")
    text_ids = ids(tokenizer, "(a:1.5) b")
    assert literal.tokens[1 : len(text_ids) + 1] == text_ids and set(literal.multipliers) == {1.0}


# --- encoding ------------------------------------------------------------------------------------------------------


def test_encode_shape_is_77_per_chunk(tokenizer: Any, text_encoder: Any) -> None:
    assert encode_prompt(tokenizer, text_encoder, "a " * 100).shape == (1, 154, 32)
    assert encode_prompt(tokenizer, text_encoder, "").shape == (1, 77, 32)


def test_original_emphasis_scales_tokens_and_restores_the_mean(tokenizer: Any, text_encoder: Any) -> None:
    plain = encode_prompt(tokenizer, text_encoder, "a b c")
    weighted = encode_prompt(tokenizer, text_encoder, "(a:1.5) b c")
    assert not torch.allclose(weighted, plain)
    torch.testing.assert_close(weighted.mean(), plain.mean())
    # the weighted token moves 1.5x as far as the others relative to the unweighted encoding
    ratio = weighted / plain
    torch.testing.assert_close(ratio[0, 1] / ratio[0, 2], torch.full((32,), 1.5))

    no_norm = encode_prompt(tokenizer, text_encoder, "(a:1.5) b c", emphasis="No norm")
    torch.testing.assert_close(no_norm[0, 1], plain[0, 1] * 1.5)
    torch.testing.assert_close(no_norm[0, 2], plain[0, 2])
    assert torch.equal(encode_prompt(tokenizer, text_encoder, "(a:1.5) b c", emphasis="Ignore"), plain)


def test_clip_skip_uses_an_earlier_layer_through_the_final_norm(tokenizer: Any, text_encoder: Any) -> None:
    last = encode_prompt(tokenizer, text_encoder, "a b", clip_skip=1)
    skipped = encode_prompt(tokenizer, text_encoder, "a b", clip_skip=2)
    assert not torch.allclose(last, skipped)
    tokens = torch.tensor([tokenize_prompt(tokenizer, "a b")[0].tokens])
    with torch.no_grad():
        hidden = text_encoder(input_ids=tokens, output_hidden_states=True).hidden_states[-2]
        expected = getattr(text_encoder, "text_model", text_encoder).final_layer_norm(hidden)
    torch.testing.assert_close(skipped, expected)


def test_a_schedule_is_encoded_as_one_batch(tokenizer: Any, text_encoder: Any) -> None:
    schedule = encode_schedule(tokenizer, text_encoder, "[(a:1.5) b:" + "c " * 80 + ":2]", steps=10)
    assert [end for end, _ in schedule] == [2, 10]
    short, long = (cond for _, cond in schedule)
    assert short.shape == long.shape == (1, 154, 32)  # the short text gets an empty second chunk
    # "Original" emphasis restores the mean of the whole batch, so alone the first text encodes differently
    together = encode_texts(tokenizer, text_encoder, ["(a:1.5) b", "c " * 80])
    assert torch.equal(short, together[:1])
    assert not torch.allclose(short[:, :77], encode_prompt(tokenizer, text_encoder, "(a:1.5) b"))
    assert ScheduledCond(tuple(schedule)).at(0) is short and ScheduledCond(tuple(schedule)).at(2) is short
    assert ScheduledCond(tuple(schedule)).at(3) is long and ScheduledCond(tuple(schedule)).at(11) is short


def test_and_parts_and_padding(tokenizer: Any, text_encoder: Any) -> None:
    parts = encode_multicond(tokenizer, text_encoder, "a AND " + "b " * 80 + ":0.5", steps=4)
    assert [(weight, len(schedule)) for weight, schedule in parts] == [(1.0, 1), (0.5, 1)]
    first, second = parts[0][1][0][1], parts[1][1][0][1]
    assert torch.equal(first, encode_prompt(tokenizer, text_encoder, "a "))
    stacked = stack_conds([first[0], second[0]])
    assert stacked.shape == (2, 154, 32)
    assert torch.equal(stacked[0, 77:], first[0, -1:].expand(77, 32))
