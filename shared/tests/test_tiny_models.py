"""Tiny model factories: build, save/load round trip, determinism."""

from __future__ import annotations

import pytest
import torch

from accel_shared.tiny_models import (
    build_tiny_model,
    get_spec,
    list_tiny_models,
    load_model,
    save_tiny_model,
    tiny_config,
    tiny_inputs,
)

NAMES = ["qwen2", "llama", "qwen2-vl", "qwen2.5-vl", "flux", "wan"]


def forward(model, inputs) -> torch.Tensor:
    with torch.no_grad():
        out = model(**inputs)
    return out.logits if hasattr(out, "logits") else out.sample


def test_registry_names():
    assert [s.name for s in list_tiny_models()] == NAMES
    assert {s.library for s in list_tiny_models()} == {"transformers", "diffusers"}


@pytest.mark.parametrize("name", NAMES)
def test_save_load_round_trip(name: str, tmp_path):
    pytest.importorskip(get_spec(name).library)
    model = build_tiny_model(name, seed=3)
    assert not model.training
    path = save_tiny_model(name, tmp_path / name, seed=3)
    assert path == tmp_path / name
    assert any(path.glob("*.safetensors"))
    loaded = load_model(name, path)
    assert type(loaded) is type(model)
    assert not loaded.training

    expected, got = model.state_dict(), loaded.state_dict()
    assert expected.keys() == got.keys()
    for key in expected:
        assert torch.equal(expected[key], got[key]), key

    inputs = tiny_inputs(name, model, batch_size=2)
    out = forward(model, inputs)
    assert out.shape[0] == 2
    assert torch.isfinite(out).all()
    assert torch.equal(forward(loaded, inputs), out)


@pytest.mark.parametrize("name", ["qwen2", "flux"])
def test_seed_determines_weights(name: str):
    pytest.importorskip(get_spec(name).library)
    torch.manual_seed(123)
    state = torch.random.get_rng_state()
    a, b, c = (build_tiny_model(name, seed=s).state_dict() for s in (0, 0, 1))
    assert torch.equal(torch.random.get_rng_state(), state)  # the caller's RNG is untouched
    assert all(torch.equal(a[k], b[k]) for k in a)
    assert any(not torch.equal(a[k], c[k]) for k in a)


def test_load_model_with_class(tmp_path):
    transformers = pytest.importorskip("transformers")
    path = save_tiny_model("llama", tmp_path)
    model = load_model(transformers.LlamaForCausalLM, path)
    assert model.config.num_key_value_heads == 2


def test_dtype_and_configs():
    pytest.importorskip("transformers")
    model = build_tiny_model("qwen2", dtype=torch.bfloat16)
    assert next(model.parameters()).dtype == torch.bfloat16
    assert tiny_config("qwen2").hidden_size == 64
    flux = tiny_config("flux")
    assert sum(flux["axes_dims_rope"]) == flux["attention_head_dim"]


def test_vl_inputs_have_image_tokens():
    pytest.importorskip("transformers")
    model = build_tiny_model("qwen2-vl")
    inputs = tiny_inputs("qwen2-vl", model, batch_size=2)
    image_tokens = inputs["input_ids"] == model.config.image_token_id
    assert image_tokens.sum(dim=1).tolist() == [4, 4]  # grid [1, 4, 4] merged 2x2
    assert torch.equal(inputs["mm_token_type_ids"], image_tokens.long())
    assert inputs["pixel_values"].shape == (32, 3 * 2 * 14 * 14)


def test_errors(tmp_path):
    with pytest.raises(ValueError, match="unknown tiny model 'gpt5'; known: qwen2, llama"):
        build_tiny_model("gpt5")
    with pytest.raises(ValueError, match="unknown tiny model"):
        tiny_config("gpt5")
    with pytest.raises(FileNotFoundError, match="no model folder"):
        load_model("qwen2", tmp_path / "missing")
    with pytest.raises(TypeError, match="from_pretrained"):
        load_model(int, tmp_path)
    pytest.importorskip("transformers")
    model = build_tiny_model("qwen2")
    with pytest.raises(ValueError, match="batch_size"):
        tiny_inputs("qwen2", model, batch_size=0)
