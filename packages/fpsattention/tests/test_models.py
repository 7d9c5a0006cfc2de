import json

import pytest
import torch

from fpsattention.models import get_pipeline, load_components, save_components
from fpsattention.pipeline import build_tiny_pipeline


def test_shipped_models_load_and_differ() -> None:
    base = get_pipeline("tiny-wan")
    qat = get_pipeline("tiny-wan-qat")
    assert base.vae.config.latents_std != [1.0] * 4  # the trained VAE's statistics
    weights = dict(base.transformer.named_parameters())
    assert any(not torch.equal(p, weights[n]) for n, p in qat.transformer.named_parameters())
    assert all(torch.equal(p, dict(qat.vae.named_parameters())[n]) for n, p in base.vae.named_parameters())


def test_save_and_load_round_trip(tmp_path) -> None:
    pipe = build_tiny_pipeline(seed=3)
    save_components(pipe, tmp_path)
    for part in ("transformer", "vae"):
        assert "_name_or_path" not in json.loads((tmp_path / part / "config.json").read_text())
    loaded = load_components(build_tiny_pipeline(seed=4), tmp_path)
    for (name, a), (_, b) in zip(
        pipe.transformer.named_parameters(), loaded.transformer.named_parameters(), strict=True
    ):
        assert torch.equal(a, b), name
    with pytest.raises(FileNotFoundError, match="no transformer"):
        load_components(pipe, tmp_path / "nothing")
