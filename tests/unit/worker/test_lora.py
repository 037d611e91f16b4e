from __future__ import annotations

import hashlib
from collections.abc import Iterator
from pathlib import Path

import pytest
import torch
from safetensors.torch import save_file

from distributed.worker.components import Components
from distributed.worker.lora import (
    LoraError,
    LoraKeysError,
    LoraNotFoundError,
    LoraTag,
    LoraUse,
    applied,
    extract_lora_tags,
    find_loras,
    ldm_unet_modules,
    lookup,
    resolve,
)
from distributed.worker.tiny import build_tiny_components

ATTN = ("attn1.to_q", "attn1.to_k", "attn1.to_v", "attn1.to_out.0", "attn2.to_q", "attn2.to_k", "attn2.to_v")
TE = ("q_proj", "k_proj", "v_proj", "out_proj")


@pytest.fixture(scope="module")
def tiny() -> Iterator[Components]:
    yield build_tiny_components()


def _te_name(components: Components, name: str) -> str:
    """The kohya key of a text-encoder module, whichever transformers layout this is."""
    return "lora_te_" + (name if name.startswith("text_model") else f"text_model.{name}").replace(".", "_")


def _targets(components: Components) -> dict[str, torch.nn.Module]:
    """kohya key -> module for every attention projection of the tiny UNet and every q/k/v/out of its text encoder."""
    found: dict[str, torch.nn.Module] = {}
    for name, module in components.unet.named_modules():
        if name.endswith(ATTN) or name.endswith("attn2.to_out.0"):
            found["lora_unet_" + name.replace(".", "_")] = module
    for name, module in components.text_encoder.named_modules():
        if name.endswith(TE):
            found[_te_name(components, name)] = module
    return found


def _random_lora(targets: dict[str, torch.nn.Module], rank: int = 4, seed: int = 0) -> dict[str, torch.Tensor]:
    gen = torch.Generator().manual_seed(seed)
    tensors: dict[str, torch.Tensor] = {}
    for i, (key, module) in enumerate(sorted(targets.items())):
        out_features, in_features = module.weight.shape[:2]
        tensors[f"{key}.lora_down.weight"] = torch.randn(rank, in_features, generator=gen)
        tensors[f"{key}.lora_up.weight"] = torch.randn(out_features, rank, generator=gen)
        if i % 2 == 0:  # half with alpha, half without (scale 1)
            tensors[f"{key}.alpha"] = torch.tensor(float(rank) / 2 + i)
    return tensors


def _expected_delta(tensors: dict[str, torch.Tensor], key: str, shape: torch.Size, mult: float) -> torch.Tensor:
    up, down = tensors[f"{key}.lora_up.weight"], tensors[f"{key}.lora_down.weight"]
    rank = down.shape[0]
    scale = tensors[f"{key}.alpha"].item() / rank if f"{key}.alpha" in tensors else 1.0
    return ((up.reshape(up.shape[0], -1) @ down.reshape(rank, -1)).reshape(shape) * scale) * mult


def _snapshot(components: Components) -> dict[str, torch.Tensor]:
    modules = {"unet": components.unet, "te": components.text_encoder, "vae": components.vae}
    return {f"{m}.{k}": v.detach().clone() for m, module in modules.items() for k, v in module.state_dict().items()}


def _assert_bit_identical(components: Components, before: dict[str, torch.Tensor]) -> None:
    after = _snapshot(components)
    assert after.keys() == before.keys()
    for key, value in before.items():
        assert torch.equal(after[key].view(torch.int32), value.view(torch.int32)), key


def test_merges_w_plus_scale_up_down_and_restores_bit_exactly(tiny: Components, tmp_path: Path) -> None:
    targets = _targets(tiny)
    assert len(targets) == 4 * 8 + 2 * 4  # four transformer blocks, two text layers
    tensors = _random_lora(targets)
    save_file(tensors, tmp_path / "a.safetensors")
    before = _snapshot(tiny)
    originals = {key: module.weight.detach().clone() for key, module in targets.items()}
    with applied(tiny, [(tmp_path / "a.safetensors", 0.7, 1.3)]):
        for key, module in targets.items():
            mult = 0.7 if key.startswith("lora_te_") else 1.3
            expected = originals[key] + _expected_delta(tensors, key, originals[key].shape, mult)
            assert torch.equal(module.weight, expected), key
        touched = {f"unet.{n}.weight" for n, m in tiny.unet.named_modules() if m in targets.values()}
        unchanged = [k for k, v in _snapshot(tiny).items() if k.startswith("unet.") and k not in touched]
        assert all(torch.equal(_snapshot(tiny)[k], before[k]) for k in unchanged)
    _assert_bit_identical(tiny, before)


