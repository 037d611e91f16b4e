"""The trainer's gradient codecs are really smaller on the wire: fp16 about half of fp32, 8-bit under 0.3 for the
large tensors it applies to, and the counting wrapper sees what is serialized."""

from __future__ import annotations

import multiprocessing

import torch
from hivemind.compression import CompressionInfo, serialize_torch_tensor

from distributed.training.trainer import codec, counting


def _size(name: str, tensor: torch.Tensor) -> int:
    message = codec(name).compress(tensor, CompressionInfo.from_tensor(tensor))
    return int(message.ByteSize())


def test_codecs_shrink_what_goes_on_the_wire() -> None:
    big = torch.randn(256, 1024, generator=torch.Generator().manual_seed(0))
    plain = serialize_torch_tensor(big).ByteSize()
    assert _size("none", big) == plain
    assert 0.49 <= _size("fp16", big) / plain <= 0.51
    assert _size("8bit", big) / plain <= 0.3
    small = torch.randn(64)
    assert _size("8bit", small) / serialize_torch_tensor(small).ByteSize() < 0.6  # small ones stay fp16


def test_the_counting_codec_counts_and_decodes() -> None:
    sent, elements = multiprocessing.Value("d", 0.0), multiprocessing.Value("d", 0.0)
    wrapped = counting(codec("fp16"), sent, elements)
    tensor = torch.randn(1000)
    message = wrapped.compress(tensor, CompressionInfo.from_tensor(tensor))
    assert sent.value == message.ByteSize() and elements.value == 1000
    assert torch.allclose(wrapped.extract(message), tensor, atol=1e-2)
