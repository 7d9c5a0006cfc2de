"""apply/remove on diffusers' WanTransformer3DModel."""

import pytest
import torch

import fpsattention
from fpsattention import FPSSchedule, Phase

SCHEDULE = FPSSchedule(
    tile=(1, 4, 4),
    alpha1=0.25,
    alpha2=0.75,
    early=Phase(fp8=True, window=(1, 1, 1)),
    middle=Phase(fp8=True, quant_group=4),
    late=Phase(fp8=False, window=(3, 2, 2)),
)


def test_apply_patches_self_attention_only_and_remove_restores(tiny_transformer, transformer_inputs) -> None:
    inputs = transformer_inputs()
    with torch.no_grad():
        before = tiny_transformer(**inputs).sample
    originals = dict(tiny_transformer.attn_processors)
    state = fpsattention.apply(tiny_transformer, SCHEDULE)
    patched = tiny_transformer.attn_processors
    assert all(isinstance(p, fpsattention.FPSAttnProcessor) for n, p in patched.items() if ".attn1." in n)
    assert all(p is originals[n] for n, p in patched.items() if ".attn2." in n)
    state.set_step(0, 8)
    with torch.no_grad():
        sparse = tiny_transformer(**inputs).sample
    assert state.video_grid == (3, 8, 8)
    assert state.calls["early"] == 2  # two blocks
    assert not torch.equal(sparse, before)
    assert ((sparse - before).norm() / before.norm()).item() < 0.5
    fpsattention.remove(tiny_transformer)
    with torch.no_grad():
        after = tiny_transformer(**inputs).sample
    assert torch.equal(after, before)


def test_phase_follows_step_context_and_timestep(tiny_transformer, transformer_inputs) -> None:
    state = fpsattention.apply(tiny_transformer, SCHEDULE)
    with torch.no_grad():
        tiny_transformer(**transformer_inputs(timestep=990.0))  # early in denoising
        assert state.phase_name() == "early"
        tiny_transformer(**transformer_inputs(timestep=10.0))
        assert state.phase_name() == "late"
        with fpsattention.denoising_step(tiny_transformer, 3, 8):
            tiny_transformer(**transformer_inputs(timestep=10.0))
            assert state.phase_name() == "middle"
    assert state.calls == {"early": 2, "middle": 2, "late": 2, "dense": 0}
    state.set_step(0, 4)
    for step in range(3):
        state.pipeline_callback(None, step, None, {})
    assert state.step == 3 and state.phase_name() == "late"


def test_matches_full_precision_with_a_dense_phase(tiny_transformer, transformer_inputs) -> None:
    inputs = transformer_inputs()
    with torch.no_grad():
        before = tiny_transformer(**inputs).sample
    fpsattention.apply(
        tiny_transformer, FPSSchedule.fixed(Phase(fp8=False, window=(9, 9, 9)), tile=(1, 4, 4))
    )
    with torch.no_grad():
        dense_window = tiny_transformer(**inputs).sample
    torch.testing.assert_close(dense_window, before, atol=1e-5, rtol=1e-5)


def test_errors(tiny_transformer) -> None:
    with pytest.raises(RuntimeError, match="not patched"):
        fpsattention.remove(tiny_transformer)
    fpsattention.apply(tiny_transformer, SCHEDULE)
    with pytest.raises(RuntimeError, match="already patched"):
        fpsattention.apply(tiny_transformer, SCHEDULE)
    with pytest.raises(TypeError, match="must be an FPSSchedule"):
        fpsattention.apply(torch.nn.Linear(2, 2), "fast")  # type: ignore[arg-type]
    with pytest.raises(TypeError, match="patch_size"):
        fpsattention.apply(torch.nn.Linear(2, 2))
