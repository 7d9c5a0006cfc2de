import pytest
import torch

from fpsattention.pipeline import TINY_TRANSFORMER


@pytest.fixture
def tiny_transformer():
    from diffusers import WanTransformer3DModel

    torch.manual_seed(0)
    return WanTransformer3DModel(**TINY_TRANSFORMER).eval()


def _transformer_inputs(frames: int = 3, size: int = 16, seed: int = 0, timestep: float = 500.0) -> dict:
    g = torch.Generator().manual_seed(seed)
    return {
        "hidden_states": torch.randn(1, 4, frames, size, size, generator=g),
        "timestep": torch.tensor([timestep]),
        "encoder_hidden_states": torch.randn(1, 16, 32, generator=g),
    }


@pytest.fixture
def transformer_inputs():
    """``transformer_inputs(frames=3, size=16, seed=0, timestep=500.0)`` -> kwargs of a tiny Wan forward."""
    return _transformer_inputs