def test_several_loras_are_added_in_order(tiny: Components, tmp_path: Path) -> None:
    targets = _targets(tiny)
    first, second = _random_lora(targets, seed=1), _random_lora(targets, rank=2, seed=2)
    save_file(first, tmp_path / "a.safetensors")
    save_file(second, tmp_path / "b.safetensors")
    key = next(k for k in targets if k.startswith("lora_unet_"))
    weight = targets[key].weight.detach().clone()
    uses = [LoraUse(tmp_path / "a.safetensors", 1.0, 0.5), LoraUse(tmp_path / "b.safetensors", 1.0, -0.8)]
    with applied(tiny, uses):
        step = weight + _expected_delta(first, key, weight.shape, 0.5)
        assert torch.equal(targets[key].weight, step + _expected_delta(second, key, weight.shape, -0.8))


def test_restores_after_an_error_inside_the_block(tiny: Components, tmp_path: Path) -> None:
    save_file(_random_lora(_targets(tiny)), tmp_path / "a.safetensors")
    before = _snapshot(tiny)
    with pytest.raises(ZeroDivisionError), applied(tiny, [(tmp_path / "a.safetensors", 1.0, 1.0)]):
        _ = 1 / 0
    _assert_bit_identical(tiny, before)


def test_half_precision_merges_in_float16_as_a1111(tmp_path: Path) -> None:
    components = build_tiny_components()
    components.unet.half()
    key, module = next((k, m) for k, m in _targets(components).items() if k.startswith("lora_unet_"))
    tensors = _random_lora({key: module})
    save_file(tensors, tmp_path / "a.safetensors")
    weight = module.weight.detach().clone()
    half = {k: v.half() for k, v in tensors.items()}
    with applied(components, [(tmp_path / "a.safetensors", 1.0, 0.6)]):
        assert torch.equal(module.weight, weight + _expected_delta(half, key, weight.shape, 0.6))


def test_conv_lora_and_linear_lora_on_a_1x1_conv(tiny: Components, tmp_path: Path) -> None:
    conv = tiny.unet.down_blocks[0].resnets[0].conv1  # 3x3
    proj_in = tiny.unet.down_blocks[0].attentions[0].proj_in  # 1x1 conv, Linear in other models
    assert tuple(conv.weight.shape[2:]) == (3, 3) and tuple(proj_in.weight.shape[2:]) == (1, 1)
    gen = torch.Generator().manual_seed(3)
    tensors = {
        "lora_unet_down_blocks_0_resnets_0_conv1.lora_down.weight": torch.randn(4, 32, 3, 3, generator=gen),
        "lora_unet_down_blocks_0_resnets_0_conv1.lora_up.weight": torch.randn(32, 4, 1, 1, generator=gen),
        "lora_unet_down_blocks_0_resnets_0_conv1.alpha": torch.tensor(2.0),
        "lora_unet_down_blocks_0_attentions_0_proj_in.lora_down.weight": torch.randn(4, 32, generator=gen),
        "lora_unet_down_blocks_0_attentions_0_proj_in.lora_up.weight": torch.randn(32, 4, generator=gen),
    }
    save_file(tensors, tmp_path / "conv.safetensors")
    conv_w, proj_w = conv.weight.detach().clone(), proj_in.weight.detach().clone()
    with applied(tiny, [(tmp_path / "conv.safetensors", 1.0, 0.9)]):
        key = "lora_unet_down_blocks_0_resnets_0_conv1"
        assert torch.equal(conv.weight, conv_w + _expected_delta(tensors, key, conv_w.shape, 0.9))
        key = "lora_unet_down_blocks_0_attentions_0_proj_in"
        assert torch.equal(proj_in.weight, proj_w + _expected_delta(tensors, key, proj_w.shape, 0.9))
    assert torch.equal(conv.weight, conv_w) and torch.equal(proj_in.weight, proj_w)


