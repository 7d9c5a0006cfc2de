"""apply / remove on tiny Qwen2 / Qwen2-VL / Qwen2.5-VL models: exactness in the dense limit, the
slimmed decode cache, errors, and gradients through the sparse path."""

from __future__ import annotations

import warnings
from typing import Any

import pytest
import torch
from transformers import DynamicCache

import omnisparse
from accel_shared.tiny_models import build_tiny_model
from omnisparse import OmniSparseConfig, SlimKVCache

TINY_MODELS = ["qwen2", "llama", "qwen2-vl", "qwen2.5-vl"]
# the accel_shared tiny VL models' image token and vision start / end tokens
IMAGE_TOKEN, VISION_START, VISION_END = 120, 122, 123

# every visible block, every row active: the sparse path computes exactly dense attention
FULL = {"block_size": 4, "min_seq_len": 8, "gamma": 1.0, "lazy_keep_ratio": 1.0}
# a sparse setting that visibly changes the logits of the random tiny models
SPARSE = {"block_size": 4, "min_seq_len": 8, "gamma": 0.5, "lazy_keep_ratio": 0.0, "lazy_mode": "skip"}


def long_inputs(name: str, model: Any, seed: int = 0) -> dict[str, torch.Tensor]:
    """Inputs longer than ``tiny_inputs``: 40 text tokens, or 6 text + a 112x112 image (16 tokens)
    + 14 text for the VL models (38 tokens), so block_size 4 gives ~10 query blocks."""
    g = torch.Generator().manual_seed(seed)
    if name in ("qwen2", "llama"):
        ids = torch.randint(3, 100, (1, 40), generator=g)
        return {"input_ids": ids, "attention_mask": torch.ones_like(ids)}
    vision = model.config.vision_config
    grid = (1, 8, 8)
    patches = grid[0] * grid[1] * grid[2]
    image = [VISION_START] + [IMAGE_TOKEN] * (patches // vision.spatial_merge_size**2) + [VISION_END]
    ids = torch.cat(
        [
            torch.randint(3, 100, (1, 6), generator=g),
            torch.tensor([image]),
            torch.randint(3, 100, (1, 14), generator=g),
        ],
        dim=1,
    )
    return {
        "input_ids": ids,
        "attention_mask": torch.ones_like(ids),
        "mm_token_type_ids": (ids == IMAGE_TOKEN).long(),
        "pixel_values": torch.randn(patches, 3 * 2 * 14 * 14, generator=g),
        "image_grid_thw": torch.tensor([grid]),
    }


@pytest.fixture(scope="module", params=TINY_MODELS)
def tiny(request: pytest.FixtureRequest) -> tuple[str, Any, dict[str, torch.Tensor]]:
    name = request.param
    model = build_tiny_model(name)
    return name, model, long_inputs(name, model)


@pytest.fixture(scope="module")
def video_case() -> tuple[Any, Any, dict[str, torch.Tensor]]:
    """The omnisparse tiny VLM (4 layers) and a 145-token prompt: 8 easy-vqa frames (128 video tokens)."""
    pytest.importorskip("easy_vqa")
    from omnisparse.inputs import video_inputs
    from omnisparse.longvideo_qa import make_videos
    from omnisparse.tiny_vlm import build_tiny_vlm

    model, tokenizer = build_tiny_vlm()
    video = make_videos("test", 1, num_frames=8)[0]
    inputs = video_inputs(
        video.frames(),
        video.question,
        tokenizer,
        model.config,
        frame_pixels=(112 * 112, 112 * 112),
        repeat_frames=2,
    )
    return model, tokenizer, inputs


@pytest.fixture(autouse=True)
def _cleanup(request: pytest.FixtureRequest) -> Any:
    """Never leave a shared module-scoped model patched when a test fails."""
    yield
    for name in ("tiny", "video_case"):
        if name in request.fixturenames:
            model = request.getfixturevalue(name)[1 if name == "tiny" else 0]
            if omnisparse.is_applied(model):
                omnisparse.remove(model)


@torch.no_grad()
def logits_of(model: Any, inputs: dict[str, torch.Tensor]) -> torch.Tensor:
    return model(**inputs, use_cache=False).logits


def generate(model: Any, inputs: dict[str, torch.Tensor], new: int = 6) -> Any:
    with torch.no_grad():
        return model.generate(
            **inputs,
            max_new_tokens=new,
            min_new_tokens=new,
            do_sample=False,
            output_logits=True,
            return_dict_in_generate=True,
        )


# ---------------------------------------------------------------------------------------------
# apply / remove
# ---------------------------------------------------------------------------------------------
def test_remove_restores_bit_identical_logits(tiny: tuple[str, Any, dict]) -> None:
    _name, model, inputs = tiny
    before = logits_of(model, inputs)
    state = omnisparse.apply(model, OmniSparseConfig(**SPARSE, slim_decode=False))
    state.record = True
    assert omnisparse.is_applied(model) and omnisparse.get_state(model) is state
    patched = logits_of(model, inputs)
    assert state.stats, "the sparse path did not run"
    assert min(s.density for s in state.stats) < 1.0
    assert (patched - before).abs().max() > 1e-2, "the sparse setting must change the logits"
    omnisparse.remove(model)
    assert not omnisparse.is_applied(model)
    assert torch.equal(logits_of(model, inputs), before)
    with pytest.raises(ValueError, match="no OmniSparse applied"):
        omnisparse.get_state(model)


@pytest.mark.parametrize("name", ["qwen2-vl", "qwen2.5-vl"])
def test_vision_tower_keeps_its_attention(name: str) -> None:
    model = build_tiny_model(name)
    inputs = long_inputs(name, model)

    @torch.no_grad()
    def image_features() -> torch.Tensor:
        out = model.model.get_image_features(
            inputs["pixel_values"], inputs["image_grid_thw"], return_dict=True
        )
        return torch.cat(list(out.pooler_output))

    before = image_features()
    text_before = model.config.text_config._attn_implementation
    vision_before = model.config.vision_config._attn_implementation
    omnisparse.apply(model, OmniSparseConfig(**SPARSE))
    assert model.config.text_config._attn_implementation == "omnisparse"
    assert model.config.vision_config._attn_implementation == vision_before
    assert torch.equal(image_features(), before)
    omnisparse.remove(model)
    assert model.config.text_config._attn_implementation == text_before


def test_full_recall_matches_dense(tiny: tuple[str, Any, dict]) -> None:
    _name, model, inputs = tiny
    dense = logits_of(model, inputs)
    state = omnisparse.apply(model, OmniSparseConfig(**FULL))
    state.record = True
    sparse = logits_of(model, inputs)
    omnisparse.remove(model)
    layers = model.config.get_text_config(decoder=True).num_hidden_layers
    assert sorted(s.layer for s in state.stats) == list(range(layers))
    assert all(s.density == 1.0 and s.seq_len == inputs["input_ids"].shape[1] for s in state.stats)
    torch.testing.assert_close(sparse, dense, atol=1e-5, rtol=0)


def test_full_recall_matches_dense_on_video(video_case: tuple[Any, Any, dict]) -> None:
    model, _, inputs = video_case
    dense = logits_of(model, inputs)
    state = omnisparse.apply(model, OmniSparseConfig(**FULL))
    state.record = True
    sparse = logits_of(model, inputs)
    omnisparse.remove(model)
    assert len(state.stats) == 4 and all(s.seq_len == 145 for s in state.stats)
    torch.testing.assert_close(sparse, dense, atol=1e-5, rtol=0)


def test_dense_layers_and_short_calls_run_dense(tiny: tuple[str, Any, dict]) -> None:
    _name, model, inputs = tiny
    state = omnisparse.apply(model, OmniSparseConfig(**{**SPARSE, "dense_layers": [0]}))
    state.record = True
    logits_of(model, inputs)
    assert {s.layer for s in state.stats} == {1}
    omnisparse.remove(model)

    state = omnisparse.apply(model, OmniSparseConfig(**{**SPARSE, "min_seq_len": 1000}))
    state.record = True
    dense = logits_of(model, inputs)
    omnisparse.remove(model)
    assert state.stats == []
    torch.testing.assert_close(dense, logits_of(model, inputs), atol=1e-5, rtol=0)


# ---------------------------------------------------------------------------------------------
# decode with a SlimKVCache
# ---------------------------------------------------------------------------------------------
def test_generate_keeping_everything_matches_dense(tiny: tuple[str, Any, dict]) -> None:
    name, model, inputs = tiny
    new = 6
    reference = generate(model, inputs, new)
    config = OmniSparseConfig(**FULL, decode_gamma=1.0, head_visual_threshold=0.0)
    state = omnisparse.apply(model, config)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        out = generate(model, inputs, new)
    cache = state.cache  # (remove clears it)
    omnisparse.remove(model)
    assert torch.equal(out.sequences, reference.sequences)
    for step, (a, b) in enumerate(zip(out.logits, reference.logits, strict=True)):
        torch.testing.assert_close(a, b, atol=1e-5, rtol=0, msg=f"decode step {step}")
    assert isinstance(cache, SlimKVCache) and out.past_key_values is cache
    prompt = inputs["input_ids"].shape[1]
    assert cache.get_seq_length() == prompt + new - 1
    omni_warnings = [str(w.message) for w in caught if "OmniSparse" in str(w.message)]
    if name in ("qwen2", "llama"):  # no visual tokens: nothing to slim, and OmniSparse says so
        assert not any(layer.is_slim for layer in cache.layers)
        assert any("no visual tokens" in m for m in omni_warnings)
    else:
        assert all(layer.is_slim for layer in cache.layers)
        for kept in cache.kept_tokens():  # every head kept every token
            assert bool((kept == prompt + new - 1).all())


def test_generate_on_video_keeping_everything(video_case: tuple[Any, Any, dict]) -> None:
    model, _, inputs = video_case
    reference = generate(model, inputs, 4)
    state = omnisparse.apply(model, OmniSparseConfig(**FULL, decode_gamma=1.0, head_visual_threshold=0.0))
    out = generate(model, inputs, 4)
    cache = state.cache
    omnisparse.remove(model)
    assert torch.equal(out.sequences, reference.sequences)
    for a, b in zip(out.logits, reference.logits, strict=True):
        torch.testing.assert_close(a, b, atol=1e-5, rtol=0)
    assert isinstance(cache, SlimKVCache) and out.past_key_values is cache
    assert all(layer.is_slim for layer in cache.layers)
    assert cache.get_seq_length() == 145 + 3


def test_default_slim_cache_is_smaller_than_dense(video_case: tuple[Any, Any, dict]) -> None:
    model, _, inputs = video_case
    dense = DynamicCache(config=model.config)
    with torch.no_grad():
        model(**inputs, cache=dense, use_cache=True)
    dense_bytes = sum(2 * layer.keys.numel() * layer.keys.element_size() for layer in dense.layers)

    state = omnisparse.apply(model)
    handed = DynamicCache(config=model.config)
    with torch.no_grad():
        out = model(**inputs, cache=handed, use_cache=True)
    slim = state.cache
    omnisparse.remove(model)
    assert state.cache is None
    assert isinstance(slim, SlimKVCache) and slim is not handed  # the empty DynamicCache was swapped
    assert out.past_key_values is slim
    assert slim.get_seq_length() == dense.get_seq_length() == 145
    assert all(layer.is_slim for layer in slim.layers)
    visual = int((inputs["mm_token_type_ids"] != 0).sum())
    for kept in slim.kept_tokens():
        assert bool((kept >= 145 - visual).all())  # text tokens are never dropped
    assert any(bool((kept < 145).any()) for kept in slim.kept_tokens())
    assert slim.nbytes() < dense_bytes


def test_multi_token_decode_equals_one_token_steps(video_case: tuple[Any, Any, dict]) -> None:
    """Three new tokens in one call (the gather path) and one at a time (decode_attention) agree
    on a slimmed cache."""
    model, _, inputs = video_case
    config = OmniSparseConfig(
        block_size=16, min_seq_len=32, decode_gamma=0.8, observation_window=8, recent_window=8
    )
    new_ids = torch.tensor([[9, 10, 11]])
    omnisparse.apply(model, config)
    try:
        with torch.no_grad():
            together = SlimKVCache(config=model.config)
            model(**inputs, cache=together, use_cache=True)
            assert any(bool((k < 145).any()) for k in together.kept_tokens())
            # (no attention_mask: Qwen2-VL's M-RoPE positions mis-handle a multi-token continuation with one)
            joint = model(input_ids=new_ids, cache=together, use_cache=True).logits

            stepwise = SlimKVCache(config=model.config)
            model(**inputs, cache=stepwise, use_cache=True)
            steps = [
                model(input_ids=new_ids[:, i : i + 1], cache=stepwise, use_cache=True).logits
                for i in range(3)
            ]
    finally:
        omnisparse.remove(model)
    assert together.get_seq_length() == stepwise.get_seq_length() == 148
    torch.testing.assert_close(joint, torch.cat(steps, dim=1), atol=1e-5, rtol=0)


# ---------------------------------------------------------------------------------------------
# errors
# ---------------------------------------------------------------------------------------------
def test_apply_twice_raises(tiny: tuple[str, Any, dict]) -> None:
    _, model, _ = tiny
    omnisparse.apply(model)
    with pytest.raises(ValueError, match="already applied"):
        omnisparse.apply(model)
    omnisparse.remove(model)
    with pytest.raises(ValueError, match="no OmniSparse applied"):
        omnisparse.remove(model)


def test_remove_unpatched_raises() -> None:
    model = build_tiny_model("qwen2")
    with pytest.raises(ValueError, match=r"omnisparse\.remove: Qwen2ForCausalLM has no OmniSparse applied"):
        omnisparse.remove(model)
    assert not omnisparse.is_applied(model)


def test_apply_type_errors() -> None:
    with pytest.raises(TypeError, match="PreTrainedModel, got Linear"):
        omnisparse.apply(torch.nn.Linear(4, 4))  # type: ignore[arg-type]
    model = build_tiny_model("qwen2")
    with pytest.raises(TypeError, match="config must be an OmniSparseConfig, got dict"):
        omnisparse.apply(model, {"gamma": 0.5})  # type: ignore[arg-type]
    assert not omnisparse.is_applied(model)


# ---------------------------------------------------------------------------------------------
# training
# ---------------------------------------------------------------------------------------------
def q_proj_grads(model: Any) -> list[torch.Tensor]:
    return [m.q_proj.weight.grad.clone() for m in model.modules() if hasattr(m, "q_proj")]


def loss_backward(model: Any, inputs: dict[str, torch.Tensor]) -> torch.Tensor:
    model.zero_grad(set_to_none=True)
    loss = model(**inputs, labels=inputs["input_ids"], use_cache=False).loss
    loss.backward()
    return loss.detach()


@pytest.mark.parametrize("name", ["qwen2", "qwen2-vl"])
def test_gradients_flow_through_the_sparse_path(name: str) -> None:
    model = build_tiny_model(name).train()
    inputs = long_inputs(name, model)
    dense_loss = loss_backward(model, inputs)
    dense_grads = q_proj_grads(model)
    assert len(dense_grads) == 2

    state = omnisparse.apply(model, OmniSparseConfig(block_size=4, min_seq_len=8, lazy_keep_ratio=0.0))
    state.record = True
    sparse_loss = loss_backward(model, inputs)
    grads = q_proj_grads(model)
    assert state.stats and any(s.active_share < 1.0 or s.density < 1.0 for s in state.stats)
    for grad in grads:
        assert bool(torch.isfinite(grad).all()) and float(grad.abs().sum()) > 0
    assert torch.isfinite(sparse_loss)
    omnisparse.remove(model)

    # in the dense limit, the sparse kernels' backward gives the dense gradients
    state = omnisparse.apply(model, OmniSparseConfig(**FULL))
    state.record = True
    full_loss = loss_backward(model, inputs)
    omnisparse.remove(model)
    assert state.stats and all(s.density == 1.0 for s in state.stats)
    torch.testing.assert_close(full_loss, dense_loss, atol=1e-5, rtol=0)
    for grad, dense in zip(q_proj_grads(model), dense_grads, strict=True):
        torch.testing.assert_close(grad, dense, atol=1e-5, rtol=1e-4)


# ---------------------------------------------------------------------------------------------
# batches
# ---------------------------------------------------------------------------------------------
def batch_of_two(model: Any) -> dict[str, torch.Tensor]:
    """Two different prompts of the same length (different text and image): items seed 0 and 1."""
    a, b = long_inputs("qwen2-vl", model, seed=0), long_inputs("qwen2-vl", model, seed=1)
    return {k: torch.cat([a[k], b[k]]) for k in a}


def sharp_qwen2_vl() -> Any:
    """The tiny Qwen2-VL with q/k projections scaled up: peaked attention, so heads and items keep
    different numbers of tokens (random init attends almost uniformly)."""
    model = build_tiny_model("qwen2-vl")
    with torch.no_grad():
        for module in model.model.language_model.modules():
            if hasattr(module, "q_proj"):
                module.q_proj.weight.mul_(8.0)
                module.k_proj.weight.mul_(8.0)
    return model


def test_batched_generate_keeping_everything_matches_dense() -> None:
    model = build_tiny_model("qwen2-vl")
    inputs = batch_of_two(model)
    reference = generate(model, inputs, 5)
    omnisparse.apply(model, OmniSparseConfig(**FULL, decode_gamma=1.0, head_visual_threshold=0.0))
    out = generate(model, inputs, 5)
    omnisparse.remove(model)
    assert torch.equal(out.sequences, reference.sequences)
    for a, b in zip(out.logits, reference.logits, strict=True):
        torch.testing.assert_close(a, b, atol=1e-5, rtol=0)


def test_batched_slim_decode_equals_each_item_alone() -> None:
    """Per-item pools of different lengths: decoding a batch of two equals decoding each item alone
    (prefill is dense-exact here, and the keep lists are chosen per item)."""
    model = sharp_qwen2_vl()
    inputs = batch_of_two(model)
    config = OmniSparseConfig(**FULL, decode_gamma=0.9, observation_window=4, recent_window=4)
    state = omnisparse.apply(model, config)
    try:
        batched = generate(model, inputs, 4)
        kept = torch.stack(state.cache.kept_tokens())  # [layers, B, Hkv]
        singles = [generate(model, long_inputs("qwen2-vl", model, seed=i), 4) for i in range(2)]
    finally:
        omnisparse.remove(model)
    logical = inputs["input_ids"].shape[1] + 3
    assert bool((kept < logical).all()), "every head should drop some visual tokens"
    assert len(set(kept.flatten().tolist())) > 1, "heads and items should keep different counts"
    for i, single in enumerate(singles):
        assert torch.equal(batched.sequences[i : i + 1], single.sequences)
        for a, b in zip(batched.logits, single.logits, strict=True):
            torch.testing.assert_close(a[i : i + 1], b, atol=1e-5, rtol=0)


def test_padded_batch_decode_is_refused() -> None:
    model = build_tiny_model("qwen2-vl")
    inputs = batch_of_two(model)
    inputs["input_ids"][0, :2] = model.config.get_text_config().pad_token_id
    inputs["attention_mask"][0, :2] = 0
    omnisparse.apply(model, OmniSparseConfig(block_size=4, min_seq_len=8))
    try:
        with (
            pytest.warns(UserWarning, match="dense attention for calls with padding"),
            pytest.raises(ValueError, match="does not support padded batches"),
        ):
            generate(model, inputs, 3)
    finally:
        omnisparse.remove(model)


def test_chunked_prefill_tracks_visual_tokens_across_calls(monkeypatch: pytest.MonkeyPatch) -> None:
    """A second prefill chunk sees the text/visual mask of the whole sequence so far."""
    import omnisparse.patch as patch_module

    seen: list[torch.Tensor | None] = []
    original = patch_module.select_prefill_blocks

    def spy(*args: Any, text_tokens: torch.Tensor | None = None, **kwargs: Any) -> Any:
        seen.append(text_tokens)
        return original(*args, text_tokens=text_tokens, **kwargs)

    monkeypatch.setattr(patch_module, "select_prefill_blocks", spy)
    model = build_tiny_model("qwen2-vl")
    inputs = long_inputs("qwen2-vl", model)
    head = {**inputs, **{k: inputs[k][:, :30] for k in ("input_ids", "attention_mask", "mm_token_type_ids")}}
    omnisparse.apply(model, OmniSparseConfig(block_size=4, min_seq_len=4, slim_decode=False))
    try:
        cache = DynamicCache(config=model.config)
        with torch.no_grad():
            model(**head, cache=cache, use_cache=True)
            model(input_ids=inputs["input_ids"][:, 30:], cache=cache, use_cache=True)
    finally:
        omnisparse.remove(model)
    text = inputs["mm_token_type_ids"] == 0
    assert len(seen) == 4  # 2 layers x 2 chunks
    assert all(t is not None for t in seen)
    assert all(torch.equal(t, text[:, :30]) for t in seen[:2])
    assert all(torch.equal(t, text) for t in seen[2:])
