"""One op through every layer: kernels_core.block_sparse_attention (all blocks enabled) patched into
real model classes through accel_shared reproduces the stock attention path."""

from __future__ import annotations

import os

import pytest
import torch

import kernels_core
from accel_shared.patching import AttentionInputs
from accel_shared.tiny_models import build_tiny_model, tiny_inputs

os.environ.setdefault("HF_HUB_OFFLINE", "1")
TOLERANCE = {"atol": 1e-4, "rtol": 1e-4}


class DenseBlockSparse:
    """Attention math that runs kernels-core with a dense block mask, counting its calls."""

    def __init__(self) -> None:
        self.calls: list[AttentionInputs] = []

    def __call__(self, inputs: AttentionInputs) -> torch.Tensor:
        assert inputs.attn_mask is None, "these tests use no padding mask"
        self.calls.append(inputs)
        b, h, sq, _ = inputs.query.shape
        mask = kernels_core.masks.dense_block_mask(b, h, sq, inputs.key.shape[2], device=inputs.query.device)
        out = kernels_core.block_sparse_attention(
            inputs.query, inputs.key, inputs.value, mask, causal=inputs.is_causal, scale=inputs.scale
        )
        assert isinstance(out, torch.Tensor)
        return out


@pytest.mark.parametrize("name", ["qwen2", "llama", "qwen2-vl"])
def test_transformers_models(name):
    pytest.importorskip("transformers")
    from accel_shared.patching.transformers import register_attention, use_attention

    model = build_tiny_model(name)
    inputs = tiny_inputs(name, model, batch_size=2)
    inputs.pop("attention_mask", None)  # no padding: the block-sparse op takes no element mask
    with torch.no_grad():
        expected = model(**inputs).logits
        math = DenseBlockSparse()
        register_attention("kernels_core_dense", math)
        with use_attention(model, "kernels_core_dense"):
            actual = model(**inputs).logits
    assert math.calls, "the kernels-core attention was never called"
    assert any(c.is_causal for c in math.calls)
    if name == "qwen2-vl":
        assert any(not c.is_causal for c in math.calls), "the vision tower should run non-causal attention"
    torch.testing.assert_close(actual, expected, **TOLERANCE)


@pytest.mark.parametrize("name", ["flux", "wan"])
def test_diffusers_models(name):
    pytest.importorskip("diffusers")
    from accel_shared.patching.diffusers import restore_processors, route_attention

    model = build_tiny_model(name)
    inputs = tiny_inputs(name, model)
    with torch.no_grad():
        expected = model(**inputs).sample
        math = DenseBlockSparse()
        routed = route_attention(model, math)
        actual = model(**inputs).sample
        restore_processors(model)
    assert len(math.calls) >= len(routed) > 0
    torch.testing.assert_close(actual, expected, **TOLERANCE)


def test_gradients_flow_through_patched_model():
    """Training through the kernels-core op: a loss on the patched model backpropagates to every layer."""
    pytest.importorskip("transformers")
    from accel_shared.patching.transformers import register_attention, use_attention

    model = build_tiny_model("qwen2").train()
    inputs = tiny_inputs("qwen2", model)
    inputs.pop("attention_mask", None)
    register_attention("kernels_core_dense", DenseBlockSparse())
    with use_attention(model, "kernels_core_dense"):
        loss = model(**inputs, labels=inputs["input_ids"]).loss
        loss.backward()
    q_proj = model.model.layers[0].self_attn.q_proj.weight.grad
    assert q_proj is not None and torch.isfinite(q_proj).all() and q_proj.abs().sum() > 0
