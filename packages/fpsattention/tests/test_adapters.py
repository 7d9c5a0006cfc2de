"""Phase adapters: active only in their FPSAttention phase, exact no-ops elsewhere, saved and loaded."""

import copy

import pytest
import torch

import fpsattention
from fpsattention import AdapterConfig, FPSSchedule, Phase

SCHEDULE = FPSSchedule(
    tile=(1, 4, 4),
    alpha1=0.25,
    alpha2=0.75,
    early=Phase(fp8=False, window=(1, 2, 2)),
    middle=Phase(fp8=False),  # dense and full precision: the patched transformer computes exactly
    late=Phase(fp8=False, window=(3, 2, 2)),
)


def _randomise(adapters: fpsattention.PhaseAdapters, seed: int = 0) -> None:
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for p in adapters.parameters():
            p.copy_(torch.randn(p.shape, generator=g) * 0.1)


def _run(transformer, inputs, step: int | None = None) -> torch.Tensor:
    with torch.no_grad():
        if step is None:
            return transformer(**inputs).sample
        with fpsattention.denoising_step(transformer, step, 8):
            return transformer(**inputs).sample


def test_adapters_switch_with_the_phase(tiny_transformer, transformer_inputs) -> None:
    inputs = transformer_inputs()
    reference = _run(tiny_transformer, inputs)
    adapters = fpsattention.add_adapters(tiny_transformer, AdapterConfig(phases=("early",), rank=4))
    assert set(adapters.deltas) == {"early"}
    assert len(adapters.layer_names) == 20  # 2 blocks x (4 self-attn + 4 cross-attn + 2 feed-forward)
    # Fresh adapters are zero: nothing changes, patched or not.
    state = fpsattention.apply(tiny_transformer, SCHEDULE)
    state.enabled = False
    torch.testing.assert_close(_run(tiny_transformer, inputs), reference, rtol=0, atol=0)
    state.enabled = True
    sparse_plain = _run(tiny_transformer, inputs, step=0)
    _randomise(adapters)
    sparse_adapted = _run(tiny_transformer, inputs, step=0)
    assert (sparse_adapted - sparse_plain).abs().max() > 1e-2  # the early adapter runs in the early phase
    torch.testing.assert_close(_run(tiny_transformer, inputs, step=3), reference)  # middle: no adapter, dense
    state.enabled = False
    torch.testing.assert_close(_run(tiny_transformer, inputs), reference, rtol=0, atol=0)  # FPSAttention off
    fpsattention.remove(tiny_transformer)
    torch.testing.assert_close(_run(tiny_transformer, inputs), reference, rtol=0, atol=0)  # not patched
    fpsattention.remove_adapters(tiny_transformer)
    assert fpsattention.get_adapters(tiny_transformer) is None
    assert not any(m._forward_hooks for m in tiny_transformer.modules())


def test_delta_is_the_low_rank_product(tiny_transformer) -> None:
    config = AdapterConfig(phases=("late",), rank=3, alpha=6.0)
    adapters = fpsattention.add_adapters(tiny_transformer, config)
    _randomise(adapters)
    delta = adapters.deltas["late"]["blocks__0__attn1__to_q"]
    x = torch.randn(5, 64)
    expected = 2.0 * x @ delta.down.T @ delta.up.T  # alpha / rank = 2
    torch.testing.assert_close(delta(x), expected)


def test_save_and_load_round_trip(tiny_transformer, transformer_inputs, tmp_path) -> None:
    from diffusers import WanTransformer3DModel

    from fpsattention.pipeline import TINY_TRANSFORMER

    adapters = fpsattention.add_adapters(tiny_transformer, AdapterConfig(rank=2))
    _randomise(adapters, seed=3)
    fpsattention.save_adapters(tiny_transformer, tmp_path / "adapters")
    torch.manual_seed(0)
    other = WanTransformer3DModel(**TINY_TRANSFORMER).eval()  # the same base weights (same seed)
    loaded = fpsattention.load_adapters(other, tmp_path / "adapters")
    assert loaded.config == adapters.config
    inputs = transformer_inputs()
    for transformer in (tiny_transformer, other):
        fpsattention.apply(transformer, SCHEDULE)
    for step in (0, 3, 7):
        torch.testing.assert_close(_run(other, inputs, step), _run(tiny_transformer, inputs, step))


def test_bad_config_and_files(tiny_transformer, tmp_path) -> None:
    with pytest.raises(ValueError, match="phases"):
        AdapterConfig(phases=("early", "sometimes"))
    with pytest.raises(ValueError, match="phases"):
        AdapterConfig(phases=())
    with pytest.raises(ValueError, match="rank"):
        AdapterConfig(rank=0)
    with pytest.raises(ValueError, match="alpha"):
        AdapterConfig(alpha=-1.0)
    assert AdapterConfig.for_sparse_phases(SCHEDULE).phases == ("early", "late")
    with pytest.raises(ValueError, match="no sparse phase"):
        AdapterConfig.for_sparse_phases(FPSSchedule.fixed(Phase()))
    with pytest.raises(ValueError, match=r"no nn\.Linear"):
        fpsattention.add_adapters(tiny_transformer, AdapterConfig(prefix="nothing."))
    with pytest.raises(FileNotFoundError, match=r"adapters\.json"):
        fpsattention.load_adapters(tiny_transformer, tmp_path)
    with pytest.raises(RuntimeError, match="no phase adapters"):
        fpsattention.remove_adapters(tiny_transformer)
    fpsattention.add_adapters(tiny_transformer)
    with pytest.raises(RuntimeError, match="already has phase adapters"):
        fpsattention.add_adapters(tiny_transformer)
    with pytest.raises(RuntimeError, match="cannot be deep-copied"):
        copy.deepcopy(tiny_transformer)
