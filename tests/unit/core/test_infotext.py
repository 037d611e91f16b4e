from __future__ import annotations

from hypothesis import given
from hypothesis import strategies as st

from distributed.infotext import build_infotext, parse_infotext, quote


def test_matches_a1111_layout() -> None:
    text = build_infotext(
        "a cat, sitting",
        "blurry",
        {
            "Steps": 20,
            "Sampler": "Euler a",
            "CFG scale": 7.0,
            "Seed": 42,
            "Face restoration": None,
            "Size": "512x512",
            "Version": "v1.10.1",
        },
    )
    assert text == (
        "a cat, sitting\nNegative prompt: blurry\n"
        "Steps: 20, Sampler: Euler a, CFG scale: 7.0, Seed: 42, Size: 512x512, Version: v1.10.1"
    )


def test_values_with_commas_or_colons_are_quoted() -> None:
    assert quote("a, b") == '"a, b"'
    assert quote("x: y") == '"x: y"'
    assert quote("plain") == "plain"
    text = build_infotext("p", "", {"Steps": 4, "Sampler": "Euler", "Seed": 1, "Lora hashes": "a: 1, b: 2"})
    assert parse_infotext(text)[2]["Lora hashes"] == "a: 1, b: 2"


def test_no_negative_prompt_line_when_empty() -> None:
    assert "Negative prompt" not in build_infotext("p", "", {"Steps": 4, "Seed": 1, "Size": "64x64"})


safe_text = st.text(st.characters(blacklist_categories=("Cs", "Cc")), max_size=40).map(str.strip)


@given(
    prompt=safe_text.filter(lambda s: not s.startswith("Negative prompt:")),
    negative=safe_text,
    seed=st.integers(0, 2**32),
    cfg=st.floats(1, 30, allow_nan=False),
    model=st.text(st.characters(blacklist_categories=("Cs", "Cc")), min_size=1, max_size=20)
    .map(str.strip)
    .filter(lambda s: s and '"' not in s and "\\" not in s),
)
def test_round_trip(prompt: str, negative: str, seed: int, cfg: float, model: str) -> None:
    params = {"Steps": 4, "Sampler": "DPM++ 2M", "CFG scale": cfg, "Seed": seed, "Model": model}
    text = build_infotext(prompt or "p", negative, params)
    parsed_prompt, parsed_negative, parsed = parse_infotext(text)
    assert parsed_prompt == (prompt or "p")
    assert parsed_negative == negative
    assert parsed["Seed"] == str(seed)
    assert parsed["CFG scale"] == str(cfg)
    assert parsed["Model"] == model