def test_ldm_names_reach_the_same_modules(tiny: Components, tmp_path: Path) -> None:
    tensors = _random_lora(_targets(tiny))
    to_ldm = {
        "lora_unet_" + d.replace(".", "_"): "lora_unet_" + k.replace(".", "_")
        for k, d in ldm_unet_modules(tiny.unet).items()
    }
    ldm = {}
    for key, value in tensors.items():
        prefix, _, part = key.partition(".")
        ldm[f"{to_ldm.get(prefix, prefix)}.{part}"] = value
    assert any("input_blocks_1_1_transformer_blocks_0_attn1_to_q" in k for k in ldm)
    assert any("output_blocks_2_1_transformer_blocks_0_attn2_to_v" in k for k in ldm)
    save_file(tensors, tmp_path / "diffusers.safetensors")
    save_file(ldm, tmp_path / "ldm.safetensors")
    with applied(tiny, [(tmp_path / "diffusers.safetensors", 1.0, 1.0)]):
        merged = _snapshot(tiny)
    with applied(tiny, [(tmp_path / "ldm.safetensors", 1.0, 1.0)]):
        assert all(torch.equal(v, merged[k]) for k, v in _snapshot(tiny).items())


def test_ldm_names_agree_with_diffusers_checkpoint_conversion(tiny: Components) -> None:
    from diffusers import UNet2DConditionModel
    from diffusers.loaders.single_file_utils import convert_ldm_unet_checkpoint

    sd1_layout = UNet2DConditionModel(
        block_out_channels=(8, 8, 16, 16), layers_per_block=2, cross_attention_dim=8, norm_num_groups=4
    )
    for unet in (tiny.unet, sd1_layout):
        modules = dict(unet.named_modules())
        checkpoint, expected = {}, {}
        for ldm, name in ldm_unet_modules(unet).items():
            for param, value in modules[name].named_parameters(recurse=False):
                checkpoint[f"model.diffusion_model.{ldm}.{param}"] = value.detach()
                expected[f"{name}.{param}"] = value.detach()
        assert expected.keys() == dict(unet.named_parameters()).keys()
        converted = convert_ldm_unet_checkpoint(checkpoint, dict(unet.config))
        assert converted.keys() == expected.keys()
        assert all(converted[k] is expected[k] or torch.equal(converted[k], expected[k]) for k in expected)
    # diffusers' converter finds up-samplers by their keys whatever the slot; these are SD1's real LDM names
    names = ldm_unet_modules(sd1_layout)
    assert names["input_blocks.3.0.op"] == "down_blocks.0.downsamplers.0.conv"
    assert names["input_blocks.4.1.proj_in"] == "down_blocks.1.attentions.0.proj_in"
    assert names["middle_block.2.emb_layers.1"] == "mid_block.resnets.1.time_emb_proj"
    assert names["output_blocks.2.1.conv"] == "up_blocks.0.upsamplers.0.conv"
    assert names["output_blocks.5.2.conv"] == "up_blocks.1.upsamplers.0.conv"
    assert names["output_blocks.8.2.conv"] == "up_blocks.2.upsamplers.0.conv"
    assert names["output_blocks.11.0.skip_connection"] == "up_blocks.3.resnets.2.conv_shortcut"
    assert (names["time_embed.2"], names["out.2"]) == ("time_embedding.linear_2", "conv_out")


def test_unknown_key_is_an_error_naming_it_and_nothing_changes(tiny: Components, tmp_path: Path) -> None:
    tensors = _random_lora(_targets(tiny))
    tensors["lora_unet_down_blocks_9_attentions_0_proj_in.lora_down.weight"] = torch.zeros(4, 32)
    save_file(tensors, tmp_path / "odd.safetensors")
    before = _snapshot(tiny)
    with pytest.raises(LoraKeysError) as raised, applied(tiny, [(tmp_path / "odd.safetensors", 1.0, 1.0)]):
        pytest.fail("entered the block")
    assert "odd.safetensors" in str(raised.value)
    assert "lora_unet_down_blocks_9_attentions_0_proj_in.lora_down.weight" in str(raised.value)
    _assert_bit_identical(tiny, before)


def test_unsupported_network_type_is_an_error(tiny: Components, tmp_path: Path) -> None:
    key = next(iter(_targets(tiny)))
    save_file(
        {f"{key}.hada_w1_a": torch.zeros(4, 4), f"{key}.hada_w1_b": torch.zeros(4, 4)}, tmp_path / "h.safetensors"
    )
    with pytest.raises(LoraKeysError, match="hada_w1_a"), applied(tiny, [(tmp_path / "h.safetensors", 1.0, 1.0)]):
        pytest.fail("entered the block")


