"""transformers attention patching on tiny Qwen2, LLaMA, Qwen2-VL and Qwen2.5-VL."""

from __future__ import annotations

import dataclasses

import pytest
import torch

pytest.importorskip("transformers")

from transformers import AttentionInterface, DynamicCache, StaticCache

from accel_shared.patching import AttentionInputs, sdpa_math
from accel_shared.patching.transformers import (
    register_attention,
    restore_attention,
    set_attention,
    use_attention,
)
from accel_shared.tiny_models import build_tiny_model, tiny_inputs

TIGHT = {"rtol": 1e-5, "atol": 1e-6}
LM_LAYERS = ["model.layers.0.self_attn", "model.layers.1.self_attn"]
VL_TEXT_LAYERS = ["model.language_model.layers.0.self_attn", "model.language_model.layers.1.self_attn"]

register_attention("test_sdpa_math", sdpa_math)


def logits(model, inputs) -> torch.Tensor:
    with torch.no_grad():
        return model(**inputs).logits


@pytest.fixture
def record(recorder):
    register_attention("test_record", recorder)
    return "test_record", recorder


@pytest.mark.parametrize("name", ["qwen2", "llama"])
@pytest.mark.parametrize("padding", [False, True])
def test_lm_logits_match_stock_sdpa(name: str, padding: bool, record):
    impl, rec = record
    model = build_tiny_model(name)
    inputs = tiny_inputs(name, model, batch_size=2)
    if padding:
        inputs["attention_mask"][0, :3] = 0  # left padding in row 0
    stock = logits(model, inputs)
    with use_attention(model, impl):
        ours = logits(model, inputs)
    torch.testing.assert_close(ours, stock, **TIGHT)

    assert rec.names() == LM_LAYERS
    assert [c.layer_idx for c in rec.calls] == [0, 1]
    for call in rec.calls:
        assert call.query.shape == (2, 4, 8, 16)
        assert call.key.shape == (2, 2, 8, 16)  # grouped-query heads are not repeated
        assert isinstance(call.module, torch.nn.Module)
        if padding:  # the padding mask reaches the math (mask function registered)
            assert not call.is_causal
            assert call.attn_mask is not None
            assert call.attn_mask.dtype == torch.bool
            assert not call.attn_mask[0, 0, -1, :3].any()
        else:
            assert call.is_causal
            assert call.attn_mask is None
        if name == "qwen2":  # other keyword arguments reach the math untouched
            assert "sliding_window" in call.extra


def test_padding_changes_output_through_our_math(record):
    # If the mask were dropped, padded and unpadded rows would agree on the non-pad positions' inputs.
    impl, _ = record
    model = build_tiny_model("qwen2")
    inputs = tiny_inputs("qwen2", model, batch_size=1)
    padded = {k: v.clone() for k, v in inputs.items()}
    padded["attention_mask"][0, :3] = 0
    with use_attention(model, impl):
        assert not torch.allclose(logits(model, inputs)[0, -1], logits(model, padded)[0, -1])


def test_generate_with_cache_matches_stock(record):
    impl, rec = record
    model = build_tiny_model("qwen2")
    ids = tiny_inputs("qwen2", model)["input_ids"]
    kwargs = {"max_new_tokens": 4, "do_sample": False, "pad_token_id": 2}
    with torch.no_grad():
        stock = model.generate(ids, **kwargs)
        with use_attention(model, impl):
            ours = model.generate(ids, **kwargs)
    assert torch.equal(ours, stock)
    prefill, decode = rec.calls[:2], rec.calls[2:]
    assert all(c.is_causal and c.query.shape[2] == 8 for c in prefill)
    assert decode
    assert all(not c.is_causal and c.query.shape[2] == 1 for c in decode)
    assert [c.key.shape[2] for c in decode] == [9, 9, 10, 10, 11, 11]


def test_chunked_prefill_bottom_right_matches_stock(record):
    """Second chunk of a prefill against a DynamicCache: Sq=3 queries over Sk=8 keys."""
    impl, rec = record
    model = build_tiny_model("qwen2")
    ids = tiny_inputs("qwen2", model)["input_ids"]

    def chunked() -> torch.Tensor:
        cache = DynamicCache(config=model.config)
        with torch.no_grad():
            model(input_ids=ids[:, :5], cache=cache, use_cache=True)
            return model(input_ids=ids[:, 5:], cache=cache, use_cache=True).logits

    stock = chunked()
    with use_attention(model, impl):
        ours = chunked()
    torch.testing.assert_close(ours, stock, **TIGHT)
    second = [c for c in rec.calls if c.query.shape[2] == 3]
    assert len(second) == 2
    assert all(c.key.shape[2] == 8 for c in second)

    # transformers passes an explicit causal mask here; replacing it by is_causal=True must give the same
    # result, which holds only with bottom-right alignment.
    def causal_flag_only(inputs: AttentionInputs) -> torch.Tensor:
        return sdpa_math(dataclasses.replace(inputs, attn_mask=None, is_causal=inputs.query.shape[2] > 1))

    register_attention("test_causal_flag_only", causal_flag_only)
    with use_attention(model, "test_causal_flag_only"):
        flag_only = chunked()
    torch.testing.assert_close(flag_only, stock, **TIGHT)


