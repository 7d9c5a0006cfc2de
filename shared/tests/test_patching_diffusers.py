"""diffusers attention routing on tiny Flux and Wan."""

from __future__ import annotations

import copy
import inspect

import pytest
import torch

pytest.importorskip("diffusers")

from diffusers.models import attention_dispatch
from diffusers.models.attention_processor import AttnProcessor2_0
from diffusers.models.transformers import transformer_flux

from accel_shared.patching import AttentionInputs, sdpa_math
from accel_shared.patching.diffusers import (
    FunctionAttnProcessor,
    RoutedAttnProcessor,
    is_routed,
    restore_processors,
    route_attention,
)
from accel_shared.tiny_models import build_tiny_model, tiny_inputs

TIGHT = {"rtol": 1e-5, "atol": 1e-6}
FLUX_NAMES = ["transformer_blocks.0.attn.processor", "single_transformer_blocks.0.attn.processor"]
WAN_SELF = ["blocks.0.attn1.processor", "blocks.1.attn1.processor"]


def sample(model, inputs) -> torch.Tensor:
    with torch.no_grad():
        return model(**inputs).sample


@pytest.mark.parametrize("name", ["flux", "wan"])
def test_sdpa_math_matches_stock(name: str, recorder):
    model = build_tiny_model(name)
    inputs = tiny_inputs(name, model, batch_size=2)
    stock = sample(model, inputs)
    routed = route_attention(model, recorder)
    assert is_routed(model)
    ours = sample(model, inputs)
    restore_processors(model)
    torch.testing.assert_close(ours, stock, **TIGHT)
    assert recorder.names() == routed  # every routed processor ran, once, in model order
    for call in recorder.calls:
        assert call.query.ndim == 4
        assert call.query.shape[:2] == (2, 2)
        assert call.scale == pytest.approx(16**-0.5)
        assert type(call.module).__name__ in ("FluxAttention", "WanAttention")


def test_flux_routes_both_block_kinds(recorder):
    model = build_tiny_model("flux")
    assert route_attention(model, recorder) == FLUX_NAMES
    sample(model, tiny_inputs("flux", model))
    # joint attention over 6 text + 16 image tokens
    assert all(c.query.shape == (1, 2, 22, 16) for c in recorder.calls)


def test_wan_include_selects_self_attention_only(recorder):
    model = build_tiny_model("wan")
    inputs = tiny_inputs("wan", model)
    stock = sample(model, inputs)
    routed = route_attention(model, recorder, include=lambda n: ".attn1." in n)
    assert routed == WAN_SELF
    ours = sample(model, inputs)
    assert recorder.names() == WAN_SELF
    # self-attention: keys are the 2*2*2 = 8 video patches, not the 6 text tokens of cross-attention
    assert all(c.query.shape[2] == c.key.shape[2] == 8 for c in recorder.calls)
    torch.testing.assert_close(ours, stock, **TIGHT)
    assert type(model.attn_processors["blocks.0.attn2.processor"]).__name__ == "WanAttnProcessor"


def test_restore_puts_back_the_same_objects():
    model = build_tiny_model("wan")
    inputs = tiny_inputs("wan", model)
    originals = dict(model.attn_processors)
    before = sample(model, inputs)
    route_attention(model, lambda inputs: torch.zeros_like(inputs.query))
    assert not torch.allclose(sample(model, inputs), before)
    restore_processors(model)
    assert not is_routed(model)
    after = model.attn_processors
    assert after.keys() == originals.keys()
    assert all(after[k] is originals[k] for k in originals)
    assert torch.equal(sample(model, inputs), before)


def test_library_module_is_not_mutated():
    routed_model, other = build_tiny_model("flux"), build_tiny_model("flux")
    inputs = tiny_inputs("flux", other)
    stock = sample(other, inputs)
    route_attention(routed_model, lambda inputs: torch.zeros_like(inputs.query))
    assert transformer_flux.dispatch_attention_fn is attention_dispatch.dispatch_attention_fn
    assert torch.equal(sample(other, inputs), stock)
    assert not torch.allclose(sample(routed_model, inputs), stock)


def test_deepcopy_of_routed_model_routes_to_the_copy():
    model = build_tiny_model("wan")
    inputs = tiny_inputs("wan", model)
    stock = sample(model, inputs)
    route_attention(model, lambda inputs: torch.zeros_like(inputs.query), include=lambda n: ".attn1." in n)
    clone = copy.deepcopy(model)
    proc = clone.attn_processors[WAN_SELF[0]]
    assert proc._routed_call.__globals__["dispatch_attention_fn"].__self__ is proc
    assert torch.equal(sample(clone, inputs), sample(model, inputs))
    restore_processors(clone)
    assert torch.equal(sample(clone, inputs), stock)


def test_processor_without_dispatch_is_rejected():
    with pytest.raises(
        TypeError, match="AttnProcessor2_0 does not route its attention through dispatch_attention_fn"
    ):
        RoutedAttnProcessor(AttnProcessor2_0())


def test_routing_twice_and_restoring_unrouted_error():
    model = build_tiny_model("flux")
    with pytest.raises(RuntimeError, match="was not routed"):
        restore_processors(model)
    route_attention(model, sdpa_math)
    with pytest.raises(RuntimeError, match="already routed"):
        route_attention(model, sdpa_math)
    restore_processors(model)
    with pytest.raises(ValueError, match="include selected none"):
        route_attention(model, sdpa_math, include=lambda n: False)


def test_factory_with_subclass_and_backend_delegation():
    seen: list[str] = []

    class Scaled(RoutedAttnProcessor):
        def attention(self, inputs: AttentionInputs) -> torch.Tensor:
            seen.append(self.name)
            return 2 * sdpa_math(inputs)

    model = build_tiny_model("flux")
    inputs = tiny_inputs("flux", model)
    stock = sample(model, inputs)
    route_attention(model, lambda name, proc: Scaled(proc, name=name))
    assert not torch.allclose(sample(model, inputs), stock)
    assert seen == FLUX_NAMES

    proc = model.attn_processors[FLUX_NAMES[0]]
    assert isinstance(proc, Scaled)
    proc._attention_backend = "native"  # what diffusers' set_attention_backend writes
    assert proc.processor._attention_backend == "native"
    # diffusers filters processor kwargs by this signature: it must be the wrapped processor's
    assert inspect.signature(proc.__call__) == inspect.signature(proc.processor.__call__)

    restore_processors(model)
    with pytest.raises(TypeError, match="must return a RoutedAttnProcessor"):
        route_attention(model, lambda name, proc: proc)
    assert not is_routed(model)


def test_bad_math_output_shape():
    model = build_tiny_model("wan")
    route_attention(model, lambda inputs: inputs.query[..., :3])
    with pytest.raises(ValueError, match=r"must return \[B, Hq, Sq, Dv\]"):
        sample(model, tiny_inputs("wan", model))


def test_function_processor_requires_callable():
    model = build_tiny_model("flux")
    proc = model.attn_processors[FLUX_NAMES[0]]
    with pytest.raises(TypeError, match="math must be callable"):
        FunctionAttnProcessor(proc, None)  # type: ignore[arg-type]
    with pytest.raises(TypeError, match="already a FunctionAttnProcessor"):
        FunctionAttnProcessor(FunctionAttnProcessor(proc, sdpa_math), sdpa_math)