@pytest.mark.parametrize(
    ("prompt", "text", "tags"),
    [
        ("a cat <lora:a:0.5>", "a cat ", [LoraTag("a", 0.5, 0.5)]),
        ("<lora:a:0.5:1.0>, dog", ", dog", [LoraTag("a", 0.5, 1.0)]),
        ("x<lora:a:te=0.2:unet=1>y", "xy", [LoraTag("a", 0.2, 1.0)]),
        ("<lora:a:te=0.2>", "", [LoraTag("a", 0.2, 0.2)]),  # unet follows te, after te= is read
        ("<lora:a>", "", [LoraTag("a", 1.0, 1.0)]),
        ("<lora:a:1:0.5:8>", "", [LoraTag("a", 1.0, 0.5, 8)]),
        ("<lyco:b:0.3> <lora:a:1> <foo:bar>", "  ", [LoraTag("b", 0.3, 0.3), LoraTag("a", 1.0, 1.0)]),
        ("<lora:a:1> <lyco:b:0.3> <lora:c>", "  ", [LoraTag("a"), LoraTag("c"), LoraTag("b", 0.3, 0.3)]),
        ("<lora:a:0.5> <lora:a:0.3>", " ", [LoraTag("a", 0.3, 0.3)] * 2),  # one network, last tag's weights
        ("no tags, <not a tag>", "no tags, <not a tag>", []),
    ],
)
def test_extract_lora_tags_as_a1111(prompt: str, text: str, tags: list[LoraTag]) -> None:
    assert extract_lora_tags(prompt) == (text, tags)


def test_bad_tags_are_errors() -> None:
    with pytest.raises(LoraError, match="'x'"):
        extract_lora_tags("<lora:a:x>")
    with pytest.raises(LoraError, match="hypernet"):
        extract_lora_tags("<hypernet:h:1>")


def test_find_and_resolve_by_name_and_alias(tmp_path: Path) -> None:
    folder = tmp_path / "Lora" / "sub"
    folder.mkdir(parents=True)
    save_file({"x": torch.zeros(1)}, folder / "style.safetensors", metadata={"ss_output_name": "Style v2"})
    save_file({"x": torch.zeros(1)}, tmp_path / "Lora" / "plain.safetensors", metadata={"ss_tag_frequency": '{"a": 1}'})
    loras = find_loras(tmp_path)
    assert sorted(loras) == ["plain", "style"]
    assert loras["style"].as_api() == {
        "name": "style",
        "alias": "Style v2",
        "path": str(folder / "style.safetensors"),
        "metadata": {"ss_output_name": "Style v2"},
    }
    assert lookup(loras, "Style v2").name == "style"
    assert loras["plain"].metadata == {"ss_tag_frequency": {"a": 1}}  # JSON values parsed, as A1111 shows them
    data = (tmp_path / "Lora" / "plain.safetensors").read_bytes()
    body = data[8 + int.from_bytes(data[:8], "little") :]
    assert loras["plain"].shorthash() == hashlib.sha256(body).hexdigest()[:12]  # kohya's addnet hash
    uses = resolve([LoraTag("style", 0.5, 1.0), LoraTag("plain")], loras)
    assert uses == [
        LoraUse(folder / "style.safetensors", 0.5, 1.0),
        LoraUse(tmp_path / "Lora" / "plain.safetensors", 1, 1),
    ]
    with pytest.raises(LoraNotFoundError, match="'missing'") as raised:
        resolve([LoraTag("missing")], loras)
    assert raised.value.name == "missing"
    assert find_loras(None) == {} and find_loras(tmp_path / "nowhere") == {}


def test_dyn_keeps_only_the_first_ranks(tiny: Components, tmp_path: Path) -> None:
    targets = _targets(tiny)
    key = next(k for k in targets if k.startswith("lora_unet_"))
    tensors = _random_lora({key: targets[key]}, rank=4)
    save_file(tensors, tmp_path / "d.safetensors")
    weight = targets[key].weight.detach().clone()
    cut = dict(tensors)
    cut[f"{key}.lora_up.weight"] = tensors[f"{key}.lora_up.weight"][:, :2]
    cut[f"{key}.lora_down.weight"] = tensors[f"{key}.lora_down.weight"][:2]
    cut[f"{key}.alpha"] = tensors[f"{key}.alpha"] / 2  # the scale still divides by the file's rank, 4
    with applied(tiny, [LoraUse(tmp_path / "d.safetensors", 1.0, 0.5, dyn=2)]):
        assert torch.equal(targets[key].weight, weight + _expected_delta(cut, key, weight.shape, 0.5))