def test_static_cache_prefill_matches_stock(record):
    impl, rec = record
    model = build_tiny_model("qwen2")
    ids = tiny_inputs("qwen2", model)["input_ids"]

    def prefill() -> torch.Tensor:
        cache = StaticCache(config=model.config, max_cache_len=16)
        with torch.no_grad():
            return model(input_ids=ids, cache=cache, use_cache=True).logits

    stock = prefill()
    with use_attention(model, impl):
        ours = prefill()
    torch.testing.assert_close(ours, stock, **TIGHT)
    # the empty cache slots (16 - 8) are cut off before the math sees them
    assert all(c.is_causal and c.key.shape[2] == 8 for c in rec.calls)


def test_restore_is_bit_identical():
    model = build_tiny_model("qwen2")
    inputs = tiny_inputs("qwen2", model, batch_size=2)
    inputs["attention_mask"][1, :2] = 0
    before = logits(model, inputs)
    state = set_attention(model, "test_sdpa_math")
    assert model.config._attn_implementation == "test_sdpa_math"
    restore_attention(model, state)
    assert model.config._attn_implementation == "sdpa"
    assert torch.equal(logits(model, inputs), before)


@pytest.mark.parametrize("name", ["qwen2-vl", "qwen2.5-vl"])
def test_vl_with_image_matches_stock(name: str, record):
    impl, rec = record
    model = build_tiny_model(name)
    inputs = tiny_inputs(name, model)
    stock = logits(model, inputs)
    state = set_attention(model, impl)
    ours = logits(model, inputs)
    restore_attention(model, state)
    torch.testing.assert_close(ours, stock, **TIGHT)
    assert torch.equal(logits(model, inputs), stock)

    vision = [c for c in rec.calls if c.layer_name.startswith("model.visual.blocks.")]
    text = [c for c in rec.calls if c.layer_name.startswith("model.language_model.")]
    assert len(vision) + len(text) == len(rec.calls)
    assert {c.layer_name for c in vision} == {"model.visual.blocks.0.attn", "model.visual.blocks.1.attn"}
    assert all(not c.is_causal and c.attn_mask is None for c in vision)
    assert [c.layer_name for c in text] == VL_TEXT_LAYERS
    assert all(c.is_causal for c in text)
    if name == "qwen2.5-vl":  # block 0 attends within 4 windows of 4 patches, block 1 over all 16
        assert [c.query.shape[2] for c in vision] == [4, 4, 4, 4, 16]


def test_sub_configs_patches_text_model_only(record):
    impl, rec = record
    model = build_tiny_model("qwen2-vl")
    inputs = tiny_inputs("qwen2-vl", model)
    stock = logits(model, inputs)
    with use_attention(model, "sdpa", sub_configs={"text_config": impl}):
        assert model.config.vision_config._attn_implementation == "sdpa"
        assert model.config.text_config._attn_implementation == impl
        ours = logits(model, inputs)
    torch.testing.assert_close(ours, stock, **TIGHT)
    assert rec.names() == VL_TEXT_LAYERS
    assert model.config.text_config._attn_implementation == "sdpa"


def test_unregistered_name_errors():
    model = build_tiny_model("qwen2")
    with pytest.raises(ValueError, match="'no_such_attention' is not a registered"):
        set_attention(model, "no_such_attention")
    with pytest.raises(ValueError, match="sub_configs key 'vision_config'"):
        set_attention(model, "test_sdpa_math", sub_configs={"vision_config": "test_sdpa_math"})
    assert model.config._attn_implementation == "sdpa"


def test_register_rejects_builtin_and_non_callable():
    with pytest.raises(ValueError, match="'sdpa' is a transformers built-in"):
        register_attention("sdpa", sdpa_math)
    with pytest.raises(TypeError, match="math must be callable"):
        register_attention("test_not_callable", 3)  # type: ignore[arg-type]


def test_wrong_output_shape_and_softcap_error():
    register_attention("test_bad_shape", lambda inputs: inputs.query[:, :, :, :4])
    model = build_tiny_model("qwen2")
    with (
        use_attention(model, "test_bad_shape"),
        pytest.raises(ValueError, match=r"must return \[B, Hq, Sq, Dv\]"),
    ):
        logits(model, tiny_inputs("qwen2", model))

    adapter = AttentionInterface._global_mapping["test_sdpa_math"]
    q = torch.zeros(1, 2, 3, 8)
    with pytest.raises(ValueError, match="softcap"):
        adapter(torch.nn.Module(), q, q, q, None, softcap=30.0)


def test_model_that_does_not_switch_errors_and_restores(monkeypatch):
    model = build_tiny_model("qwen2")

    def wrong_switch(implementation):  # stands in for a model that cannot take the requested implementation
        model.config._attn_implementation_internal = "eager"

    monkeypatch.setattr(model, "set_attn_implementation", wrong_switch)
    with pytest.raises(ValueError, match="is on 'eager' instead of 'test_sdpa_math'"):
        set_attention(model, "test_sdpa_math")
    assert model.config._attn_implementation == "sdpa"  # restored
